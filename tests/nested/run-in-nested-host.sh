#!/bin/bash
# Run a command inside a "nested KVM test host": the host's own kernel booted under
# QEMU TCG with -cpu max (which emulates AMD SVM), with kvm-amd loaded, so the command
# gets a real, hardware-style /dev/kvm. See README.md in this directory.
#
#   run-in-nested-host.sh [--mem MB] [--cpus N] [--timeout SEC] [--stall SEC] [--workdir DIR]
#                         [--env NAME=VALUE]... [--verbose] -- CMD [ARGS...]
#
# Defaults: --mem 4096 --cpus 1 (see README.md: Gotchas) --timeout 1200 (0: none). --verbose shows the kernel's
# console on stderr. A test host whose heartbeat stops for --stall SEC (default 120, 0: never)
# is taken for frozen: its CPUs' state is printed, it is stopped, and the status is 125.
# Inside, CMD runs as root, chrooted into the host's root (shared read-only over 9p),
# with cwd = the caller's cwd when that exists inside (else /). /tmp is a fresh tmpfs,
# /dev (with /dev/kvm), /proc and /sys are mounted. DIR (default: a fresh temporary dir,
# deleted afterwards) is shared read-write at the same path, so files written there are
# on the host afterwards; $MOSS_NESTED_WORKDIR names it inside.
#
# The command's stdout and stderr are streamed to ours; our exit status is its exit
# status, or 125 (with a one-sentence reason on stderr) when the nested host failed:
# timeout, kernel panic, qemu error.
set -eu

PROG=run-in-nested-host
HERE=$(cd "$(dirname "$0")" && pwd)

usage() {   # usage [EXIT-STATUS]
    sed -n '6,12s/^# \{0,1\}//p' "$0" >&2
    exit "${1:-125}"
}
err() { echo "$PROG: $*" >&2; }
die() { err "$*"; exit 125; }

# ---- options -----------------------------------------------------------------------
# MOSS_NESTED_TIMEOUT sets the default --timeout (for callers that cannot pass options).
MEM=4096 CPUS=1 TIMEOUT=${MOSS_NESTED_TIMEOUT:-1200} STALL=120 WORKDIR='' VERBOSE=0
ENVS=()
while [ $# -gt 0 ]; do
    case $1 in
        --mem)      [ $# -ge 2 ] || usage; MEM=$2; shift 2 ;;
        --cpus)     [ $# -ge 2 ] || usage; CPUS=$2; shift 2 ;;
        --timeout)  [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
        --stall)    [ $# -ge 2 ] || usage; STALL=$2; shift 2 ;;
        --workdir)  [ $# -ge 2 ] || usage; WORKDIR=$2; shift 2 ;;
        --env)      [ $# -ge 2 ] || usage; ENVS+=("$2"); shift 2 ;;
        --verbose|-v) VERBOSE=1; shift ;;
        --)         shift; break ;;
        -h|--help)  usage 0 ;;
        *)          err "unknown option: $1"; usage ;;
    esac
done
[ $# -gt 0 ] || usage
for n in "$MEM" "$CPUS" "$TIMEOUT" "$STALL"; do
    case $n in ''|*[!0-9]*) die "--mem, --cpus, --timeout and --stall take integers" ;; esac
done
for e in ${ENVS[@]+"${ENVS[@]}"}; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, not: $e"
done

# ---- outer kernel + initramfs (cached) ---------------------------------------------
CACHE=${MOSS_NESTED_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/moss-nested}
INITRD=$CACHE/outer.cpio.gz
"$HERE/build-outer-initramfs.sh" "$INITRD" </dev/null >&2 || die "building the outer initramfs failed"
KVER=$(sed -n '1s/^kver //p' "$INITRD.manifest")
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || die "cannot read $KERNEL"

