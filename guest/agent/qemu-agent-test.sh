#!/bin/bash
# The guest agent in a real guest: Debian's kernel with moss's initramfs (moss-init) under
# QEMU (TCG), its virtio-vsock served by moss-vsock through
# vhost-user-vsock-pci; moss-agent-exec runs programs through the worker's Unix socket
# (CONNECT 1124). Checks issue 5's guest half: exit status, 128+N for a signal, stdout and
# stderr apart, 64 MiB through cat byte-identical, a program that reads no stdin is not held up
# by unread input, a pty (tty names /dev/pts/N; prompt, window size, ^C interrupts sleep, exit
# status, when python3 is there to drive a terminal), two sessions at once, SHUTDOWN ends the VM
# with "moss-init: exit N", GENERATION renews the guest's entropy and /run/moss/generation. A
# second boot with moss.dial=PORT checks that moss-init connects to
# the host (a guest-initiated connection, reaching the worker's "<uds>_PORT") and serves the
# agent there: the way `moss run` reaches it.
#
#   qemu-agent-test.sh BUILD_DIR
# Exit 77 (skipped) without qemu-system-x86_64 or its vhost-user-vsock-pci, or without a kernel.
set -u
BUILD=$(readlink -f "${1:?usage: $0 BUILD_DIR}")
HERE=$(dirname "$(readlink -f "$0")")
log() { echo "[${SECONDS}s] $*"; }
skip() { echo "SKIP: $*"; exit 77; }
QEMU=$(command -v qemu-system-x86_64 || true)
[ -n "$QEMU" ] || skip "qemu-system-x86_64 is not installed"
"$QEMU" -device help 2>/dev/null | grep -q '"vhost-user-vsock-pci"' || skip "$QEMU has no vhost-user-vsock-pci"
INITRD=$BUILD/guest/initramfs.cpio.gz
EXEC=$BUILD/moss-agent-exec
for f in "$INITRD" "$EXEC" "$BUILD/moss-vsock"; do
  [ -e "$f" ] || skip "$f was not built (ninja -C $BUILD moss-initramfs moss-agent-exec moss-vsock)"
done
KERNEL=''
for f in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
  [ -r "$f" ] && [ -f "/lib/modules/${f#/boot/vmlinuz-}/modules.dep" ] && KERNEL=$f
