#!/bin/bash
# Runs one test of kvm_test as a CTest test.
#
# Where this host's KVM can run the test, it runs here. Otherwise its result comes from the
# nested-test-host batch (kvm-batch.sh, a CTest fixture that boots the nested host once for
# all such tests), by what the test declares it needs (tests/kvm/needs.h): "kvm" tests run on
# any KVM, PVM included; "linux" tests need a KVM that runs Linux.
# Usage: run-kvm-test.sh BUILD_DIR NEEDS:TEST_NAME
set -u
build=$1 needs=${2%%:*} name=${2#*:}
here=$(dirname "$(readlink -f "$0")")
. "$here/kvm-mode.sh"
results=$build/tests/nested-results
export MOSS_BUILD_DIR=$build

if test_runs_here "$needs"; then
  out=$("$build/kvm_test" --gtest_filter="$name" 2>&1); rc=$?
else
  if [ ! -f "$results/$name.rc" ]; then
    if [ -f "$results/SKIPPED" ]; then
      echo "SKIP: $name needs KVM that can run it: $(cat "$results/SKIPPED")"
      exit 77
    fi
    echo "$name: no result from the nested test host batch (see the kvm_nested_batch test's output)"
    exit 1
  fi
  echo "[ran in the nested test host: this host's KVM is '$(kvm_mode)']"
  out=$(cat "$results/$name.log"); rc=$(cat "$results/$name.rc")
fi
echo "$out"
if [ "$rc" = 0 ] && grep -q '^\[  SKIPPED \] 1 test' <<<"$out"; then exit 77; fi
exit "$rc"
