//! One QEMU guest: started in its own process group, killed with the whole
//! group on close or drop (an interrupted harness leaves no VM behind).
//! ttyS0 (humans, the console) and ttyS1 (the guest's report) go to two files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anklume_cmd::Cmd;

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default).
    Bios,
    /// OVMF, with its own copy of the variable store.
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// The ISO as a read-only CD on the IDE bus.
    Cd,
    /// The image as a USB stick (xHCI mass storage), writes discarded.
    UsbDisk,
    /// The image as a USB stick whose writes go to the image file (the
    /// caller boots a copy): boot state and persist survive across boots.
    UsbDiskWritable,
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub image: PathBuf,
    pub firmware: Firmware,
    pub medium: Medium,
    pub memory_mib: u32,
    /// Value of the fw_cfg item `opt/org.anklume/test` (turns on the report).
    pub test_actions: String,
    pub dir: PathBuf,
    /// Open a QEMU monitor socket (`dir/monitor.sock`) for [`Vm::monitor`].
    pub monitor: bool,
    /// Let the guest reboot (otherwise QEMU exits when it tries).
    pub allow_reboot: bool,
    /// UEFI only: boot OVMF's Secure Boot firmware with this variable store
    /// (used in place, so that a MOK enrolled in one boot is there in the
    /// next); `None`: the plain firmware with a fresh copy of its store.
    pub secure_boot_vars: Option<PathBuf>,
    /// Disks after the boot medium (kept across boots: files the caller owns).
    pub disks: Vec<Disk>,
    /// ttyS0 also takes input, through `dir/console.sock` ([`Vm::type_console`]);
    /// what the guest writes still goes to `console.log`.
    pub console_input: bool,
    /// A TPM 2.0 (swtpm) whose state lives in this folder (kept across
    /// boots: what one boot enrols, the next unseals).
    pub tpm_state: Option<PathBuf>,
}

/// An extra disk.
#[derive(Debug, Clone)]
pub struct Disk {
    pub file: PathBuf,
    pub bus: Bus,
    /// The serial the guest sees (in `/dev/disk/by-id`).
    pub serial: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Nvme,
    /// A USB stick on the xHCI controller.
    Usb,
}

#[derive(Debug)]
pub struct Vm {
    child: Option<Child>,
    monitor: Option<PathBuf>,
    pub console_log: PathBuf,
    pub report_log: PathBuf,
    console_sock: Option<PathBuf>,
    swtpm: Option<Child>,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Secure Boot firmware (needs `-machine q35,smm=on` and secure pflash).
const OVMF_CODE_SB: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// The variable store of stock PCs: Microsoft's KEK and db, Secure Boot on.
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

impl Vm {
    pub fn start(c: &VmConfig) -> Result<Vm> {
        std::fs::create_dir_all(&c.dir).with_context(|| format!("creating {}", c.dir.display()))?;
        let console_log = c.dir.join("console.log");
        let report_log = c.dir.join("report.log");
        for f in [&console_log, &report_log] {
            File::create(f).with_context(|| format!("creating {}", f.display()))?;
        }
        let mut cmd = Cmd::new("qemu-system-x86_64");
        cmd = cmd
            .args([
                "-accel",
                "tcg",
                "-smp",
                "2",
                "-m",
                &c.memory_mib.to_string(),
            ])
            .args(["-nic", "none", "-display", "none"]);
        let console_sock = c.console_input.then(|| c.dir.join("console.sock"));
        cmd = match &console_sock {
            // Not connected, the socket drops what the guest writes; the
            // log file gets all of it.
            Some(sock) => {
                let _ = std::fs::remove_file(sock);
                cmd.arg("-chardev")
                    .arg(format!(
                        "socket,id=con0,path={},server=on,wait=off,logfile={}",
                        sock.display(),
                        console_log.display()
                    ))
                    .args(["-serial", "chardev:con0"])
            }
            None => cmd
                .arg("-serial")
                .arg(format!("file:{}", console_log.display())),
        };
        cmd = cmd
            .arg("-serial")
            .arg(format!("file:{}", report_log.display()))
            .arg("-fw_cfg")
            // QEMU option values escape a comma by doubling it.
            .arg(format!(
                "name=opt/org.anklume/test,string={}",
                c.test_actions.replace(',', ",,")
            ));
        if !c.allow_reboot {
            cmd = cmd.arg("-no-reboot");
        }
        let monitor = c.monitor.then(|| c.dir.join("monitor.sock"));
        match &monitor {
            Some(m) => {
                let _ = std::fs::remove_file(m);
                cmd = cmd
                    .arg("-monitor")
                    .arg(format!("unix:{},server=on,wait=off", m.display()));
            }
            None => {
                cmd = cmd.args(["-monitor", "none"]);
            }
        }
        if c.firmware == Firmware::Uefi {
            let (code, vars) = match &c.secure_boot_vars {
                Some(v) => {
                    cmd = cmd
                        .args(["-machine", "q35,smm=on"])
                        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                    (OVMF_CODE_SB, v.clone())
                }
                None => {
                    let vars = c.dir.join("OVMF_VARS.fd");
                    std::fs::copy(OVMF_VARS, &vars).context("copying the OVMF variable store")?;
                    (OVMF_CODE, vars)
                }
            };
            ensure!(
                Path::new(code).exists(),
                "{code} is missing: install ovmf (ci/setup-image)"
            );
            cmd = cmd
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        let img = c.image.display();
        match c.medium {
            Medium::Cd => {
                cmd = cmd
                    .arg("-drive")
                    .arg(format!(
                        "if=none,id=cd,file={img},format=raw,media=cdrom,readonly=on"
                    ))
                    .args(["-device", "ide-cd,drive=cd,bus=ide.1"]);
            }
            Medium::UsbDisk | Medium::UsbDiskWritable => {
                let snapshot = if c.medium == Medium::UsbDisk {
                    "on"
                } else {
                    "off"
                };
                cmd = cmd
                    .arg("-drive")
                    .arg(format!(
                        "if=none,id=stick,file={img},format=raw,snapshot={snapshot}"
                    ))
                    .args(["-device", "qemu-xhci,id=xhci"])
                    .args([
                        "-device",
                        "usb-storage,bus=xhci.0,drive=stick,removable=on,bootindex=1",
                    ]);
            }
        }
        if let Some(state) = &c.tpm_state {
            cmd = cmd
                .arg("-chardev")
                .arg(format!(
                    "socket,id=chrtpm,path={}",
                    swtpm_socket(state).display()
                ))
                .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
                .args(["-device", "tpm-tis,tpmdev=tpm0"]);
        }
        let usb_disks = c.disks.iter().any(|d| d.bus == Bus::Usb);
        if usb_disks && c.medium == Medium::Cd {
            cmd = cmd.args(["-device", "qemu-xhci,id=xhci"]);
        }
        for (i, d) in c.disks.iter().enumerate() {
            cmd = cmd.arg("-drive").arg(format!(
                "if=none,id=disk{i},file={},format=raw",
                d.file.display()
            ));
            cmd = match d.bus {
                Bus::Nvme => cmd
                    .arg("-device")
                    .arg(format!("nvme,drive=disk{i},serial={}", d.serial)),
                Bus::Usb => cmd.arg("-device").arg(format!(
                    "usb-storage,bus=xhci.0,drive=disk{i},serial={},removable=on",
                    d.serial
                )),
            };
        }
        let cmd = cmd.process_group(0);
        std::fs::write(c.dir.join("qemu.cmdline"), format!("{}\n", cmd.line()))?;
        // The VM owns swtpm from its start: a QEMU that fails to start
        // leaves no swtpm behind (drop kills it).
        let mut vm = Vm {
            child: None,
            monitor,
            console_log,
            report_log,
            console_sock,
            swtpm: None,
        };
        if let Some(state) = &c.tpm_state {
            vm.swtpm = Some(start_swtpm(state)?);
        }
        vm.child = Some(cmd.spawn(
            Stdio::null(),
            File::create(c.dir.join("qemu.stderr"))?.into(),
        )?);
        Ok(vm)
    }

    /// Type `text` on the serial console (connect, write, disconnect: a
    /// client left connected would have to drain all the guest's output).
    pub fn type_console(&self, text: &str) -> Result<()> {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        let path = self
            .console_sock
            .as_ref()
            .context("this VM's console takes no input (console_input)")?;
        let mut s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the console socket {}", path.display()))?;
        // Slowly, as a person would: a serial line has no flow control here.
        for b in text.as_bytes() {
            s.write_all(&[*b])?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        Ok(())
    }

    /// The console so far, with terminal escape sequences removed.
    pub fn console(&self) -> String {
        strip_escapes(&String::from_utf8_lossy(
            &std::fs::read(&self.console_log).unwrap_or_default(),
        ))
    }

    /// The guest's report lines (`ANKLUME ...`) so far.
    pub fn report(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.report_log).unwrap_or_default())
            .replace('\r', "")
    }

