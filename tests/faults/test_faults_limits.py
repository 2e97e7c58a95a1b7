"""The limits behind the hostile-manifest corpus, one by one at the library level (docs/manifest.md#limits):
strict finite thresholds, no YAML expansion, capped problem lists, bounded reads, the project-path rule with its
belts in the writers (rename over a link, O_NOFOLLOW history and lock), the policy-folder walk, and environment
errors as one line (a full disk on a real tmpfs when run as root)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from hostile_manifests import BAD_NUMBERS, BASE, SWIFTDEPLOY, THRESHOLD_FIELDS, alias_bomb

from swiftdeploy import history, lock
from swiftdeploy.errors import ManifestError, OperationFailed, PolicyError, describe_os_error
from swiftdeploy.fsutil import Refused, atomic_write, read_bounded
from swiftdeploy.lock import DeployLock
from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.loader import MAX_BYTES, MAX_PROBLEMS, parse_manifest
from swiftdeploy.manifest.model import Thresholds
from swiftdeploy.policy.bundle import PolicySet, load_policy_set


def _with_threshold(field: str, value: str) -> str:
    return BASE.replace("{engine: embedded}", f"{{engine: embedded, thresholds: {{{field}: {value}}}}}")


def test_the_corpus_names_every_threshold_field() -> None:
    assert set(THRESHOLD_FIELDS) == set(Thresholds.model_fields) - {"allow_direct_deploy"}


@pytest.mark.parametrize("field", THRESHOLD_FIELDS)
@pytest.mark.parametrize(("value", "says"), BAD_NUMBERS, ids=[v for v, _ in BAD_NUMBERS])
def test_a_threshold_is_a_strict_finite_number(field: str, value: str, says: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_with_threshold(field, value))
    (problem,) = caught.value.problems
    assert f"policy.thresholds.{field}:" in problem
    if field == "min_requests" and value not in ("true", '"4"'):
        assert "valid integer" in problem  # an integer field: a float of any size is not one
    else:
        assert says in problem, problem


def test_a_quoted_threshold_says_remove_the_quotes_and_a_bool_says_so() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_with_threshold("max_cpu_load", '"4"'))
    assert 'must be a number, not the string "4": remove the quotes' in caught.value.problems[0]
    with pytest.raises(ManifestError) as caught:
        parse_manifest(_with_threshold("min_requests", "true"))
    assert "must be an integer, not true" in caught.value.problems[0]


def test_plain_numbers_still_work_and_reach_data_json_as_numbers() -> None:
    m = parse_manifest(_with_threshold("max_cpu_load", "4") + "# and\n")
    assert m.policy.thresholds.max_cpu_load == 4.0
    m = parse_manifest(_with_threshold("max_p99_latency_ms", "250.5"))
    assert json.loads(load_policy_set(m).data_json())["swiftdeploy"]["thresholds"]["max_p99_latency_ms"] == 250.5


def test_data_json_never_holds_infinity_even_from_code() -> None:
    policies = PolicySet(origin="test", modules={"a.rego": "package a\n"}, data={"x": float("inf")})
    with pytest.raises(PolicyError, match="finite numbers only"):
        policies.data_json()


def test_an_alias_bomb_is_refused_before_anything_expands() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match=r"manifest.yaml:4:5: YAML anchor &a0 is not allowed"):
            parse_manifest(alias_bomb(40))  # 9**40 strings if it expanded
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


def test_the_edit_path_refuses_aliases_too(tmp_path: Path) -> None:
    from swiftdeploy.manifest.edit import edit_text

    with pytest.raises(ManifestError, match="YAML alias"):
        edit_text(BASE + "x: [*a]\n", {("services", "mode"): "canary"})


def test_unknown_keys_are_reported_twenty_at_most() -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(BASE + "".join(f"k{i}: 1\n" for i in range(2000)))
    problems = caught.value.problems
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1] == f"... and {2000 - MAX_PROBLEMS} more"
    assert "(2000 problems)" in caught.value.message


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_manifest(path).services.image == "demo:1"


def test_read_bounded_reads_up_to_the_limit_only(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_bounded(path, 10) == b"x" * 10
    with pytest.raises(Refused, match="more than the limit of 9"):
        read_bounded(path, 9)
    with pytest.raises(Refused, match="not a regular file"):
        read_bounded("/dev/zero", MAX_BYTES)
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would never return
    with pytest.raises(Refused, match="not a regular file"):
        read_bounded(tmp_path / "fifo", MAX_BYTES)


def test_atomic_write_replaces_a_link_and_never_writes_its_target(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    target.write_text("keep me\n", encoding="utf-8")
    link = tmp_path / "project" / "nginx.conf"
    link.parent.mkdir()
    link.symlink_to(target)
    atomic_write(link, "generated\n")
    assert not link.is_symlink() and link.read_text(encoding="utf-8") == "generated\n"
    assert target.read_text(encoding="utf-8") == "keep me\n"


def test_history_append_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    target.write_text("keep me\n", encoding="utf-8")
    (tmp_path / "history.jsonl").symlink_to(target)
    with pytest.raises(OperationFailed, match="history file is a symbolic link"):
        history.append(tmp_path / "history.jsonl", "deploy_started")
    assert target.read_text(encoding="utf-8") == "keep me\n"


def test_the_lock_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "lock").write_text("keep me\n", encoding="utf-8")
    (tmp_path / ".swiftdeploy").symlink_to(outside)
    with pytest.raises(OperationFailed, match="state folder is a symbolic link"):
        DeployLock(tmp_path / ".swiftdeploy", "deploy").acquire()
    state = tmp_path / "state"
    state.mkdir()
    (state / "lock").symlink_to(outside / "lock")
    with pytest.raises(OperationFailed, match="it is a symbolic link"):
        DeployLock(state, "deploy").acquire()
    (outside / "lock").write_text('{"pid": 1, "host": "elsewhere"}\n', encoding="utf-8")  # reads as a stale lock
    with pytest.raises(OperationFailed, match="it is a symbolic link"):
        lock.release(state)  # `lock release` would truncate a stale lock's file: never through a link
    assert (outside / "lock").read_text(encoding="utf-8") == '{"pid": 1, "host": "elsewhere"}\n'


def test_a_policy_folder_walk_is_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "pol"
    folder.mkdir()
    (folder / "a.rego").write_text("package swiftdeploy.infrastructure\n", encoding="utf-8")
    deep = folder
    for index in range(9):
        deep = deep / f"d{index}"
    deep.mkdir(parents=True)
    with pytest.raises(PolicyError, match="nested more than 8 deep"):
        load_policy_set(folder=folder)


def test_an_os_error_reads_as_one_sentence_naming_the_path() -> None:
    text = describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/app/nginx.conf"))
    assert text == "/srv/app/nginx.conf: No space left on device (the file system is full: free some space and retry)"
    long = describe_os_error(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x" * 500))
    assert len(long) < 400 and "too long for the file system" in long


def test_a_json_failure_document_of_an_os_error_is_not_a_bug() -> None:
    from swiftdeploy.cli.output import failure_document

    doc = failure_document("init", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/app/nginx.conf"))
    assert doc["exit_code"] == 1 and "bug" not in doc["error"] and "/srv/app/nginx.conf" in doc["error"]


def test_a_full_disk_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A real full file system: a 64 KiB tmpfs, nearly filled, then `init` (needs root to mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the corpus's file-too-large case covers the path without it)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        (mount / "manifest.yaml").write_text(BASE, encoding="utf-8")
        (mount / "filler").write_bytes(os.urandom(60 * 1024))
        result = subprocess.run(
            [SWIFTDEPLOY, "-m", str(mount / "manifest.yaml"), "init"],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "SWIFTDEPLOY_DEBUG"},
        )
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {mount}/") and "No space left on device" in line, line
        assert "free some space" in line and "bug" not in line
        assert not [p.name for p in mount.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind
    finally:
        subprocess.run(["umount", str(mount)], check=False)
