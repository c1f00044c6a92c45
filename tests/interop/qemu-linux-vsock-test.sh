#!/bin/bash
# Interop, QEMU as frontend of moss-vsock (issue 5, acceptance 6): QEMU (TCG) with
# vhost-user-vsock-pci on a moss-vsock worker boots Debian's kernel; a program in the guest
# (vsock-guest.c) listens on vsock port 52. A host program (vsock-host.c) connects through the
# worker's Unix socket with "CONNECT 52", gets "OK <port>", and 1 MiB it sends comes back
# byte-identical; then the guest connects to host port 5000 and reaches the host program's
# socket "<uds>_5000". Passes when both directions work, the guest saw the CID the worker
# serves, the worker outlives QEMU and takes a second frontend, and SIGTERM ends it with
# status 0 and both its sockets gone.
#
#   qemu-linux-vsock-test.sh BUILD_DIR
# Exit 77 (skipped) without qemu-system-x86_64, or if its QEMU has no vhost-user-vsock-pci.
set -u
BUILD=$(readlink -f "${1:?usage: $0 BUILD_DIR}")
HERE=$(dirname "$(readlink -f "$0")")
. "$HERE/lib.sh"
interop_setup
"$QEMU" -device help 2>/dev/null | grep -q '"vhost-user-vsock-pci"' ||
  skip "$QEMU has no vhost-user-vsock-pci device"
[ -x "$BUILD/moss-vsock" ] || fail "$BUILD/moss-vsock was not built (ninja -C $BUILD moss-vsock)"
CC=${CC:-cc}
command -v "$CC" >/dev/null || fail "no C compiler ($CC) to build the guest and host programs"

GUEST_CID=42
PORT=52
HOST_PORT=5000
BYTES=$((1 << 20))
MODULES="virtio_pci vmw_vsock_virtio_transport"  # plus their dependencies, from modules.dep

