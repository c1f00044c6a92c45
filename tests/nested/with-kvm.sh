#!/bin/bash
# Runs CMD directly when this host's KVM can run Linux guests, and otherwise inside the
# nested test host (run-in-nested-host.sh), saying so. Used by the README's main job.
set -u
here=$(dirname "$(readlink -f "$0")")
. "$here/../kvm/kvm-mode.sh"
mode=$(kvm_mode)
if [ "$mode" = hw ]; then exec "$@"; fi
echo "moss: $(kvm_mode_why); running in the nested test host (QEMU TCG with nested SVM; guests run slowly there)" >&2
exec "$here/run-in-nested-host.sh" -- "$@"
