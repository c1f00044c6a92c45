#!/bin/bash
# Runs bench/store/store_bench on this host (no KVM needed) and checks that the results file
# has a figure in every row. Writes BUILD/bench/results/store-results.md. Skips (77) in a
# sanitizer build. Usage: run-store-bench.sh BUILD_DIR [extra store_bench arguments]
set -u
build=$1
shift
if grep -qE '^MOSS_(SANITIZE|FUZZ):BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "SKIPPED: $build is a sanitizer build; the store bench only runs in a Release build"
  exit 77
fi
command -v zstd >/dev/null || { echo "the zstd CLI (the peer) is not installed: apt-get install zstd"; exit 1; }
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/store-results.md
rm -f "$out"
"$build/store_bench" --out "$out" "$@" || { echo "store_bench failed"; exit 1; }
cat "$out"
fail=0
rows=$(grep -cE '^\| [0-9]+ KiB \| [13] \| [0-9]+ \| [0-9]+ \| [0-9]+ \|' "$out")
[ "$rows" -eq 8 ] || { echo "expected 8 measured rows of hash + compress, found $rows"; fail=1; }
peers=$(grep -cE '^\| zstd CLI .* \| [0-9]+ \|' "$out")
[ "$peers" -eq 2 ] || { echo "the zstd CLI peer rows lack a figure"; fail=1; }
dedup=$(grep -cE '^\| [0-9]+ KiB \| (scattered|clustered) .*%' "$out")
[ "$dedup" -eq 8 ] || { echo "expected 8 dedup rows, found $dedup"; fail=1; }
store=$(grep -cE '^\| [0-9]+ KiB \| [12] \| (one syncfs|fsync each) \| [0-9]+ \| [0-9]+ \|' "$out")
[ "$store" -eq 7 ] || { echo "expected 7 rows of the store's write and read path, found $store"; fail=1; }
exit $fail
