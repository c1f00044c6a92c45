#!/bin/bash
# Runs bench/blk/blk_bench on this host (no KVM needed) and checks that the results file has
# every row with figures for moss-blk, qemu-storage-daemon and fio, and for both null backends,
# and that the machine was quiet: a run that missed blk_bench's quiet criterion even after its
# retries makes the file's verdict CONTENDED, and this script fail (the figures are kept, marked,
# but they are not clean). Writes BUILD/bench/results/blk-results.md. Takes about 10 minutes
# (about 4 in CI, which takes one round of each point).
# Skips (77) in a sanitizer build, or when qemu-storage-daemon or fio is missing (.ci/setup
# installs both).
# Usage: run-blk-bench.sh BUILD_DIR [extra blk_bench arguments]
set -u
build=$1
shift
if grep -qE '^MOSS_(SANITIZE|FUZZ):BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "SKIPPED: $build is a sanitizer build; the blk bench only runs in a Release build"
  exit 77
fi
for tool in qemu-storage-daemon fio; do
  if ! command -v $tool >/dev/null; then
    echo "SKIPPED: $tool is not installed, so the blk bench has no peer to compare with (run .ci/setup)"
    exit 77
  fi
done
outdir=$build/bench/results
mkdir -p "$outdir"
out=$outdir/blk-results.md
rm -f "$out"
dir=${MOSS_BENCH_DIR:-/var/tmp}
# Figures for the specification must be clean: with MOSS_BENCH_REQUIRE_QUIET=1 the bench stops at
# the first run of a point that carries a promise still contended after its retries, rather than
# measure ten minutes of a busy machine.
quiet_args=()
[ "${MOSS_BENCH_REQUIRE_QUIET:-0}" = 1 ] && quiet_args=(--stop-when-contended)
# Rounds of each point: MOSS_BLK_BENCH_ROUNDS, else one in CI (a third of the ten minutes, which
# keeps the whole suite within its budget), else blk_bench's three. Figures for the
# specification (MOSS_BENCH_REQUIRE_QUIET=1) always take the three.
rounds=${MOSS_BLK_BENCH_ROUNDS:-}
if [ -z "$rounds" ] && [ "${CI:-}" = true ] && [ "${MOSS_BENCH_REQUIRE_QUIET:-0}" != 1 ]; then rounds=1; fi
rounds_args=()
[ -n "$rounds" ] && rounds_args=(--rounds "$rounds")
"$build/blk_bench" --out "$out" --dir "$dir" --where "directly on this host (no VM: the harness is the guest)" \
  "${quiet_args[@]}" "${rounds_args[@]}" "$@" || exit 1
cat "$out"
if grep -q '^Verdict: CONTENDED. Stopped early' "$out"; then
  echo "the machine was not quiet, and the bench stopped early (MOSS_BENCH_REQUIRE_QUIET=1): $(grep -m1 '^- ' <(sed -n '/^## Contended runs/,$p' "$out"))"
  exit 1
fi

# Every row must carry a number in each measured column (the ratio columns follow from them).
fail=0
check() {  # check SECTION_TITLE ROWS COLUMN_NUMBERS...
  local section=$1 want=$2
  shift 2
  local rows
  rows=$(awk -v s="## $section" '$0 == s {on=1; next} /^## / {on=0} on && /^\| [0-9A-Za-z]/ && !/^\| (workload|section) /' "$out")
  [ -n "$rows" ] || { echo "missing section: $section"; fail=1; return; }
  [ "$(wc -l <<<"$rows")" -eq "$want" ] || { echo "section $section does not have $want rows"; fail=1; }
  while IFS= read -r line; do
    for col in "$@"; do
      cell=$(cut -d'|' -f$((col + 1)) <<<"$line")
      [[ $cell =~ [0-9] ]] || { echo "no figure in column $col of: $line"; fail=1; }
    done
  done <<<"$rows"
}
check "Throughput" 8 5 6 7 8
check "Backend CPU time per GiB moved (s/GiB)" 8 3 4 5 6
check "Beside one CPU-bound process (contended by design)" 4 5 6 7 8
check "Transport only: null backends" 8 4 5
if grep -q "^## Rows that failed" "$out"; then
  echo "some rows failed (see the end of $out)"
  fail=1
fi
# A contended point is never reported as clean: the verdict and the marks must agree. A
# contended run is not a failure of this check (the host's steal time is not ours to control,
# and CI must not fail on a noisy neighbour), but it says so loudly; MOSS_BENCH_REQUIRE_QUIET=1
# (for figures that go into docs/SPECIFICATION.md) makes it one.
verdict=$(grep -m1 '^Verdict:' "$out" | cut -c1-200)
marked=$(grep -c '‡' "$out")
case $verdict in
  "Verdict: quiet"*)
    [ "$marked" -eq 0 ] || { echo "the verdict is quiet but $marked lines carry the contended mark"; fail=1; } ;;
  "Verdict: CONTENDED"*)
    [ "$marked" -gt 0 ] || { echo "the verdict is CONTENDED but no figure is marked"; fail=1; }
    echo "NOTE: the machine was not quiet: $verdict"
    echo "NOTE: the figures in $out are marked contended (sections \"Quiet check\" and \"Contended runs\"); run again on a quiet machine for clean ones"
    # The specification takes its figures from the points that carry promises: those must be
    # clean; a contended run elsewhere is marked in the file, and said so here.
    if [ "${MOSS_BENCH_REQUIRE_QUIET:-0}" = 1 ] && ! grep -q '^Promised points: clean' "$out"; then
      echo "a point that carries a promise was contended (MOSS_BENCH_REQUIRE_QUIET=1)"
      fail=1
    fi ;;
  *) echo "no verdict line in $out"; fail=1 ;;
esac
exit $fail
