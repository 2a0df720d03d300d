#!/bin/sh
# Reports the boot's facts to the VM test harness over the second serial
# port (ttyS1), one `ANKLUME key=value` line per fact, then `ANKLUME end`.
# Only active when QEMU passed `-fw_cfg name=opt/org.anklume/test,string=ACTIONS`;
# ACTIONS is a comma-separated list:
#   persist-write=TOKEN  write TOKEN to the persist partition
#   pool-write=TOKEN     write TOKEN to the data pool (anklume/test-token)
#   box-write=TOKEN      write TOKEN into the bootstrap container (home-box)
#   update=FILE          anklume update --from FILE --yes, FILE on the volume
#                        labelled ANKBUNDLES (mounted read-only); its output
#                        line by line as update_step=, then update_rc=
#   wait-eject           after the first report, wait until the CD is
#                        ejected, read /usr/sbin and /usr/lib/systemd and run
#                        programs not run yet, report again
set -u
modprobe -q qemu_fw_cfg
cfg=/sys/firmware/qemu_fw_cfg/by_name/opt/org.anklume/test/raw
i=0
while [ ! -r "$cfg" ] && [ $i -lt 20 ]; do sleep 0.2; i=$((i + 1)); done
[ -r "$cfg" ] || exit 0
actions=$(cat "$cfg")
out=/dev/ttyS1
r() { printf 'ANKLUME %s\n' "$*" > "$out"; }

r hello
# Which slot and version booted, first: a boot that reboots by itself
# (update-broken) may not get further.
while IFS= read -r l; do r "boot_$l"; done < /run/anklume/boot.env
state=$(systemctl is-system-running --wait)
r state="$state"
# Where the boot's time went, by systemd's own account (firmware and loader
# only on UEFI).
r boot_time="$(systemd-analyze time 2>/dev/null | head -n1)"
r boot_chain="$(systemd-analyze critical-chain --no-pager 2>/dev/null | tail -n +4 | head -n12 | tr -s ' ' | sed 's/^ //' | paste -sd ';')"
# Units only: a device unit's time is how long udev took to announce it,
# not work in the boot's path.
r boot_blame="$(systemd-analyze blame 2>/dev/null | grep -v '\.device$' | head -n15 | tr -s ' ' | sed 's/^ //' | paste -sd ';')"
# What the console prompt waited for: the first-boot wizard's prompt on a
# machine with no pool, else the serial console's login prompt.
r boot_chain_console="$(systemd-analyze critical-chain --no-pager anklume-firstboot-console.service serial-getty@ttyS0.service 2>/dev/null | grep -v '^The time\|^$' | head -n24 | tr -s ' ' | sed 's/^ //' | paste -sd ';')"
# When the first-boot unit began, waited for udev, probed and ended (its
# time is in the console prompt's chain).
r boot_firstboot="$(journalctl -b -o short-monotonic --no-pager -u anklume-firstboot.service 2>/dev/null | cut -c1-120 | head -n8 | paste -sd ';')"
# When udev had run its rules for each block device (USEC_INITIALIZED in
# its database, µs since boot): what that unit's start waited for.
r boot_udev_block="$(for d in /sys/class/block/*; do printf '%s@%s ' "${d##*/}" "$(udevadm info -q property -p "$d" 2>/dev/null | sed -n 's/^USEC_INITIALIZED=//p')"; done)"
# CPU time per unit, most first (ms): under QEMU TCG the boot is CPU-bound,
# so what runs beside the console prompt's chain slows it. Units that ended
# say it in the journal (the initrd's too); those still running from their
# cgroup.
r boot_cpu="$( {
    journalctl -b --no-pager -o cat _PID=1 2>/dev/null \
        | sed -n 's/^\([^ :]*\): Consumed \([0-9.]*\)\(ms\|s\) CPU time.*/\1 \2 \3/p' \
        | awk '{ printf "%s %d\n", $1, ($3 == "s" ? $2 * 1000 : $2) }'
    systemctl list-units --type=service --state=running --plain --no-legend 2>/dev/null | cut -d' ' -f1 \
        | while read -r u; do
            n=$(systemctl show -p CPUUsageNSec --value "$u" 2>/dev/null)
            case "$n" in '' | *[!0-9]*) ;; *) printf '%s %d\n' "$u" $((n / 1000000)) ;; esac
        done
} | sort -k2,2nr | head -n25 | tr '\n' ';')"
r failed_units="$(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')"
r root_fstype="$(findmnt -no FSTYPE /)"
r lower_source="$(findmnt -no SOURCE /run/anklume/ro)"
r lower_fstype="$(findmnt -no FSTYPE /run/anklume/ro)"
vs=$(veritysetup status anklume-root)
r verity_status="$(echo "$vs" | grep -E '^ +status:' | tr -s ' ' | cut -d' ' -f3-)"
r verity_roothash="$(echo "$vs" | grep -E '^ +root hash:' | tr -s ' ' | cut -d' ' -f4)"
r cmdline="$(cat /proc/cmdline)"
r kernel="$(uname -r)"
# UEFI Secure Boot as the firmware reports it (4 attribute bytes, then 0/1).
sbvar=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
if [ ! -d /sys/firmware/efi ]; then r secure_boot=bios
elif [ "$(od -An -tu1 -j4 -N1 "$sbvar" 2>/dev/null | tr -d ' ')" = 1 ]; then r secure_boot=on
else r secure_boot=off
fi
# The agent's own view (anklume status), one line per fact.
# Reported at boot, and again after the wizard (wait-pool): Incus then
# runs on the pool.
status_report() {
    anklume status | while IFS= read -r l; do
        k=$(echo "${l%%:*}" | tr ' ' '_'); v=$(echo "${l#*:}" | sed 's/^ *//')
        r "status_$k=$v"
    done
}
status_report
if findmnt -n /var/lib/anklume/persist > /dev/null; then
    r persist_mounted=1
    r persist_token="$(cat /var/lib/anklume/persist/test-token 2>/dev/null)"
