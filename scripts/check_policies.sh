#!/usr/bin/env bash
# The policies under the real OPA (`make lint`): `opa check --strict`, `opa fmt --list --fail`, `opa test -v`, and
# the `opa test --coverage` figure. Without an OPA binary ($OPA) it prints why and skips, unless CI=true.
#   OPA     the binary (`make opa` puts the pinned one at .tools/bin/opa)
#   PYTHON  a Python to read the coverage report with
set -euo pipefail
: "${OPA:?set OPA}" "${PYTHON:=python3}"
POLICIES=${POLICIES:-policies}

if [[ ! -x $OPA ]]; then
  echo "rego: no OPA at $OPA: opa check/fmt/test of $POLICIES skipped (run \`make opa\`; it needs Go)" >&2
  [[ ${CI:-} == true ]] && { echo "rego: CI=true: a missing OPA is a failure, not a skip" >&2; exit 1; }
  exit 0
fi
"$OPA" check --strict "$POLICIES"
"$OPA" fmt --list --fail "$POLICIES" || { echo "rego: run \`$OPA fmt -w $POLICIES\`" >&2; exit 1; }
"$OPA" test -v "$POLICIES"
# The figure for the decision modules (the test files are always 100 % covered by their own run).
"$OPA" test --coverage --format=json "$POLICIES" | "$PYTHON" -c '
import json, sys
files = {k: v for k, v in json.load(sys.stdin)["files"].items() if not k.endswith("_test.rego")}
covered = sum(f.get("covered_lines", 0) for f in files.values())
total = covered + sum(f.get("not_covered_lines", 0) for f in files.values())
each = ", ".join("%s %.1f %%" % (name, f.get("coverage", 0)) for name, f in sorted(files.items()))
print(f"rego: opa test --coverage: {100 * covered / max(total, 1):.1f} % of policy lines ({each})")
'
