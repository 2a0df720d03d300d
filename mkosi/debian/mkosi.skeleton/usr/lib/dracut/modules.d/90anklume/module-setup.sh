#!/bin/bash
# dracut module: the anklume root (slot → [RAM] → dm-verity → squashfs + overlay).

check() { return 0; }

depends() { echo systemd dm; }

installkernel() {
    hostonly='' instmods dm-verity dm-mod squashfs overlay loop isofs sr_mod cdrom \
        virtio_blk virtio_scsi virtio_pci ahci ata_piix sd_mod usb_storage uas \
        xhci_pci xhci_hcd ehci_pci ohci_pci uhci_hcd nvme mmc_block sdhci_pci ext4 exfat
}

install() {
    inst_multiple veritysetup losetup blkid lsblk blockdev mount umount mkdir \
        cat cp dd find grep sed head tr cut od printf readlink sleep stat mkfs.ext4 sync sha256sum
    inst_script "$moddir/anklume-root.sh" /usr/lib/anklume/anklume-root.sh
    inst_script "$moddir/anklume-root-failed.sh" /usr/lib/anklume/anklume-root-failed.sh
    inst_hook cmdline 10 "$moddir/anklume-cmdline.sh"
    inst_simple "$moddir/anklume-root.service" "$systemdsystemunitdir/anklume-root.service"
    inst_simple "$moddir/anklume-root-failed.service" "$systemdsystemunitdir/anklume-root-failed.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd-root-fs.target anklume-root.service
}
