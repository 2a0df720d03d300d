# Sourced by the update benches: fake_machine WORK SLOT_A SLOT_B_BYTES makes
# the machine an update runs on, described for `anklume-update --system`:
# an ESP folder WORK/esp whose boot state has slot A running 0.1.0 and good
# (slot A's folder with its slot.cfg), slot A's image SLOT_A, a target
# WORK/slot-b of SLOT_B_BYTES, and WORK/system.json.
fake_machine() {
    local work=$1 slot_a=$2 slot_b_bytes=$3
    mkdir -p "$work/esp/EFI/anklume/slot-a"
    printf '# GRUB Environment Block\nanklume_good_a=1\nanklume_good_b=0\nanklume_primary=a\nanklume_tries_a=none\nanklume_tries_b=none\n' > "$work/env"
    python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); open(sys.argv[2],"wb").write(d+b"#"*(1024-len(d)))' "$work/env" "$work/esp/EFI/anklume/grubenv"
    echo '# slot a' > "$work/esp/EFI/anklume/slot-a/slot.cfg"
    truncate -s "$slot_b_bytes" "$work/slot-b"
    cat > "$work/system.json" <<JSON
{"esp": "$work/esp", "running": "a", "running_version": "0.1.0", "slot_a": "$slot_a", "slot_b": "$work/slot-b", "partuuid_a": "aa", "partuuid_b": "bb"}
JSON
}
