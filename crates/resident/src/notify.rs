//! systemd's readiness protocol (`sd_notify`): one datagram to the socket
//! named by `$NOTIFY_SOCKET`. The agent service is `Type=notify` and says
//! `READY=1` after its first run, so that `anklume-health.service`
//! (ordered after it) judges a converged machine, not one still starting.
//! A dozen lines over std's `UnixDatagram` rather than the `sd-notify`
//! crate.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

use anyhow::{Context, Result};

/// Send `msg` (`READY=1\nSTATUS=...`) to `$NOTIFY_SOCKET`; `Ok(false)`
/// when not started by systemd with a notify socket.
pub fn notify(msg: &str) -> Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(s) => notify_to(&s, msg).map(|()| true),
        None => Ok(false),
    }
}

/// Send `msg` to the notify socket `socket` (a path, or `@name` for an
/// abstract socket).
pub fn notify_to(socket: &OsStr, msg: &str) -> Result<()> {
    let sock = UnixDatagram::unbound().context("creating a datagram socket")?;
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
            .context("abstract notify socket name")?;
        sock.send_to_addr(msg.as_bytes(), &addr)
    } else {
        sock.send_to(msg.as_bytes(), std::path::Path::new(socket))
    }
    .with_context(|| format!("notifying systemd on {}", socket.to_string_lossy()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_a_path_and_an_abstract_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        notify_to(p.as_os_str(), "READY=1\nSTATUS=converged").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=converged");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("anklume-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let e = notify_to(d.path().join("none").as_os_str(), "x").unwrap_err();
        assert!(format!("{e:#}").contains("notifying systemd"));
    }
}