# Decompressing the bzImage takes ~3 s under TCG. A kernel built with CONFIG_PVH can
# instead be booted as the uncompressed ELF vmlinux (qemu uses the PVH entry point), so
# extract that once into the cache, the way the kernel's scripts/extract-vmlinux does.
# MOSS_NESTED_NO_PVH=1 boots the bzImage instead.
extract_vmlinux() {   # extract_vmlinux BZIMAGE OUT: first compressed payload that is ELF
    local m off
    for m in 'xz -dc|\xfd7zXZ\x00' 'zstd -qdc|\x28\xb5\x2f\xfd' 'gzip -dc|\x1f\x8b\x08\x00'; do
        off=$(LC_ALL=C grep -obUaP "${m#*|}" "$1" | head -n1 | cut -d: -f1)
        [ -n "$off" ] || continue
        tail -c +"$((off + 1))" "$1" | ${m%|*} >"$2.tmp.$$" 2>/dev/null || true
        if [ "$(head -c4 "$2.tmp.$$" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
            mv -f "$2.tmp.$$" "$2"
            return 0
        fi
    done
    rm -f "$2.tmp.$$"
    return 1
}
VMLINUX=$CACHE/vmlinux-$KVER
if [ -z "${MOSS_NESTED_NO_PVH:-}" ] && grep -qx 'CONFIG_PVH=y' "/boot/config-$KVER" 2>/dev/null; then
    if [ -s "$VMLINUX" ] && [ "$VMLINUX" -nt "$KERNEL" ]; then
        KERNEL=$VMLINUX
    elif extract_vmlinux "$KERNEL" "$VMLINUX"; then
        KERNEL=$VMLINUX
    fi
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

# ---- per-run dirs ------------------------------------------------------------------
# RUN holds the logs and captured streams; RUN/ctl is shared into the guest (tag ctl).
RUN='' TPID='' TAILS=() OWN_WORKDIR=''
# shellcheck disable=SC2317  # (invoked by the EXIT trap)
cleanup() {
    local qpid='' i
    trap - EXIT INT TERM
    # Stop qemu: through timeout(1), which forwards the signal, and directly by pid.
    [ -z "$TPID" ] || kill -TERM "$TPID" 2>/dev/null || true
    [ -z "$RUN" ] || qpid=$(cat "$RUN/qemu.pid" 2>/dev/null || true)
    if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
        kill -TERM "$qpid" 2>/dev/null || true
        for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$qpid" 2>/dev/null || true
    fi
    for i in ${TAILS[@]+"${TAILS[@]}"}; do kill "$i" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "$RUN" ] || rm -rf "$RUN"
    [ -z "$OWN_WORKDIR" ] || rm -rf "$OWN_WORKDIR"
}
trap cleanup EXIT
trap 'err "interrupted; stopping the nested host"; exit 130' INT
trap 'err "terminated; stopping the nested host"; exit 143' TERM

RUN=$(mktemp -d "${TMPDIR:-/tmp}/moss-nested.XXXXXX")
mkdir "$RUN/ctl"
if [ -n "$WORKDIR" ]; then
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd -P)
else
    OWN_WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/moss-nested-work.XXXXXX")
    WORKDIR=$(cd "$OWN_WORKDIR" && pwd -P)
fi
case $WORKDIR in
    /) die "--workdir cannot be /" ;;
    *$'\n'*) die "--workdir cannot contain a newline" ;;
esac
printf '%s\n' "$WORKDIR" >"$RUN/ctl/workdir"

