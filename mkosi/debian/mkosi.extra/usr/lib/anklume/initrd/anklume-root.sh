#!/bin/sh
# anklume initrd: make the verified OS slot the root file system. Run by
# the initrd's /init (no systemd, no udev there: devices are found in
# sysfs and their GPT entries read with `blkid -p`).
#
# Kernel command line, from GRUB (slot.cfg's values):
#   anklume.slot=a|b  anklume.partuuid=UUID  anklume.roothash=HEX
#   anklume.hashoffset=BYTES  anklume.version=V  [anklume.toram=1]
#   [anklume.overlay_size=SIZE]
# or signed into a UKI (Secure Boot), which names the image, not a slot
# (no anklume.slot, no anklume.partuuid):
#   anklume.roothash=HEX  anklume.hashoffset=BYTES  anklume.version=V
#
# 1. find the slot partition by PARTUUID (of its GPT entry), or (UKI) the slot partition
#    (GPT type and name) whose verity tree at the hash offset has the root
#    hash (its superblock's salt + its top hash block) — the slot is then
#    the one its name says; on a CD (the kernel does not scan
#    a CD's partition table) expose the medium's partitions through a
#    read-only partition-scanning loop device; the same over the ISO file
#    when Ventoy booted it (its /dev/mapper/ventoy, or the file on its data
#    partition);
# 2. toram: check free memory, copy the slot into a tmpfs, verify the copy
#    against the root hash, release the medium;
# 3. open dm-verity with the root hash from the command line — no fallback
#    to an unverified root: any failure stops the boot;
# 4. mount the squashfs read-only under a sized tmpfs overlay on /sysroot;
# 5. mount the persist partition of the same disk when there is one.
set -eu

say() { echo "anklume-root: $*"; }
FAILED=""
fail() { echo "anklume-root: FATAL: $*" >&2; FAILED=1; exit 1; }
# `set -e` ends the script at any unchecked failing command: say so, so that
# such an exit is never silent (and the console shows it as fatal).
trap 'rc=$?; [ "$rc" = 0 ] || [ -n "$FAILED" ] || echo "anklume-root: FATAL: stopped by a failing command (exit status $rc)" >&2' EXIT
arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}

if PARTUUID=$(arg anklume.partuuid); then
    SLOT=$(arg anklume.slot) || fail "anklume.slot= is missing from the kernel command line"
    BY_ROOT=""
else
    # A UKI's command line: the partition is found by the image's root hash.
    SLOT="" PARTUUID="" BY_ROOT=1
fi
ROOTHASH=$(arg anklume.roothash) || fail "anklume.roothash= is missing"
HASHOFF=$(arg anklume.hashoffset) || fail "anklume.hashoffset= is missing"
TORAM=$(arg anklume.toram) || TORAM=0
OVERLAY_SIZE=$(arg anklume.overlay_size) || OVERLAY_SIZE=50%
VERSION=$(arg anklume.version) || VERSION=unknown
PERSIST_TYPE=0fc63daf-8483-4772-8e79-3d69d8477de4
PERSIST_LABEL=anklume-persist

SLOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
dev=""
if [ -n "$PARTUUID" ]; then
    say "slot $SLOT, PARTUUID $PARTUUID, root hash $ROOTHASH"
else
    say "version $VERSION: the slot partition whose verity root hash is $ROOTHASH"
    dev=""
