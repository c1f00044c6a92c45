#!/bin/bash
# Interop, QEMU as frontend (issue 3, acceptance 3): QEMU (TCG) with vhost-user-blk-pci on a
# moss-blk worker boots Debian's kernel; the guest checksums all of /dev/vda and writes a
# marker block. Passes when the guest's sha256 equals the host's, the image afterwards is the
# original plus exactly the marker, the worker outlives QEMU and takes a second frontend, and
# SIGTERM ends it with status 0 and its socket removed.
#
#   qemu-linux-blk-test.sh BUILD_DIR [moss-blk|qsd]
# qsd runs the same test on qemu-storage-daemon's export (a reference: tells a moss-blk bug
# from a test bug). Exit 77 (skipped) only without qemu-system-x86_64.
set -u
BUILD=$(readlink -f "${1:?usage: $0 BUILD_DIR [moss-blk|qsd]}")
KIND=${2:-moss-blk}
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"
interop_setup

DISK_MIB=32
MARKER_BLOCK=1000                      # 4 KiB block number: offset 4000 KiB
MODULES="virtio_pci virtio_blk"        # plus their dependencies, from modules.dep

# ---- the kernel: the newest /boot/vmlinuz-* whose modules are installed --------------
KVER=''
for f in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
  v=${f#/boot/vmlinuz-}
  [ -r "$f" ] && [ -f "/lib/modules/$v/modules.dep" ] && KVER=$v
done
[ -n "$KVER" ] || fail "no readable /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER

# ---- the initramfs: busybox-static, guest-init.sh, the virtio-blk modules ------------
BUSYBOX=$(readlink -f "$(command -v busybox || echo /bin/busybox)")
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
  fail "$BUSYBOX is missing or not statically linked (apt-get install busybox-static)"
stage=$WORK/initramfs
mkdir -p "$stage"/{bin,dev,proc,sys,modules}
cp "$BUSYBOX" "$stage/bin/busybox"
for a in sh mount cat insmod sleep sha256sum blockdev head dd sync poweroff echo; do
  ln -s busybox "$stage/bin/$a"
done
install -m 0755 "$HERE/guest-init.sh" "$stage/init"
# modules.dep lists each module's dependencies so that loading them from the last works.
paths=$(awk -v want="$MODULES" '
  function key(s) { sub(/.*\//, "", s); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", s); gsub(/-/, "_", s); return s }
  { i = index($0, ":"); p = substr($0, 1, i - 1); path[key(p)] = p; deps[p] = substr($0, i + 1) }
  END {
    n = split(want, w, " ")
    for (i = 1; i <= n; i++) {
      if (!(w[i] in path)) { print "missing " w[i] > "/dev/stderr"; exit 1 }
      p = path[w[i]]; nd = split(deps[p], d, " ")
      for (j = nd; j >= 1; j--) if (!(d[j] in seen)) { seen[d[j]] = 1; print d[j] }
      if (!(p in seen)) { seen[p] = 1; print p }
    }
  }' "$MODDIR/modules.dep") || fail "cannot resolve $MODULES in $MODDIR/modules.dep"
: >"$stage/modules.list"
for p in $paths; do
  base=$(basename "$p"); base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
  case $p in
    *.xz) xz -dc "$MODDIR/$p" ;;
    *.zst) zstd -qdc "$MODDIR/$p" ;;
    *.gz) gzip -dc "$MODDIR/$p" ;;
    *) cat "$MODDIR/$p" ;;
  esac >"$stage/modules/$base" || fail "cannot copy $MODDIR/$p"
  echo "$base" >>"$stage/modules.list"
done
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
  gzip -1 >"$WORK/initramfs.cpio.gz" || fail "cannot pack the initramfs"

# ---- the disk: random bytes, checksummed here ------------------------------------------
DISK=$WORK/disk.img
head -c $((DISK_MIB << 20)) /dev/urandom >"$DISK"
HOST_SUM=$(sha256sum "$DISK" | cut -d' ' -f1)
NONCE=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
# What the image must hold afterwards: the original with the guest's marker block.
EXPECTED=$WORK/expected.img
cp "$DISK" "$EXPECTED"
{ echo "moss-interop marker $NONCE"; head -c 4096 /dev/zero; } | head -c 4096 |
  dd of="$EXPECTED" bs=4096 seek=$MARKER_BLOCK count=1 conv=notrunc status=none
log "kernel $KVER, $DISK_MIB MiB disk sha256 $HOST_SUM"

# ---- boot ---------------------------------------------------------------------------
SOCK=$WORK/blk.sock
start_worker "$KIND" "$DISK" "$SOCK"
CONSOLE=$WORK/console.log
log "booting Linux under QEMU (TCG) with vhost-user-blk-pci on $KIND"
run_qemu 120 "$CONSOLE" \
  -kernel "$KERNEL" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 moss_interop.nonce=$NONCE moss_interop.block=$MARKER_BLOCK" \
  -chardev "socket,id=vu,path=$SOCK" -device vhost-user-blk-pci,chardev=vu,num-queues=1
[ $QEMU_STATUS -ne 124 ] || fail "the guest did not power off within 120 s"
[ $QEMU_STATUS -eq 0 ] || fail "QEMU exited with status $QEMU_STATUS"
log "QEMU exited"
grep -a '^moss-interop:' "$CONSOLE" | tr -d '\r'

line() { grep -a "^moss-interop: $1" "$CONSOLE" | tr -d '\r' | tail -n 1; }
[ -z "$(line FAIL)" ] || fail "the guest reports: $(line FAIL)"
[ "$(line size=)" = "moss-interop: size=$((DISK_MIB << 20))" ] ||
  fail "the guest saw the wrong disk size: '$(line size=)'"
GUEST_SUM=$(line sha256= | sed 's/^moss-interop: sha256=//')
[ -n "$GUEST_SUM" ] || fail "the guest printed no checksum"
[ "$GUEST_SUM" = "$HOST_SUM" ] || fail "the guest read different bytes: sha256 $GUEST_SUM in the guest, $HOST_SUM on the host"
[ -n "$(line 'marker written')" ] || fail "the guest did not finish writing its marker"
cmp -s "$DISK" "$EXPECTED" ||
  fail "the image is not the original plus the guest's marker at block $MARKER_BLOCK: $(cmp "$DISK" "$EXPECTED" 2>&1 | head -n 1)"
log "checksum matches; the marker landed at block $MARKER_BLOCK and nothing else changed"

check_worker_survived
check_worker_accepts_again
stop_worker
log "PASS"
