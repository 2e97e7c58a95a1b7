#!/usr/bin/env bash
# Real multi-node Docker Swarm end-to-end run of the swarm runtime (`make e2e-swarm`, docs/swarm.md).
#
# Builds a cluster on this machine out of network namespaces: one host bridge with an address from a /24 that no
# route uses, one namespace per node (a veth pair into the bridge, eth0 = 172.29.N.(10+i)), and in each a private
# dockerd (its own UTS namespace for a hostname of its own, --data-root, --exec-root, socket, pid file, iptables ON:
# its rules stay in that namespace). The manager runs `docker swarm init --dispatcher-heartbeat 2s`, the workers
# join. The images (the debootstrap base, the demo API, nginx: scripts/e2e/common.sh, shared with e2e_docker.sh) are
# built on the manager and loaded on every node (no registry). Then the swarm story runs through the real
# `swiftdeploy` console script (scripts/e2e/swarm_story.py). Whatever happens, the EXIT trap stops every engine and
# removes every namespace, interface, mount, process and folder it made, then checks that nothing is left (and
# that the host's firewall, routes and ip_forward are what they were) and fails the run otherwise.
#
# Usage:
#   scripts/e2e_swarm.sh              the whole run (cluster, images, story, cleanup)
#   scripts/e2e_swarm.sh --up DIR     cluster + images, left running; writes DIR/cluster.env and prints it
#   scripts/e2e_swarm.sh --down DIR   tears down what `--up DIR` made, with the same leftover check
#   E2E_SWARM_HOLD=1 scripts/e2e_swarm.sh   cluster + images, prints the env, waits for Ctrl-C/SIGTERM, tears down
#
# Environment: E2E_SWARM_WORKERS (default 2), SWIFTDEPLOY_E2E_CACHE, E2E_STORAGE_DRIVER, E2E_ADDRESS_POOL (see
# scripts/e2e_docker.sh), E2E_KEEP_LOGS=DIR (copy the engines' logs and the story folder there), E2E_MAX_LOAD.
set -Eeuo pipefail
umask 022

E2E_NAME=e2e-swarm
# shellcheck source=scripts/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/e2e/common.sh"

MODE=run
case ${1:-} in
  --up) MODE=up; DIR=${2:?--up needs a folder} ;;
  --down) MODE=down; DIR=${2:?--down needs a folder} ;;
  --stop-node | --start-node) MODE=${1#--}; DIR=${2:?$1 needs a folder}; NODE_NAME=${3:?$1 needs a node name} ;;
  "") [[ -n ${E2E_SWARM_HOLD:-} ]] && MODE=hold ;;
  *) echo "usage: $0 [--up DIR | --down DIR | --stop-node DIR NAME | --start-node DIR NAME]" >&2; exit 2 ;;
esac

