# Sourced by the interop tests: a vhost-user-blk worker (moss-blk, or qemu-storage-daemon as a
# reference) and QEMU (TCG) as its frontend. Every wait has a time limit; every process we
# start is stopped by its pid on the way out.
#
# The caller sets BUILD (the build tree, for moss-blk) and calls interop_setup first.

# Seconds since interop_setup (bash's SECONDS, reset there).
log() { echo "[${SECONDS}s] $*"; }

# Prints a failure, the logs the test kept, and exits 1.
fail() {
  echo "FAIL: $*"
  local f
  for f in "$WORK"/*.log; do
    [ -s "$f" ] || continue
    echo "---- $(basename "$f") (last 40 lines) ----"
    tail -n 40 "$f"
  done
  exit 1
}

skip() { echo "SKIP: $*"; exit 77; }

QEMU=$(command -v qemu-system-x86_64 || true)

# A scratch directory, removed on exit with any process still running from the list.
interop_setup() {
  [ -n "$QEMU" ] || skip "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/moss-interop.XXXXXX")
  CHILDREN=()
  trap interop_cleanup EXIT
  SECONDS=0
}

interop_cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do
    alive "$pid" || continue
    # A child may be `timeout` running QEMU: it passes TERM on, while a KILL of it would leave
    # QEMU behind, orphaned. So TERM first; then KILL the child and whatever it started.
    kill -TERM "$pid" 2>/dev/null
    wait_exit "$pid" 10 && continue
    pkill -KILL -P "$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "${KEEP_WORK:-}" ] && { echo "kept $WORK"; return; }
  rm -rf "$WORK"
}

# Whether child $1 is running (a zombie counts as ended; kill -0 would say alive).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# wait_exit PID SECONDS: waits for child PID to end; sets EXIT_STATUS. Returns 1 on time-out.
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while alive "$pid"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
  wait "$pid"
  EXIT_STATUS=$?
}

# start_worker KIND DISK SOCKET: starts moss-blk (KIND=moss-blk) or qemu-storage-daemon
# (KIND=qsd) serving DISK read-write on SOCKET; sets WORKER_PID; output in $WORK/worker.log.
start_worker() {
  local kind=$1 disk=$2 sock=$3
  WORKER_KIND=$kind WORKER_SOCKET=$sock
  case $kind in
    moss-blk)
      [ -x "$BUILD/moss-blk" ] || fail "$BUILD/moss-blk was not built (ninja -C $BUILD moss-blk)"
      "$BUILD/moss-blk" --socket-path "$sock" --disk "$disk" >"$WORK/worker.log" 2>&1 &
      ;;
    qsd)
      command -v qemu-storage-daemon >/dev/null || skip "qemu-storage-daemon is not installed"
      qemu-storage-daemon \
        --blockdev "driver=file,node-name=f0,filename=$disk" \
        --blockdev driver=raw,node-name=d0,file=f0 \
        --export "type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=$sock,writable=on,num-queues=1" \
        >"$WORK/worker.log" 2>&1 &
      ;;
    *) fail "unknown worker kind $kind" ;;
  esac
  WORKER_PID=$!
  CHILDREN+=("$WORKER_PID")
  local deadline=$((SECONDS + 10))
  until [ -S "$sock" ]; do
    alive "$WORKER_PID" || { wait "$WORKER_PID"; fail "$kind exited with status $? before creating its socket"; }
    [ $SECONDS -lt $deadline ] || fail "$kind did not create $sock within 10 s"
    sleep 0.05
  done
  log "$kind (pid $WORKER_PID) listens on $sock"
}

# The worker must outlive its frontend: still running, socket still there.
check_worker_survived() {
  alive "$WORKER_PID" || { wait "$WORKER_PID"; fail "$WORKER_KIND exited with status $? when QEMU went away; it must keep listening"; }
  [ -S "$WORKER_SOCKET" ] || fail "$WORKER_KIND removed its socket when QEMU went away; it must keep listening"
}

# A second frontend connects: QEMU realizes vhost-user-blk-pci (connect, feature and config
# negotiation with the worker) and quits before running any guest code.
check_worker_accepts_again() {
  log "checking that $WORKER_KIND accepts a second frontend"
  echo quit | timeout 30 "$QEMU" -accel tcg -M q35 -m 64 -nodefaults -display none -S \
    -object memory-backend-memfd,id=mem,size=64M,share=on -machine memory-backend=mem \
    -chardev "socket,id=vu,path=$WORKER_SOCKET" -device vhost-user-blk-pci,chardev=vu \
    -monitor stdio >"$WORK/qemu-reconnect.log" 2>&1 ||
    fail "a second QEMU could not connect to $WORKER_KIND (status $?): see qemu-reconnect.log"
  check_worker_survived
}

# Stops the worker by pid (SIGTERM); moss-blk must exit 0 within 10 s and remove its socket.
stop_worker() {
  log "stopping $WORKER_KIND with SIGTERM"
  kill -TERM "$WORKER_PID"
  wait_exit "$WORKER_PID" 10 || fail "$WORKER_KIND did not exit within 10 s of SIGTERM"
  if [ "$WORKER_KIND" = moss-blk ]; then
    [ "$EXIT_STATUS" -eq 0 ] || fail "moss-blk exited with status $EXIT_STATUS on SIGTERM (0 expected)"
    [ ! -e "$WORKER_SOCKET" ] || fail "moss-blk left its socket $WORKER_SOCKET behind"
  fi
  log "$WORKER_KIND exited with status $EXIT_STATUS"
}

# run_qemu SECONDS LOG ARGS...: QEMU (TCG) with guest RAM shareable with a vhost-user worker;
# serial console in LOG. Sets QEMU_STATUS (124 on time-out).
run_qemu() {
  local secs=$1 qlog=$2
  shift 2
  timeout -k 5 "$secs" "$QEMU" -accel tcg -cpu max -M q35 -smp 1 -m 256 -nodefaults -no-reboot \
    -display none -monitor none -serial "file:$qlog" \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine memory-backend=mem \
    "$@" >"$WORK/qemu-stderr.log" 2>&1 &
  local pid=$!
  CHILDREN+=("$pid")
  wait "$pid"
  QEMU_STATUS=$?
}
