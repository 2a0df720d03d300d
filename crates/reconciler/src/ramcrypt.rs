//! RAM encryption: what the CPU supports (exact `flags` tokens of
//! `/proc/cpuinfo`) and what the kernel says it activated (its own boot
//! message), never a guess from substrings.

use std::collections::BTreeSet;
use std::io::Read;

/// CPU flags of memory encryption, in the order they are reported.
pub const FLAGS: [&str; 5] = ["sme", "sev", "sev_es", "sev_snp", "tme"];

/// The flags of the first CPU in `cpuinfo`.
pub fn cpu_flags(cpuinfo: &str) -> BTreeSet<&str> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "flags").then_some(v)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// Which of [`FLAGS`] the CPU has.
pub fn supported(cpuinfo: &str) -> Vec<&'static str> {
    let f = cpu_flags(cpuinfo);
    FLAGS.into_iter().filter(|x| f.contains(x)).collect()
}

/// What the kernel log says was activated: AMD's `Memory Encryption
/// Features active: ...` line, Intel's `x86/tme: enabled by BIOS`.
pub fn kernel_active(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in log.lines() {
        if let Some((_, rest)) = l.split_once("Memory Encryption Features active:") {
            out.push(rest.trim().to_string());
        } else if l.contains("x86/tme: enabled by BIOS") {
            out.push("TME (enabled by BIOS)".to_string());
        }
    }
    out
}

/// The kernel's ring buffer (`/dev/kmsg`, read without blocking): one
/// message per line, the text after the record header.
pub fn read_kernel_log() -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open("/dev/kmsg")?;
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let text = rec.split_once(';').map_or(&*rec, |(_, t)| t);
                out.push_str(text.lines().next().unwrap_or(""));
                out.push('\n');
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // A record overwritten while we read: skip it.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One line for `anklume status`.
pub fn describe(cpuinfo: &str, kernel_log: Option<&str>) -> String {
    let cpu = supported(cpuinfo);
    let cpu = if cpu.is_empty() {
        "none".to_string()
    } else {
        cpu.join(" ")
    };
    let kernel = match kernel_log {
        None => "unknown (kernel log not readable)".to_string(),
        Some(log) => {
            let a = kernel_active(log);
            if a.is_empty() {
                "none reported".to_string()
            } else {
                a.join("; ")
            }
        }
    };
    format!("cpu supports: {cpu}; kernel active: {kernel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_whole_tokens() {
        // `sev_es` alone must not count as `sev`; `smep`/`smex` are not `sme`.
        let c = "processor\t: 0\nflags\t\t: fpu smep smex sev_es tme_x\n\nprocessor\t: 1\nflags\t: sme\n";
        assert_eq!(supported(c), ["sev_es"]);
        let c = "flags : fpu sme sev sev_es sev_snp tme\n";
        assert_eq!(supported(c), FLAGS);
        assert!(supported("no flags here").is_empty());
    }

    #[test]
    fn kernel_messages_are_quoted_not_guessed() {
        let log = "Linux version 6.12\nAMD Memory Encryption Features active: SEV SEV-ES\nsome sme text\n";
        assert_eq!(kernel_active(log), ["SEV SEV-ES"]);
        assert_eq!(
            kernel_active("x86/tme: enabled by BIOS\n"),
            ["TME (enabled by BIOS)"]
        );
        assert!(kernel_active("memory encryption is great\n").is_empty());
        assert_eq!(
            describe("flags : sme\n", Some("")),
            "cpu supports: sme; kernel active: none reported"
        );
        assert_eq!(
            describe("flags : fpu\n", None),
            "cpu supports: none; kernel active: unknown (kernel log not readable)"
        );
    }

    #[test]
    fn reads_this_machines_kernel_log() {
        // Root in CI and here: /dev/kmsg is readable and holds the boot.
        let log = read_kernel_log().expect("reading /dev/kmsg");
        assert!(log.lines().count() > 10, "{log}");
    }
}
