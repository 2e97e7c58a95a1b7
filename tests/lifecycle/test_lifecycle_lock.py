"""The deploy lock: refused at once while held (holder named), taken over with a warning after a dead holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from swiftdeploy.errors import LockHeld
from swiftdeploy.lock import DeployLock


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with DeployLock(tmp_path, "deploy", command="swiftdeploy deploy") as first:
        assert first.warning is None
        with pytest.raises(LockHeld) as info:
            DeployLock(tmp_path, "promote").acquire()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message
        assert "swiftdeploy deploy" in message
        assert "started 20" in message  # the ISO start time
        assert info.value.exit_code == 1
    # Released cleanly: the next run gets it without a warning.
    with DeployLock(tmp_path, "deploy") as again:
        assert again.warning is None
    assert (tmp_path / "lock").read_text() == ""


def test_lock_held_by_another_process_is_refused(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        from swiftdeploy.lock import DeployLock
        with DeployLock({str(tmp_path)!r}, "deploy", command="holder"):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {proc.pid} on "):
            DeployLock(tmp_path, "deploy").acquire()
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    with DeployLock(tmp_path, "deploy") as lock:
        assert lock.warning is None


def test_dead_holder_is_taken_over_with_a_warning(tmp_path):
    # A run killed with SIGKILL leaves its info in the file; the kernel already dropped its flock.
    code = textwrap.dedent(
        f"""
        import os, signal
        from swiftdeploy.lock import DeployLock
        lock = DeployLock({str(tmp_path)!r}, "deploy", command="doomed").acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == -9
    left = json.loads((tmp_path / "lock").read_text())
    assert left["command"] == "doomed"
    with DeployLock(tmp_path, "deploy") as lock:
        assert lock.warning is not None
        assert f"pid {left['pid']}" in lock.warning and "dead" in lock.warning
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()


def test_remove_on_release_deletes_the_file(tmp_path):
    with DeployLock(tmp_path, "teardown") as lock:
        lock.remove_on_release = True
    assert not (tmp_path / "lock").exists()
