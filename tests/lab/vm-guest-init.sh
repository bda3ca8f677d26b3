#!/bin/bash
# PID 1 of a VM lab guest (tests/lab/vm.py), after the initramfs switched to the root:
# the host's / read-only under an overlay (writes go to /run/netlb/scratch/upper).
#
# Protocol with the host, through the exchange directory /run/netlb/xfer (9p, read-write):
#   from the host: script.sh (the user script), env (shell "export K=V" lines,
#                  including NETLB_CWD, NETLB_NICS "MAC=NAME ...", NETLB_SHARES "PATH ...",
#                  NETLB_PYTHON_TREES "PATH ...", NETLB_PYTHON_SITE, NETLB_MODULES_DIR,
#                  NETLB_INIT);
#   from the guest: started (uptime when the script starts), output (its combined
#                  stdout/stderr), rc (its exit status), init-error.
# NETLB_INIT=systemd hands PID 1 to systemd instead, which runs the script as the unit
# netlb-lab-script.service (tests that need a live systemd, or a real reboot);
# NETLB_INIT=systemd-service runs it as a long-lived service instead (a fleet guest).
#
# PID 1 must never exit (the kernel would panic): every path ends in poweroff().

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
X=/run/netlb/xfer

say() { echo "netlb-init: $*"; }
poweroff() {
    sync
    umount "$X" 2>/dev/null
    echo o >/proc/sysrq-trigger   # immediate power off; QEMU then exits
    sleep 60
}
die() {
    say "FATAL: $*"
    echo "netlb-init: FATAL: $*" >>"$X/init-error"
    poweroff
}

mount -t proc proc /proc || { say "cannot mount /proc"; sleep 1; }
mount -t sysfs sysfs /sys || die "sysfs"
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev || die "devtmpfs"
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || die "/dev/shm"   # Ansible multiprocessing
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || die "devpts"
ln -sfn /proc/self/fd /dev/fd
. "$X/env" || die "no environment file in the exchange directory"
# The host's /tmp is not ours, unless the working tree lives there (a CI clone in
# /tmp): then the overlay keeps it visible, and writes still go to the overlay.
case "$NETLB_CWD" in
    /tmp|/tmp/*) ;;
    *) mount -t tmpfs -o mode=1777 tmpfs /tmp || die "tmpfs /tmp" ;;
esac
mount -t cgroup2 cgroup2 /sys/fs/cgroup || die "cgroup2"
mount -t bpf bpf /sys/fs/bpf || die "bpffs"
# Host directories shared read-write, each at its own path (tags share0, share1, ...).
i=0
for path in $NETLB_SHARES; do
    mkdir -p "$path" && mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=524288 "share$i" "$path" \
        || die "9p share $path"
    i=$((i + 1))
done

# The Python trees from the image on vda (tests/lab/vmkernel.py), each over its own path.
mkdir -p /run/netlb/python
mount -t ext4 -o ro,noload /dev/vda /run/netlb/python || die "mount the Python image"
i=0
for path in $NETLB_PYTHON_TREES; do
    mount --bind "/run/netlb/python/$i" "$path" || die "bind $path"
    i=$((i + 1))
done
# Python compiles what it imports from a zip on every run - every Ansible module, sent
# as a zip - with no bytecode cache: under TCG about half of each task's time. The lab's
# Python gets a cache, in this guest only (tests/lab/guest_zipimport_cache.py).
if [ -d "$NETLB_PYTHON_SITE" ]; then
    hook=/run/netlb/python-hook
    mkdir -p "$hook"
    cp "${NETLB_STAGE2%/*}/guest_zipimport_cache.py" "$hook/_netlb_lab_zipimport_cache.py" || die "zipimport cache"
    echo "import _netlb_lab_zipimport_cache" >"$hook/_netlb_lab_zipimport_cache.pth"
    mount -t overlay overlay -o "lowerdir=$hook:$NETLB_PYTHON_SITE" "$NETLB_PYTHON_SITE" || die "overlay $NETLB_PYTHON_SITE"
fi

# The guest kernel's modules (a directory under the repository's .build) for modprobe.
ver=$(uname -r)
mkdir -p /usr/lib/modules
ln -sfn "$NETLB_MODULES_DIR" "/usr/lib/modules/$ver"
hostname netlb-vm
modprobe -a virtio_net virtio_rng 2>>"$X/init-error" || die "modprobe virtio_net virtio_rng"
# module_blacklist=vrf on the command line: a kernel without VRF, for the tests of that case.
case " $(cat /proc/cmdline) " in
    *" module_blacklist=vrf "*) ;;
    *) modprobe vrf 2>>"$X/init-error" || die "modprobe vrf" ;;
esac
ip link set lo up || die "lo up"
for pair in $NETLB_NICS; do   # MAC=NAME: name the NICs as the caller asked
    dev=$(grep -il "^${pair%%=*}\$" /sys/class/net/*/address | head -n1 | cut -d/ -f5)
    [ -n "$dev" ] || die "no NIC with MAC ${pair%%=*}"
    ip link set "$dev" name "${pair#*=}" || die "rename $dev"
