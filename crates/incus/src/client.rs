//! A small Incus REST client over the daemon's unix socket.
//!
//! HTTP/1.1 via `hyper` on one kept-alive connection (reopened when Incus
//! closes it), JSON via serde. Every response is Incus's envelope:
//! `{"type": "sync"|"async"|"error", "status_code", "error", "metadata",
//! "operation"}`; async requests are awaited through
//! `GET /1.0/operations/<id>/wait`. Errors carry the method, the path and
//! Incus's own message.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Default socket of a packaged Incus.
pub const DEFAULT_SOCKET: &str = "/var/lib/incus/unix.socket";
/// How long one operation may run before we give up waiting.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a plain request may take (a socket-activated daemon that never
/// comes up must not hang us).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to Incus. Callers branch on [`Error::NotFound`]
/// (an object that does not exist yet); everything else is reported.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{method} {path}: not found")]
    NotFound { method: String, path: String },
    #[error("{method} {path}: Incus answered {code}: {message}")]
    Api {
        method: String,
        path: String,
        code: u16,
        message: String,
    },
    #[error("{method} {path}: operation failed: {message}")]
    Operation {
        method: String,
        path: String,
        message: String,
    },
    #[error("cannot reach Incus at {socket}: {message}")]
    Connect { socket: String, message: String },
    #[error("{method} {path}: {message}")]
    Transport {
        method: String,
        path: String,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_code: u16,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    operation: String,
}

/// The socket to use: `$INCUS_SOCKET`, else `$INCUS_DIR/unix.socket`, else
/// the packaged default.
pub fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("INCUS_SOCKET") {
        return PathBuf::from(s);
    }
    if let Some(d) = std::env::var_os("INCUS_DIR") {
        return PathBuf::from(d).join("unix.socket");
    }
    PathBuf::from(DEFAULT_SOCKET)
}

/// One client = one connection to one daemon, used by one thread at a time
/// (`Send`, not `Sync`; [`Client::another`] opens one more).
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    conn: RefCell<Option<SendRequest<Full<Bytes>>>>,
    timeout: Duration,
}

impl Client {
    /// Connect and check that the daemon answers (`GET /1.0`).
    pub fn connect(socket: &Path) -> Result<Client> {
        Self::connect_with_timeout(socket, REQUEST_TIMEOUT)
    }

