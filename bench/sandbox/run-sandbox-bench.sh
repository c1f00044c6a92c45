#!/bin/bash
# Runs bench/sandbox/sandbox_bench: the spawn figures directly on this host, the memory of a
# running VM where Linux-capable KVM is (directly, or in the nested test host). Writes
# BUILD/bench/results/sandbox-results.md and checks that every row has its figures.
# Usage: run-sandbox-bench.sh BUILD_DIR
set -u
build=$1
here=$(dirname "$(readlink -f "$0")")
. "$here/../../tests/kvm/kvm-mode.sh"
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/sandbox-results.md
rm -f "$out" "$outdir/sandbox-spawn.md" "$outdir/sandbox-pss.md"
sanitized=
grep -qE '^MOSS_(SANITIZE|FUZZ):BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null && sanitized=" (a sanitizer build: slower than Release)"

"$build/sandbox_bench" --spawn --build "$build" --out "$outdir/sandbox-spawn.md" \
  --where "directly on this host ($(nproc) CPUs, Linux $(uname -r))$sanitized" || exit 1

mode=$(kvm_mode)
if [ "$mode" = hw ]; then
  "$build/sandbox_bench" --pss --build "$build" --out "$outdir/sandbox-pss.md" --where "directly on this host" || exit 1
else
  where="inside the nested test host (QEMU TCG with nested SVM; this host's KVM is '$mode')"
  # A frozen test host (see tests/kvm/kvm-batch.sh) gets one fresh boot; a failing bench does not.
  for attempt in 1 2; do
    "$here/../../tests/nested/run-in-nested-host.sh" --workdir "$outdir" --timeout 600 -- \
      "$build/sandbox_bench" --pss --build "$build" --out "$outdir/sandbox-pss.md" --where "$where"
    rc=$?
    [ $rc -eq 0 ] && break
    [ $rc -eq 125 ] && [ $attempt -eq 1 ] && [ ! -s "$outdir/sandbox-pss.md" ] || exit 1
    echo "the nested test host failed (attempt $attempt); booting a fresh one"
  done
fi
{
  echo "# Sandbox bench: spawn cost and memory, jailed and with --no-sandbox"
  echo
  echo "$(date -u '+%F %H:%M UTC'), moss $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?')."
  echo
  cat "$outdir/sandbox-spawn.md"
  echo
  cat "$outdir/sandbox-pss.md"
} >"$out"
cat "$out"

# Every row must carry numbers (not n/a).
fail=0
for row in "| vcpu | jailed" "| vcpu | --no-sandbox" "| blk | jailed" "| blk | --no-sandbox" \
           "| vsock | jailed" "| vsock | --no-sandbox" \
           "| moss (broker)" "| moss-vcpu" "| moss-blk" "| moss-vsock" "| all"; do
  line=$(grep -F -- "$row" "$out" || true)
  if [ -z "$line" ]; then echo "missing row: $row"; fail=1; continue; fi
  if grep -q 'n/a' <<<"$line"; then echo "a figure is missing in: $line"; fail=1; fi
done
exit $fail
