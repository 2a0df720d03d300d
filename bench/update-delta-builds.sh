#!/usr/bin/env bash
# Delta between two real builds that differ by one Debian package: the
# rootfs of the last `make iso` (build/mkosi-out/rootfs, whose sealed slot
# is build/slot-a.img) and a copy of it with PACKAGE installed by dpkg
# (its files, its dpkg database entries, triggers off), assembled by
# anklume-build as the next version and bundled. The bundle is installed
# with block reuse over a slot holding the first build, reading as an HTTP
# update does (--reuse --stream), the first build's kernel and initrd in
# the running slot's folder of the ESP. Prints the bytes read from the
# bundle beside the bundle's size.
# Usage: bench/update-delta-builds.sh [PACKAGE]   (default: tree; fetched
# with apt-get download, so the build machine's release of it)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/fake-machine.sh
package=${1:-tree}
rootfs=build/mkosi-out/rootfs
slot_a=build/slot-a.img
for f in "$rootfs" "$slot_a" target/release/anklume-build target/release/anklume-update; do
    [ -e "$f" ] || { echo "bench/update-delta-builds.sh: $f is missing: run make iso first" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/anklume-bench-delta-builds.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$package" > /dev/null)
deb=$(ls "$work"/*.deb)
cp -a "$rootfs" "$work/rootfs"
dpkg --root="$work/rootfs" --force-script-chrootless --no-triggers -i "$deb" > /dev/null 2>&1 \
    || dpkg --root="$work/rootfs" --unpack "$deb" > /dev/null
epoch=$(git log -1 --format=%ct)
./target/release/anklume-build iso --rootfs "$work/rootfs" --work-dir "$work/build" \
    --out-dir "$work/out" --source-date-epoch "$epoch" --version 0.1.0.9 --format iso --quiet
./target/release/anklume-update --new-key "$work/bench" > /dev/null
./target/release/anklume-build bundle --work-dir "$work/build" --rootfs "$work/rootfs" \
    --update-key "$work/bench.key" --out "$work/next.bundle" 2> /dev/null
mkdir -p "$work/keys"
mv "$work/bench.pub" "$work/keys/"
bundle_size=$(stat -c %s "$work/next.bundle")
fake_machine "$work" "$PWD/$slot_a" $((bundle_size + 64 * 1024 * 1024))
# The running slot's boot files, as the first build put them on the ESP.
kver=$(cat "$rootfs/usr/lib/anklume/kernel-version")
cp "$rootfs/boot/vmlinuz-$kver" "$work/esp/EFI/anklume/slot-a/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$work/esp/EFI/anklume/slot-a/initrd.img"
s=$(date +%s.%N)
out=$(./target/release/anklume-update --reuse --stream --from "$work/next.bundle" --yes \
    --system "$work/system.json" --keys "$work/keys")
e=$(date +%s.%N)
from=$(sed -n 's/.*image bytes: \([0-9]*\) from the bundle.*/\1/p' <<< "$out")
reused=$(sed -n 's/.* \([0-9]*\) reused.*/\1/p' <<< "$out")
total=$(sed -n 's/.* \([0-9]*\) bytes read from the bundle in all.*/\1/p' <<< "$out")
mib() { echo "scale=1; $1 / 1048576" | bc; }
printf 'delta between two builds: %s and the same + %s (%s)\n' "$rootfs" "$package" "$(basename "$deb")"
printf '  image bytes read from the bundle: %d (%s MiB)\n' "$from" "$(mib "$from")"
printf '  image bytes reused from slot A:   %d (%s MiB)\n' "$reused" "$(mib "$reused")"
printf '  bundle bytes read in all:         %d (%s MiB; + header, manifest, block index, boot files)\n' "$total" "$(mib "$total")"
printf '  bundle size:                      %d (%s MiB): %s%% read\n' "$bundle_size" "$(mib "$bundle_size")" "$(echo "scale=1; 100 * $total / $bundle_size" | bc)"
printf '  scan + write: %.1f s\n' "$(echo "$e - $s" | bc)"
