#!/bin/sh
# anklume initrd: make the verified OS slot the root file system.
#
# Kernel command line (written by grub.cfg from the slot manifest):
#   anklume.slot=a|b  anklume.partuuid=UUID  anklume.roothash=HEX
#   anklume.hashoffset=BYTES  anklume.version=V  [anklume.toram=1]
#   [anklume.overlay_size=SIZE]
#
# 1. find the slot partition by PARTUUID; on a CD (the kernel does not scan
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

SLOT=$(arg anklume.slot) || fail "anklume.slot= is missing from the kernel command line"
PARTUUID=$(arg anklume.partuuid) || fail "anklume.partuuid= is missing"
ROOTHASH=$(arg anklume.roothash) || fail "anklume.roothash= is missing"
HASHOFF=$(arg anklume.hashoffset) || fail "anklume.hashoffset= is missing"
TORAM=$(arg anklume.toram) || TORAM=0
OVERLAY_SIZE=$(arg anklume.overlay_size) || OVERLAY_SIZE=50%
VERSION=$(arg anklume.version) || VERSION=unknown
PERSIST_TYPE=0fc63daf-8483-4772-8e79-3d69d8477de4
PERSIST_LABEL=anklume-persist

say "slot $SLOT, PARTUUID $PARTUUID, root hash $ROOTHASH"

dev=/dev/disk/by-partuuid/$PARTUUID
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
hexof() { # $2 bytes at $1 of file $3, in hex
    od -An -tx1 -j "$1" -N "$2" "$3" | tr -d ' \n'
}
# The PARTUUID as its 16 bytes in a GPT entry (first three fields little-endian).
guid_bytes() {
    h=$(echo "$1" | tr -d '-' | tr 'A-F' 'a-f')
    for o in 6 4 2 0 10 8 14 12; do printf '%s' "$(echo "$h" | cut -c$((o + 1))-$((o + 2)))"; done
    echo "$h" | cut -c17-32
}
SLOT_GUID_HEX=$(guid_bytes "$PARTUUID")
iso_has_slot() { # the GPT entries of ISO file $1 name our slot
    od -An -tx1 -j 1024 -N 16384 "$1" 2>/dev/null | tr -d ' \n' | grep -q "$SLOT_GUID_HEX"
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
expose_ventoy() {
    case "$exposed" in *" ventoy-file "* | *" /dev/mapper/ventoy "*) return 0 ;; esac
    if [ -b /dev/mapper/ventoy ]; then
        expose /dev/mapper/ventoy ventoy
        return 0
    fi
    [ -r "$VTOY_VAR" ] || [ -e /dev/disk/by-label/VTOYEFI ] || return 0
    data=$(ventoy_data_part)
    [ -n "$data" ] && [ -b "$data" ] || return 0
    exposed="$exposed ventoy-file "
    mkdir -p "$VTOY_MNT"
    if ! mount -o ro "$data" "$VTOY_MNT"; then
        say "Ventoy: cannot mount its data partition $data"
        return 0
    fi
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
        say "Ventoy: no ISO file with slot $SLOT's PARTUUID on $data"
        return 0
    fi
    say "Ventoy: the ISO is ${iso#"$VTOY_MNT"} on $data"
    expose "$iso" ventoy
    return 0
}
i=0
while [ ! -b "$dev" ]; do
    expose_cds
    expose_ventoy
    i=$((i + 1))
    [ $i -le 240 ] || fail "slot $SLOT (PARTUUID $PARTUUID) not found after 120 s"
    sleep 0.5
done
dev=$(readlink -f "$dev")
say "slot $SLOT is $dev"
medium=$(lsblk -no PKNAME "$dev" | head -n1)
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

veritysetup open "$dev" anklume-root "$dev" "$ROOTHASH" --hash-offset="$HASHOFF" \
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
    persist=$(lsblk -rno PATH,PARTTYPE,PARTLABEL "/dev/$medium" \
        | while read -r p t l; do
            [ "$t" = "$PERSIST_TYPE" ] && [ "$l" = "$PERSIST_LABEL" ] && echo "$p"
        done | head -n1)
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
