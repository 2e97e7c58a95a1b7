"""Forged and tampered pid files: swiftdeploy signals only its own processes (docs/operations.md#failure-behaviour).

Every case forges a pid file in a real state folder and runs the real `teardown` (the stop path every other stop
path shares): the process a forged file names must survive, and stderr must say which file was refused, for which
pid and why. The victims are real processes of this test (`sleep`), each in its own session like a real app.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import cli, write_manifest

from swiftdeploy.runtime import procs

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="another user's file or process needs root to create")


@pytest.fixture
def victim():
    """A `sleep` in its own session (process group id = its pid, like every process swiftdeploy starts)."""
    started: list[subprocess.Popen] = []

    def start(*, user: int | None = None, argv: list[str] | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            argv or ["sleep", "300"],
            start_new_session=True,
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def forge(folder: Path, service: str, proc_pid: int, **fields) -> Path:
    """A pid file for `service` naming `proc_pid` with its real start time (what a forger reads from /proc)."""
    pids = folder / ".swiftdeploy" / "pids"
    pids.mkdir(parents=True, exist_ok=True)
    record = {
        "name": service,
        "pid": proc_pid,
        "create_time": psutil.Process(proc_pid).create_time(),
        "argv": [sys.executable, "-m", "demo_api"],
        "log": str(folder / "x.log"),
        "started": "2026-01-01T00:00:00Z",
        "port": 9,
    } | fields
    path = pids / f"{service}.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    path.chmod(0o644)
    return path


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def teardown_refuses(folder: Path, path: Path, pid: int, why: str) -> subprocess.CompletedProcess[str]:
    r = cli(folder / "manifest.yaml", "teardown", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next((x for x in r.stderr.splitlines() if x.startswith("warning:") and f"pid {pid}" in x), "")
    assert str(path) in " ".join(r.stderr.split()) or path.name in line, r.stderr
    assert why in " ".join(r.stderr.split()), r.stderr
    assert "left alone" in " ".join(r.stderr.split()), r.stderr
    return r


def test_forged_pid_file_naming_another_program_is_refused(tmp_path, victim):
    """pid and start time right (anyone can read them), but the process is not the recorded program: today's
    teardown SIGTERMs its whole process group."""
    write_manifest(tmp_path)
    proc = victim()
    path = forge(tmp_path, "app", proc.pid)
    teardown_refuses(tmp_path, path, proc.pid, "its command line is 'sleep 300'")
    time.sleep(0.2)  # a signal, had one been sent, is delivered by now
    assert alive(proc)
    # the record of the real executable but another command line is refused too
    exe = psutil.Process(proc.pid).exe()
    path = forge(tmp_path, "app", proc.pid, exe=exe, argv=[exe, "infinity"])
    teardown_refuses(tmp_path, path, proc.pid, "its command line is 'sleep 300'")
    assert alive(proc)


def test_forged_executable_is_refused(tmp_path, victim):
    write_manifest(tmp_path)
    proc = victim()
    path = forge(tmp_path, "nginx", proc.pid, argv=["sleep", "300"], exe="/usr/sbin/nginx")
    teardown_refuses(tmp_path, path, proc.pid, f"it runs {psutil.Process(proc.pid).exe()}, not /usr/sbin/nginx")
    assert alive(proc)


def test_world_writable_pid_file_is_refused(tmp_path, victim):
    """Even a record that matches its process exactly is not trusted when anyone could have written it."""
    write_manifest(tmp_path)
    proc = victim()
    path = forge(tmp_path, "app", proc.pid, argv=["sleep", "300"])
    path.chmod(0o666)
    r = teardown_refuses(tmp_path, path, proc.pid, "writable by others (mode 666)")
    assert alive(proc) and path.exists()  # the file stays for the person to look at
    assert "app.json: refused" in r.stdout + r.stderr or "refused" in r.stdout + r.stderr


@needs_root
def test_pid_file_owned_by_another_user_is_refused(tmp_path, victim):
    write_manifest(tmp_path)
    proc = victim()
    path = forge(tmp_path, "app", proc.pid, argv=["sleep", "300"])
    os.chown(path, 65534, 65534)
    teardown_refuses(tmp_path, path, proc.pid, "owned by uid 65534, not by the current user (uid 0)")
    assert alive(proc) and path.exists()


@needs_root
def test_process_of_another_user_is_refused(tmp_path, victim):
    """The record (ours) names a process with the right pid, start time and command line, run by another user."""
    write_manifest(tmp_path)
    proc = victim(user=65534)
    path = forge(tmp_path, "app", proc.pid, argv=["sleep", "300"], uid=0)
    teardown_refuses(tmp_path, path, proc.pid, "it runs as uid 65534, not uid 0")
    assert alive(proc)


def test_group_of_a_dead_leader_with_a_foreign_member_is_left_alone(tmp_path, victim):
    """The leader of a recorded group is gone; what is left in its group is not the recorded program (today: the
    whole group is killed, as if it were nginx's workers)."""
    write_manifest(tmp_path)
    leader = victim(argv=["sh", "-c", "sleep 300 & echo started; exit 0"])
    leader.wait(timeout=10)
    members = [p for p in psutil.process_iter() if _pgid(p.pid) == leader.pid]
    assert members, "the background sleep stays in the dead leader's group"
    python = os.path.realpath(sys.executable)
    path = forge(tmp_path, "nginx", members[0].pid, argv=[python, "-m", "demo_api"], exe=python, create_time=1.0)
    record = json.loads(path.read_text())
    record["pid"] = leader.pid  # the dead leader: its group id is what teardown would signal
    path.write_text(json.dumps(record))
    r = cli(tmp_path / "manifest.yaml", "teardown", timeout=60)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stderr.split())
    assert f"refused to signal process group {leader.pid}" in text and "left alone" in text, r.stderr
    assert all(m.is_running() and m.status() != psutil.STATUS_ZOMBIE for m in members)
    for member in members:
        member.kill()


def test_genuine_record_still_stops(tmp_path):
    """The checks do not refuse our own processes: a record written by `procs.start` is stopped (the app execs
    nothing else; nginx's rewritten command line is covered by every lifecycle test)."""
    procs.take_warnings()  # what earlier tests in this process left in the queue is not this test's
    pids = tmp_path / "pids"
    rec = procs.start(
        "app",
        ["sleep", "300"],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / "a.log",
        pid_path=pids / "a.json",
    )
    loaded = procs.ProcRecord.load(pids / "a.json")
    assert loaded is not None and loaded.uid == os.geteuid() and loaded.exe.endswith("sleep")
    assert procs.is_running(loaded)
    assert procs.stop(loaded, grace=2) == "stopped"
    assert not psutil.pid_exists(rec.pid) or psutil.Process(rec.pid).status() == psutil.STATUS_ZOMBIE
    assert procs.take_warnings() == []


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
