#!/bin/bash
# The layers of moss, checked: every quoted #include in a library's non-test source names a file
# by its path from the one include root (the source tree, or the build tree for generated
# files), and a lower layer never includes a higher one. docs/ARCHITECTURE.md ("Layers") states
# the same table; keep the two together.
#
#   check-layers.sh [SOURCE_DIR]   prints each violation and exits 1 if there is any
#
# Tests (*_test.cc, test_*.h, *_test_support*), fuzz/, bench/ and tests/ sit above every layer
# and are not checked.
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
cd "$root"

# Folder (longest prefix wins) -> the folders (or single headers) its includes may name.
# Lowest layer first.
declare -A allowed=(
  [base]="base"
  [ipc]="base ipc"
  [policies]="base policies"
  [vhost-user]="base ipc vhost-user"
  [store]="base ipc store"
  [guest]="base ipc guest"
  [devices/virtio]="base vhost-user devices/virtio"
  [devices/worker]="base ipc policies vhost-user devices/virtio devices/worker"
  [devices]="base ipc policies vhost-user devices"
  [vcpu]="base ipc policies vhost-user devices/virtio vcpu"
  # Of vcpu/, only two leaf libraries: the pure bzImage parser (early validation) and the
  # capability query (moss_kvm_caps); never the KVM machine.
  # Of guest/, the agent client and the codec of the command line it hands moss-init.
  [broker]="base ipc policies vhost-user store guest/agent guest/moss-init/cmdline.h devices broker vcpu/bzimage.h vcpu/kvm_caps.h"
)

layer_of() {  # the longest folder prefix of $1 that has a rule
  local f=$1 best=""
  for l in "${!allowed[@]}"; do
    case $f in "$l"/*) [ ${#l} -gt ${#best} ] && best=$l ;; esac
  done
  echo "$best"
}

bad=0
while IFS= read -r f; do
  case $f in *_test.cc|*/test_*.h|*test_support*|*_test_*.h) continue ;; esac
  layer=$(layer_of "$f")
  [ -n "$layer" ] || continue
  while IFS= read -r inc; do
    # One include root: the file exists from the top of the tree, or is generated there
    # (a .capnp.h beside its .capnp, the embedded policies).
    if [ ! -f "$inc" ] && [ ! -f "${inc%.h}" ] && [ "$inc" != policies/builtin_policies.inc ]; then
      echo "$f: #include \"$inc\" is not a path from the source root"; bad=1; continue
    fi
    ok=0
    for a in ${allowed[$layer]}; do
      case $inc in "$a"/*|"$a") ok=1; break ;; esac
    done
    if [ $ok = 0 ]; then
      echo "$f: #include \"$inc\": $layer may include only: ${allowed[$layer]}"; bad=1
    fi
  done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]+"([^"]+)".*/\1/p' "$f")
done < <(git ls-files '*.h' '*.cc' '*.c' 2>/dev/null || find . -name '*.h' -o -name '*.cc' -o -name '*.c' | sed 's|^\./||')

if [ $bad = 0 ]; then echo "layers: every include goes down the layers, from the one include root"; fi
exit $bad