# --- the cluster's footprint (also written to $T/cluster.state for --down) --------------------------------------
T=""
ID=""          # 4 hex digits: every name the run makes starts with sdsw$ID
NET=""         # 172.29.N: the /24 of the host bridge and the nodes
NODES=()       # m w1 w2 ...
RUN_NETNS_MADE=0
HOLDING=0
HOLD_PID=""
node_ns() { echo "sdsw$ID-$1"; }
node_addr() { local i=${1#w}; [[ $1 == m ]] && i=0; echo "$NET.$((11 + i))"; }
node_name() { if [[ $1 == m ]]; then echo manager; else echo "worker${1#w}"; fi; }
node_sock() { echo "unix://$T/$1/docker.sock"; }
node_pid() { cat "$T/$1/docker.pid" 2>/dev/null || true; }
on() { local n=$1; shift; DOCKER_HOST=$(node_sock "$n") docker "$@"; }

ours_links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | grep -E "^sdsw$ID(-|$)" || true; }
ours_netns() { ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^sdsw$ID-" || true; }
ours_mounts() { mounts_under_t; awk -v p="/run/netns/sdsw$ID-" 'index($2, p) == 1 { print $2 }' /proc/mounts; }
host_firewall() {  # the host namespace's rules, without counters: must be the same after the run
  { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | grep -v -E '^(#|:)' | sed 's/\[[0-9]*:[0-9]*\]//' || true
}
host_routes() { ip -4 route show table all 2>/dev/null | grep -F "$NET." || true; }
descendants() {  # descendants PID...: every process below these
  local all
  all=$(ps -e -o pid=,ppid= 2>/dev/null)
  awk -v roots="$*" 'BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2; order[NR] = $1 }
    END { changed = 1; while (changed) { changed = 0; for (i = 1; i <= NR; i++) { p = order[i];
      if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1; print p } } } }' <<<"$all"
}
ns_pids() {  # every process in one of the nodes' network namespaces, or below the engines' processes
  local ns
  for ns in $(ours_netns); do ip netns pids "$ns" 2>/dev/null; done
  local roots
  roots=$(pids_under_t | tr '\n' ' ')
  if [[ -n ${roots// /} ]]; then printf '%s\n' $roots; descendants $roots; fi
}
live_pids() {  # never this script itself
  local p
  for p in $(ns_pids | sort -u); do [[ $p != "$$" && $p != "$BASHPID" && -d /proc/$p ]] && echo "$p"; done
}

start_engine() {  # start_engine NODE: its dockerd inside its namespace (in the background; see wait_engine)
  local n=$1 ns
  ns=$(node_ns "$n")
  mkdir -p "$T/$n"
  # nsenter --net, not `ip netns exec`: the latter remounts /sys in a new mount namespace and the engine loses
  # the cgroup mounts. unshare --uts: a hostname per node (what `docker node ls` and `swiftdeploy ps` show).
  # setsid: a Ctrl-C in the terminal reaches this script (which stops the engines in order), not the engines.
  setsid nsenter --net="/run/netns/$ns" unshare --uts -- sh -c 'hostname "$1"; shift; exec "$@"' sh "swarm-$(node_name "$n")" \
    dockerd --storage-driver="$(cat "$T/driver")" --data-root "$T/$n/data" --exec-root "$T/$n/x" \
    --host "$(node_sock "$n")" --pidfile "$T/$n/docker.pid" </dev/null >>"$T/$n/dockerd.log" 2>&1 &
}
wait_engine() {  # wait_engine NODE: until its engine answers (30 s)
  local i
  for i in $(seq 150); do on "$1" version >/dev/null 2>&1 && return 0; sleep 0.2; done
  tail -20 "$T/$1/dockerd.log" >&2
  die "dockerd of $(node_name "$1") did not start"
}
stop_engine() {  # stop_engine NODE: SIGTERM to its dockerd (it stops its containers), 30 s, then SIGKILL
  local pid i
  pid=$(node_pid "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  log "dockerd $pid ($(node_name "$1")) did not stop in 30 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null
}
node_of() {  # node_of NAME: m, w1, ... for manager, worker1, ...
  local n
  for n in "${NODES[@]}"; do [[ $(node_name "$n") == "$1" ]] && { echo "$n"; return; }; done
  die "no node $1 (nodes: $(for n in "${NODES[@]}"; do printf '%s ' "$(node_name "$n")"; done))"
}

save_state() {
  {
    printf 'T=%q\nID=%q\nNET=%q\nRUN_NETNS_MADE=%q\nNODES=(%s)\n' "$T" "$ID" "$NET" "$RUN_NETNS_MADE" "${NODES[*]}"
  } >"$T/cluster.state"
}

stop_engines() {  # every node's dockerd: its services first (graceful task stops), then SIGTERM, 30 s, SIGKILL
  local n pid i
  if [[ -S $T/m/docker.sock ]]; then
    local services
    services=$(on m service ls -q 2>/dev/null)
    [[ -n $services ]] && { log "removing services left behind: $(echo "$services" | tr '\n' ' ')"; on m service rm $services >/dev/null 2>&1; }
  fi
  for n in "${NODES[@]}"; do
    pid=$(node_pid "$n")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" 2>/dev/null
  done
  for n in "${NODES[@]}"; do
    pid=$(node_pid "$n")
    [[ -n $pid ]] || continue
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "dockerd $pid ($(node_name "$n")) did not stop in 30 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  log "engines stopped"
}

cleanup() {
  local rc=$? leftovers="" i p n
  set +e
  trap - EXIT INT TERM
  [[ $HOLDING == 1 && $rc -eq 130 || $HOLDING == 1 && $rc -eq 143 ]] && rc=0
  [[ -n $HOLD_PID ]] && kill "$HOLD_PID" 2>/dev/null
  phase_end
  if [[ $MODE == up && $rc -eq 0 ]]; then summary; log "cluster left up: \`$0 --down $T\` tears it down"; exit 0; fi
  if [[ -n $T && -d $T && -n $ID ]]; then
    PHASE="cluster stop + cleanup"
    PHASE_START=$EPOCHREALTIME
    if [[ -n ${E2E_KEEP_LOGS:-} ]]; then
      mkdir -p "$E2E_KEEP_LOGS"
      for n in "${NODES[@]}"; do cp "$T/$n/dockerd.log" "$E2E_KEEP_LOGS/dockerd-$(node_name "$n").log" 2>/dev/null; done
      cp -r "$T/story" "$E2E_KEEP_LOGS/" 2>/dev/null
    fi
    stop_engines
    # containerd, shims, docker-proxy (they name $T), the tasks below them, anything left in the namespaces.
    for p in $(live_pids); do kill -TERM "$p" 2>/dev/null; done
    for i in $(seq 25); do [[ -z $(live_pids) ]] && break; sleep 0.2; done
    for p in $(live_pids); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    log "engine processes gone"
    for p in $(mounts_under_t); do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null; done
    for p in $(ours_netns); do ip netns delete "$p" 2>/dev/null; done
    for p in $(ours_links); do ip link delete "$p" 2>/dev/null; done
    if [[ $RUN_NETNS_MADE == 1 ]] && [[ -d /run/netns ]] && [[ -z $(ls -A /run/netns 2>/dev/null) ]]; then
      umount /run/netns 2>/dev/null; rmdir /run/netns 2>/dev/null
    fi
    rm -rf "$T" 2>/dev/null || { sleep 1; rm -rf "$T"; }
    log "namespaces, interfaces, mounts and $T removed"
    # The final check: nothing of the cluster may survive the run, and the host's network is as it was.
    p=$(live_pids | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" processes($p)"
    p=$(ours_netns | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" namespaces($p)"
    p=$(ours_links | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" interfaces($p)"
    p=$(ours_mounts | tr '\n' ' ') && [[ -n ${p// /} ]] && leftovers+=" mounts($p)"
    p=$(host_routes | tr '\n' ';') && [[ -n $p ]] && leftovers+=" routes($p)"
    [[ -e $T ]] && leftovers+=" folder($T)"
    [[ $RUN_NETNS_MADE == 1 && -e /run/netns && -z $(ls -A /run/netns 2>/dev/null) ]] && leftovers+=" /run/netns"
    [[ $(cat /proc/sys/net/ipv4/ip_forward) == "${FORWARD_BEFORE:-0}" ]] || leftovers+=" ip_forward($(cat /proc/sys/net/ipv4/ip_forward))"
    if [[ -n ${FIREWALL_BEFORE+x} && $(host_firewall) != "$FIREWALL_BEFORE" ]]; then
      leftovers+=" host-firewall-changed($(diff <(echo "$FIREWALL_BEFORE") <(host_firewall) | tr '\n' ' '))"
    fi
    phase_end
  fi
  summary
  if [[ -n $leftovers ]]; then
    log "FAILED: left behind:$leftovers"
    exit 1
  fi
  if [[ $rc -eq 0 ]]; then
    log "PASSED (no namespace, engine, task, interface, mount or folder left behind; host firewall and routes unchanged)"
  else
    log "FAILED (exit $rc)"
  fi
  exit "$rc"
}

# --- --stop-node / --start-node DIR NAME: one node's engine down (as a lost node) or up again (it rejoins) -------
if [[ $MODE == stop-node || $MODE == start-node ]]; then
  DIR=$(cd "$DIR" 2>/dev/null && pwd) || die "no folder $2"
  [[ -f $DIR/cluster.state ]] || die "$DIR/cluster.state is missing: not a folder \`$0 --up\` made"
  # shellcheck source=/dev/null
  source "$DIR/cluster.state"
  n=$(node_of "$NODE_NAME")
  if [[ $MODE == stop-node ]]; then
    stop_engine "$n"
    log "$NODE_NAME's engine stopped"
  else
    node_pid "$n" | { read -r pid && kill -0 "$pid" 2>/dev/null; } && die "$NODE_NAME's engine is running"
    start_engine "$n"
    wait_engine "$n"
    log "$NODE_NAME's engine started again, pid $(node_pid "$n") (it rejoins the swarm by itself)"
  fi
  exit 0
fi

# --- --down DIR: the cleanup of a cluster `--up DIR` left running ------------------------------------------------
if [[ $MODE == down ]]; then
  DIR=$(cd "$DIR" 2>/dev/null && pwd) || die "no folder $2"
  [[ -f $DIR/cluster.state ]] || die "$DIR/cluster.state is missing: not a folder \`$0 --up\` made"
  # shellcheck source=/dev/null
  source "$DIR/cluster.state"
  FIREWALL_BEFORE=$(cat "$T/host-firewall.before" 2>/dev/null)
  FORWARD_BEFORE=$(cat "$T/ip_forward.before" 2>/dev/null)
  trap cleanup EXIT
  exit 0
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. tools ----------------------------------------------------------------------------------------------------
phase "tools"
e2e_tools util-linux:nsenter iptables:iptables
WORKERS=${E2E_SWARM_WORKERS:-2}
[[ $WORKERS =~ ^[1-9]$ ]] || die "E2E_SWARM_WORKERS must be 1..9, not $WORKERS"

# --- 2. namespaces, bridge, engines --------------------------------------------------------------------------------
phase "namespaces + engines"
if [[ $MODE == up ]]; then
  [[ ! -e $DIR || -z $(ls -A "$DIR" 2>/dev/null) ]] || die "$DIR exists and is not empty"
  mkdir -p "$DIR"
  T=$(cd "$DIR" && pwd)
  ((${#T} <= 40)) || die "$T is too long (the engines' unix socket paths): use a folder of at most 40 characters"
else
  T=$(mktemp -d /tmp/sdw.XXXXXX) # short: the engines' unix socket paths must stay under ~100 bytes
fi
FIREWALL_BEFORE=$(host_firewall)
FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)
printf '%s\n' "$FIREWALL_BEFORE" >"$T/host-firewall.before"
echo "$FORWARD_BEFORE" >"$T/ip_forward.before"
for i in $(seq 64); do
  ID=$(printf '%04x' $((RANDOM % 65536)))
  [[ -z $(ip -o link show | grep -F "sdsw$ID") ]] && break
done
POOL=$(pick_pool)
NET=${POOL%.0/24}
NODES=(m)
for i in $(seq "$WORKERS"); do NODES+=("w$i"); done
[[ -d /run/netns ]] || RUN_NETNS_MADE=1
save_state
e2e_docker_config

BRIDGE=sdsw$ID
ip link add "$BRIDGE" type bridge
sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" 2>/dev/null || true
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
DRIVER=$(pick_driver)
echo "$DRIVER" >"$T/driver"
for n in "${NODES[@]}"; do
  ns=$(node_ns "$n")
  ip netns add "$ns"
  ip link add "$ns" type veth peer name "sdsw$ID-p"
  ip link set "sdsw$ID-p" netns "$ns"
  ip link set "$ns" master "$BRIDGE" up
  ip -n "$ns" link set "sdsw$ID-p" name eth0
  ip -n "$ns" addr add "$(node_addr "$n")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  start_engine "$n"
done
for n in "${NODES[@]}"; do wait_engine "$n"; done
log "engines up: $(for n in "${NODES[@]}"; do printf '%s %s pid %s; ' "$(node_name "$n")" "$(node_addr "$n")" "$(node_pid "$n")"; done)storage $DRIVER"

# --- 3. the swarm --------------------------------------------------------------------------------------------------
phase "swarm init + join"
# A 2 s dispatcher heartbeat: the manager declares a silent node down after a few missed beats (default 5 s).
on m swarm init --advertise-addr "$(node_addr m)" --listen-addr "$(node_addr m):2377" --dispatcher-heartbeat 2s \
  >/dev/null || die "docker swarm init failed"
TOKEN=$(on m swarm join-token -q worker)
JOBS=()
for n in "${NODES[@]:1}"; do
  on "$n" swarm join --token "$TOKEN" --advertise-addr "$(node_addr "$n")" --listen-addr "$(node_addr "$n"):2377" \
    "$(node_addr m):2377" >/dev/null &
  JOBS+=($!)
done
wait_ok=1
for job in "${JOBS[@]}"; do wait "$job" || wait_ok=0; done
[[ $wait_ok == 1 ]] || die "a worker could not join the swarm"
for i in $(seq 150); do
  ready=$(on m node ls --format '{{.Status}}' | grep -c Ready || true)
  ((ready == ${#NODES[@]})) && break
  sleep 0.2
done
((ready == ${#NODES[@]})) || die "only $ready of ${#NODES[@]} nodes are Ready"
on m node ls >&2

# --- 4. images: built on the manager (or the cached set), loaded on every node -------------------------------------
export DOCKER_HOST=$(node_sock m)
e2e_cache
IMAGES_KEY=swarm-images-$(cat "$REPO"/src/demo_api/Dockerfile "$REPO"/src/demo_api/requirements.txt \
  "$REPO"/src/demo_api/*.py "$REPO/scripts/e2e/nginx.Dockerfile" <(echo "$(rootfs_key) $DEMO_STABLE $DEMO_CANARY $NGINX_IMAGE") \
  | sha256sum | cut -c1-12).tar
if [[ -n $CACHE && -s $CACHE/$IMAGES_KEY ]]; then
  phase "image load (cached set)"
  IMAGES_TAR=$CACHE/$IMAGES_KEY
  log "images from the cache: $IMAGES_TAR"
  LOAD_ON=("${NODES[@]}")
else
  phase "base image"
  e2e_base_image
  phase "wheels"
  e2e_wheels
  phase "image builds"
  e2e_images --no-opa
  phase "image save + load"
  IMAGES_TAR=$T/images.tar
  docker save -o "$IMAGES_TAR" "$DEMO_STABLE" "$DEMO_CANARY" "$NGINX_IMAGE"
  cache_put "$IMAGES_TAR" "$IMAGES_KEY"
  LOAD_ON=("${NODES[@]:1}")
fi
JOBS=()
for n in "${LOAD_ON[@]}"; do on "$n" load -q -i "$IMAGES_TAR" >"$T/$n/load.log" 2>&1 & JOBS+=($!); done
wait_ok=1
for job in "${JOBS[@]}"; do wait "$job" || wait_ok=0; done
[[ $wait_ok == 1 ]] || die "loading the images on a node failed"
rm -f "$T/images.tar"
for n in "${NODES[@]}"; do
  on "$n" image inspect "$DEMO_STABLE" "$DEMO_CANARY" "$NGINX_IMAGE" >/dev/null \
    || die "$(node_name "$n") lacks an image"
done
log "images on every node: $DEMO_STABLE $DEMO_CANARY $NGINX_IMAGE"

# --- 5. the environment to use it -----------------------------------------------------------------------------------
{
  echo "# the swarm e2e cluster in $T (scripts/e2e_swarm.sh): source this file"
  echo "export DOCKER_HOST=$(node_sock m)"
  echo "export DOCKER_CONFIG=$T/config"
  echo "export E2E_SWARM_DIR=$T"
  echo "export E2E_SWARM_MANAGER_ADDR=$(node_addr m)  # the host reaches the manager's published (mode: host) ports here"
  echo "export E2E_SWARM_NODES='$(for n in "${NODES[@]}"; do printf '%s ' "$(node_name "$n")"; done | sed 's/ $//')'"
  for n in "${NODES[@]}"; do
    up=$(node_name "$n" | tr '[:lower:]' '[:upper:]')
    echo "export E2E_SWARM_${up}_HOST=$(node_sock "$n") E2E_SWARM_${up}_ADDR=$(node_addr "$n") E2E_SWARM_${up}_PIDFILE=$T/$n/docker.pid E2E_SWARM_${up}_NETNS=$(node_ns "$n")"
  done
  echo "export E2E_STABLE_IMAGE=$DEMO_STABLE E2E_CANARY_IMAGE=$DEMO_CANARY E2E_NGINX_IMAGE=$NGINX_IMAGE"
  echo "export E2E_OPA=$OPA"
} >"$T/cluster.env"
phase_end

if [[ $MODE == up || $MODE == hold ]]; then
  cat "$T/cluster.env"
  if [[ $MODE == up ]]; then exit 0; fi
  HOLDING=1
  log "cluster up (source $T/cluster.env); Ctrl-C or SIGTERM to pid $$ tears it down"
  sleep infinity &
  HOLD_PID=$!
  wait "$HOLD_PID" || true
  exit 0
fi

# --- 6. the story, through the real console script -----------------------------------------------------------------
mkdir -p "$T/story"
# shellcheck source=/dev/null
source "$T/cluster.env"
# swiftdeploy runs on the manager: the story (every CLI command, its traffic, the supervised OPA) runs in the manager's
# network namespace, so 127.0.0.1:<public port> is the nginx task's host-mode port and OPA's 127.0.0.1 is the
# manager's loopback, which no task shares. Files and unix sockets are the host's (one mount namespace).
nsenter --net="/run/netns/$E2E_SWARM_MANAGER_NETNS" env E2E_SWARM_MANAGER_ADDR=127.0.0.1 \
  "$PY" "$REPO/scripts/e2e/swarm_story.py" --workdir "$T/story" --swiftdeploy "$SWIFTDEPLOY" \
  --timings "$T/story-timings.tsv" || story_rc=$?
if [[ -f $T/story-timings.tsv ]]; then
  while IFS=$'\t' read -r name seconds; do PHASES+=("$name"); TIMES+=("$seconds"); done <"$T/story-timings.tsv"
fi
[[ ${story_rc:-0} -eq 0 ]] || die "the story failed (exit ${story_rc}; the failing step and its logs are above)"
