#!/bin/bash
# The freestanding virtio-blk test guest (tests/guests/virtio_blk.c) under QEMU (TCG): its
# virtio-pci modern driver against a real transport, reading and writing a disk served by
#   moss-blk  (default) vhost-user-blk-pci on a moss-blk worker: interop, QEMU as frontend
#   qsd       vhost-user-blk-pci on qemu-storage-daemon's export (reference backend)
#   builtin   QEMU's own virtio-blk-pci (validates the guest driver alone)
# Passes when the guest exits with status 0 (QEMU's isa-debug-exit then exits 1) and the
# image afterwards is the original with pattern B in sectors 8..15; with a worker, also when
# it outlives QEMU and SIGTERM ends it cleanly.
#
#   qemu-freestanding-blk-test.sh BUILD_DIR [moss-blk|qsd|builtin]
# Exit 77 (skipped) only without qemu-system-x86_64.
set -u
BUILD=$(readlink -f "${1:?usage: $0 BUILD_DIR [moss-blk|qsd|builtin]}")
KIND=${2:-moss-blk}
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"
interop_setup

GUEST=$BUILD/tests/guests/virtio_blk.bzImage
[ -f "$GUEST" ] || fail "$GUEST was not built (ninja -C $BUILD moss-test-guests)"

# The disk contract of virtio_blk.c: sectors 0..7 hold pattern A (the 32-bit LE word at byte
# offset o is o * 0x9e3779b1 + 0x6d6f7373); the guest writes pattern B (salt 0x77726974) to
# sectors 8..15, which start as 0xee bytes here. 1 MiB in all.
pattern() { # FIRST_OFFSET SALT: 4 KiB of the pattern
  perl -e 'my ($first, $salt) = @ARGV;
           print pack("V*", map { (($first + 4 * $_) * 0x9e3779b1 + $salt) & 0xffffffff } 0 .. 1023)' "$1" "$2"
}
DISK=$WORK/disk.img EXPECTED=$WORK/expected.img
{ pattern 0 $((0x6d6f7373)); head -c 4096 /dev/zero | tr '\0' '\356'; head -c $((1024 * 1024 - 8192)) /dev/zero; } >"$DISK"
{ pattern 0 $((0x6d6f7373)); pattern 4096 $((0x77726974)); head -c $((1024 * 1024 - 8192)) /dev/zero; } >"$EXPECTED"

case $KIND in
  builtin)
    DEVICE=(-drive "file=$DISK,format=raw,if=none,id=d0" -device virtio-blk-pci,disable-legacy=on,drive=d0) ;;
  moss-blk|qsd)
    start_worker "$KIND" "$DISK" "$WORK/blk.sock"
    DEVICE=(-chardev "socket,id=vu,path=$WORK/blk.sock" -device vhost-user-blk-pci,chardev=vu,num-queues=1,disable-legacy=on) ;;
  *) fail "unknown device kind $KIND (moss-blk, qsd or builtin)" ;;
esac

# run_guest N: one QEMU run of the guest; checks its status, its last line and the image.
run_guest() {
  local console=$WORK/console-$1.log
  log "run $1: the virtio-blk test guest under QEMU (TCG) on $KIND"
  # isa-debug-exit at moss's exit port: the guest's status s ends QEMU with (s << 1) | 1.
  run_qemu 30 "$console" -kernel "$GUEST" -device isa-debug-exit,iobase=0x5f0,iosize=4 "${DEVICE[@]}"
  tr -d '\r' <"$console"
  [ $QEMU_STATUS -ne 124 ] || fail "the guest did not finish within 30 s"
  [ $QEMU_STATUS -eq 1 ] || {
    [ $((QEMU_STATUS & 1)) -eq 1 ] && fail "the guest failed with status $((QEMU_STATUS >> 1)) (see virtio_blk.c's enum step)"
    fail "QEMU exited with status $QEMU_STATUS without the guest reporting a status (a triple fault ends it with 0)"
  }
  [ "$(tr -d '\r' <"$console" | tail -n 1)" = 'virtio-blk-guest: ok' ] ||
    fail "the guest exited 0 without 'virtio-blk-guest: ok' as its last line"
  cmp -s "$DISK" "$EXPECTED" ||
    fail "the image is not the original with pattern B in sectors 8..15: $(cmp "$DISK" "$EXPECTED" 2>&1 | head -n 1)"
  log "run $1: the guest read pattern A and its write of pattern B landed in sectors 8..15"
}

run_guest 1
if [ "$KIND" != builtin ]; then
  # The worker outlives its frontend and serves the next one: a second QEMU, same I/O.
  check_worker_survived
  run_guest 2
  check_worker_survived
  stop_worker
fi
log "PASS"
