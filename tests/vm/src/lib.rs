//! VM tests of the built image: boot it in QEMU (TCG here, where KVM is not
//! usable) through the real firmware (SeaBIOS, OVMF) and GRUB, as a CD and as
//! a USB stick, and check from inside the guest (report on ttyS1) that the
//! root is an overlay over the dm-verity device with the build's root hash;
//! plus toram with the medium ejected, persist across boots and the A/B
//! rollback on the raw image.

pub mod persist;
pub mod qemu;
pub mod rollback;
pub mod scenario;
pub mod tamper;
pub mod toram;
