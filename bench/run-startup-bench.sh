#!/bin/bash
# Runs bench/startup_bench where Linux guests can run: directly on hardware KVM, otherwise in
# the nested test host (the results file says which). Writes BUILD/bench/startup-results.md
# and checks that every row has figures for moss and for QEMU.
# Usage: run-startup-bench.sh BUILD_DIR KERNEL INITRD
set -u
build=$1 kernel=$2 initrd=$3
here=$(dirname "$(readlink -f "$0")")
. "$here/../tests/kvm/kvm-mode.sh"
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/startup-results.md
rm -f "$out"
mode=$(kvm_mode)
# Runs of each row: MOSS_STARTUP_BENCH_RUNS, else 3 in CI (each Linux boot is 13-25 s in the
# nested test host, and the suite has a 45-minute budget), else startup_bench's 5.
runs=${MOSS_STARTUP_BENCH_RUNS:-}
if [ -z "$runs" ] && [ "${CI:-}" = true ]; then runs=3; fi
runs_args=()
[ -n "$runs" ] && runs_args=(--runs "$runs")
if [ "$mode" = hw ]; then
  where="directly on this host (hardware KVM)"
  "$build/startup_bench" --build "$build" --kernel "$kernel" --initrd "$initrd" --out "$out" --where "$where" "${runs_args[@]}" || exit 1
else
  where="inside the nested test host (QEMU TCG with nested SVM; this host's KVM is '$mode'), so absolute times are far above hardware and only the ratios carry over"
  # A frozen test host (see tests/kvm/kvm-batch.sh) gets one fresh boot; a failing bench does not.
  for attempt in 1 2; do
    "$here/../tests/nested/run-in-nested-host.sh" --workdir "$outdir" --timeout 900 -- \
      "$build/startup_bench" --build "$build" --kernel "$kernel" --initrd "$initrd" --out "$out" --where "$where" \
      "${runs_args[@]}"
    rc=$?
    [ $rc -eq 0 ] && break
    [ $rc -eq 125 ] && [ $attempt -eq 1 ] && [ ! -s "$out" ] || exit 1
    echo "the nested test host failed (attempt $attempt); booting a fresh one"
  done
fi
# Every row must carry numbers (not n/a) where the peer has one.
fail=0
for row in "exec -> guest's first instruction" "exec -> VMM exit" "CPU time" "moss-init: ready" \
           "moss run -- true" "VMM start" "guest boot" "exec: agent" "shutdown:" \
           "peak RSS, broker" "peak RSS, vcpu" "peak RSS, all"; do
  line=$(grep -F "$row" "$out" || true)
  if [ -z "$line" ]; then echo "missing row: $row"; fail=1; continue; fi
  moss_cell=$(cut -d'|' -f3 <<<"$line")
  [[ $moss_cell =~ [0-9] ]] || { echo "no moss figure in: $line"; fail=1; }
done
exit $fail