    /// Send one command to the QEMU monitor; returns what it answered.
    pub fn monitor(&self, command: &str) -> Result<String> {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let path = self
            .monitor
            .as_ref()
            .context("this VM has no monitor socket")?;
        let mut s = UnixStream::connect(path)
            .with_context(|| format!("connecting to the QEMU monitor {}", path.display()))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Whether QEMU is still running.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kill the VM's process group and reap it.
    pub fn close(mut self) -> Result<()> {
        self.kill()
    }

    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let pid = Pid::from_raw(c.id() as i32);
            // The group may already be gone when QEMU exited by itself.
            let _ = killpg(pid, Signal::SIGKILL);
            c.wait().context("reaping qemu")?;
        }
        if let Some(mut t) = self.swtpm.take() {
            // --terminate ends it with QEMU's connection; this is for a
            // QEMU that never connected.
            let _ = t.kill();
            t.wait().context("reaping swtpm")?;
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The control socket of the swtpm whose state is in `state`.
fn swtpm_socket(state: &Path) -> PathBuf {
    state.join("swtpm.sock")
}

/// `swtpm socket` for one boot, its state in `state`; returned once its
/// control socket exists.
fn start_swtpm(state: &Path) -> Result<Child> {
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let sock = swtpm_socket(state);
    let _ = std::fs::remove_file(&sock);
    let mut child = Cmd::new("swtpm")
        .args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--log")
        .arg(format!("file={}", state.join("swtpm.log").display()))
        .spawn(Stdio::null(), Stdio::null())?;
    let start = std::time::Instant::now();
    while !sock.exists() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            child.wait().context("reaping swtpm")?;
            anyhow::bail!(
                "swtpm made no socket {} within 10 s (log: {})",
                sock.display(),
                state.join("swtpm.log").display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(child)
}

/// Remove CSI/OSC escape sequences and carriage returns.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\u{1b}' => match it.next() {
                Some('[') => {
                    for d in it.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    // OSC ends with BEL or with ESC \\ (string terminator).
                    while let Some(d) = it.next() {
                        if d == '\u{7}' {
                            break;
                        }
                        if d == '\u{1b}' && it.peek() == Some(&'\\') {
                            it.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_csi_and_osc() {
        assert_eq!(
            super::strip_escapes("a\u{1b}[0;32mOK\u{1b}[0m\r\n\u{1b}]0;t\u{7}b"),
            "aOK\nb"
        );
    }
}
