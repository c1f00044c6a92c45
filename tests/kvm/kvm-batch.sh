#!/bin/bash
# CTest fixture: runs, in one boot of the nested test host, every KVM test this host cannot
# run itself, leaving NAME.log and NAME.rc per test in BUILD_DIR/tests/nested-results for
# run-kvm-test.sh. Does nothing when this host's KVM can run them all.
# Usage: kvm-batch.sh BUILD_DIR NEEDS:TEST_NAME...   (NEEDS: kvm or linux, tests/kvm/needs.h)
#        kvm-batch.sh --inside BUILD_DIR RESULTS_DIR TEST_NAME...   (in the nested host)
set -u
here=$(dirname "$(readlink -f "$0")")

if [ "${1:-}" = --inside ]; then
  build=$2 results=$3; shift 3
  export MOSS_BUILD_DIR=$build
  echo "nested test host: $(uname -r), /dev/kvm: $(ls -l /dev/kvm 2>&1)"
  for name in "$@"; do
    start=$(date +%s.%N)
    # A test that outlives its own time-outs is killed; its status is then 137.
    timeout -s KILL 360 "$build/kvm_test" --gtest_filter="$name" >"$results/$name.log" 2>&1
    echo $? >"$results/$name.rc"
    printf '%-60s rc=%s %.1fs\n' "$name" "$(cat "$results/$name.rc")" "$(echo "$(date +%s.%N) - $start" | bc)"
  done
  exit 0
fi

build=$1; shift
. "$here/kvm-mode.sh"
results=$build/tests/nested-results
rm -rf "$results"
mkdir -p "$results"
todo=()
for entry in "$@"; do test_runs_here "${entry%%:*}" || todo+=("${entry#*:}"); done
if [ ${#todo[@]} -eq 0 ]; then
  echo "this host's KVM ($(kvm_mode)) runs every KVM test directly; no nested test host needed"
  exit 0
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "qemu-system-x86_64 is not installed (.ci/setup installs it)" >"$results/SKIPPED"
  echo "SKIP: $(cat "$results/SKIPPED")"
  exit 0
fi
echo "$(kvm_mode_why): running ${#todo[@]} KVM tests in the nested test host"
# The nested host itself (QEMU TCG emulating SVM) has been seen to freeze as a whole, rarely,
# on a loaded machine; run-in-nested-host.sh notices within --stall (its heartbeat stops) and
# prints where its CPUs were. That is the test bed failing, not a test: boot a fresh one once
# for the tests that got no result. A test that fails inside is never retried.
for attempt in 1 2; do
  "$here/../nested/run-in-nested-host.sh" --workdir "$results" --timeout 1200 -- \
    "$here/kvm-batch.sh" --inside "$build" "$results" "${todo[@]}"
  rc=$?
  [ $rc -eq 0 ] && exit 0
  left=()
  for name in "${todo[@]}"; do [ -f "$results/$name.rc" ] || left+=("$name"); done
  echo "the nested test host failed (status $rc) with ${#left[@]} tests not run"
  [ ${#left[@]} -gt 0 ] && [ $attempt -eq 1 ] || exit $rc
  todo=("${left[@]}")
  echo "booting a fresh nested test host for: ${todo[*]}"
done