else
    r persist_mounted=0
fi
# What a unit's own processes wrote to the journal this boot.
said() { journalctl -b "_SYSTEMD_UNIT=$1.service" -o cat --no-pager; }
# The data pool: created by anklume-firstboot.service (seed volume) or the
# wizard on a console, unlocked and mounted by anklume-pool.service,
# Incus's state on its subvolume. Reported at boot, and again after the
# wizard (wait-pool).
pool_report() {
    r firstboot="$(systemctl show -p Result --value anklume-firstboot.service)"
    r firstboot_said="$(said anklume-firstboot | grep -v '^ *$' | tail -n1)"
    r pool_unit="$(systemctl is-active anklume-pool.service)"
    r pool_source="$(findmnt -no SOURCE /var/lib/anklume/pool)"
    # A systemd-tpm2 token in the pool's LUKS2 header (the btrfs inside has the
    # same label: luksDump tells them apart).
    tok=0
    for d in $(blkid -t LABEL=anklume-pool -o device 2>/dev/null); do
        cryptsetup luksDump "$d" 2>/dev/null | grep -q systemd-tpm2 && tok=1
    done
    r tpm2_token=$tok
    # PCR 7 (the Secure Boot state the pool's TPM2 token is sealed to) and
    # its events, to compare two boots when the TPM stops unlocking.
    pcr7=/sys/class/tpm/tpm0/pcr-sha256/7
    if [ -r "$pcr7" ]; then
        r pcr7="$(cat "$pcr7")"
        n=0
        /usr/lib/systemd/systemd-pcrlock log --no-pager 2>&1 | awk '$1 == 7' > /run/anklume-pcr7.log
        while IFS= read -r l; do
            n=$((n + 1))
            r "pcr7_event_$n=$l"
        done < /run/anklume-pcr7.log
    fi
    # The recovery key goes to the consoles only, never to the journal.
    r journal_recovery_key="$(journalctl -b -o cat --no-pager | grep -c 'Recovery key (shown once')"
    # What unlocked the pool this boot (the record `anklume status` shows).
    r pool_unlocked_by="$(sed -n 's/.*"by":"\([a-z0-9-]*\)".*/\1/p' /run/anklume/pool-unlock.json 2>/dev/null)"
    # The pool pointer on the persist partition, and how this boot found
    # the pool (anklume pool unlock's own words).
    r pool_pointer="$(cat /var/lib/anklume/persist/pool.json 2>/dev/null)"
    r pool_found_by="$(said anklume-pool | grep -o 'named by the pool pointer\|found by its label' | tail -n1)"
    r pool_fstype="$(findmnt -no FSTYPE /var/lib/anklume/pool)"
    r incus_source="$(findmnt -no SOURCE /var/lib/incus)"
    r pool_token="$(cat /var/lib/anklume/pool/anklume/test-token 2>/dev/null)"
    # The health check's verdict (anklume-health.service, after the agent).
    r health="$(systemctl show -p Result --value anklume-health.service)"
    # The bootstrap infra.yml's container, made by the agent.
    r box_state="$(incus list --project home --format csv --columns s home-box 2>/dev/null)"
    r box_token="$(incus exec home-box --project home -- cat /root/token 2>/dev/null)"
    r agent_said="$(said anklume-agent | grep -E 'anklume agent:|FAILED|[Ee]rror' | tail -n6 | paste -sd ';')"
    r health_said="$(said anklume-health | grep FAILED | paste -sd ';')"
    # What --mark-good did with the stick's boot state.
    r health_marked="$(said anklume-health | grep -E '^slot [ab] |boot state not written' | tail -n1)"
}
pool_report
set -f
for a in $(echo "$actions" | tr ',' ' '); do
    case "$a" in
    persist-write=*)
        echo "${a#*=}" > /var/lib/anklume/persist/test-token.tmp \
            && mv /var/lib/anklume/persist/test-token.tmp /var/lib/anklume/persist/test-token \
            && sync && r persist_written="${a#*=}"
        ;;
    box-write=*)
        incus exec home-box --project home -- sh -c "echo ${a#*=} > /root/token.tmp && mv /root/token.tmp /root/token && sync" \
            && r box_written="${a#*=}"
        ;;
    update=*)
        # Each line of the updater's output as it comes (update_step=, the
        # harness may cut the power in the middle), then its exit status.
        b=/run/anklume-test/bundles
        mkdir -p "$b"
        findmnt -n "$b" > /dev/null || mount -o ro LABEL=ANKBUNDLES "$b" \
            || r update_mount="failed: no volume labelled ANKBUNDLES"
        r update_status_before="$(anklume update --status 2>&1 | paste -sd ';')"
        : > /run/anklume-test/update.out
        (anklume update --from "$b/${a#*=}" --yes --timings 2>&1; echo "anklume-test-rc=$?") \
            | while IFS= read -r l; do
                case "$l" in
                anklume-test-rc=*) r "update_rc=${l#anklume-test-rc=}" ;;
                *) r "update_step=$l"; echo "$l" >> /run/anklume-test/update.out ;;
                esac
            done
        r update_said="$(grep -v '^ *$' /run/anklume-test/update.out | tail -n 12 | paste -sd ';')"
        r update_status="$(anklume update --status 2>&1 | paste -sd ';')"
        ;;
    pool-write=*)
        echo "${a#*=}" > /var/lib/anklume/pool/anklume/test-token.tmp \
            && mv /var/lib/anklume/pool/anklume/test-token.tmp /var/lib/anklume/pool/anklume/test-token \
            && sync && r pool_written="${a#*=}"
        ;;
    esac