done

if [ "$NETLB_INIT" = systemd ] || [ "$NETLB_INIT" = systemd-service ]; then
    mkdir -p /run/systemd/system /etc/systemd/system
    # The host's own enabled units (podman, sshd, postgresql, timers, gettys) are not the
    # guest's: masked for this boot. Units the guest enabled itself live in the upper layer
    # and stay. There is no udev: nothing may wait for a device (serial getty).
    for link in /etc/systemd/system/*.wants/*; do
        [ -L "$link" ] || continue
        [ -e "/run/netlb/scratch/upper$link" ] && continue
        ln -sfn /dev/null "/run/systemd/system/${link##*/}"
    done
    for unit in serial-getty@ttyS0.service getty@tty1.service systemd-udevd.service; do
        ln -sfn /dev/null "/run/systemd/system/$unit"
    done
    # systemd-tmpfiles empties /tmp at boot ("D /tmp" in tmp.conf); in the overlay that
    # would hide a working tree under /tmp (a CI clone) from the guest. Create, never clean.
    mkdir -p /run/tmpfiles.d
    echo "d /tmp 1777 root root -" >/run/tmpfiles.d/tmp.conf
    if [ "$NETLB_INIT" = systemd-service ]; then
        # A long-lived script (a fleet guest: uplink lab, sshd) that stands for what a real
        # host has before its network is configured - the NICs: ordered before
        # network.target, ready when it says so (sd_notify READY=1), started on every boot.
        cat >/run/systemd/system/netlb-lab-script.service <<'EOF'
[Unit]
Description=netlb lab: the guest's uplinks and sshd (the script, kept running)
Before=network.target
Wants=network.target
[Service]
Type=notify
NotifyAccess=all
TimeoutStartSec=300
Environment=NETLB_IN_VM=1 HOME=/root TERM=dumb LANG=C.UTF-8
ExecStart=/bin/bash -c 'cut -d" " -f1 /proc/uptime >/run/netlb/xfer/started; . /run/netlb/xfer/env && cd "$NETLB_CWD" && exec /bin/bash /run/netlb/xfer/script.sh </dev/null >>/run/netlb/xfer/output 2>&1'
EOF
    else
    cat >/run/systemd/system/netlb-lab-script.service <<'EOF'
[Unit]
Description=netlb lab: the test script, then power off
After=multi-user.target
[Service]
Type=oneshot
Environment=NETLB_IN_VM=1 HOME=/root TERM=dumb LANG=C.UTF-8
ExecStart=/bin/bash -c 'cut -d" " -f1 /proc/uptime >/run/netlb/xfer/started; . /run/netlb/xfer/env && cd "$NETLB_CWD" && /bin/bash /run/netlb/xfer/script.sh </dev/null >>/run/netlb/xfer/output 2>&1; echo $? >/run/netlb/xfer/rc; sync'
ExecStartPost=/bin/sh -c 'test -e /run/netlb/xfer/keep-running || systemctl --no-block poweroff -ff'
EOF
    fi
    mkdir -p /run/systemd/system/multi-user.target.wants
    ln -sf ../netlb-lab-script.service /run/systemd/system/multi-user.target.wants/
    exec /lib/systemd/systemd --log-target=console --show-status=no
fi


cut -d' ' -f1 /proc/uptime >"$X/started"
(
    cd "$NETLB_CWD" || exit 1
    exec /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM=dumb LANG=C.UTF-8 NETLB_IN_VM=1 \
        /bin/bash -c '. /run/netlb/xfer/env && exec /bin/bash /run/netlb/xfer/script.sh'
) </dev/null >"$X/output" 2>&1
echo $? >"$X/rc"
poweroff