fi
# The partitions the kernel has (sda3, nvme0n1p2, loop0p3, ...).
partitions() {
    for p in /sys/class/block/*; do
        if [ -e "$p/partition" ]; then echo "${p##*/}"; fi
    done
    return 0
}
# A partition's GPT name, as the kernel read it.
partname() { sed -n 's/^PARTNAME=//p' "/sys/class/block/$1/uevent" 2>/dev/null; }
# A field of a partition's GPT entry (PART_ENTRY_UUID, PART_ENTRY_TYPE),
# read from the disk (the kernel does not show them); nothing when
# unreadable.
part_entry() { blkid -p -s "$2" -o value "/dev/$1" 2>/dev/null || return 0; }
# The disk a partition is on (sda for sda3, loop0 for loop0p3).
parent_disk() {
    p=$(readlink -f "/sys/class/block/$1")
    p=${p%/*}
    echo "${p##*/}"
}
# Partitions already looked at and not the slot (each is read once).
checked=" "
# Set dev to the partition whose GPT entry has the PARTUUID $1; false
# when there is none yet.
by_partuuid() {
    for n in $(partitions); do
        case "$checked" in *" $n "*) continue ;; esac
        if [ "$(part_entry "$n" PART_ENTRY_UUID)" = "$1" ]; then
            dev=/dev/$n
            return 0
        fi
        checked="$checked$n "
    done
    return 1
}
# Print hex string $1 as bytes.
hex_to_bin() {
    h=$1
    while [ -n "$h" ]; do
        b=${h%"${h#??}"}
        h=${h#??}
        # shellcheck disable=SC2059
        printf "\\$(printf %03o "0x$b")"
    done
}
# The root hash (hex) of the verity tree whose superblock is at 512-byte
# sector $2 of device or file $1 — SHA-256 of the superblock's salt then
# the top hash block, which follows the superblock's 4 KiB — or nothing
# when there is no superblock. (dd seeks; od -j would read a block device
# up to the offset.)
verity_root() {
    h=$(dd if="$1" bs=512 skip="$2" count=1 status=none 2>/dev/null | od -An -tx1 -v | tr -d ' \n')
    case "$h" in 7665726974790000*) ;; *) return 0 ;; esac
    n=$(echo "$h" | cut -c161-164)
    n=$((0x${n#??} * 256 + 0x${n%??}))
    [ "$n" -gt 0 ] && [ "$n" -le 256 ] || return 0
    salt=$(echo "$h" | cut -c177-$((176 + 2 * n)))
    { hex_to_bin "$salt"; dd if="$1" bs=512 skip=$(($2 + 8)) count=8 status=none; } | sha256sum | cut -d' ' -f1
}
# Set dev and SLOT to the slot partition holding the image with our root
# hash, the first in sysfs's order when several do (two sticks of one
# image, or both slots holding it); false when there is none yet.
find_by_root() {
    for n in $(partitions); do
        case "$checked" in *" $n "*) continue ;; esac
        l=$(partname "$n")
        case "$l" in
        anklume-slot-a | anklume-slot-b)
            if [ "$(part_entry "$n" PART_ENTRY_TYPE)" = "$SLOT_TYPE" ] \
                && [ "$(verity_root "/dev/$n" $((HASHOFF / 512)))" = "$ROOTHASH" ]; then
                dev=/dev/$n
                SLOT=${l##*-}
                return 0
            fi
            ;;
        esac
        checked="$checked$n "
    done
    return 1
}
# Loop devices this script made over a CD or the ISO file (released by
# toram), and what each is over: " loop0=cd loop1=ventoy ".
media_loops=""
media_kinds=" "
# Devices already given a loop device: each only once.
exposed=" "
expose() { # $1: device or file to expose read-only with its partitions; $2: medium; [$3..]: losetup options
    src=$1 kind=$2
    shift 2
    case "$exposed" in *" $src "*) return 0 ;; esac
    exposed="$exposed$src "
    if loopdev=$(losetup -r -P -f --show "$@" "$src"); then
        say "exposing the partitions of $src through $loopdev ($kind)"
        media_loops="$media_loops $loopdev"
        media_kinds="$media_kinds${loopdev#/dev/}=$kind "
    else
        say "cannot expose the partitions of $src"
    fi
    return 0
}
expose_cds() {
    for cd in /dev/sr*; do
        if [ -b "$cd" ]; then expose "$cd" cd; fi
    done
    return 0
}
# Ventoy boots the ISO file from its stick's data partition (exFAT). When
# Ventoy could add its initrd hooks, they map the file as
# /dev/mapper/ventoy; ours get none (Ventoy adds them only to initrd files
# named in the ISO tree's configs), so the initrd finds the file itself:
# under UEFI Ventoy's variable VentoyOsParam names the stick (the GUID
# Ventoy keeps at byte 384 of its MBR), the partition and the file's path
# (its ventoy_os_param after the 4 attribute bytes); under BIOS nothing
# the kernel shows says where it is, so the ISO files of the data
# partition of the disk whose second partition is Ventoy's VTOYEFI are
# searched for the one whose GPT holds our slot's PARTUUID.
VTOY_VAR=/sys/firmware/efi/efivars/VentoyOsParam-77772020-2e77-6576-6e74-6f792e6e6574
VTOY_MNT=/run/anklume/ventoy
vtoy_mount_said=""
hexof() { # $2 bytes at $1 of file $3, in hex
    od -An -tx1 -j "$1" -N "$2" "$3" | tr -d ' \n'
}
# The PARTUUID as its 16 bytes in a GPT entry (first three fields little-endian).
guid_bytes() {
    h=$(echo "$1" | tr -d '-' | tr 'A-F' 'a-f')
    for o in 6 4 2 0 10 8 14 12; do printf '%s' "$(echo "$h" | cut -c$((o + 1))-$((o + 2)))"; done
    echo "$h" | cut -c17-32
}
SLOT_GUID_HEX=""
if [ -n "$PARTUUID" ]; then SLOT_GUID_HEX=$(guid_bytes "$PARTUUID"); fi
# "anklume-slot-a" as a GPT entry's name (UTF-16LE), in od's spacing.
SLOT_A_NAME_HEX="61 00 6e 00 6b 00 6c 00 75 00 6d 00 65 00 2d 00 73 00 6c 00 6f 00 74 00 2d 00 61 00"
iso_has_slot() { # ISO file $1 holds our slot: its GPT names our PARTUUID, or (UKI) its slot A has our root hash
    if [ -n "$SLOT_GUID_HEX" ]; then
        od -An -tx1 -j 1024 -N 16384 "$1" 2>/dev/null | tr -d ' \n' | grep -q "$SLOT_GUID_HEX"
        return
    fi
    iso_file=$1
    # The GPT entry (128 bytes a line) named anklume-slot-a: its first LBA.
    e=$(od -An -tx1 -v -w128 -j 1024 -N 16384 "$1" 2>/dev/null | grep -m1 "$SLOT_A_NAME_HEX") || return 1
    # shellcheck disable=SC2086
    set -- $e
    shift 32
    lba=$((0x$8$7$6$5$4$3$2$1))
    [ "$(verity_root "$iso_file" $((lba + HASHOFF / 512)))" = "$ROOTHASH" ]
}
ventoy_data_part() { # Ventoy's data partition, or nothing
    if [ -r "$VTOY_VAR" ]; then
        guid=$(hexof 21 16 "$VTOY_VAR")
        part=$(od -An -tu2 -j 45 -N 2 "$VTOY_VAR" | tr -d ' ')
        for b in /sys/block/*; do
            case "${b##*/}" in loop* | ram* | dm-* | sr* | zram*) continue ;; esac
            [ -b "/dev/${b##*/}" ] || continue
            if [ "$(hexof 384 16 "/dev/${b##*/}" 2>/dev/null)" = "$guid" ]; then
                lsblk -rno PATH "/dev/${b##*/}" | sed -n "$((part + 1))p"
                return 0
            fi
        done
        return 0
    fi
    efi=$(blkid -l -o device -t LABEL=VTOYEFI 2>/dev/null) || return 0
    disk=$(lsblk -no PKNAME "$efi" | head -n1)
    [ -n "$disk" ] || return 0
    lsblk -rno PATH "/dev/$disk" | sed -n 2p
    return 0
}
# Under BIOS: a partition labelled VTOYEFI (looked for once a second: it
# reads every device).
vtoy_looked=0
vtoy_bios() {
    vtoy_looked=$((vtoy_looked + 1))
    [ $((vtoy_looked % 10)) = 1 ] || return 1
    blkid -l -o device -t LABEL=VTOYEFI >/dev/null 2>&1
}
expose_ventoy() {
    case "$exposed" in *" ventoy-file "* | *" /dev/mapper/ventoy "*) return 0 ;; esac
    if [ -b /dev/mapper/ventoy ]; then
        expose /dev/mapper/ventoy ventoy
        return 0
    fi
    [ -r "$VTOY_VAR" ] || vtoy_bios || return 0
    data=$(ventoy_data_part)
    [ -n "$data" ] && [ -b "$data" ] || return 0
    mkdir -p "$VTOY_MNT"
    # The mount fails ("Can't open blockdev") while Ventoy's own hooks are
    # setting up /dev/mapper/ventoy, which holds the data partition (seen
    # in CI, GRUB2 mode): tried again on the next round of the search,
    # which then finds the map; said once.
    if ! mount -o ro "$data" "$VTOY_MNT" 2>"$VTOY_MNT.err"; then
        if [ -z "$vtoy_mount_said" ]; then
            say "Ventoy: cannot mount its data partition $data yet ($(tr '\n' ' ' <"$VTOY_MNT.err")); trying again"
            vtoy_mount_said=1
        fi
        return 0
    fi
    exposed="$exposed ventoy-file "
    iso=""
    if [ -r "$VTOY_VAR" ]; then
        p=$(dd if="$VTOY_VAR" bs=1 skip=49 count=384 status=none | tr -d '\000')
        if [ -n "$p" ] && [ -f "$VTOY_MNT$p" ] && iso_has_slot "$VTOY_MNT$p"; then iso=$VTOY_MNT$p; fi
    fi
    if [ -z "$iso" ]; then
        for f in $(find "$VTOY_MNT" -maxdepth 4 -type f \( -iname '*.iso' -o -iname '*.img' \) | tr ' ' '?'); do
            if iso_has_slot "$f"; then iso=$f; break; fi
        done
    fi
    if [ -z "$iso" ]; then
        say "Ventoy: no ISO file with this slot ($VERSION) on $data"
        return 0
    fi
    say "Ventoy: the ISO is ${iso#"$VTOY_MNT"} on $data"
    expose "$iso" ventoy
    return 0
}
found() { # the slot partition is there ($dev set; by root hash: $SLOT too)
    if [ -n "$PARTUUID" ]; then
        by_partuuid "$PARTUUID"
        return
    fi
    find_by_root || return 1
    PARTUUID=$(part_entry "${dev#/dev/}" PART_ENTRY_UUID)
}
# Looked for every 0.1 s: the slot usually shows up within a second or two
# of the USB or SATA disk, and each look only tests for a device node.
# Drivers for the hardware present (no udev here): those of every device's
# modalias, again whenever devices appeared (a USB disk shows up after its
# controller's driver is loaded, its SCSI disk after usb-storage). Most
# aliases have no driver in the initrd: `modprobe -q` passes over them, and
# its status only says that some had none, so it is not an error here.
aliases_seen=""
load_drivers() {
    a=$(cat /sys/bus/*/devices/*/modalias 2>/dev/null | sort -u)
    [ "$a" != "$aliases_seen" ] || return 0
    aliases_seen=$a
    # shellcheck disable=SC2086
    modprobe -q -a -b $a || return 0
}
load_drivers
i=0
until found; do
    expose_cds
    expose_ventoy
    i=$((i + 1))
    if [ $((i % 3)) = 0 ]; then load_drivers; fi
    if [ $i -gt 1200 ]; then
        if [ -n "$BY_ROOT" ]; then
            fail "no slot partition holds version $VERSION (verity root hash $ROOTHASH) after 120 s"
        fi
        fail "slot $SLOT (PARTUUID $PARTUUID) not found after 120 s"
    fi
    sleep 0.1
