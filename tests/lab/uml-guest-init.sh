#!/bin/bash
# PID 1 of a user-mode-linux guest started by tests/lab/uml.py.
#
# The root file system is the host's / through hostfs, read-only.  hostfs writes
# would reach the real host files, so everything runs chrooted in an overlay
# whose upper layer is a tmpfs: nothing the guest writes survives or leaks.
#
# Protocol with the host (kernel command line -> environment of this script):
#   NETLB_XFER  host path of the exchange directory, mounted read-write here with
#               hostfs.  It holds, from the host: script.sh (the user script),
#               env (shell "export K=V" lines, including NETLB_CWD); and, from
#               the guest: started (guest uptime when the script starts),
#               output (the script's combined stdout/stderr), rc (exit status).
# Messages of this init go to the console, which the host keeps for diagnostics.
#
# PID 1 must never exit (the kernel would panic): every path ends in poweroff().

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
R=/run/netlb/root   # overlay root the script is chrooted into
X=/run/netlb/xfer   # exchange directory (hostfs, read-write)

say() { echo "netlb-init: $*"; }

poweroff() {
    sync
    umount "$X" 2>/dev/null
    echo o >/proc/sysrq-trigger   # immediate power off; UML then exits
    sleep 60                      # not reached
}

die() {
    say "FATAL: $*"
    [ -d "$X" ] && mountpoint -q "$X" && echo "netlb-init: FATAL: $*" >>"$X/init-error"
    poweroff
}

mount -t proc proc /proc || { echo "netlb-init: cannot mount /proc"; sleep 1; }
# Scratch space outside the overlay: the overlay's upper/work dirs, the exchange
# mount and a module root for modprobe.
mount -t tmpfs -o mode=755 tmpfs /run || die "tmpfs on /run"
mkdir -p /run/netlb/upper /run/netlb/work "$R" "$X" /run/netlb/mods/lib/modules
[ -n "${NETLB_XFER:-}" ] || die "NETLB_XFER not set on the kernel command line"
# "sync": hostfs goes through the guest page cache; without it the host would see
# the output only at writeback time, which breaks live streaming.
mount -t hostfs -o sync,"$NETLB_XFER" none "$X" || die "hostfs mount of $NETLB_XFER"

# modprobe looks in <root>/lib/modules/<version>; Debian ships the UML modules
# (with modules.dep) in /usr/lib/uml/modules/<version>.
ver=$(uname -r)
moddir=/usr/lib/uml/modules/$ver
[ -d "$moddir" ] || die "no modules in $moddir"
ln -s "$moddir" "/run/netlb/mods/lib/modules/$ver"
# Kernel-initiated module loading (request_module) runs kernel.modprobe relative
# to the original root, not our chroot: point it at a wrapper that knows -d.
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/netlb/mods "$@"\n' >/run/netlb/modprobe
chmod 755 /run/netlb/modprobe
echo /run/netlb/modprobe >/proc/sys/kernel/modprobe

modprobe -d /run/netlb/mods overlay || die "modprobe overlay"
mount -t overlay overlay \
    -o lowerdir=/,upperdir=/run/netlb/upper,workdir=/run/netlb/work "$R" || die "overlay mount"

# Kernel file systems inside the new root.  hostfs shows the *host's* /dev,
# /tmp, /run, ... contents, so every one of them is covered by a guest mount.
mount -t proc proc "$R/proc" || die "proc"
mount -t sysfs sysfs "$R/sys" || die "sysfs"
mount -t devtmpfs devtmpfs "$R/dev" || die "devtmpfs"
mkdir -p "$R/dev/shm" "$R/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" || die "/dev/shm"   # Ansible multiprocessing
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts" || die "devpts"
mount -t tmpfs -o mode=755 tmpfs "$R/run" || die "tmpfs /run"
# A clean /tmp, unless the working tree lives there (a CI clone in /tmp):
# then the overlay's /tmp keeps it visible, writes still go to the tmpfs upper.
guest_cwd=$( . "$X/env" 2>/dev/null; echo "$NETLB_CWD")
case "$guest_cwd" in
    /tmp|/tmp/*) ;;
    *) mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" || die "tmpfs /tmp" ;;
esac
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup" || die "cgroup2"
mount -t bpf bpf "$R/sys/fs/bpf" || die "bpffs"
ln -sfn /proc/self/fd "$R/dev/fd" 2>/dev/null

# Same modules visible to a plain "modprobe" inside the chroot (overlay: the
# symlink lands in the tmpfs upper layer, not on the host).
mkdir -p "$R/usr/lib/modules"
ln -sfn "$moddir" "$R/usr/lib/modules/$ver"
# vrf pulls ipv6 in through modules.dep.
chroot "$R" modprobe vrf || die "modprobe vrf"
chroot "$R" ip link set lo up || die "lo up"
hostname netlb-uml 2>/dev/null

# Run the user script: clean environment, then the caller's env file (which sets
# NETLB_CWD), cd, bash without -e (the script decides).  stdin is /dev/null.
cp "$X/env" "$R/run/netlb-env" && cp "$X/script.sh" "$R/run/netlb-script.sh" || die "copy script"
cut -d' ' -f1 /proc/uptime >"$X/started"
chroot "$R" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LANG=C.UTF-8 NETLB_IN_UML=1 \
    /bin/bash -c '. /run/netlb-env && cd "$NETLB_CWD" && exec /bin/bash /run/netlb-script.sh' \
    </dev/null >"$X/output" 2>&1
echo $? >"$X/rc"
poweroff