# /tmp is a fresh tmpfs inside. Trees the caller works in that live under the host's /tmp
# (a CI clone in /tmp/x, a build dir) are shown at the same path: the /tmp child holding
# the caller's cwd, this repository, and each dir in MOSS_NESTED_EXPOSE (colon-separated).
tmp_child() {
    local p
    p=$(cd "$1" 2>/dev/null && pwd -P) || return 0
    case $p in /tmp/*) p=${p#/tmp/}; printf '/tmp/%s\n' "${p%%/*}" ;; esac
}
{
    tmp_child "$PWD"
    tmp_child "$HERE/../.."
    IFS=: read -r -a extra <<<"${MOSS_NESTED_EXPOSE:-}"
    for d in ${extra[@]+"${extra[@]}"}; do tmp_child "$d"; done
} | sort -u >"$RUN/ctl/expose"

# The command, as a sh script with every word single-quoted ('\'' for a quote).
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
    echo "# written by $PROG.sh"
    for e in ${ENVS[@]+"${ENVS[@]}"}; do echo "export $(q "$e")"; done
    echo "cd $(q "$PWD") 2>/dev/null || cd /"
    printf 'exec'
    for a in "$@"; do printf ' %s' "$(q "$a")"; done
    echo
} >"$RUN/ctl/cmd.sh"

# ---- qemu --------------------------------------------------------------------------
c() { printf '%s' "${1//,/,,}"; }   # escape a path for a qemu option list
# mitigations=off: this is a throwaway test box.
# nokaslr: a frozen host's instruction pointers are then found in the kernel's symbols,
# which the first run writes to the cache (ctl/want-kallsyms).
KALLSYMS=$CACHE/kallsyms-$KVER
[ -s "$KALLSYMS" ] || : >"$RUN/ctl/want-kallsyms"
# loglevel=4: errors and worse (a panic, soft lockups, RCU stalls, hung tasks) reach the console.
APPEND='console=ttyS0 panic=-1 reboot=t mitigations=off nokaslr'
[ "$VERBOSE" = 1 ] || APPEND="$APPEND quiet loglevel=4"
# shellcheck disable=SC2054  # commas are qemu's
QEMU=(qemu-system-x86_64 -nodefaults -no-user-config
    -accel tcg,thread=multi -cpu max -M q35 -smp "$CPUS" -m "$MEM"
    -nic none -display none -monitor none -no-reboot -pidfile "$RUN/qemu.pid"
    -qmp "unix:$(c "$RUN/qmp.sock"),server=on,wait=off"
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
    -chardev "file,id=con,path=$(c "$RUN/console.log")" -serial chardev:con
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=ctl,path=$(c "$RUN/ctl"),security_model=none"
    -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl
    -fsdev "local,id=work,path=$(c "$WORKDIR"),security_model=none,multidevs=remap"
    -device virtio-9p-pci,fsdev=work,mount_tag=work
    -device virtio-serial-pci,id=vser
    -chardev "file,id=out,path=$(c "$RUN/stdout")"
    -device virtserialport,bus=vser.0,chardev=out,name=moss.stdout
    -chardev "file,id=err,path=$(c "$RUN/stderr")"
    -device virtserialport,bus=vser.0,chardev=err,name=moss.stderr
)
: >"$RUN/stdout"; : >"$RUN/stderr"; : >"$RUN/console.log"

# timeout(1) enforces the time limit even if this script is SIGKILLed.
timeout -k 10 "$TIMEOUT" "${QEMU[@]}" </dev/null >"$RUN/qemu.log" 2>&1 &
TPID=$!
# Stream the captured output while qemu runs; each tail ends soon after qemu does.
tail -n +1 -s 0.1 -f --pid="$TPID" "$RUN/stdout" </dev/null &
TAILS+=($!)
tail -n +1 -s 0.1 -f --pid="$TPID" "$RUN/stderr" </dev/null >&2 &
TAILS+=($!)
if [ "$VERBOSE" = 1 ]; then
    tail -n +1 -s 0.1 -f --pid="$TPID" "$RUN/console.log" </dev/null >&2 &
    TAILS+=($!)
fi

# froze_report: what a frozen test host was doing, on stderr. qemu's CPU time over 2 s tells
# a spinning guest (or qemu) from a waiting one; its monitor gives each CPU's state and
# instruction pointer, named from the kernel's symbols (the kernel runs with nokaslr).
froze_report() {
    local qpid t0 t1
    qpid=$(cat "$RUN/qemu.pid" 2>/dev/null) || return 0
    t0=$(awk '{print $14 + $15}' "/proc/$qpid/stat" 2>/dev/null) || return 0
    sleep 2
    t1=$(awk '{print $14 + $15}' "/proc/$qpid/stat" 2>/dev/null) || return 0
    err "qemu used $(( (t1 - t0) * 100 / $(getconf CLK_TCK) / 2 ))% of a CPU over the last 2 s; its threads: $(
        cat /proc/"$qpid"/task/*/stat 2>/dev/null | awk '{printf "%s ", $3}')"
    command -v python3 >/dev/null || return 0
    python3 - "$RUN/qmp.sock" "$KALLSYMS" <<'PY' >&2 || err "qemu's monitor did not answer"
