#!/bin/sh
# anklume-root.sh failed: the slot could not be found, verified or mounted.
# When GRUB counted this try (it adds anklume.onfail=reboot), reboot after a
# pause so that the next try or the other slot comes; otherwise (a slot
# marked good, a CD) stop here with the error on the console. Run by /init,
# which is PID 1 and must not end.
set -u
onfail=stop
slot=?
version=?
for w in $(cat /proc/cmdline); do
    case "$w" in
    anklume.onfail=*) onfail=${w#*=} ;;
    anklume.slot=*) slot=${w#*=} ;;
    anklume.version=*) version=${w#*=} ;;
    esac
done
# A UKI's command line names no slot: say the version it boots.
[ "$slot" != "?" ] || slot="($version)"
if [ "$onfail" = reboot ]; then
    echo "anklume-root: slot $slot did not boot; this try was counted, rebooting in 10 s (the boot loader tries again or falls back to the other slot)"
    sleep 10
    # Nothing is mounted read-write but RAM: an immediate reboot.
    echo b > /proc/sysrq-trigger
else
    echo "anklume-root: slot $slot did not boot and no other slot is armed; the boot stops here (see the messages above)"
fi
while :; do sleep 3600; done
