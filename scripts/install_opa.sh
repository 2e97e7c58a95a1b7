#!/usr/bin/env bash
# `make opa`: put the pinned Open Policy Agent at $OPA (default .tools/bin/opa), built from its published Go module.
#
#   OPA_VERSION  the version to install (the Makefile reads it from src/swiftdeploy/policy/opa_version.py)
#   OPA          where the binary goes
#   CI=true      a missing Go toolchain is a failure; otherwise it is one warning line and the OPA-backed tests are
#                skipped (with their reason) by `make test`.
#
# Nothing happens when $OPA already reports $OPA_VERSION. Go's module and build caches stay in their default places
# (go env GOMODCACHE GOCACHE), so a second install (e.g. in a fresh clone) is a link step, not a download.
set -euo pipefail
: "${OPA_VERSION:?set OPA_VERSION}" "${OPA:?set OPA}"

installed_version() { "$1" version 2>/dev/null | sed -n 's/^Version: //p'; }

if [[ -x $OPA && $(installed_version "$OPA") == "$OPA_VERSION" ]]; then
  echo "opa $OPA_VERSION: $OPA"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "opa: Go is not installed, so OPA $OPA_VERSION cannot be built: the tests that need the real OPA are skipped" \
    "(install Go from https://go.dev/dl/, then run \`make opa\`)" >&2
  [[ ${CI:-} == true ]] && { echo "opa: CI=true: a missing OPA is a failure, not a skip" >&2; exit 1; }
  exit 0
fi

dir=$(dirname "$OPA")
mkdir -p "$dir"
staging=$(mktemp -d "$dir/.opa-install.XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "opa: CGO_ENABLED=0 go install github.com/open-policy-agent/opa@v$OPA_VERSION"
started=$EPOCHREALTIME
CGO_ENABLED=0 GOBIN=$staging go install "github.com/open-policy-agent/opa@v$OPA_VERSION"
got=$(installed_version "$staging/opa")
[[ $got == "$OPA_VERSION" ]] || { echo "opa: the built binary reports version '$got', expected $OPA_VERSION" >&2; exit 1; }
mv -f "$staging/opa" "$OPA"
awk -v a="$started" -v b="$EPOCHREALTIME" -v v="$OPA_VERSION" -v p="$OPA" \
  'BEGIN { printf "opa %s installed at %s in %.1f s\n", v, p, b - a }'
