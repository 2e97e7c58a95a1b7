"""The deploy lock: refused at once while held (holder named), taken over with a warning after a dead holder;
`swiftdeploy lock status | release [--force]` on a free, a held (by a live process) and a stale lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from swiftdeploy.cli import run
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


HOLDER = """
import sys
from swiftdeploy.lock import DeployLock
lock = DeployLock(sys.argv[1], "promote_stable", command="swiftdeploy promote stable --window 30").acquire()
print("held", flush=True)
sys.stdin.readline()
{after}
"""


def hold(state_dir, after: str = "lock.release()") -> subprocess.Popen[str]:
    """A live process holding the lock of `state_dir` until its stdin closes (then runs `after`)."""
    code = HOLDER.format(after=after)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(state_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def lock_json(capsys, manifest, *args: str) -> tuple[int, dict]:
    code = run(["-m", str(manifest), "lock", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text("services: {image: demo:1, port: 3000}\nruntime: local\n", encoding="utf-8")
    return path


def test_lock_status_and_release_of_a_live_holder(manifest, capsys):
    state = manifest.parent / ".swiftdeploy"
    code, free = lock_json(capsys, manifest, "status")
    assert code == 0 and free["state"] == "free" and free["holder"] is None
    assert run(["-m", str(manifest), "lock", "release"]) == 0
    assert "nothing to release" in capsys.readouterr().out

    proc = hold(state)
    try:
        code, found = lock_json(capsys, manifest, "status")
        assert code == 0 and found["state"] == "held" and found["holder_alive"] is True
        assert found["holder"]["pid"] == proc.pid and found["holder"]["operation"] == "promote_stable"
        assert run(["-m", str(manifest), "lock", "status"]) == 0
        shown = capsys.readouterr().out
        assert f"held by pid {proc.pid} on " in shown and "swiftdeploy promote stable --window 30" in shown
        assert found["holder"]["started"] in shown  # since when

        # a live holder's lock is not released without --force: exit 1, naming who holds it
        assert run(["-m", str(manifest), "lock", "release"]) == 1
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and "--force" in err and "not released" in err
        with pytest.raises(LockHeld):  # and it still holds
            DeployLock(state, "deploy").acquire()

        code, forced = lock_json(capsys, manifest, "release", "--force")
        assert code == 0 and forced["released"] is True and forced["before"]["holder"]["pid"] == proc.pid
        with DeployLock(state, "deploy") as taken:  # the next run takes a new lock at once, without a warning
            assert taken.warning is None
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert not (state / "lock").exists() or (state / "lock").read_text() == ""


def test_a_forced_holder_releasing_later_leaves_the_new_lock_alone(manifest, capsys):
    state = manifest.parent / ".swiftdeploy"
    proc = hold(state, after="lock.remove_on_release = True; lock.release()")  # a teardown --clean
    try:
        assert run(["-m", str(manifest), "lock", "release", "--force"]) == 0
        capsys.readouterr()
        with DeployLock(state, "deploy"):
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
            assert (state / "lock").exists()  # the old holder removed its own (replaced) file, not this one
            with pytest.raises(LockHeld):
                DeployLock(state, "promote").acquire()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_stale_lock_is_shown_and_released(manifest, capsys):
    state = manifest.parent / ".swiftdeploy"
    doomed = "import os, signal, sys\nfrom swiftdeploy.lock import DeployLock\n"
    doomed += "DeployLock(sys.argv[1], 'deploy', command='doomed').acquire()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    assert subprocess.run([sys.executable, "-c", doomed, str(state)], check=False).returncode == -9
    code, found = lock_json(capsys, manifest, "status")
    assert (code, found["state"], found["holder_alive"], found["holder"]["command"]) == (0, "stale", False, "doomed")
    assert run(["-m", str(manifest), "lock", "status"]) == 0
    assert "stale: left by pid" in capsys.readouterr().out

    code, released = lock_json(capsys, manifest, "release")  # no --force needed: nobody holds it
    assert code == 0 and released["released"] is True and released["before"]["state"] == "stale"
    assert lock_json(capsys, manifest, "status")[1]["state"] == "free"
    with DeployLock(state, "deploy") as lock:
        assert lock.warning is None  # no takeover warning any more


def test_lock_commands_need_the_manifest(tmp_path, capsys):
    assert run(["-m", str(tmp_path / "nowhere.yaml"), "lock", "status"]) == 2
    assert "nowhere.yaml" in capsys.readouterr().err
