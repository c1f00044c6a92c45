#!/bin/sh
# /init (PID 1) of the nested KVM test host; runs under busybox sh.
# Packed by build-outer-initramfs.sh, booted by run-in-nested-host.sh (see there for the
# host side of the protocol):
#   9p tag hostroot  the host's / (read-only)        -> /host
#   9p tag ctl       per-run control dir (rw)        -> /host/tmp/.moss-nested
#                      workdir: host path of the work dir (one line)
#                      expose:  host dirs under /tmp to show at the same path (one a line)
#                      cmd.sh:  the command to run, as a sh script
#                      exit:    written here: the command's exit status
#   9p tag work      per-run work dir (rw)           -> /host/<same path as on the host>
#   virtio ports moss.stdout / moss.stderr: the command's stdout / stderr
# The console (ttyS0) only carries kernel messages and our own diagnostics; on the way
# out it gets the line @@NESTED-EXIT=N@@ too.
PATH=/bin
export PATH
/bin/busybox --install -s /bin

mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Without /dev/console in the archive the kernel gave us no stdio: open it now.
[ -e /proc/self/fd/1 ] || exec </dev/console >/dev/console 2>&1

die() {
    echo "nested-init: $*"
    poweroff -f
    sleep 10
}

# ---- modules ---------------------------------------------------------------------
while read -r need file args; do
    # shellcheck disable=SC2086  # module parameters, split on purpose
    insmod "/modules/$file" $args 2>/dev/null ||
        [ "$need" = optional ] || die "cannot insmod $file"
done </modules.list
[ -c /dev/kvm ] || die "no /dev/kvm after loading kvm-amd (no SVM in the CPU model?)"
# One idle VM held for the whole run, so that the tests' VMs flip no static keys (and patch
# no kernel text) in this kernel: see kvm-anchor.c.
/bin/kvm-anchor || die "kvm-anchor could not hold its VM"

# ---- command output channels: virtio-serial ports, found by name -----------------
port() {
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat "$d/name" 2>/dev/null)" = "$1" ] && [ -c "/dev/${d##*/}" ] &&
            echo "/dev/${d##*/}" && return 0
    done
    return 1
}
i=0
until OUT=$(port moss.stdout) && ERR=$(port moss.stderr); do
    i=$((i + 1))
    [ $i -le 400 ] || die "virtio ports moss.stdout/moss.stderr did not appear"
    sleep 0.05
done

# ---- file systems ------------------------------------------------------------------
P9=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm

mount -t 9p -o "$P9,ro,cache=loose" hostroot /host || die "cannot mount the host root"
mount -o rbind /dev /host/dev
mount -t proc proc /host/proc
mount -o rbind /sys /host/sys
# /tmp is a fresh tmpfs, but the host's /tmp stays reachable at /hosttmp so that trees the
# caller lives in there (a CI clone in /tmp/x, say) can be shown again below.
mkdir -p /hosttmp
mount --bind /host/tmp /hosttmp
mount -t tmpfs -o mode=1777 tmpfs /host/tmp

CTL=/host/tmp/.moss-nested
mkdir -p $CTL
mount -t 9p -o "$P9,cache=none" ctl $CTL || die "cannot mount the control share"
# A heartbeat for the host side, which takes a control share that stops changing for a
# frozen test host (QEMU TCG emulating SVM has been seen to freeze as a whole, rarely).
( while :; do date +%s >$CTL/heartbeat; sleep 5; done ) </dev/null >/dev/null 2>&1 &
# The kernel's text symbols, once, so that the host side can name a frozen host's
# instruction pointers (the kernel runs with nokaslr; Debian's System.map is a stub).
KALLSYMS_PID=''
if [ -f $CTL/want-kallsyms ]; then
    { grep ' [tTwW] ' /proc/kallsyms >$CTL/kallsyms.tmp && mv $CTL/kallsyms.tmp $CTL/kallsyms; } &
    KALLSYMS_PID=$!
fi
# ctl/expose: host directories under /tmp to show at the same path (read-only), one a line.
if [ -f $CTL/expose ]; then
    while read -r dir; do
        case $dir in /tmp/?*) ;; *) continue ;; esac
        [ -d "/hosttmp${dir#/tmp}" ] || continue
        mkdir -p "/host$dir" && mount --bind "/hosttmp${dir#/tmp}" "/host$dir" ||
            die "cannot show $dir inside"
    done <$CTL/expose
fi
read -r WORKDIR <$CTL/workdir || die "no workdir in the control share"
# cache=mmap: direct reads/writes, but shared writable mmap works too.
mkdir -p "/host$WORKDIR" 2>/dev/null
mount -t 9p -o "$P9,cache=mmap" work "/host$WORKDIR" || die "cannot mount the work dir at $WORKDIR"

# ---- run ---------------------------------------------------------------------------
# The command's root is the host root moved onto / in a mount namespace of its own (what
# switch_root does), not a chroot: the kernel refuses user namespaces to a chrooted process,
# and moss's sandbox makes one for every child. Our own view (/host/...) stays as it is.
unshare -m sh -c 'cd /host && mount --move . / && exec chroot . "$@"' sh /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    MOSS_NESTED_WORKDIR="$WORKDIR" \
    /bin/sh /tmp/.moss-nested/cmd.sh </dev/null >"$OUT" 2>"$ERR"
rc=$?

# Stop whatever the command left behind, so that the shares unmount cleanly (and
# everything written to the work dir has reached the host) before we report.
[ -z "$KALLSYMS_PID" ] || wait "$KALLSYMS_PID"
kill -KILL -1 2>/dev/null
sleep 0.1
for i in 1 2 3 4 5 6 7 8 9 10; do umount "/host$WORKDIR" 2>/dev/null && break; sleep 0.1; done
echo "$rc" >$CTL/exit
echo "@@NESTED-EXIT=$rc@@"
umount $CTL 2>/dev/null
sync
poweroff -f
sleep 10
