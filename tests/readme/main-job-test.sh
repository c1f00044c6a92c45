#!/bin/bash
# The README's first command, run as written: it must boot the default Debian kernel with
# moss-init (through the nested test host where this host's KVM cannot run Linux), run the
# command through the guest agent, print its output, and exit 0.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cmd=$(sed -n '/^```sh$/{n;p;q}' "$top/README.md" | sed 's/ *#.*$//')
[ -n "$cmd" ] || { echo "cannot find the first command in README.md"; exit 1; }
case $cmd in "bash .ci/setup run"*) ;; *) echo "README's first command changed shape: $cmd"; exit 1 ;; esac
echo "running the README's first command: $cmd"
# Where it runs in the nested test host, a frozen test host (QEMU TCG's nested SVM; see
# tests/kvm/kvm-batch.sh) is reported as such and gets one fresh boot; nothing else retries.
export MOSS_NESTED_TIMEOUT=${MOSS_NESTED_TIMEOUT:-240}
for attempt in 1 2; do
  out=$(cd "$top" && eval "$cmd" 2>&1); rc=$?
  grep -qE "^run-in-nested-host: the nested host (timed out|froze)" <<<"$out" && [ $attempt -eq 1 ] || break
  echo "the nested test host froze (attempt $attempt); booting a fresh one"
done
echo "$out" | tail -20
[ $rc -eq 0 ] || { echo "exit status $rc, expected 0"; exit 1; }
# The command's output, as it printed it (no console carriage returns, no console lines).
grep -q "^Linux moss " <<<"$out" || { echo "no output from 'uname -a' in the guest"; exit 1; }
if grep -q "moss-init: ready" <<<"$out"; then echo "the guest console leaked into the command's output"; exit 1; fi
echo "README main job: OK"
