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
#    read-only partition-scanning loop device;
# 2. toram: check free memory, copy the slot into a tmpfs, verify the copy
#    against the root hash, release the medium;
# 3. open dm-verity with the root hash from the command line — no fallback
#    to an unverified root: any failure stops the boot;
# 4. mount the squashfs read-only under a sized tmpfs overlay on /sysroot;
# 5. mount the persist partition of the same disk when there is one.
set -eu

say() { echo "anklume-root: $*"; }
fail() { echo "anklume-root: FATAL: $*" >&2; exit 1; }
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
cd_loops=""
expose_cds() {
    for cd in /dev/sr*; do
        [ -b "$cd" ] || continue
        [ -n "$(losetup -j "$cd")" ] && continue
        if loopdev=$(losetup -r -P -f --show "$cd" 2>/dev/null); then
            say "exposing the partitions of $cd through $loopdev"
            cd_loops="$cd_loops $loopdev"
        fi
    done
}
i=0
while [ ! -b "$dev" ]; do
    expose_cds
    i=$((i + 1))
    [ $i -le 240 ] || fail "slot $SLOT (PARTUUID $PARTUUID) not found after 120 s"
    sleep 0.5
done
dev=$(readlink -f "$dev")
say "slot $SLOT is $dev"
medium=$(lsblk -no PKNAME "$dev" | head -n1)

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
        for l in $cd_loops; do losetup -d "$l"; done
        cd_loops=""
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
if [ "$TORAM" != 1 ] && [ -n "$medium" ]; then
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
EOT
