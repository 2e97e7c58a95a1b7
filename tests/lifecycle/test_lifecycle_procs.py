"""Process supervision of the local runtime, on real processes: group stop, SIGKILL after the grace period,
processes that died on their own, and pid reuse; reading and following log files (`swiftdeploy logs`)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psutil

from swiftdeploy.runtime import procs

# A parent that ignores SIGTERM, with a child in the same process group that ignores it too.
STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
subprocess.Popen([sys.executable, "-c", CHILD])
time.sleep(60)
"""


def start(tmp_path, code, name="p"):
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    return procs.start(
        name,
        [sys.executable, str(script)],
        env=dict(os.environ),
        cwd=tmp_path,
        log_path=tmp_path / f"{name}.log",
        pid_path=tmp_path / f"{name}.json",
    )


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_start_writes_a_pid_file_and_stop_terminates(tmp_path):
    rec = start(tmp_path, "import time; time.sleep(60)")
    loaded = procs.ProcRecord.load(tmp_path / "p.json")
    assert loaded == rec and procs.is_running(loaded)
    assert os.getpgid(rec.pid) == rec.pid  # its own session/process group
    assert procs.stop(loaded, grace=5) == "stopped"
    assert not procs.is_running(loaded)


def test_stubborn_group_is_killed_after_grace(tmp_path):
    rec = start(tmp_path, STUBBORN)
    wait_for(lambda: (tmp_path / "p.log").read_text().endswith("ready\n"))
    group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == rec.pid]
    assert len(group) == 2
    assert procs.stop(rec, grace=0.5) == "killed"
    for pid in group:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_process_that_died_on_its_own(tmp_path):
    rec = start(tmp_path, "raise SystemExit(7)")
    wait_for(lambda: not procs.is_running(rec))
    assert procs.exit_code(rec) == 7
    assert procs.stop(rec) == "not running"


def test_reused_pid_is_not_signalled(tmp_path):
    me = psutil.Process()
    stale = procs.ProcRecord(name="x", pid=me.pid, create_time=me.create_time() - 100, argv=["x"], log="", started="")
    assert not procs.is_running(stale)
    assert procs.stop(stale, grace=0.1) == "not running"  # we are still alive to assert it


def test_orphaned_group_members_are_cleaned(tmp_path):
    """The leader died but its child lives on in the group (like nginx workers after a master crash)."""
    rec = start(tmp_path, STUBBORN)
    wait_for(lambda: (tmp_path / "p.log").read_text().endswith("ready\n"))
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not procs.is_running(rec))
    survivors = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == rec.pid and _alive(p.pid)]
    assert survivors
    assert procs.stop(rec, grace=0.5) == "killed"
    assert not [pid for pid in survivors if _alive(pid)]


def test_port_helpers(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not procs.port_free(port)
        assert procs.port_holder(port) == f"pid {os.getpid()} ({' '.join(psutil.Process().cmdline())[:120]})"
    assert procs.port_free(port)


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_tail_reads_back_as_far_as_it_needs(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("".join(f"line {i} " + "x" * 200 + "\n" for i in range(2000)))  # ~420 KB
    assert procs.tail(log, 3) == [f"line {i} " + "x" * 200 for i in (1997, 1998, 1999)]
    lines = procs.tail(log, 1500, max_bytes=8 * 1024 * 1024)  # more than the old fixed 64 KiB window held
    assert len(lines) == 1500 and lines[0].startswith("line 500 ")
    assert len(procs.tail(log, 1500, max_bytes=64 * 1024)) < 400  # the bound holds
    assert procs.tail(tmp_path / "missing.log", 5) == []


def test_follow_prints_new_lines_truncation_and_partial_lines(tmp_path):
    log, other = tmp_path / "app.log", tmp_path / "nginx-access.log"
    log.write_text("one\ntwo\nthree\n")
    stop = threading.Event()
    lines = procs.follow([log, other], tail=2, poll=0.01, stop=stop)  # `other` does not exist yet
    assert [next(lines), next(lines)] == [(log, "two"), (log, "three")]
    with log.open("a") as handle:
        handle.write("four\npar")
    assert next(lines) == (log, "four")
    with log.open("a") as handle:
        handle.write("tial\n")
    assert next(lines) == (log, "partial")  # a line is printed once it is complete
    other.write_text("GET /\n")
    assert next(lines) == (other, "GET /")
    log.write_text("fresh\n")  # truncated (a new run, logrotate copytruncate): read again from its start
    assert next(lines) == (log, "fresh")
    fresh = tmp_path / "app.log.new"
    fresh.write_text("replaced, a longer first line\n")
    os.replace(fresh, log)  # a new file under the same name (logrotate's create mode)
    assert next(lines) == (log, "replaced, a longer first line")
    stop.set()
    assert list(lines) == []