# ---- the kernel: the newest /boot/vmlinuz-* whose modules are installed --------------
KVER=''
for f in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
  v=${f#/boot/vmlinuz-}
  [ -r "$f" ] && [ -f "/lib/modules/$v/modules.dep" ] && KVER=$v
done
[ -n "$KVER" ] || fail "no readable /boot/vmlinuz-* with /lib/modules/*/modules.dep (apt-get install linux-image-amd64)"
KERNEL=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER

# ---- the programs -------------------------------------------------------------------
"$CC" -static -O2 -o "$WORK/vsock-guest" "$HERE/vsock-guest.c" >"$WORK/cc.log" 2>&1 ||
  fail "cannot build a static vsock-guest (libc6-dev with libc.a is needed): see cc.log"
"$CC" -O2 -o "$WORK/vsock-host" "$HERE/vsock-host.c" >>"$WORK/cc.log" 2>&1 || fail "cannot build vsock-host: see cc.log"

# ---- the initramfs: busybox-static, the init script, vsock-guest, the vsock modules ---
BUSYBOX=$(readlink -f "$(command -v busybox || echo /bin/busybox)")
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
  fail "$BUSYBOX is missing or not statically linked (apt-get install busybox-static)"
stage=$WORK/initramfs
mkdir -p "$stage"/{bin,dev,proc,sys,modules}
cp "$BUSYBOX" "$stage/bin/busybox"
for a in sh mount cat insmod sleep poweroff echo; do ln -s busybox "$stage/bin/$a"; done
install -m 0755 "$HERE/vsock-guest-init.sh" "$stage/init"
install -m 0755 "$WORK/vsock-guest" "$stage/vsock-guest"
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
log "kernel $KVER, modules: $(tr '\n' ' ' <"$stage/modules.list")"

# ---- the worker ---------------------------------------------------------------------
SOCK=$WORK/vhost.sock
UDS=$WORK/vsock.sock
"$BUILD/moss-vsock" --socket-path "$SOCK" --guest-cid $GUEST_CID --uds-path "$UDS" >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
CHILDREN+=("$WORKER_PID")
deadline=$((SECONDS + 10))
until [ -S "$SOCK" ] && [ -S "$UDS" ]; do
  alive "$WORKER_PID" || { wait "$WORKER_PID"; fail "moss-vsock exited with status $? before creating its sockets"; }
  [ $SECONDS -lt $deadline ] || fail "moss-vsock did not create its sockets within 10 s"
  sleep 0.05
done
log "moss-vsock (pid $WORKER_PID) serves $SOCK, host programs on $UDS, guest CID $GUEST_CID"

# ---- the host program, then the guest ------------------------------------------------
"$WORK/vsock-host" "$UDS" $PORT $BYTES $HOST_PORT 150 >"$WORK/host.log" 2>&1 &
HOST_PID=$!
CHILDREN+=("$HOST_PID")
CONSOLE=$WORK/console.log
log "booting Linux under QEMU (TCG) with vhost-user-vsock-pci on moss-vsock"
run_qemu 150 "$CONSOLE" \
  -kernel "$KERNEL" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 quiet panic=-1 moss_interop.port=$PORT moss_interop.host_port=$HOST_PORT" \
  -chardev "socket,id=vs,path=$SOCK" -device vhost-user-vsock-pci,chardev=vs
[ $QEMU_STATUS -ne 124 ] || fail "the guest did not power off within 150 s"
[ $QEMU_STATUS -eq 0 ] || fail "QEMU exited with status $QEMU_STATUS"
log "QEMU exited"
wait_exit "$HOST_PID" 10 || fail "the host program did not finish within 10 s of QEMU"
HOST_STATUS=$EXIT_STATUS
grep -a '^moss-interop:' "$CONSOLE" | tr -d '\r'
cat "$WORK/host.log"

line() { grep -a "^moss-interop: $1" "$CONSOLE" | tr -d '\r' | tail -n 1; }
[ -z "$(line FAIL)" ] || fail "the guest reports: $(line FAIL)"
[ "$HOST_STATUS" -eq 0 ] || fail "the host program failed: $(grep FAIL "$WORK/host.log")"
[ "$(line listening)" = "moss-interop: listening on vsock port $PORT, local cid $GUEST_CID" ] ||
  fail "the guest did not listen with the worker's CID: '$(line listening)'"
[ "$(line echoed)" = "moss-interop: echoed $BYTES bytes" ] || fail "the guest echoed the wrong amount: '$(line echoed)'"
grep -q "^host: echo of $BYTES bytes matches" "$WORK/host.log" || fail "the host program's bytes did not come back intact"
grep -q "^host: guest says hello from cid $GUEST_CID$" "$WORK/host.log" ||
  fail "the guest's connection to host port $HOST_PORT did not arrive"
[ "$(line 'host says')" = "moss-interop: host says hello guest" ] || fail "the host's answer did not reach the guest"
log "host-initiated: $BYTES bytes there and back; guest-initiated: to <uds>_$HOST_PORT and back"

# ---- the worker outlives QEMU, takes a second frontend, and exits cleanly -------------
alive "$WORKER_PID" || { wait "$WORKER_PID"; fail "moss-vsock exited with status $? when QEMU went away"; }
[ -S "$SOCK" ] && [ -S "$UDS" ] || fail "moss-vsock removed a socket when QEMU went away"
log "checking that moss-vsock accepts a second frontend"
echo quit | timeout 30 "$QEMU" -accel tcg -M q35 -m 64 -nodefaults -display none -S \
  -object memory-backend-memfd,id=mem,size=64M,share=on -machine memory-backend=mem \
  -chardev "socket,id=vs,path=$SOCK" -device vhost-user-vsock-pci,chardev=vs \
  -monitor stdio >"$WORK/qemu-reconnect.log" 2>&1 ||
  fail "a second QEMU could not connect to moss-vsock (status $?): see qemu-reconnect.log"
alive "$WORKER_PID" || fail "moss-vsock exited after the second frontend"
log "stopping moss-vsock with SIGTERM"
kill -TERM "$WORKER_PID"
wait_exit "$WORKER_PID" 10 || fail "moss-vsock did not exit within 10 s of SIGTERM"
[ "$EXIT_STATUS" -eq 0 ] || fail "moss-vsock exited with status $EXIT_STATUS on SIGTERM (0 expected)"
[ ! -e "$SOCK" ] && [ ! -e "$UDS" ] || fail "moss-vsock left a socket behind"
log "PASS"
