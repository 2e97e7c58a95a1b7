"""A crash at any instant is recoverable and leaks nothing (docs/operations.md#failure-behaviour).

The real CLI on the local runtime (the demo API under uvicorn, the real nginx, the embedded engine) is SIGKILLed at
the worst moments - while a track starts (deploy, promote canary, the blue/green hand-over of promote stable),
between "canary healthy" and "nginx reloaded", with nginx's master gone - and the next command must converge;
`FileTxn` is checked against a manifest changed under it and a disk that fills mid-commit (RLIMIT_FSIZE in a child);
the SIGKILL loop kills every operation at seeded random instants (SWIFTDEPLOY_LONG_FAULTS=1 for the long variant).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from support import SWIFTDEPLOY, background_traffic, cli, kill_leftovers, leftovers, write_manifest

from swiftdeploy import generate
from swiftdeploy.manifest import load_manifest
from swiftdeploy.ops.base import FileTxn
from swiftdeploy.runtime import procs
from swiftdeploy.runtime.procs import port_free

# A canary gate that allows after a few clean requests (so promote stable reaches its hand-over in a short window);
# the host thresholds are the relaxed ones of every stack test.
QUICK_ALLOW = {"bad_error_rate_percent": 50, "bad_slow_percent": 50, "allow_confidence_percent": 50, "min_requests": 5}


@pytest.fixture
def stack_dir(tmp_path):
    """A folder for one stack; whatever happens, every process started for it is stopped afterwards."""
    folder = tmp_path / "stack"
    folder.mkdir()
    try:
        yield folder
    finally:
        if (folder / "manifest.yaml").exists():
            cli(folder / "manifest.yaml", "teardown", timeout=60)
        kill_leftovers(folder)


def spawn(manifest: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.Popen(
        [SWIFTDEPLOY, "-m", str(manifest), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill_when(run: subprocess.Popen, ready, what: str, timeout: float = 90.0) -> None:
    """SIGKILL the CLI the moment `ready()` holds (polled every few ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert run.poll() is None, f"the CLI ended (exit {run.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.003)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=10)


def pid_dir(folder: Path) -> Path:
    return folder / ".swiftdeploy" / "pids"


def recorded_pids(folder: Path) -> set[int]:
    """Every pid a pid file names (with the process groups they lead: nginx's workers)."""
    pids = set()
    for path in pid_dir(folder).glob("*.json") if pid_dir(folder).is_dir() else []:
        rec = procs.ProcRecord.load(path)
        if rec is not None:
            pids.add(rec.pid)
    return pids


def unrecorded(folder: Path, settle: float = 3.0) -> list[str]:
    """Live processes started for this stack that no pid file names: leaks. A process on its way out (an
    `nginx -t` of the killed CLI) gets `settle` seconds."""
    deadline = time.monotonic() + settle
    while True:
        known = recorded_pids(folder)
        found = []
        for line in leftovers(folder):
            pid = int(line.split()[1].rstrip(":"))
            try:
                if pid in known or os.getpgid(pid) in known:
                    continue
            except OSError:
                continue
            if "swiftdeploy -m" in line:  # a CLI of this test still finishing (never the case between steps)
                continue
            found.append(line)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def all_ports_free(m) -> bool:
    ports = [m.nginx.port, m.nginx.admin_port, *range(m.services.port, m.services.port + 4)]
    return all(port_free(p) for p in ports)


def drift(manifest: Path) -> list[str]:
    """What `init --check` reports: generated files that differ from the manifest."""
    return [c.relpath for c in generate.plan(load_manifest(manifest)) if c.changed]


def admin_canary_mode(m) -> str | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{m.nginx.admin_port}/canary/healthz", timeout=5.0, trust_env=False)
    except httpx.HTTPError:
        return None
    return answer.json().get("mode") if answer.status_code == 200 else None


def finish_clean(folder: Path, manifest: Path) -> None:
    """The last teardown leaves no process and no port behind."""
    m = load_manifest(manifest)
    r = cli(manifest, "teardown", timeout=60)
    assert r.returncode == 0, r.stderr
    assert leftovers(folder) == []
    assert all_ports_free(m)


# --- three leaks: a live process recorded in <svc>.next.json -------------------------------------------------


def test_killed_deploy_leaves_no_orphan(stack_dir):
    manifest = write_manifest(stack_dir)
    run = spawn(manifest, "deploy", "--timeout", "60")
    kill_when(run, lambda: (pid_dir(stack_dir) / "app.next.json").exists(), "app.next.json")
    orphan = procs.ProcRecord.load(pid_dir(stack_dir) / "app.next.json")
    assert orphan is not None and procs.is_running(orphan)  # the leak: a live app only the .next file knows

    r = cli(manifest, "deploy", "--timeout", "60")
    assert r.returncode == 0, r.stderr  # not "port ... is already in use: change services.port"
    assert f"stopped app (pid {orphan.pid}, app.next.json) left by a start that was interrupted" in r.stderr
    assert not procs.is_running(orphan)
    assert unrecorded(stack_dir) == [] and drift(manifest) == []
    finish_clean(stack_dir, manifest)


def test_killed_promote_canary_leaves_no_orphan(stack_dir):
    manifest = write_manifest(stack_dir)
    assert cli(manifest, "deploy").returncode == 0
    run = spawn(manifest, "promote", "canary")
    kill_when(run, lambda: (pid_dir(stack_dir) / "app-canary.next.json").exists(), "app-canary.next.json")
    orphan = procs.ProcRecord.load(pid_dir(stack_dir) / "app-canary.next.json")
    assert orphan is not None and procs.is_running(orphan)

    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    assert f"pid {orphan.pid}" in r.stderr and "interrupted" in r.stderr
    assert not procs.is_running(orphan)
    assert admin_canary_mode(load_manifest(manifest)) == "canary"
    assert unrecorded(stack_dir) == [] and drift(manifest) == []
    finish_clean(stack_dir, manifest)


def test_killed_promote_stable_handover_leaves_no_orphan(stack_dir):
    """SIGKILL while the new stable starts beside the old one (blue/green): the manifest already holds the promoted
    release; `deploy --direct` converges (the canary gate's allow is in the history) and nothing leaks."""
    manifest = write_manifest(stack_dir, thresholds=QUICK_ALLOW)
    assert cli(manifest, "deploy").returncode == 0
    assert cli(manifest, "promote", "canary").returncode == 0
    m = load_manifest(manifest)
    with background_traffic(m, rps=30, duration=120):
        run = spawn(manifest, "promote", "stable", "--window", "20")
        kill_when(run, lambda: (pid_dir(stack_dir) / "app.next.json").exists(), "app.next.json")
    orphan = procs.ProcRecord.load(pid_dir(stack_dir) / "app.next.json")
    assert orphan is not None and procs.is_running(orphan)

    r = cli(manifest, "deploy", "--direct")
    assert r.returncode == 0, r.stderr
    assert f"pid {orphan.pid}" in r.stderr and "interrupted" in r.stderr
    assert not procs.is_running(orphan)
    m = load_manifest(manifest)
    assert m.services.mode == "stable" and m.services.version == "2.0.0"
    answer = httpx.get(f"http://127.0.0.1:{m.nginx.admin_port}/stable/healthz", timeout=5.0, trust_env=False)
    assert answer.json()["version"] == "2.0.0"
    assert unrecorded(stack_dir) == [] and drift(manifest) == []
    finish_clean(stack_dir, manifest)


def test_orphan_without_any_record_is_recognised_by_its_port(stack_dir):
    """A run killed between starting a process and writing its pid file leaves no record at all: the port is "in
    use" by our own process, which says so and recovers instead of asking to change the port."""
    manifest = write_manifest(stack_dir)
    m = load_manifest(manifest)
    env = {**os.environ, "APP_PORT": str(m.services.port), "APP_HOST": "127.0.0.1", "MODE": "stable",
           procs.MARKER: str(pid_dir(stack_dir))}  # fmt: skip
    orphan = subprocess.Popen(
        [sys.executable, "-m", "demo_api"], cwd=stack_dir, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while port_free(m.services.port):
            assert time.monotonic() < deadline and orphan.poll() is None
            time.sleep(0.05)
        r = cli(manifest, "deploy")
        assert r.returncode == 0, r.stderr
        assert f"pid {orphan.pid}" in r.stderr and "interrupted" in r.stderr
        assert orphan.wait(timeout=10) is not None
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
    finish_clean(stack_dir, manifest)


# --- crash between "canary healthy" and "nginx reloaded" -------------------------------------------------------


def test_promote_canary_checks_that_nginx_routes_to_the_canary(stack_dir):
    """The state a SIGKILL right after the canary became healthy leaves: manifest in canary mode, the canary
    running and recorded, nginx still on the stable-only config. `promote canary` must not say "nothing to do"."""
    from swiftdeploy.manifest.edit import set_values
    from swiftdeploy.runtime.local import LocalRuntime

    manifest = write_manifest(stack_dir)
    assert cli(manifest, "deploy").returncode == 0
    set_values(manifest, {("services", "mode"): "canary"})
    generate.write(load_manifest(manifest))
    m = load_manifest(manifest)
    LocalRuntime().start_track(m, "canary", timeout=30)  # healthy; the process is killed before the reload
    assert admin_canary_mode(m) is None  # every request goes to stable

    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    assert "nothing to do" not in r.stdout
    assert "nginx does not route to it" in r.stderr
    assert admin_canary_mode(m) == "canary"
    with httpx.Client(trust_env=False, timeout=5.0) as client:
        modes = {client.get(f"http://127.0.0.1:{m.nginx.port}/", headers={"X-Canary": "always"}).headers.get("X-Mode")}
    assert modes == {"canary"}
    # and once it routes, a second run has nothing to do
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
    finish_clean(stack_dir, manifest)


# --- nginx master killed with SIGKILL --------------------------------------------------------------------------


def kill_nginx_master(folder: Path) -> tuple[int, list[int]]:
    rec = procs.ProcRecord.load(pid_dir(folder) / "nginx.json")
    assert rec is not None
    workers = [c.pid for c in psutil.Process(rec.pid).children()]
    os.kill(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.is_running(rec):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return rec.pid, workers


def test_masterless_nginx_is_detected_and_restarted(stack_dir):
    manifest = write_manifest(stack_dir)
    assert cli(manifest, "deploy").returncode == 0
    m = load_manifest(manifest)
    master, workers = kill_nginx_master(stack_dir)
    assert workers and all(psutil.pid_exists(w) for w in workers)
    assert httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=5.0, trust_env=False).status_code == 200

    r = cli(manifest, "ps")
    assert f"master process (pid {master}) is gone" in " ".join(r.stdout.split()), r.stdout

    r = cli(manifest, "deploy")
    assert r.returncode == 0, r.stderr  # not "port ... is already in use by pid ... (nginx: worker process)"
    assert f"nginx's master (pid {master}) is gone" in " ".join(r.stderr.split()), r.stderr
    for worker in workers:
        assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    rec = procs.ProcRecord.load(pid_dir(stack_dir) / "nginx.json")
    assert rec is not None and rec.pid != master and procs.is_running(rec)
    assert httpx.get(f"http://127.0.0.1:{m.nginx.port}/", timeout=5.0, trust_env=False).status_code == 200
    assert unrecorded(stack_dir) == []
    finish_clean(stack_dir, manifest)


def test_masterless_nginx_during_promote_canary(stack_dir):
    """promote canary's reload finds the master gone: nginx is restarted on the canary config."""
    manifest = write_manifest(stack_dir)
    assert cli(manifest, "deploy").returncode == 0
    kill_nginx_master(stack_dir)
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 0, r.stderr
    m = load_manifest(manifest)
    assert m.services.mode == "canary" and admin_canary_mode(m) == "canary"
    assert unrecorded(stack_dir) == []
    finish_clean(stack_dir, manifest)


KILL_NGINX = """
import json, os, signal, sys
# the canary's start takes the whole nginx down (master and workers), then runs the demo API as usual
os.killpg(json.load(open(".swiftdeploy/pids/nginx.json"))["pid"], signal.SIGKILL)
os.execv(sys.executable, [sys.executable, "-m", "demo_api"])
"""


def test_promote_canary_undo_runs_every_step(stack_dir):
    """The reload of promote canary fails (nginx is gone), and so does the undo's reload: the undo still stops the
    canary and restores the manifest, and says what failed (today: the canary keeps running while the manifest
    says stable)."""
    (stack_dir / "kill_nginx.py").write_text(KILL_NGINX)
    manifest = write_manifest(stack_dir)
    text = manifest.read_text().replace(
        "  weight: 50\n", f"  weight: 50\n  command: [{sys.executable}, kill_nginx.py]\n"
    )
    manifest.write_text(text)
    original = manifest.read_text()
    assert cli(manifest, "deploy").returncode == 0
    r = cli(manifest, "promote", "canary")
    assert r.returncode == 1, r.stdout + r.stderr
    stderr = " ".join(r.stderr.split())
    assert "could not undo every step after the failure: pointing nginx back at stable: nginx is not running" in stderr
    assert manifest.read_text() == original
    assert not (pid_dir(stack_dir) / "app-canary.json").exists()
    canaries = [p for p in psutil.process_iter(["environ"]) if (p.info["environ"] or {}).get("MODE") == "canary"
                and (p.info["environ"] or {}).get(procs.MARKER) == str(pid_dir(stack_dir))]  # fmt: skip
    assert canaries == [], r.stderr
    assert drift(manifest) == []
    finish_clean(stack_dir, manifest)


# --- FileTxn: the manifest first, then the files, inside the undo scope ----------------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".swiftdeploy" not in p.parts}  # fmt: skip


def test_manifest_changed_during_the_window_writes_nothing(tmp_path):
    manifest = write_manifest(tmp_path)
    generate.write(load_manifest(manifest))
    m = load_manifest(manifest)
    txn = FileTxn(m, {("services", "mode"): "canary"})
    manifest.write_text(manifest.read_text() + "# edited by someone else meanwhile\n")
    before = snapshot(tmp_path)
    with pytest.raises(Exception, match="changed while this operation ran; nothing was edited"):
        txn.commit()
    assert snapshot(tmp_path) == before  # today: docker-compose.yml and nginx.conf are already promoted


DISK_FULL = """
import resource, signal, sys
from swiftdeploy.manifest import load_manifest
from swiftdeploy.ops.base import FileTxn
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead of killing us
txn = FileTxn(load_manifest(sys.argv[1]), {("services", "mode"): "canary"})
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    txn.commit()
except OSError as exc:
    print("failed:", exc.errno, exc.strerror)
    sys.exit(7)
print("committed")
"""


def test_disk_full_mid_commit_restores_everything(tmp_path):
    """RLIMIT_FSIZE in a child: the manifest and the first generated file fit, a later one does not."""
    manifest = write_manifest(tmp_path)
    generate.write(load_manifest(manifest))
    m = load_manifest(manifest)
    txn = FileTxn(m, {("services", "mode"): "canary"})
    changes = [c for c in generate.plan(txn.m_new) if c.changed]
    sizes = [len(c.new.encode()) for c in changes]
    fits = max(len(txn.new_text.encode()), len(txn.old_text.encode()), sizes[0],
               *(len((c.old or "").encode()) for c in changes))  # fmt: skip
    assert any(size > fits for size in sizes[1:]), (sizes, fits)  # a later file cannot be written
    before = snapshot(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(manifest), str(fits)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 7, done.stdout + done.stderr
    assert "File too large" in done.stdout
    assert snapshot(tmp_path) == before  # manifest and every generated file as they were; no temp file left
    assert drift(manifest) == []


def test_stale_temp_files_are_removed(tmp_path):
    """A write killed before its rename leaves `.<name>.<pid>-<random>.tmp`: the next write of that file and
    `teardown --clean` remove it; a temp file of a writer still running stays."""
    manifest = write_manifest(tmp_path)
    assert cli(manifest, "init").returncode == 0
    dead = next(pid for pid in range(4_000_000, 3_000_000, -7) if not psutil.pid_exists(pid))
    killed = tmp_path / f".nginx.conf.{dead}-abcd1234.tmp"
    older = tmp_path / ".docker-compose.yml.k2j4h5g6.tmp"  # an older swiftdeploy's name, no pid
    running = tmp_path / ".nginx.conf.1-abcd1234.tmp"  # pid 1 is alive
    state = tmp_path / ".swiftdeploy"
    state.mkdir(parents=True)
    in_state = state / f".lock.{dead}-zz99yy88.tmp"
    mine = tmp_path / ".notes.txt.tmp"  # not ours: left alone
    for path in (killed, older, running, in_state, mine):
        path.write_text("half")
    assert cli(manifest, "init").returncode == 0  # nothing changed, but the stale temp files of its files go
    assert not killed.exists() and not older.exists() and running.exists() and in_state.exists()
    r = cli(manifest, "teardown", "--clean")
    assert r.returncode == 0, r.stderr
    assert not in_state.exists() and running.exists() and mine.exists()


# --- the SIGKILL loop ------------------------------------------------------------------------------------------

LONG = os.environ.get("SWIFTDEPLOY_LONG_FAULTS") == "1"
ROUND = ["deploy", "promote canary", "promote stable", "promote canary", "rollback", "teardown"]
# How long each operation runs once it holds the lock (seconds, roughly, on an idle 2-core machine): the kill
# instant is drawn from [0, that] after the lock is taken.
SPAN = {"deploy": 2.0, "promote canary": 2.0, "promote stable": 3.5, "rollback": 1.0, "teardown": 1.0}


KILLS_PER_STEP = 3


def command_for(op: str) -> list[str]:
    if op == "promote stable":
        return ["promote", "stable", "--window", "2"]
    return op.split()


def _children_cpu() -> float:
    """CPU seconds of the CLIs this test ran and reaped (the wall time depends on what else the machine runs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kill_at_random(manifest: Path, op: str, rng: random.Random) -> bool:
    """Run `op` and SIGKILL it at a random instant within its usual duration, counted from the moment it holds the
    deploy lock (so the kills land in the operation, not in Python's start-up, however busy the machine is); False
    when it finished first."""
    run = spawn(manifest, *command_for(op))
    lock = manifest.parent / ".swiftdeploy" / "lock"
    mark = f'"pid": {run.pid},'
    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline:
        try:
            if mark in lock.read_text(encoding="utf-8"):
                break
        except OSError:
            pass
        time.sleep(0.003)
    try:
        run.wait(timeout=rng.uniform(0.0, SPAN[op]))  # finished before its kill instant: nothing to kill
        return False
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        return True


def test_sigkill_loop(stack_dir):
    """Kill the CLI at seeded random instants during every operation - three times in a row, so a later kill often
    lands in the recovery of an earlier one - then run the command that converges: it succeeds, `init --check` is clean,
    nothing runs that no pid file names, and the last teardown leaves no process and no port. Rounds of the six
    operations until 50 kills (SWIFTDEPLOY_LONG_FAULTS=1: 300)."""
    seed = int(os.environ.get("SWIFTDEPLOY_FAULTS_SEED", "14"))
    target = 300 if LONG else 50
    rng = random.Random(seed)
    manifest = write_manifest(stack_dir, thresholds=QUICK_ALLOW)
    m = load_manifest(manifest)
    started, cpu_before = time.monotonic(), _children_cpu()
    kills, runs, leaks, per_op = 0, 0, [], dict.fromkeys(SPAN, 0)
    with background_traffic(m, rps=20, duration=300 if not LONG else 3600):
        while kills < target:
            for op in ROUND:
                for _ in range(KILLS_PER_STEP):
                    runs += 1
                    if kill_at_random(manifest, op, rng):
                        kills += 1
                        per_op[op] += 1
                # the command that converges: the same one again (promote stable after its manifest edit: deploy)
                if op == "promote stable" and load_manifest(manifest).services.mode == "stable":
                    nxt = ["deploy", "--direct"]
                else:
                    nxt = command_for(op)
                r = cli(manifest, *nxt, timeout=120)
                allowed = (0, 3) if nxt[:2] == ["promote", "stable"] else (0,)  # 3: the gate blocked (no change)
                assert r.returncode in allowed, f"run {runs} {op} -> {' '.join(nxt)}:\n{r.stderr}"
                assert drift(manifest) == [], f"run {runs} {op}: init --check reports drift"
                leaks += [f"after {op} (run {runs}): {line}" for line in unrecorded(stack_dir)]
                assert not leaks, leaks
    finish_clean(stack_dir, manifest)
    seconds = time.monotonic() - started
    report = {"seed": seed, "runs": runs, "kills": kills, "per_operation": per_op, "leaked_processes": len(leaks),
              "seconds": round(seconds, 1), "cli_cpu_seconds": round(_children_cpu() - cpu_before, 1)}  # fmt: skip
    print(f"\nSIGKILL loop: {json.dumps(report)}")
    assert kills >= target and all(per_op.values()), report