done
dev=$(readlink -f "$dev")
say "slot $SLOT is $dev (PARTUUID $PARTUUID)"
medium=$(parent_disk "${dev#/dev/}")
# What the slot was found on: disk, cd or ventoy (for boot.env).
MEDIUM=disk
case "$media_kinds" in *" $medium="*)
    MEDIUM=${media_kinds#*" $medium="}
    MEDIUM=${MEDIUM%% *}
    ;;
esac
say "slot $SLOT is on a $MEDIUM medium"

if [ "$TORAM" = 1 ]; then
    size=$(blockdev --getsize64 "$dev")
    avail_kib=$(grep '^MemAvailable:' /proc/meminfo | tr -s ' ' | cut -d' ' -f2)
    # Keep 512 MiB for the running system besides the copy.
    need_kib=$((size / 1024 + 524288))
    if [ "$avail_kib" -lt "$need_kib" ]; then
        say "toram: not enough memory (need $((need_kib / 1024)) MiB, have $((avail_kib / 1024)) MiB available); running from the medium"
        TORAM=0
    else
        say "toram: copying $((size / 1048576)) MiB of slot $SLOT to RAM"
        mkdir -p /run/anklume/ram
        mount -t tmpfs -o "size=$((size + 1048576)),mode=0700" anklume-ram /run/anklume/ram
        dd if="$dev" of=/run/anklume/ram/slot.img bs=4M status=none
        ramdev=$(losetup -r -f --show /run/anklume/ram/slot.img)
        say "toram: verifying the RAM copy"
        veritysetup verify "$ramdev" "$ramdev" "$ROOTHASH" --hash-offset="$HASHOFF" \
            || fail "toram: the RAM copy of slot $SLOT does not match its root hash"
        dev=$ramdev
        for l in $media_loops; do losetup -d "$l"; done
        media_loops=""
        say "toram: running from RAM; the boot medium can be removed"
    fi
fi

# DM_DISABLE_UDEV: libdevmapper makes /dev/mapper/anklume-root itself (no
# udev here) and does not read the key of a udev semaphore from
# /dev/urandom, a read that blocks until the kernel's random pool is
# ready: up to 1.5 s of an early boot on a machine without RDRAND (QEMU
# TCG). The booted system's udev sees dm-0 at its coldplug.
DM_DISABLE_UDEV=1 veritysetup open "$dev" anklume-root "$dev" "$ROOTHASH" --hash-offset="$HASHOFF" \
    || fail "dm-verity refused slot $SLOT ($dev): not booting an unverified root"
mkdir -p /run/anklume/ro /run/anklume/rw
mount -t squashfs -o ro /dev/mapper/anklume-root /run/anklume/ro \
    || fail "cannot mount the squashfs of slot $SLOT"
mount -t tmpfs -o "size=$OVERLAY_SIZE,mode=0755" anklume-rw /run/anklume/rw
mkdir -p /run/anklume/rw/upper /run/anklume/rw/work
mount -t overlay -o lowerdir=/run/anklume/ro,upperdir=/run/anklume/rw/upper,workdir=/run/anklume/rw/work \
    anklume-root /sysroot
say "root: overlay (tmpfs $OVERLAY_SIZE) over dm-verity slot $SLOT"

persist=""
if [ "$MEDIUM" = ventoy ]; then
    say "persist: none on a Ventoy stick (the ISO file has no persist partition): volatile, changes are lost at shutdown"
elif [ "$TORAM" != 1 ] && [ -n "$medium" ]; then
    for n in $(partitions); do
        [ "$(parent_disk "$n")" = "$medium" ] && [ "$(partname "$n")" = "$PERSIST_LABEL" ] || continue
        if [ "$(part_entry "$n" PART_ENTRY_TYPE)" = "$PERSIST_TYPE" ]; then
            persist=/dev/$n
            break
        fi
    done
fi
if [ -n "$persist" ]; then
    if [ -z "$(blkid -p -s TYPE -o value "$persist")" ]; then
        say "persist: formatting the new persist partition $persist (ext4)"
        mkfs.ext4 -q -F -L anklume-persist "$persist"
    fi
    mkdir -p /sysroot/var/lib/anklume/persist
    mount -t ext4 -o nodev,nosuid "$persist" /sysroot/var/lib/anklume/persist
    say "persist: $persist mounted on /var/lib/anklume/persist"
fi

# Facts for `anklume status` (kept across switch-root in /run).
cat > /run/anklume/boot.env <<EOT
slot=$SLOT
version=$VERSION
partuuid=$PARTUUID
roothash=$ROOTHASH
device=$dev
toram=$TORAM
persist=$persist
medium=$MEDIUM
EOT
