//! VM tests of the built image: boot it in QEMU (TCG here, where KVM is not
//! usable) through the real firmware (SeaBIOS, OVMF) and GRUB, as a CD and as
//! a USB stick, and check from inside the guest (report on ttyS1) that the
//! root is an overlay over the dm-verity device with the build's root hash;
//! plus toram with the medium ejected, persist across boots and the A/B
//! rollback on the raw image; Secure Boot with own keys and with stock
//! keys + MokManager enrolment, and changed signed files refused; the ISO
//! booted from a Ventoy stick (normal and GRUB2 mode, BIOS and UEFI); the
//! encrypted data pool made from a seed stick at first boot and unlocked
//! on the serial console at the next; an A/B update to a newer version, and
//! a bundle signed with another key refused.

pub mod mok;
pub mod persist;
pub mod pool;
pub mod qemu;
pub mod rollback;
pub mod scenario;
pub mod secureboot;
pub mod tamper;
pub mod toram;
pub mod update;
pub mod ventoy;
pub mod wizard;
