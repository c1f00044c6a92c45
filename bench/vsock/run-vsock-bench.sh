#!/bin/bash
# Runs bench/vsock/vsock_bench on this host (no KVM needed) and checks that the results file
# has every row with a figure in every measured column. Writes BUILD/bench/results/vsock-results.md.
# Skips (77) in a sanitizer build. Usage: run-vsock-bench.sh BUILD_DIR [extra vsock_bench arguments]
set -u
build=$1
shift
if grep -qE '^MOSS_(SANITIZE|FUZZ):BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "SKIPPED: $build is a sanitizer build; the vsock bench only runs in a Release build"
  exit 77
fi
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/vsock-results.md
rm -f "$out"
MOSS_BUILD_DIR=$build "$build/vsock_bench" --out "$out" "$@" || { echo "vsock_bench failed"; exit 1; }
cat "$out"

fail=0
check() {  # check SECTION_TITLE ROWS COLUMN_NUMBERS...
  local section=$1 want=$2
  shift 2
  local rows
  rows=$(awk -v s="## $section" '$0 == s {on=1; next} /^## / {on=0} on && /^\| [0-9A-Za-z]/ && !/^\| (path|direction) /' "$out")
  [ -n "$rows" ] || { echo "missing section: $section"; fail=1; return; }
  [ "$(wc -l <<<"$rows")" -eq "$want" ] || { echo "section $section does not have $want rows"; fail=1; }
  while IFS= read -r line; do
    for col in "$@"; do
      cell=$(cut -d'|' -f$((col + 1)) <<<"$line")
      [[ $cell =~ [0-9] ]] || { echo "no figure in column $col of: $line"; fail=1; }
    done
  done <<<"$rows"
}
check "Round trip of a 1-byte message" 3 2 3 4 5
check "Stream throughput" 3 2 4
grep -q "exceeded the credit the guest granted 0 times" "$out" || { echo "the worker exceeded the guest's credit"; fail=1; }
exit $fail
