#!/bin/sh
# /init of the vsock interop test's Linux guest (busybox sh): loads the virtio-vsock modules,
# runs /vsock-guest (vsock-guest.c) and powers off. Every result is one console line starting
# "moss-interop:"; the host side (qemu-linux-vsock-test.sh) reads them.
# Kernel command line: moss_interop.port=P (vsock port to listen on), moss_interop.host_port=H.
PATH=/bin
export PATH
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1

say() { echo "moss-interop: $*"; }
finish() {
  say "$*"
  poweroff -f
  sleep 10
}

for m in $(cat /modules.list); do
  insmod "/modules/$m" || finish "FAIL insmod $m"
done
i=0
until [ -c /dev/vsock ]; do
  i=$((i + 1))
  [ $i -le 100 ] || finish "FAIL no /dev/vsock after 10 s"
  sleep 0.1
done
for arg in $(cat /proc/cmdline); do
  case $arg in
    moss_interop.port=*) port=${arg#*=} ;;
    moss_interop.host_port=*) host_port=${arg#*=} ;;
  esac
done
/vsock-guest "${port:?}" "${host_port:?}" || finish "FAIL vsock-guest exited with status $?"
finish "powering off"
