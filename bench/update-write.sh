#!/usr/bin/env bash
# Writing + verifying a slot: `anklume-update --from BUNDLE` (checks the
# bundle's blocks against the signed index, writes the slot while
# recomputing its verity tree, checks the signed root, writes the boot
# files and arms the boot state) versus `dd` of the same image followed by
# `veritysetup verify`, on the same files (page cache warm, both fdatasync
# the target). Full write, no block reuse. Prints median wall times side by
# side and the ratio.
# Usage: bench/update-write.sh [SIZE_MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/fake-machine.sh
size_mib=${1:-1024}; runs=${2:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -q -p anklume-update
cargo build --release --locked -q -p anklume-update-lib --examples
bin=$CARGO_TARGET_DIR/release/anklume-update
mk=$CARGO_TARGET_DIR/release/examples/make_bundle
work=$(mktemp -d /var/tmp/anklume-bench-update.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/keys"
"$bin" --new-key "$work/keys/bench" > /dev/null
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/data"
head -c ${KERNEL_BYTES:-12000000} /dev/urandom > "$work/vmlinuz"
head -c ${INITRD_BYTES:-60000000} /dev/urandom > "$work/initrd.img"
read -r _ root hash_offset < <("$mk" "$work/data" 0.2.0 0.1.0 "$work/vmlinuz" "$work/initrd.img" "$work/keys/bench.key" "$work/bundle")
rm "$work/keys/bench.key" "$work/data"
# The image's place in the bundle, from its manifest (after the 4 KiB header).
manifest_len=$(od -An -tu4 -j12 -N4 "$work/bundle" | tr -d ' ')
read -r img_off img_size < <(dd if="$work/bundle" bs=4096 skip=1 count=$(( (manifest_len + 4095) / 4096 )) status=none | head -c "$manifest_len" \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["image"]["offset"], m["image"]["size"])')
# The machine: slot A running 0.1.0 (good), slot B the target.
: > "$work/slot-a"
fake_machine "$work" "$work/slot-a" $((img_size + 64 * 1024 * 1024))
truncate -s $((img_size + 64 * 1024 * 1024)) "$work/dd-target"
cat "$work/bundle" > /dev/null
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# run NAME CMD...: append "wall cpu" (cpu = user + sys) to $work/t.NAME
run() {
  local name=$1; shift
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" > "$work/out"
  awk '{printf "%s %.3f\n", $1, $2 + $3}' "$work/time" >> "$work/t.$name"
}
for n in ours stream dd vs; do : > "$work/t.$n"; done
for _ in $(seq "$runs"); do
  run ours "$bin" --from "$work/bundle" --yes --no-reuse --system "$work/system.json" --keys "$work/keys"
  grep -q "root hash $root" "$work/out"
  run stream "$bin" --stream --from "$work/bundle" --yes --no-reuse --system "$work/system.json" --keys "$work/keys"
  grep -q "root hash $root" "$work/out"
  run dd dd if="$work/bundle" of="$work/dd-target" bs=4M iflag=skip_bytes,count_bytes skip="$img_off" count="$img_size" conv=notrunc,fdatasync status=none
  run vs veritysetup verify "$work/dd-target" "$work/dd-target" "$root" --hash-offset "$hash_offset"
done
cmp -n "$img_size" "$work/slot-b" "$work/dd-target" || { echo "targets differ!" >&2; exit 1; }
col() { awk -v c="$2" '{print $c}' "$work/t.$1" | median; }
base_w=$(echo "$(col dd 1) + $(col vs 1)" | bc); base_c=$(echo "$(col dd 2) + $(col vs 2)" | bc)
printf 'write + verify a %d MiB slot (+ %d MB boot files for ours), %d runs, %d cores, load %s (medians, page cache warm):\n' \
  "$size_mib" $(( (${KERNEL_BYTES:-12000000} + ${INITRD_BYTES:-60000000}) / 1000000 )) "$runs" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  %-44s %8s %8s %7s %7s\n' "" "wall s" "cpu s" "wall x" "cpu x"
line() { printf '  %-44s %8.3f %8.3f %7.2f %7.2f\n' "$1" "$2" "$3" "$(echo "$2 / $base_w" | bc -l)" "$(echo "$3 / $base_c" | bc -l)"; }
line "dd + veritysetup verify (baseline)" "$base_w" "$base_c"
line "  dd" "$(col dd 1)" "$(col dd 2)"
line "  veritysetup verify" "$(col vs 1)" "$(col vs 2)"
line "anklume-update (checks all, then writes)" "$(col ours 1)" "$(col ours 2)"
line "anklume-update --stream (one read)" "$(col stream 1)" "$(col stream 2)"
echo "  (target: <= 0.60 of the baseline; the written slots are identical)"