import bisect, json, re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
def hmp(line):
    f.write(json.dumps({"execute": "human-monitor-command", "arguments": {"command-line": line}}) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r.get("return", "")
f.write('{"execute": "qmp_capabilities"}\n'); f.flush(); f.readline()
syms = []
try:
    for l in open(sys.argv[2]):
        a, t, n = l.split()[:3]
        if t in "tTwW": syms.append((int(a, 16), n))
    syms.sort()
except OSError:
    pass
def name(ip):
    i = bisect.bisect_right(syms, (ip, "~")) - 1
    return "%s+0x%x" % (syms[i][1], ip - syms[i][0]) if i >= 0 and ip - syms[i][0] < 0x100000 else "?"
print("  qemu's CPUs:", hmp("info cpus").strip().replace("\r", "").replace("\n", "; "))
for _ in range(3):
    regs = hmp("info registers -a")
    ips = re.findall(r"RIP=([0-9a-f]+)", regs)
    print("  instruction pointers:", ", ".join("%s (%s)" % (ip, name(int(ip, 16))) for ip in ips))
PY
}

QRC=0 FROZE=''
# Once the init has written the exit status the host should power off at once; if it has
# not 20 s later (a wedged kernel), stop qemu: the result is already known.
exit_seen='' started=$(date +%s) checked=0
while kill -0 "$TPID" 2>/dev/null; do
    # A heartbeat older than STALL s (or none STALL s after the start) means a frozen host.
    if [ "$STALL" -gt 0 ] && [ -z "$exit_seen" ] && [ "$SECONDS" -ne "$checked" ]; then
        checked=$SECONDS
        now=$(date +%s)
        beat=$(stat -c %Y "$RUN/ctl/heartbeat" 2>/dev/null || echo "$started")
        if [ $((now - beat)) -ge "$STALL" ]; then
            FROZE=$((now - beat))
            err "the nested host froze: no heartbeat for $FROZE s; stopping it."
            froze_report
            kill "$TPID" 2>/dev/null || true
            break
        fi
    fi
    if [ -s "$RUN/ctl/exit" ]; then
        [ -n "$exit_seen" ] || exit_seen=$SECONDS
        if [ $((SECONDS - exit_seen)) -ge 20 ]; then
            err "the nested host did not power off after the command ended; stopping it."
            kill "$TPID" 2>/dev/null || true
            break
        fi
    fi
    sleep 0.2
done
wait "$TPID" || QRC=$?
TPID=''
[ ! -s "$RUN/ctl/kallsyms" ] || mv -f "$RUN/ctl/kallsyms" "$KALLSYMS"
wait "${TAILS[@]}" 2>/dev/null || true
TAILS=()

# ---- result ------------------------------------------------------------------------
# The init writes the status to ctl/exit (synchronously, over 9p), and also prints
# @@NESTED-EXIT=N@@ on the console; use the latter if the former is missing.
RC=$(cat "$RUN/ctl/exit" 2>/dev/null ||
     sed -n 's/^@@NESTED-EXIT=\([0-9]*\)@@\r*$/\1/p' "$RUN/console.log" | tail -n1)
case $RC in
    [0-9]|[0-9][0-9]|[0-9][0-9][0-9]) exit "$RC" ;;
esac

if [ -n "$FROZE" ]; then
    err "the nested host froze (no heartbeat for $FROZE s) before the command's exit status was reported."
elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    err "the nested host timed out after $TIMEOUT s (see --timeout)."
elif grep -q 'Kernel panic' "$RUN/console.log"; then
    err "the nested host's kernel panicked before the command's exit status was reported ($(grep -m1 -o 'Kernel panic.*' "$RUN/console.log" | tr -d '\r'))."
elif grep -q '^nested-init:' "$RUN/console.log"; then
    err "the nested host's init failed: $(sed -n 's/^nested-init: //p' "$RUN/console.log" | tr -d '\r' | head -n1)."
elif [ "$QRC" != 0 ]; then
    err "qemu failed with exit status $QRC before the command's exit status was reported."
else
    err "the nested host stopped without reporting the command's exit status."
fi
if [ "$VERBOSE" != 1 ]; then
    { echo "--- last console lines:"; tail -n 25 "$RUN/console.log" | tr -d '\r'
      echo "--- qemu output:"; tail -n 10 "$RUN/qemu.log"; } | sed 's/^/  /' >&2
fi
exit 125
