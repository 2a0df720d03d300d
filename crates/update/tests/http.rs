//! Bundles over HTTP from a server on the loopback address: a connection
//! cut in the middle of the image is resumed from the byte where it
//! stopped; a delta update downloads only the missing blocks; a server
//! without Range support is refused.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anklume_contract::Slot;
use anklume_update::esp::would_boot;
use anklume_update::{keys, update, HttpSource, OpenBundle, UpdateOptions};
use common::*;

/// A one-file HTTP server: `Range` requests, `Connection: close`, and a
/// cut (the connection dropped mid-body) once `cut_at` bytes were sent.
struct Server {
    url: String,
    sent: Arc<AtomicU64>,
    cut_at: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    ranges: Arc<Mutex<Vec<(u64, u64)>>>,
}

fn handle(mut c: TcpStream, data: &[u8], ranges_ok: bool, s: &ServerState) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&req).to_lowercase();
    let range = text
        .lines()
        .find_map(|l| l.strip_prefix("range: bytes="))
        .and_then(|r| {
            let (a, b) = r.trim().split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        });
    let (head, body) = match range {
        Some((a, z)) if ranges_ok => {
            s.ranges.lock().unwrap().push((a, z));
            let z = z.min(data.len() as u64 - 1);
            (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{z}/{}\r\nConnection: close\r\n\r\n",
                    z - a + 1,
                    data.len()
                ),
                &data[a as usize..=z as usize],
            )
        }
        _ => (
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            ),
            data,
        ),
    };
    c.write_all(head.as_bytes())?;
    let mut body = body;
    let before = s.sent.load(Ordering::SeqCst);
    let cut = s.cut_at.load(Ordering::SeqCst);
    if cut != u64::MAX && before + body.len() as u64 > cut {
        body = &body[..(cut.saturating_sub(before)) as usize];
        s.cut_at.store(u64::MAX, Ordering::SeqCst);
        s.cuts.fetch_add(1, Ordering::SeqCst);
    }
    c.write_all(body)?;
    s.sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    c.flush()
}

struct ServerState {
    sent: Arc<AtomicU64>,
    cut_at: Arc<AtomicU64>,
    cuts: Arc<AtomicU64>,
    ranges: Arc<Mutex<Vec<(u64, u64)>>>,
}

fn serve(data: Vec<u8>, ranges_ok: bool) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle", l.local_addr().unwrap());
    let st = ServerState {
        sent: Arc::new(AtomicU64::new(0)),
        cut_at: Arc::new(AtomicU64::new(u64::MAX)),
        cuts: Arc::new(AtomicU64::new(0)),
        ranges: Arc::new(Mutex::new(Vec::new())),
    };
    let server = Server {
        url,
        sent: st.sent.clone(),
        cut_at: st.cut_at.clone(),
        cuts: st.cuts.clone(),
        ranges: st.ranges.clone(),
    };
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            // Errors are the client's business (it sees the cut).
            let _ = handle(c, &data, ranges_ok, &st);
        }
    });
    server
}

fn open(fx: &Fixture, url: &str) -> OpenBundle {
    let trusted = keys::load_trusted(&fx.trusted).unwrap();
    let src = HttpSource::open(url, Duration::from_millis(5)).unwrap();
    OpenBundle::open(Box::new(src), &trusted).unwrap()
}

#[test]
fn a_cut_connection_resumes_where_it_stopped() {
    let fx = Fixture::new();
    let b = fx.bundle("v2", "0.2.0", &noise(2, 400 * BS + 777));
    let bytes = std::fs::read(&b).unwrap();
    let srv = serve(bytes.clone(), true);
    let ob = open(&fx, &srv.url);
    // Cut 100 000 bytes into the image.
    let cut = srv.sent.load(Ordering::SeqCst) + 100_000;
    srv.cut_at.store(cut, Ordering::SeqCst);
    let o = UpdateOptions {
        precheck: false,
        chunk_blocks: 64,
        ..UpdateOptions::default()
    };
    let r = update(&fx.sys, &ob, &o, &mut |_| Ok(())).unwrap();
    assert_eq!(srv.cuts.load(Ordering::SeqCst), 1);
    let img = image_of(&ob, &b);
    assert_eq!(&fx.target_bytes()[..img.len()], &img[..]);
    let (st, _) = fx.sys.esp.read_state().unwrap();
    assert_eq!(would_boot(&st, &fx.sys.esp), Slot::B);
    // Resumed at the byte of the cut, nothing fetched twice: the server sent
    // exactly what the updater read, plus the one-byte size probe.
    let ranges = srv.ranges.lock().unwrap().clone();
    let resumed = ranges
        .iter()
        .find(|(a, _)| a % 4096 != 0)
        .expect("a resumed range");
    assert!(ranges.iter().any(|(_, z)| *z >= resumed.0), "{ranges:?}");
    assert_eq!(srv.sent.load(Ordering::SeqCst), r.bundle_bytes_read + 1);
    // And what it read is what it needs: header, manifest, index, boot
    // files, and each image data block once.
    let m = &ob.manifest;
    let manifest_len = u64::from(u32::from_le_bytes(bytes[12..16].try_into().unwrap()));
    let want = 4096
        + manifest_len
        + m.index.size
        + m.boot_files.iter().map(|e| e.size).sum::<u64>()
        + m.slot.data_blocks * 4096;
    assert_eq!(r.bundle_bytes_read, want, "{ranges:?}");
}

#[test]
fn a_delta_update_downloads_only_the_missing_blocks() {
    let fx = Fixture::new();
    let mut v2 = fx.v1.clone();
    v2[150 * BS + 5] ^= 0xff;
    v2.extend(noise(5, 3 * BS));
    let b = fx.bundle("v2", "0.2.0", &v2);
    let len = std::fs::metadata(&b).unwrap().len();
    let srv = serve(std::fs::read(&b).unwrap(), true);
    let ob = open(&fx, &srv.url);
    let o = UpdateOptions {
        reuse: true,
        precheck: true,
        chunk_blocks: 64,
        ..UpdateOptions::default()
    };
    let r = update(&fx.sys, &ob, &o, &mut |_| Ok(())).unwrap();
    let img = image_of(&ob, &b);
    assert_eq!(&fx.target_bytes()[..img.len()], &img[..]);
    // Changed block + the 3 appended (+ the partial last block of v1).
    assert!(r.stats.from_bundle <= 5 * 4096, "{:?}", r.stats);
    let sent = srv.sent.load(Ordering::SeqCst);
    eprintln!("delta over HTTP: {sent} bytes downloaded of a {len} byte bundle");
    assert!(sent * 5 < len, "{sent} of {len}");
}

#[test]
fn a_server_without_range_support_is_refused() {
    let srv = serve(vec![7u8; 10_000], false);
    let e = format!(
        "{:#}",
        HttpSource::open(&srv.url, Duration::from_millis(1)).unwrap_err()
    );
    assert!(e.contains("must support Range"), "{e}");
    let e = format!(
        "{:#}",
        HttpSource::open("http://127.0.0.1:1/none", Duration::from_millis(1)).unwrap_err()
    );
    assert!(e.contains("127.0.0.1:1"), "{e}");
}
