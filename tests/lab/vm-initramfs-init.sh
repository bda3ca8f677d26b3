#!/bin/sh
# /init of the VM lab's initramfs (busybox), built by tests/lab/vmkernel.py.
#
# The guest's root is the host's / (9p share "hostroot", read-only) under an overlay
# whose writable layer is a tmpfs, or the virtio disk /dev/vdb (ext4) when the guest
# must keep its writes across a reboot.  Then the second stage (NETLB_STAGE2, a path in
# that root) takes over as PID 1.
#
# Kernel command line -> environment: NETLB_STAGE2, NETLB_UPPER (tmpfs | disk).
# Failures are printed on the console and power the guest off: the host reports them.

PATH=/bin
export PATH
fail() {
    echo "netlb-initramfs: FATAL: $*"
    echo o >/proc/sysrq-trigger
    sleep 60
}

busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
busybox mount -t devtmpfs devtmpfs /dev
while read -r m; do
    busybox insmod "/modules/$m" || fail "insmod $m"
done </modules/order

# msize 512 KiB: fewer round trips per read; cache=loose: the host's root does not
# change under a test, so the guest may cache pages and lookups (imports get fast).
busybox mkdir -p /mnt/lower /mnt/scratch
busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /mnt/lower \
    || fail "9p mount of the host root"
if [ "${NETLB_UPPER:-tmpfs}" = disk ]; then
    # Wait for the disk's probe (asynchronous).
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        [ -b /dev/vdb ] && break
        busybox sleep 0.1
    done
    busybox mount -t ext4 /dev/vdb /mnt/scratch || fail "mount /dev/vdb"
else
    busybox mount -t tmpfs -o mode=755 tmpfs /mnt/scratch || fail "tmpfs"
fi
busybox mkdir -p /mnt/scratch/upper /mnt/scratch/work
busybox mount -t overlay overlay \
    -o lowerdir=/mnt/lower,upperdir=/mnt/scratch/upper,workdir=/mnt/scratch/work /newroot \
    || fail "overlay mount"
# /run is a tmpfs in every booted system; the writable layer stays reachable below it.
busybox mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs /run"
busybox mkdir -p /newroot/run/netlb/scratch /newroot/run/netlb/xfer
busybox mount --move /mnt/scratch /newroot/run/netlb/scratch || fail "move scratch"
busybox mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=524288 xfer /newroot/run/netlb/xfer \
    || fail "9p mount of the exchange directory"
busybox umount /proc /sys
busybox mount --move /dev /newroot/dev || busybox umount /dev
[ -n "$NETLB_STAGE2" ] || fail "NETLB_STAGE2 not set"
exec busybox switch_root /newroot /bin/bash "$NETLB_STAGE2"
