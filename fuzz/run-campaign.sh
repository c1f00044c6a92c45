#!/bin/bash
# A fuzzing campaign over every target (`.ci/setup fuzz [SECONDS]`): each libFuzzer target of
# BUILD_DIR (a -DMOSS_FUZZ=ON build: ASan+UBSan) runs for SECONDS on its checked-in seeds
# (fuzz/corpus/NAME, only read) plus a campaign corpus kept in BUILD_DIR/fuzz-campaign/NAME, so
# a second campaign goes on from where the first stopped. The report (printed, and written to
# BUILD_DIR/fuzz-report.md) gives per target: executions, executions per second, edge
# coverage, features, and the campaign corpus's size, with the corpus then minimized in place
# (-merge=1, keeping only inputs that add coverage). A crash, leak or time-out saves its input
# as BUILD_DIR/fuzz-campaign/NAME-crash-* and the campaign exits 1 naming it.
# Usage: run-campaign.sh BUILD_DIR [SECONDS (default 60)] [TARGET...]
set -u
build=${1:?usage: run-campaign.sh BUILD_DIR [SECONDS] [TARGET...]}
seconds=${2:-60}
shift $(( $# >= 2 ? 2 : $# ))
here=$(dirname "$(readlink -f "$0")")
[[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "run-campaign.sh: SECONDS must be a positive whole number, not '$seconds'" >&2; exit 2; }
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$here"/fuzz_*.cc; do targets+=("$(basename "$src" .cc)"); done
fi
camp=$build/fuzz-campaign
mkdir -p "$camp"
report=$build/fuzz-report.md
{
  echo "# Fuzz campaign: $seconds s per target"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); ASan+UBSan build \`$build\`."
  echo
  echo "| target | executions | exec/s | edges (cov) | features (ft) | campaign corpus (inputs, after merge) | result |"
  echo "|---|---|---|---|---|---|---|"
} >"$report"
failed=()
for t in "${targets[@]}"; do
  bin=$build/$t
  [ -x "$bin" ] || { echo "run-campaign.sh: $bin is not built (configure with -DMOSS_FUZZ=ON)" >&2; failed+=("$t (not built)"); continue; }
  mkdir -p "$camp/$t"
  log=$camp/$t.log
  "$bin" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 -artifact_prefix="$camp/$t-crash-" \
    "$camp/$t" "$here/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  result=ok
  if [ $rc -eq 0 ] && { [ -z "$runs" ] || [ -z "$rate" ] || [ -z "$cov" ]; }; then
    result="FAILED (no final statistics; see $log)"
    failed+=("$t")
  elif [ $rc -ne 0 ]; then
    result="FAILED (status $rc; see $log)"
    failed+=("$t")
  else
    # Keep the campaign corpus minimal: only inputs that add coverage survive.
    mkdir -p "$camp/$t.min"
    "$bin" -merge=1 "$camp/$t.min" "$camp/$t" >/dev/null 2>&1 && rm -rf "$camp/$t" && mv "$camp/$t.min" "$camp/$t"
    rm -rf "$camp/$t.min"
  fi
  inputs=$(find "$camp/$t" -type f | wc -l)
  echo "| $t | ${runs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $inputs | $result |" >>"$report"
  printf '%-26s %10s runs %8s exec/s  cov %-6s ft %-6s %s\n' "$t" "${runs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
echo
cat "$report"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz campaign: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz campaign: ${#targets[@]} passed, 0 failed"
