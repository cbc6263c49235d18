#!/bin/busybox sh
# PID 1 of the protection-key test machine (faasfuse-testkit's `pku`
# module). It mounts the host's file tree read-only over 9p (tag
# `hostroot`, uncached; the host's /usr, which tests do not change, cached
# from tag `hostusr`), gives it a fresh /tmp, /dev/shm, /proc, /sys and
# /dev, mounts the machine's work directory writable at its host path (tag
# `work`), and then serves the spool in that directory: each `N.sh` the
# host writes (and announces by writing `N` to the second serial port) is
# run inside the chroot by the work directory's copy of this static
# busybox, its stdout, stderr and exit status written back as `N.out`,
# `N.err` and `N.status`. `/vm.conf` sets WORK (the work directory's host
# path) and MSIZE (the 9p message size).

/bin/busybox mkdir -p /bin /proc /sys /dev /root
/bin/busybox --install -s /bin
export PATH=/bin
. /vm.conf

fail() {
	echo "faasfuse-vm: error: $*"
	poweroff -f
	sleep 60
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sys /sys || fail "mount /sys"
mount -t devtmpfs dev /dev || fail "mount /dev"

for m in $(cat /modules/order); do
	insmod "/modules/$m" || fail "insmod $m"
done

R=/root
opts="trans=virtio,version=9p2000.L,msize=$MSIZE"
mount -t 9p -o "$opts,ro" hostroot $R || fail "mount the host tree (9p tag hostroot)"
mount -t 9p -o "$opts,ro,cache=loose" hostusr $R/usr || fail "mount the host's /usr (9p tag hostusr)"
mount -t 9p -o "$opts,ro,cache=loose" build "$R$BUILD" || fail "mount the build directory (9p tag build) at $BUILD"
mount -t tmpfs -o mode=1777 tmp $R/tmp || fail "mount $R/tmp"
mount -t proc proc $R/proc || fail "mount $R/proc"
mount -t sysfs sys $R/sys || fail "mount $R/sys"
mount -t devtmpfs dev $R/dev || fail "mount $R/dev"
mkdir -p $R/dev/shm $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm || fail "mount $R/dev/shm"
mount -t devpts devpts $R/dev/pts || fail "mount $R/dev/pts"
mount -t 9p -o "$opts,rw" work "$R$WORK" || fail "mount the work directory (9p tag work) at $WORK"

SP="$R$WORK/spool"
grep -o 'flags.*' /proc/cpuinfo | head -1 > "$SP/cpuflags"
# The host announces each request by its number on the second serial port.
stty -F /dev/ttyS1 raw -echo || fail "stty /dev/ttyS1"
exec 3< /dev/ttyS1
echo ready > "$SP/ready.tmp" && mv "$SP/ready.tmp" "$SP/ready"
echo "faasfuse-vm: serving $WORK/spool"

while read -r n <&3; do
	req="$SP/$n.sh"
	[ -e "$req" ] || continue
	read -r _ _ limit < "$req"
	mv "$req" "$SP/$n.run"
	env -i /bin/timeout -s KILL "$limit" /bin/chroot $R "$WORK/busybox" sh "$WORK/spool/$n.run" \
		< /dev/null > "$SP/$n.out" 2> "$SP/$n.err"
	echo $? > "$SP/$n.st" && mv "$SP/$n.st" "$SP/$n.status"
done
fail "the control line /dev/ttyS1 closed"
