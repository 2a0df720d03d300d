#!/usr/bin/env bash
# Delta: how much of a bundle an update reads when the running slot holds
# the previous version. Two squashfs images made as the builder makes a
# slot (zstd level 3, same SOURCE_DATE_EPOCH) from a tree and from the same
# tree plus one "package" (a directory tree added in the middle) and one
# changed file; the second is bundled and installed with block reuse over a
# slot holding the first, reading as an HTTP update does (--stream: each
# fetched block once). Prints the image bytes read from the bundle, the
# bytes reused and the bundle's size.
# Usage: bench/update-delta.sh [TREE...]   (default: /usr/lib/x86_64-linux-gnu /usr/share/doc)
# PACKAGE=dir (default /usr/lib/python3/dist-packages/pygments) is the package added.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/fake-machine.sh
[ $# -gt 0 ] || set -- /usr/lib/x86_64-linux-gnu /usr/share/doc
package=${PACKAGE:-/usr/lib/python3/dist-packages/pygments}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -q -p anklume-update
cargo build --release --locked -q -p anklume-update-lib --examples
bin=$CARGO_TARGET_DIR/release/anklume-update
mk=$CARGO_TARGET_DIR/release/examples/make_bundle
work=$(mktemp -d /var/tmp/anklume-bench-delta.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/v1" "$work/keys"
for t in "$@"; do cp -a "$t" "$work/v1/"; done
cp -a "$work/v1" "$work/v2"
# The package lands in the middle of the first tree's sorted names.
first=$(basename "$1")
mid=$(find "$work/v2/$first" -mindepth 1 -maxdepth 1 | sort | awk '{a[NR]=$0} END {print a[int(NR/2)]}')
cp -a "$package" "$(dirname "$mid")/$(basename "$mid")-newpkg"
# And one file of the tree changes (a package upgrade).
changed=$(find "$work/v2/$first" -type f -links 1 -size +100k | sort | sed -n 1p)
head -c 4096 /dev/urandom | dd of="$changed" bs=4096 seek=1 conv=notrunc status=none
opts=(-noappend -xattrs -no-progress -quiet -comp zstd -Xcompression-level 3)
SOURCE_DATE_EPOCH=1700000000 mksquashfs "$work/v1" "$work/v1.sqfs" "${opts[@]}"
SOURCE_DATE_EPOCH=1700000000 mksquashfs "$work/v2" "$work/v2.sqfs" "${opts[@]}"
rm -rf "$work/v1" "$work/v2"
"$bin" --new-key "$work/keys/bench" > /dev/null
echo kernel > "$work/vmlinuz"; echo initrd > "$work/initrd.img"
"$mk" "$work/v2.sqfs" 0.2.0 0.1.0 "$work/vmlinuz" "$work/initrd.img" "$work/keys/bench.key" "$work/v2.bundle" > /dev/null
rm "$work/keys/bench.key"
bundle_size=$(stat -c %s "$work/v2.bundle")
fake_machine "$work" "$work/v1.sqfs" $((bundle_size + 64 * 1024 * 1024))
s=$(date +%s.%N)
out=$("$bin" --reuse --stream --from "$work/v2.bundle" --yes --system "$work/system.json" --keys "$work/keys")
e=$(date +%s.%N)
from=$(sed -n 's/.*image bytes: \([0-9]*\) from the bundle.*/\1/p' <<< "$out")
reused=$(sed -n 's/.* \([0-9]*\) reused.*/\1/p' <<< "$out")
total=$(sed -n 's/.* \([0-9]*\) bytes read from the bundle in all.*/\1/p' <<< "$out")
printf 'delta: slots of %d / %d MiB (v1 / v2: + %s, one file changed)\n' \
  $(( $(stat -c %s "$work/v1.sqfs") >> 20 )) $(( $(stat -c %s "$work/v2.sqfs") >> 20 )) "$(du -sh "$package" | cut -f1)"
printf '  image bytes read from the bundle: %d (%.1f MiB)\n' "$from" "$(echo "$from / 1048576" | bc -l)"
printf '  image bytes reused from slot A:   %d (%.1f MiB)\n' "$reused" "$(echo "$reused / 1048576" | bc -l)"
printf '  bundle size:                      %d (%.1f MiB): %.1f%% of it fetched\n' "$bundle_size" "$(echo "$bundle_size / 1048576" | bc -l)" "$(echo "100 * $from / $bundle_size" | bc -l)"
printf '  bundle bytes read in all:         %d (%.1f MiB: + header, manifest, block index, boot files)\n' "$total" "$(echo "$total / 1048576" | bc -l)"
printf '  update with reuse (scan + write): %.1f s\n' "$(echo "$e - $s" | bc)"
