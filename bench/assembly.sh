#!/usr/bin/env bash
# Image assembly from a prepared rootfs tree: `anklume-build iso --rootfs`
# vs the same steps with standard tools only (mksquashfs + veritysetup
# format + grub-mkimage + mkfs.vfat/mtools + xorriso). Prints wall times.
# Usage: bench/assembly.sh [ROOTFS]   (default: build/mkosi-out/rootfs from `make iso`)
set -euo pipefail
cd "$(dirname "$0")/.."
rootfs=${1:-build/mkosi-out/rootfs}
[ -d "$rootfs/usr" ] || { echo "no rootfs at $rootfs: run make iso first" >&2; exit 1; }
cargo build --release --locked -q -p anklume-build
work=$(mktemp -d /var/tmp/anklume-bench-asm.XXXXXX)
trap 'rm -rf "$work"' EXIT
epoch=1700000000
now() { date +%s.%N; }

s=$(now)
ANKLUME_CMD_LOG=quiet ./target/release/anklume-build iso --quiet --rootfs "$rootfs" \
  --work-dir "$work/ours" --out-dir "$work/ours-out" --source-date-epoch $epoch
ours=$(awk -v a="$(now)" -v b="$s" 'BEGIN { print a - b }')

# Standard tools, same steps, the same compressor and the same ESP content.
s=$(now)
mkdir -p "$work/std/iso/boot/grub"
SOURCE_DATE_EPOCH=$epoch mksquashfs "$rootfs" "$work/std/slot.img" -noappend -xattrs -no-progress -quiet \
  -comp zstd -Xcompression-level 3 -processors "$(nproc)" -wildcards -e 'boot/vmlinuz*' 'boot/initrd.img*' 'vmlinuz*' 'initrd.img*'
sz=$(stat -c %s "$work/std/slot.img"); off=$(( (sz + 4095) / 4096 * 4096 )); truncate -s $off "$work/std/slot.img"
veritysetup format "$work/std/slot.img" "$work/std/slot.img" --hash-offset=$off \
  --salt 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff \
  --uuid 6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d > /dev/null
L="$rootfs/usr/lib64/ld-linux-x86-64.so.2 --library-path $rootfs/usr/lib/x86_64-linux-gnu $rootfs/usr/bin/grub-mkimage"
echo 'configfile /EFI/anklume/grub.cfg' > "$work/std/early.cfg"
mods="part_gpt part_msdos fat iso9660 search search_fs_uuid configfile loadenv linux normal echo test serial terminal sleep ls cat halt reboot true"
$L -d "$rootfs/usr/lib/grub/i386-pc" -O i386-pc-eltorito -p /boot/grub -c "$work/std/early.cfg" -o "$work/std/iso/boot/grub/bios.img" $mods biosdisk
$L -d "$rootfs/usr/lib/grub/x86_64-efi" -O x86_64-efi -p /EFI/BOOT -c "$work/std/early.cfg" -o "$work/std/BOOTX64.EFI" $mods efi_gop efi_uga all_video
kver=$(readlink "$rootfs/boot/vmlinuz"); kver=${kver#vmlinuz-}
boot=$(( $(stat -c %s "$rootfs/boot/vmlinuz-$kver") + $(stat -c %s "$rootfs/boot/initrd.img-$kver") ))
truncate -s $(( (8 * 1048576 + 3 * boot + 1048575) / 1048576 ))M "$work/std/esp.img"; mkfs.vfat -n ANKLUME-ESP "$work/std/esp.img" > /dev/null
mmd -i "$work/std/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/anklume ::/EFI/anklume/slot-a
mcopy -i "$work/std/esp.img" "$work/std/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/std/esp.img" "$rootfs/boot/vmlinuz-$kver" ::/EFI/anklume/slot-a/vmlinuz
mcopy -i "$work/std/esp.img" "$rootfs/boot/initrd.img-$kver" ::/EFI/anklume/slot-a/initrd.img
mkdir -p "$work/std/iso/EFI/anklume/slot-a"
cp "$rootfs/boot/vmlinuz-$kver" "$work/std/iso/EFI/anklume/slot-a/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$work/std/iso/EFI/anklume/slot-a/initrd.img"
xorriso -as mkisofs -o "$work/std/out.iso" -R -V ANKLUME --grub2-mbr "$rootfs/usr/lib/grub/i386-pc/boot_hybrid.img" \
  -partition_offset 16 --mbr-force-bootable -append_partition 2 C12A7328-F81F-11D2-BA4B-00A0C93EC93B "$work/std/esp.img" \
  -append_partition 3 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 "$work/std/slot.img" -appended_part_as_gpt -no-pad \
  -b boot/grub/bios.img -no-emul-boot -boot-load-size 4 -boot-info-table --grub2-boot-info \
  -eltorito-alt-boot -e --interval:appended_partition_2:all:: -no-emul-boot "$work/std/iso" 2> /dev/null
std=$(awk -v a="$(now)" -v b="$s" 'BEGIN { print a - b }')

printf 'image assembly from %s (%s, %d cores):\n' "$rootfs" "$(du -sh "$rootfs" | cut -f1)" "$(nproc)"
printf '  anklume-build iso --rootfs   %6.1f s  (%d MiB)\n' "$ours" $(( $(stat -c %s "$work"/ours-out/*.iso) >> 20 ))
printf '  standard tools               %6.1f s  (%d MiB)\n' "$std" $(( $(stat -c %s "$work/std/out.iso") >> 20 ))
