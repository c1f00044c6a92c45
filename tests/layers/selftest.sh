#!/bin/bash
# check-layers.sh must fail on a lower layer that includes a higher one and on an include that
# is not a path from the root, and pass on a tree that has neither: a tiny tree of each kind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mk() { mkdir -p "$t/$1/$(dirname "$2")"; printf '%s\n' "$3" > "$t/$1/$2"; }
mk good base/a.h '#pragma once'
mk good vcpu/v.h '#include "base/a.h"'
mk good broker/b.cc '#include "vcpu/kvm_caps.h"'
mk good vcpu/kvm_caps.h '#include "base/a.h"'
mk up base/a.h '#pragma once'
mk up broker/b.h '#include "base/a.h"'
mk up vcpu/v.h '#include "broker/b.h"'
mk root base/a.h '#pragma once'
mk root vcpu/v.h '#include "a.h"'
"$here/check-layers.sh" "$t/good" >/dev/null || { echo "FAIL: a clean tree was refused"; exit 1; }
if "$here/check-layers.sh" "$t/up" >/dev/null; then echo "FAIL: vcpu including broker passed"; exit 1; fi
if "$here/check-layers.sh" "$t/root" >/dev/null; then echo "FAIL: an include not from the root passed"; exit 1; fi
echo "check-layers.sh refuses an upward include and a second include root"

# check-function-length.sh: a long broker function fails, braces in strings and namespaces do not count.
long=$(printf '  x++;\n%.0s' $(seq 1 81))
mk short broker/s.cc "$(printf 'namespace a {\nint f() {\n  return "}{" == 0;\n}\n}  // namespace a')"
mk long broker/l.cc "$(printf 'namespace a {\nvoid g(int x) {\n%s}\n}  // namespace a' "$long")"
"$here/check-function-length.sh" "$t/short" >/dev/null || { echo "FAIL: a short function was refused"; exit 1; }
if "$here/check-function-length.sh" "$t/long" >/dev/null; then echo "FAIL: an 83-line function passed"; exit 1; fi
echo "check-function-length.sh refuses a broker function over 80 lines"