    /// [`Client::connect`], with `timeout` for each plain request.
    pub fn connect_with_timeout(socket: &Path, timeout: Duration) -> Result<Client> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Connect {
                socket: socket.display().to_string(),
                message: format!("starting the I/O runtime: {e}"),
            })?;
        let c = Client {
            socket: socket.to_path_buf(),
            rt,
            conn: RefCell::new(None),
            timeout,
        };
        c.get::<Value>("/1.0")?;
        Ok(c)
    }

    /// Another connection to the same daemon, with the same deadlines: a
    /// `Client` serves one thread, so concurrent work opens one per thread.
    pub fn another(&self) -> Result<Client> {
        Self::connect_with_timeout(&self.socket, self.timeout)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn open(&self) -> Result<SendRequest<Full<Bytes>>> {
        let socket = self.socket.clone();
        self.rt.block_on(async move {
            let err = |message: String| Error::Connect {
                socket: socket.display().to_string(),
                message,
            };
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .map_err(|e| err(e.to_string()))?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| err(e.to_string()))?;
            // The connection task lives on this runtime; it ends when the
            // daemon closes the socket or the sender is dropped.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(send)
        })
    }

    /// One request; returns Incus's envelope. Retries once on a connection
    /// the daemon closed in between.
    fn raw(&self, method: &Method, path: &str, body: Option<&Value>) -> Result<Envelope> {
        self.raw_within(method, path, body, self.timeout)
    }

    fn raw_within(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Envelope> {
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| Error::Transport {
                method: method.to_string(),
                path: path.to_string(),
                message: e.to_string(),
            })?),
            None => Bytes::new(),
        };
        let (status, bytes) = self.exchange(method, path, payload, "application/json", limit)?;
        envelope(method, path, status, &bytes)
    }

    /// One HTTP exchange on the kept-alive connection: `(status, body)`.
    /// Retries once on a connection the daemon closed in between.
    fn exchange(
        &self,
        method: &Method,
        path: &str,
        payload: Bytes,
        content_type: &str,
        limit: Duration,
    ) -> Result<(u16, Bytes)> {
        let terr = |message: String| Error::Transport {
            method: method.to_string(),
            path: path.to_string(),
            message,
        };
        for attempt in 0..2 {
            let mut slot = self.conn.borrow_mut();
            let fresh = slot.is_none();
            if fresh {
                *slot = Some(self.open()?);
            }
            let send = slot.as_mut().expect("set above");
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("http://incus{path}"))
                .header("Host", "incus")
                .header("Content-Type", content_type)
                .header("User-Agent", "anklume")
                .body(Full::new(payload.clone()))
                .map_err(|e| terr(e.to_string()))?;
            let result = self.rt.block_on(async {
                tokio::time::timeout(limit, async {
                    send.ready().await?;
                    let resp = send.send_request(req).await?;
                    let status = resp.status().as_u16();
                    let bytes = resp.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, bytes))
                })
                .await
            });
            let result = match result {
                Ok(r) => r,
                Err(_) => {
                    *slot = None;
                    return Err(terr(format!("no answer within {limit:?}")));
                }
            };
            match result {
                Ok(r) => return Ok(r),
                Err(_) if !fresh && attempt == 0 => {
                    // A kept-alive connection the daemon closed in between:
                    // reopen once; a second failure is reported below.
                    *slot = None;
                }
                Err(e) => {
                    *slot = None;
                    return Err(terr(e.to_string()));
                }
            }
        }
        Err(terr("the connection kept closing".into()))
    }

    /// `GET path` for a raw download (an image export): the body as is, or
    /// Incus's error.
    pub fn get_bytes(&self, path: &str) -> Result<Bytes> {
        let (status, bytes) = self.exchange(
            &Method::GET,
            path,
            Bytes::new(),
            "application/json",
            OPERATION_TIMEOUT,
        )?;
        if status == 200 {
            return Ok(bytes);
        }
        let env = envelope(&Method::GET, path, status, &bytes)?;
        Err(self.failure(&Method::GET, path, env))
    }

    /// `POST path` with a raw body (an image upload); async operations are
    /// waited for, as in [`Client::request`].
    pub fn post_bytes(&self, path: &str, data: Bytes) -> Result<Value> {
        let (status, bytes) = self.exchange(
            &Method::POST,
            path,
            data,
            "application/octet-stream",
            OPERATION_TIMEOUT,
        )?;
        let env = envelope(&Method::POST, path, status, &bytes)?;
        self.finish(Method::POST, path, env)
    }

    /// `POST path` with a `multipart/form-data` body, one part per
    /// `(field, filename, data)` in order (a split image upload: `metadata`
    /// then `rootfs`); async operations are waited for.
    pub fn post_multipart(&self, path: &str, parts: &[(&str, &str, &[u8])]) -> Result<Value> {
        let (boundary, body) = multipart(parts);
        let (status, bytes) = self.exchange(
            &Method::POST,
            path,
            body,
            &format!("multipart/form-data; boundary={boundary}"),
            OPERATION_TIMEOUT,
        )?;
        let env = envelope(&Method::POST, path, status, &bytes)?;
        self.finish(Method::POST, path, env)
    }

    /// Send a request and return its metadata; async operations are waited
    /// for (their final metadata is returned).
    pub fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let env = self.raw(&method, path, body)?;
        self.finish(method, path, env)
    }

    fn finish(&self, method: Method, path: &str, env: Envelope) -> Result<Value> {
        match env.kind.as_str() {
            "sync" => Ok(env.metadata),
            "async" => self.wait(&method, path, &env.operation),
            _ => Err(self.failure(&method, path, env)),
        }
    }

    fn failure(&self, method: &Method, path: &str, env: Envelope) -> Error {
        if env.error_code == 404 {
            Error::NotFound {
                method: method.to_string(),
                path: path.to_string(),
            }
        } else {
            Error::Api {
                method: method.to_string(),
                path: path.to_string(),
                code: env.error_code,
                message: env.error,
            }
        }
    }

    fn wait(&self, method: &Method, path: &str, operation: &str) -> Result<Value> {
        let url = format!("{operation}/wait?timeout={}", OPERATION_TIMEOUT.as_secs());
        let env = self.raw_within(
            &Method::GET,
            &url,
            None,
            OPERATION_TIMEOUT + Duration::from_secs(60),
        )?;
        if env.kind == "error" {
            return Err(Error::Operation {
                method: method.to_string(),
                path: path.to_string(),
                message: env.error,
            });
        }
        let op = env.metadata;
        match op.get("status").and_then(Value::as_str) {
            Some("Success") => Ok(op.get("metadata").cloned().unwrap_or(Value::Null)),
            status => Err(Error::Operation {
                method: method.to_string(),
                path: path.to_string(),
                message: op
                    .get("err")
                    .and_then(Value::as_str)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("status {status:?}")),
            }),
        }
    }

    /// `GET path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let v = self.request(Method::GET, path, None)?;
        serde_json::from_value(v).map_err(|e| Error::Transport {
            method: "GET".into(),
            path: path.to_string(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET path`, `None` when Incus says 404.
    pub fn get_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        match self.get(path) {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(Method::POST, path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(Method::PUT, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.request(Method::PATCH, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value> {
        self.request(Method::DELETE, path, None)
    }
}

/// Decode Incus's envelope from an HTTP answer.
fn envelope(method: &Method, path: &str, status: u16, bytes: &[u8]) -> Result<Envelope> {
    serde_json::from_slice(bytes).map_err(|e| Error::Transport {
        method: method.to_string(),
        path: path.to_string(),
        message: format!(
            "HTTP {status}, not an Incus response ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
    })
}

/// A `multipart/form-data` body of `parts` (`(field, filename, data)`):
/// `(boundary, body)`, the boundary chosen so that no part contains it.
fn multipart(parts: &[(&str, &str, &[u8])]) -> (String, Bytes) {
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut n: u64 = 0;
    let boundary = loop {
        let b = format!("anklume-part-boundary-{n:016x}");
        if !parts.iter().any(|(_, _, d)| contains(d, b.as_bytes())) {
            break b;
        }
        n += 1;
    };
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.2.len() + 200).sum::<usize>() + 64);
    for (field, filename, data) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (boundary, Bytes::from(body))
}

/// Percent-encode one path segment or query value (names are validated to
/// be simple, but never trust that twice).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments() {
        assert_eq!(enc("pro-dev_1.x"), "pro-dev_1.x");
        assert_eq!(enc("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn multipart_bodies_frame_each_part() {
        let first = b"anklume-part-boundary-0000000000000000 inside".to_vec();
        let (b, body) = multipart(&[("metadata", "m.tar", &first), ("rootfs", "r.sqfs", b"\0x")]);
        assert_eq!(b, "anklume-part-boundary-0000000000000001");
        let want = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"m.tar\"\r\nContent-Type: application/octet-stream\r\n\r\nanklume-part-boundary-0000000000000000 inside\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"rootfs\"; filename=\"r.sqfs\"\r\nContent-Type: application/octet-stream\r\n\r\n\0x\r\n\
             --{b}--\r\n"
        );
        assert_eq!(String::from_utf8_lossy(&body), want);
    }

    #[test]
    fn a_daemon_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("silent.socket");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let holder = std::thread::spawn(move || {
            // Accept, read nothing, answer nothing, keep it open a while.
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let e = Client::connect_with_timeout(&sock, Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GET /1.0: no answer within 500ms"), "{e}");
        holder.join().unwrap();
    }

    #[test]
    fn a_missing_socket_is_a_clear_error() {
        let e = Client::connect(Path::new("/nonexistent/incus.socket")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("cannot reach Incus at /nonexistent/incus.socket"),
            "{m}"
        );
    }
}