done
# The first-boot wizard offered on the consoles (no pool, no seed).
r console_wizard="$(systemctl is-active anklume-firstboot-console.service)"
r serial_getty="$(systemctl is-active serial-getty@ttyS0.service)"
r end
case ",$actions," in *,wait-pool,*)
    # The harness drives the wizard on the serial console after `end`:
    # wait for the pool it makes, the agent's first apply and the health
    # check that follows, then report the pool again.
    i=0
    until findmnt -n /var/lib/anklume/pool > /dev/null \
        && [ "$(systemctl show -p ExecMainStartTimestampMonotonic --value anklume-health.service)" != 0 ] \
        && ! systemctl -q is-active anklume-health.service \
        && [ "$(systemctl show -p ActiveState --value anklume-health.service)" != activating ]; do
        sleep 1
        i=$((i + 1))
        [ $i -lt 1800 ] || break
    done
    status_report
    pool_report
    r console_wizard="$(systemctl is-active anklume-firstboot-console.service)"
    r console_done="$(cat /run/anklume/firstboot-console/done 2>/dev/null)"
    r console_said="$(said anklume-firstboot-console | grep -v '^ *$' | tail -n4 | paste -sd ';')"
    # The login prompt back on the serial console.
    i=0
    until systemctl -q is-active serial-getty@ttyS0.service || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
    r serial_getty="$(systemctl is-active serial-getty@ttyS0.service)"
    r end2
    ;;
esac
case ",$actions," in *,wait-eject,*)
    # The host ejects the medium after `end`. Nothing polls the drive for
    # media changes, so /sys/block/sr0/size would not change: opening and
    # reading the drive is what notices the empty tray.
    while dd if=/dev/sr0 of=/dev/null bs=2048 count=1 status=none 2>/dev/null; do sleep 0.5; done
    r ejected=1
    # Read what this boot has not read yet and start programs it has not
    # started: with the medium gone, only the RAM copy can serve them.
    if find /usr/sbin /usr/lib/systemd -xdev -type f -exec cat {} + > /dev/null \
        && nft --version > /dev/null && btrfs --version > /dev/null \
        && ! dd if=/dev/sr0 of=/dev/null bs=2048 count=1 status=none 2>/dev/null; then
        r after_eject_read=ok
    else
        r after_eject_read=failed
    fi
    r end2
    ;;
esac
