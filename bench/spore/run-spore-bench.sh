#!/bin/bash
# Runs bench/spore/spore_bench where Linux guests can run: directly on hardware KVM, otherwise
# in the nested test host (the results file says which). Writes BUILD/bench/results/
# spore-results.md and checks that every row has a moss figure and, where QEMU has the
# figure, QEMU's.
# Usage: run-spore-bench.sh BUILD_DIR KERNEL INITRD
set -u
build=$1 kernel=$2 initrd=$3
here=$(dirname "$(readlink -f "$0")")
. "$here/../../tests/kvm/kvm-mode.sh"
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/spore-results.md
rm -f "$out"
runs=${MOSS_SPORE_BENCH_RUNS:-1}  # CI time; figures for docs/SPECIFICATION.md may take more
mode=$(kvm_mode)
if [ "$mode" = hw ]; then
  where="directly on this host (hardware KVM)"
  "$build/spore_bench" --build "$build" --kernel "$kernel" --initrd "$initrd" --out "$out" --where "$where" \
    --runs "$runs" --scratch "${TMPDIR:-/tmp}/moss-spore-bench-$$" || exit 1
else
  where="inside the nested test host (QEMU TCG with nested SVM, 4 GiB; this host's KVM is '$mode'), so absolute times are far above hardware and only the ratios carry over"
  for attempt in 1 2; do
    "$here/../../tests/nested/run-in-nested-host.sh" --workdir "$outdir" --timeout 1800 -- \
      "$build/spore_bench" --build "$build" --kernel "$kernel" --initrd "$initrd" --out "$out" --where "$where" \
      --runs "$runs" --scratch /tmp/spore-bench
    rc=$?
    [ $rc -eq 0 ] && break
    [ $rc -eq 125 ] && [ $attempt -eq 1 ] && [ ! -s "$out" ] || exit 1
    echo "the nested test host failed (attempt $attempt); booting a fresh one"
  done
fi
fail=0
for row in "suspend, just after boot" "spore size, just after boot" "suspend, 512 MiB filled" \
           "spore size, 512 MiB filled" "restore: exec" "run --from SPORE" "moss run -- true" \
           "host side: exec -> first KVM_RUN, hot" "dedup"; do
  line=$(grep -F "$row" "$out" || true)
  if [ -z "$line" ]; then echo "missing row: $row"; fail=1; continue; fi
  moss_cell=$(cut -d'|' -f3 <<<"$line")
  [[ $moss_cell =~ [0-9] ]] || { echo "no moss figure in: $line"; fail=1; }
done
exit $fail
