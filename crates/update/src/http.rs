//! A bundle over HTTP(S), read by `Range` requests: the parts the updater
//! needs (header, manifest, index, boot files, then only the image blocks
//! no local slot has), each resumed from the byte where a cut connection
//! stopped. Together with the in-place check of the target (an interrupted
//! run's blocks are found where they were written), an update started
//! again after a cut does not fetch what it already has.
//!
//! Client: `ureq` (blocking, maintained, rustls with the `ring` provider we
//! already use, no async runtime to carry for an updater that reads one
//! range at a time); gzip is off so that ranges are raw bundle bytes.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::source::Source;

/// Attempts in a row without a single new byte before giving up.
pub const MAX_STALLED: u32 = 5;

#[derive(Debug)]
pub struct HttpSource {
    agent: ureq::Agent,
    url: String,
    size: u64,
    read: AtomicU64,
    /// Requests that ended before their range did (resumed).
    cuts: AtomicU64,
    /// Pause before retrying (doubled per stalled attempt).
    backoff: Duration,
}

/// Parse `Content-Range: bytes A-B/TOTAL`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

impl HttpSource {
    /// Open `url`: its size from a one-byte range request (which also
    /// proves the server answers ranges).
    pub fn open(url: &str, backoff: Duration) -> Result<HttpSource> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_body(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut s = HttpSource {
            agent,
            url: url.to_string(),
            size: 0,
            read: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            backoff,
        };
        let resp = s.request(0, 0)?;
        let (_, _, total) = s.check(&resp, 0, 0)?;
        s.size = total;
        Ok(s)
    }

    /// Requests cut short so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    fn request(&self, first: u64, last: u64) -> Result<ureq::http::Response<ureq::Body>> {
        self.agent
            .get(&self.url)
            .header("Range", format!("bytes={first}-{last}"))
            .call()
            .with_context(|| format!("GET {} bytes {first}-{last}", self.url))
    }

    fn check(
        &self,
        resp: &ureq::http::Response<ureq::Body>,
        first: u64,
        last: u64,
    ) -> Result<(u64, u64, u64)> {
        let status = resp.status().as_u16();
        if status == 200 {
            bail!("{} answered the whole file to a range request: the server must support Range (206)", self.url);
        }
        ensure!(
            status == 206,
            "{}: HTTP {status} for bytes {first}-{last}",
            self.url
        );
        let cr = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(content_range)
            .ok_or_else(|| anyhow!("{}: 206 without a readable Content-Range", self.url))?;
        ensure!(
            cr.0 == first && cr.1 == last,
            "{}: asked bytes {first}-{last}, got {}-{}",
            self.url,
            cr.0,
            cr.1
        );
        ensure!(
            self.size == 0 || cr.2 == self.size,
            "{}: the file changed size during the update ({} then {})",
            self.url,
            self.size,
            cr.2
        );
        Ok(cr)
    }

    /// One request for `buf` at `offset`; the bytes it delivered (fewer
    /// when the connection was cut).
    fn fetch(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let last = offset + buf.len() as u64 - 1;
        let mut resp = self.request(offset, last)?;
        self.check(&resp, offset, last)?;
        let mut reader = resp.body_mut().as_reader();
        let mut got = 0;
        while got < buf.len() {
            match reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break, // a cut: the caller resumes from here
            }
        }
        Ok(got)
    }
}

impl Source for HttpSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        ensure!(
            offset + buf.len() as u64 <= self.size,
            "reading past the end of {} ({} bytes)",
            self.url,
            self.size
        );
        let mut done = 0;
        let mut stalled = 0;
        while done < buf.len() {
            let err = match self.fetch(&mut buf[done..], offset + done as u64) {
                Ok(n) if n > 0 => {
                    done += n;
                    self.read.fetch_add(n as u64, Ordering::Relaxed);
                    stalled = 0;
                    if done < buf.len() {
                        self.cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                Ok(_) => anyhow!("the server sent no data"),
                Err(e) => e,
            };
            stalled += 1;
            if stalled >= MAX_STALLED {
                return Err(err.context(format!(
                    "{} stalled {MAX_STALLED} times at byte {}",
                    self.url,
                    offset + done as u64
                )));
            }
            std::thread::sleep(self.backoff * (1 << stalled.min(6)));
        }
        Ok(())
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 0-0/1234"), Some((0, 0, 1234)));
        assert_eq!(content_range(" bytes 10-19/20 "), Some((10, 19, 20)));
        assert_eq!(content_range("bytes */20"), None);
        assert_eq!(content_range("items 0-1/2"), None);
    }
}
