#!/usr/bin/env bash
# Verity throughput: `anklume-build verity format` vs `veritysetup format`
# on the same 1 GiB file (page cache warm), same salt and UUID; checks that
# both produce the same root hash, prints median wall times and the ratio.
# Usage: bench/verity.sh [SIZE_MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}; runs=${2:-5}
cargo build --release --locked -q -p anklume-build
bin=target/release/anklume-build
work=$(mktemp -d /var/tmp/anklume-bench-verity.XXXXXX)
trap 'rm -rf "$work"' EXIT
head -c $((size_mib * 1024 * 1024)) /dev/urandom > "$work/data"
cat "$work/data" > /dev/null
salt=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
uuid=6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_one() { # prints seconds
  local s e; s=$(date +%s.%N); "$@" > "$work/out"; e=$(date +%s.%N)
  echo "$e - $s" | bc
}
for tool in ours veritysetup; do
  : > "$work/times.$tool"
  for _ in $(seq "$runs"); do
    rm -f "$work/hash.$tool"
    if [ $tool = ours ]; then
      time_one "$bin" verity format "$work/data" "$work/hash.$tool" --salt "$salt" --uuid $uuid >> "$work/times.$tool"
    else
      time_one veritysetup format "$work/data" "$work/hash.$tool" --salt "$salt" --uuid $uuid >> "$work/times.$tool"
    fi
    grep 'Root hash' "$work/out" | awk '{print $3}' > "$work/root.$tool"
  done
done
cmp "$work/hash.ours" "$work/hash.veritysetup" || { echo "hash files differ!" >&2; exit 1; }
o=$(median < "$work/times.ours"); v=$(median < "$work/times.veritysetup")
printf 'verity format, %d MiB, %d runs, %d cores (median wall):\n' "$size_mib" "$runs" "$(nproc)"
printf '  anklume-build verity format  %.3f s  (%.0f MiB/s)\n' "$o" "$(echo "$size_mib / $o" | bc -l)"
printf '  veritysetup format           %.3f s  (%.0f MiB/s)\n' "$v" "$(echo "$size_mib / $v" | bc -l)"
printf '  speed-up: %.2fx (hash files identical)\n' "$(echo "$v / $o" | bc -l)"
