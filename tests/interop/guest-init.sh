#!/bin/sh
# /init of the interop test's Linux guest (busybox sh). Loads the virtio-blk modules, prints
# the checksum of all of /dev/vda, writes a marker block, and powers off. Every result is one
# console line starting "moss-interop:"; the host side (qemu-linux-blk-test.sh) reads them.
# Kernel command line: moss_interop.nonce=N (marker text), moss_interop.block=B (4 KiB block
# number of the marker).
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# No /dev/console node in the archive (building it needs root): open it now.
exec </dev/console >/dev/console 2>&1

say() { echo "moss-interop: $*"; }
finish() {
  say "$*"
  sync
  poweroff -f
  sleep 10
}

for m in $(cat /modules.list); do
  insmod "/modules/$m" || finish "FAIL insmod $m"
done

i=0
until [ -b /dev/vda ]; do
  i=$((i + 1))
  [ $i -le 100 ] || finish "FAIL no /dev/vda after 10 s"
  sleep 0.1
done

for arg in $(cat /proc/cmdline); do
  case $arg in
    moss_interop.nonce=*) nonce=${arg#*=} ;;
    moss_interop.block=*) block=${arg#*=} ;;
  esac
done
[ -n "${nonce:-}" ] && [ -n "${block:-}" ] || finish "FAIL no moss_interop.nonce/block on the command line"

say "size=$(blockdev --getsize64 /dev/vda)"
sum=$(sha256sum /dev/vda) || finish "FAIL reading /dev/vda"
say "sha256=${sum%% *}"

# The marker: one line of text, zero-padded to 4 KiB, written through to the device.
{ echo "moss-interop marker $nonce"; head -c 4096 /dev/zero; } | head -c 4096 >/marker
dd if=/marker of=/dev/vda bs=4096 seek="$block" count=1 conv=notrunc,fsync 2>/dev/null ||
  finish "FAIL writing the marker"
blockdev --flushbufs /dev/vda
finish "marker written"