done
[ -n "$KERNEL" ] || skip "no readable /boot/vmlinuz-* with its modules"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/moss-agent.XXXXXX")
PIDS=()
cleanup() {
  local p
  # QEMU runs under timeout(1): TERM reaches QEMU through it (KILL would orphan QEMU).
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  local f
  for f in "$WORK"/*.log; do
    [ -s "$f" ] && { echo "---- $(basename "$f") (last 30 lines) ----"; tail -n 30 "$f" | tr -d '\r'; }
  done
  exit 1
}
SECONDS=0

# boot NAME APPEND: moss-vsock and QEMU for one guest; sets QEMU_PID, UDS, CONSOLE.
boot() {
  local name=$1 append=$2
  UDS=$WORK/$name-vsock.sock
  CONSOLE=$WORK/$name-console.log
  "$BUILD/moss-vsock" --socket-path "$WORK/$name-vhost.sock" --guest-cid 42 --uds-path "$UDS" \
    >"$WORK/$name-worker.log" 2>&1 &
  PIDS+=($!)
  local deadline=$((SECONDS + 10))
  until [ -S "$WORK/$name-vhost.sock" ]; do
    [ $SECONDS -lt $deadline ] || fail "moss-vsock did not create its socket within 10 s"
    sleep 0.05
  done
  timeout -k 5 400 "$QEMU" -accel tcg -cpu max -M q35 -smp 1 -m 512 -nodefaults -no-reboot \
    -display none -monitor none -serial "file:$CONSOLE" \
    -object memory-backend-memfd,id=mem,size=512M,share=on -machine memory-backend=mem \
    -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 quiet panic=-1 $append" \
    -chardev "socket,id=vs,path=$WORK/$name-vhost.sock" -device vhost-user-vsock-pci,chardev=vs \
    >"$WORK/$name-qemu.log" 2>&1 &
  QEMU_PID=$!
  PIDS+=("$QEMU_PID")
}

# wait_gone PID SECONDS
wait_gone() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

X() { "$EXEC" --uds "$UDS" --timeout-ms 240000 "$@"; }

log "booting $KERNEL with moss-init (the agent only) under QEMU (TCG)"
boot agent ""
out=$(X -- sh -c 'echo out1; echo err1 >&2; echo out2; exit 7' 2>"$WORK/err.txt"); st=$?
log "first exec answered"
[ $st -eq 7 ] || fail "sh -c 'exit 7' gave status $st: $out $(cat "$WORK/err.txt")"
[ "$out" = "$(printf 'out1\nout2')" ] || fail "stdout was '$out'"
[ "$(cat "$WORK/err.txt")" = err1 ] || fail "stderr was '$(cat "$WORK/err.txt")'"
X -- sh -c 'kill -TERM $$'; st=$?
[ $st -eq 143 ] || fail "sh -c 'kill -TERM \$\$' gave status $st, not 143"
n=$(du -a /usr/share/doc 2>/dev/null | X -- wc -l)
[ "$n" -eq "$(du -a /usr/share/doc 2>/dev/null | wc -l)" ] || fail "du -a | wc -l counted $n"
head -c $((64 << 20)) /dev/urandom >"$WORK/in.bin"
t0=$SECONDS
X -- cat <"$WORK/in.bin" >"$WORK/out.bin" || fail "cat exited with status $?"
cmp -s "$WORK/in.bin" "$WORK/out.bin" || fail "64 MiB through cat came back different ($(stat -c %s "$WORK/out.bin") bytes)"
log "64 MiB through cat: identical ($((SECONDS - t0)) s)"
rm -f "$WORK/in.bin" "$WORK/out.bin"
out=$(yes | X -- sh -c 'echo no stdin read; exit 3'); st=$?
[ $st -eq 3 ] && [ "$out" = "no stdin read" ] || fail "a program reading no stdin gave status $st, '$out'"
out=$(X -t -- tty); st=$?
[ $st -eq 0 ] && [[ $out == /dev/pts/* ]] || fail "tty in a pty printed '$out' (status $st)"
X -- /no/such/program 2>"$WORK/err.txt"; st=$?
[ $st -eq 127 ] && grep -q "cannot execute /no/such/program: No such file or directory" "$WORK/err.txt" ||
  fail "a missing program gave status $st: $(cat "$WORK/err.txt")"
# Two sessions at once: the first waits for the second's file.
X -- sh -c 'while [ ! -e /tmp/flag ]; do sleep 0.1; done; echo first done' >"$WORK/first.txt" &
first=$!
PIDS+=("$first")
X -- sh -c 'sleep 0.5; touch /tmp/flag; echo second done' >"$WORK/second.txt" || fail "the second session failed"
wait_gone "$first" 30 || fail "the first session did not end once the second had run"
wait "$first" || fail "the first session failed"
[ "$(cat "$WORK/first.txt")" = "first done" ] || fail "the first session printed '$(cat "$WORK/first.txt")'"
log "pipes, signals, 64 MiB, unread stdin, tty, exec failure, two sessions: OK"
# A new generation (issue 13), as the broker gives a restored VM: moss-init (PID 1, root) mixes
# the host's entropy into the kernel pool (RNDADDENTROPY), steps the clock to the host's and
# publishes the number in /run/moss/generation (0644).
X --generation 7 --realtime || fail "renewing the generation failed (status $?)"
X --generation 8 || fail "renewing the generation again failed (status $?)"
out=$(X -- sh -c 'cat /run/moss/generation; ls -l /run/moss/generation; ls -a /run/moss | wc -l'); st=$?
[ $st -eq 0 ] || fail "reading the generation gave status $st: $out"
[ "$(echo "$out" | sed -n 1p)" = 8 ] || fail "/run/moss/generation holds '$(echo "$out" | sed -n 1p)', not 8"
echo "$out" | sed -n 2p | grep -q '^-rw-r--r--' || fail "/run/moss/generation is not 0644: $(echo "$out" | sed -n 2p)"
[ "$(echo "$out" | sed -n 3p | tr -d ' ')" = 3 ] || fail "/run/moss holds more than the generation: $out"
grep -q "moss-init: generation 7" "$CONSOLE" && grep -q "moss-init: generation 8" "$CONSOLE" ||
  fail "moss-init did not report the generations on its console"
! grep -q "moss-init: warning: generation" "$CONSOLE" || fail "$(grep "moss-init: warning: generation" "$CONSOLE")"
log "generations 7 and 8: OK"

if command -v python3 >/dev/null; then
  python3 - "$EXEC" "$UDS" >"$WORK/pty.log" 2>&1 <<'EOF' || fail "the interactive pty session failed (pty.log)"
import fcntl, os, pty, select, struct, sys, termios, time
exe, uds = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(exe, [exe, "--uds", uds, "-t", "--env", "PS1=guest$ ", "--", "sh", "-i"])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
buf = b""
def wait_for(s, start=0, t=30):
    global buf
    end = time.time() + t
    while time.time() < end:
        if buf.find(s, start) >= 0: return True
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: buf += os.read(fd, 4096)
            except OSError: break
    return buf.find(s, start) >= 0
def check(what, ok):
    print(what, "ok" if ok else "FAILED"); sys.stdout.flush()
    if not ok:
        print(repr(buf[-500:])); os._exit(1)
check("prompt", wait_for(b"guest$ "))
os.write(fd, b"stty size\r"); check("size 30x100", wait_for(b"30 100"))
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0)); os.kill(pid, 28)
time.sleep(0.5)
os.write(fd, b"stty size\r"); check("resized to 40x120", wait_for(b"40 120"))
os.write(fd, b"sleep 1000\r"); check("sleep echoed", wait_for(b"sleep 1000\r\n"))
time.sleep(1)
mark = len(buf); t0 = time.time()
os.write(fd, b"\x03")
check("^C gives a new prompt", wait_for(b"guest$ ", mark))
check("within 20 s", time.time() - t0 < 20)
os.write(fd, b"echo alive; exit 5\r")
check("the shell lives on", wait_for(b"alive\r\n"))
_, st = os.waitpid(pid, 0)
check("exit status 5", os.WIFEXITED(st) and os.WEXITSTATUS(st) == 5)
EOF
  log "pty: prompt, window size, ^C interrupts sleep, the shell's exit status: OK"
else
  log "no python3: the interactive pty part is skipped"
fi

X --shutdown-only 9 || fail "the shutdown request failed"
wait_gone "$QEMU_PID" 60 || fail "the guest did not power off within 60 s of SHUTDOWN"
grep -aq "moss-init: exit 9" "$CONSOLE" || fail "no 'moss-init: exit 9' on the console after SHUTDOWN 9"
log "SHUTDOWN 9: the guest reported exit 9 and powered off"

# moss.dial: the guest connects out, and the agent serves that connection. python3 plays
# `moss run`: it takes the dialled connection and relays moss-agent-exec's session over it.
if command -v python3 >/dev/null; then
  # Listening before the guest boots: it dials once, as soon as its agent is up.
  python3 - "$WORK/dial-vsock.sock_5555" "$WORK/relay.sock" >"$WORK/relay.log" 2>&1 <<'EOF' &
import os, select, socket, sys
guest_l = socket.socket(socket.AF_UNIX); guest_l.bind(sys.argv[1]); guest_l.listen(1)
host_l = socket.socket(socket.AF_UNIX); host_l.bind(sys.argv[2]); host_l.listen(1)
guest_l.settimeout(280); g, _ = guest_l.accept(); print("the guest dialled in", flush=True)
host_l.settimeout(60); h, _ = host_l.accept()
line = b""
while not line.endswith(b"\n"): line += h.recv(1)
h.sendall(b"OK 5555\n")  # The handshake moss-agent-exec expects from a vsock worker.
socks = {g: h, h: g}
while socks:
    for s in select.select(list(socks), [], [], 60)[0]:
        d = s.recv(65536)
        if not d:
            socks[s].shutdown(socket.SHUT_WR); socks.pop(s)
        else:
            socks[s].sendall(d)
EOF
  PIDS+=($!)
  deadline=$((SECONDS + 10))
  until [ -S "$WORK/relay.sock" ]; do
    [ $SECONDS -lt $deadline ] || fail "the relay did not start"
    sleep 0.05
  done
  boot dial "moss.dial=5555"
  [ "$UDS" = "$WORK/dial-vsock.sock" ] || fail "boot() names its sockets differently now: $UDS"
  out=$("$EXEC" --uds "$WORK/relay.sock" --timeout-ms 240000 --shutdown -- sh -c 'echo through the dial; exit 6'); st=$?
  [ $st -eq 6 ] && [ "$out" = "through the dial" ] || fail "the dialled session gave status $st and '$out'"
  grep -q "the guest dialled in" "$WORK/relay.log" || fail "the guest never dialled"
  wait_gone "$QEMU_PID" 60 || fail "the dialled guest did not power off within 60 s of SHUTDOWN"
  grep -aq "moss-init: exit 6" "$CONSOLE" || fail "no 'moss-init: exit 6' after the dialled session's SHUTDOWN"
  log "moss.dial: the guest connected to ${UDS##*/}_5555, ran a program over it (exit 6) and powered off"
else
  log "no python3: the moss.dial part is skipped"
fi
log "PASS"
