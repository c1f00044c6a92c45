#!/bin/bash
# CTest kvm_routing, on any host: the KVM tests are routed by what they declare (tests/kvm/
# needs.h), never by their names.
#  - Every test that kvm_test holds is in CMake's declared list (NEEDS:NAME), and no other.
#  - On each kind of host, test_runs_here sends it where it can run: everything directly on
#    hw; "kvm" tests directly and "linux" tests to the nested host on pvm; everything to the
#    nested host with no KVM and with MOSS_TEST_ROUTE=nested, whatever the host.
# Usage: routing-test.sh BUILD_DIR NEEDS:NAME...
set -u
build=$1; shift
here=$(dirname "$(readlink -f "$0")")
. "$here/kvm-mode.sh"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

listed=$(MOSS_BUILD_DIR=$build "$build/kvm_test" --gtest_list_tests |
         awk '/^[^ ]/ {suite=$1} /^  / {print suite $1}' | sort)
declared=$(printf '%s\n' "$@" | sed 's/^[a-z]*://' | sort)
[ -n "$listed" ] || bad "kvm_test lists no tests"
if [ "$listed" != "$declared" ]; then
  bad "kvm_test's tests and the declared list differ:"
  diff <(echo "$listed") <(echo "$declared")
fi
linux=0 kvm=0
for entry in "$@"; do
  case ${entry%%:*} in linux) linux=$((linux + 1)) ;; kvm) kvm=$((kvm + 1)) ;; *) bad "$entry: unknown needs" ;; esac
done
[ $linux -gt 0 ] && [ $kvm -gt 0 ] || bad "expected both kvm ($kvm) and linux ($linux) tests"

echo "this host: $(kvm_host_mode); $kvm tests need any KVM, $linux need Linux"
route() {  # route HOST_MODE MOSS_TEST_ROUTE NEEDS -> here|nested, on a host of that kind
  ( fake_host=$1
    kvm_host_mode() { echo "$fake_host"; }
    MOSS_TEST_ROUTE=$2 test_runs_here "$3" && echo here || echo nested )
}
expect() {  # expect MODE ROUTE NEEDS WANT
  got=$(route "$1" "$2" "$3")
  [ "$got" = "$4" ] && echo "ok: host $1, MOSS_TEST_ROUTE=$2, a $3 test runs $got" ||
    bad "host $1, MOSS_TEST_ROUTE=$2: a $3 test would run $got, not $4"
}
expect hw auto kvm here;      expect hw auto linux here
expect pvm auto kvm here;     expect pvm auto linux nested
expect none auto kvm nested;  expect none auto linux nested
for mode in hw pvm none; do expect $mode nested kvm nested; expect $mode nested linux nested; done

# No test that boots Linux runs directly on PVM: with this host taken for pvm, every linux
# test goes to the batch.
for entry in "$@"; do
  [ "${entry%%:*}" = linux ] || continue
  [ "$(route pvm auto linux)" = nested ] || bad "${entry#*:} would run directly on PVM"
done
[ $fail -eq 0 ] && echo "routing: every one of the $(( kvm + linux )) KVM tests goes where it can run"
exit $fail
