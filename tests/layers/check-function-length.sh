#!/bin/bash
# The broker stays in parts: no function defined in broker/'s non-test sources is longer than
# MAX lines (default 80), counted from the line that opens its body to the one that closes it.
# A function body is a brace block opened outside any other block but namespaces (class bodies
# count whole, which keeps inline members short too).
#
#   check-function-length.sh [SOURCE_DIR [MAX]]   prints each long one and exits 1 if any
set -euo pipefail
root=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
max=${2:-80}
cd "$root"
status=0
for f in $(find broker -maxdepth 1 -name '*.cc' ! -name '*_test.cc' | sort); do
  # Strings, character literals and // comments are dropped before braces are counted.
  if ! awk -v max="$max" -v file="$f" '
    { line = $0
      gsub(/\\./, "", line); gsub(/"[^"]*"/, "\"\"", line); gsub(/'\''[^'\'']*'\''/, "", line); sub(/\/\/.*/, "", line)
      n = length(line)
      for (i = 1; i <= n; i++) {
        ch = substr(line, i, 1)
        if (ch == "{") {
          kind = (line ~ /^[[:space:]]*(namespace|extern "C")/) ? "ns" : "body"
          if (kind == "body" && top == depth && start == 0) { start = NR; name = $0 }
          depth++; kinds[depth] = kind; if (kind == "ns") top = depth
        } else if (ch == "}") {
          if (kinds[depth] == "ns") top--
          depth--
          if (start && depth == top) {
            if (NR - start + 1 > max) { printf "%s:%d: %d lines (over %d): %s\n", file, start, NR - start + 1, max, name; bad = 1 }
            start = 0
          }
        }
      }
    }
    END { exit bad }' "$f"; then
    status=1
  fi
done
exit $status
