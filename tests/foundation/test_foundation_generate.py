"""generate.files/plan/write: only changed files are written, atomically; drift shows as a unified diff."""

from __future__ import annotations

import os

import pytest

from swiftdeploy import generate


def drift(m) -> str:
    """Unified diff of every generated file that is missing or differs from what the manifest produces."""
    return "".join(change.diff() for change in generate.plan(m))


def test_write_then_everything_is_fresh(manifests, minimal_text):
    m = manifests.load(minimal_text)
    statuses = {c.relpath: c.status for c in generate.plan(m)}
    assert set(statuses.values()) == {"created"}
    written = generate.write(m)
    assert sorted(p.relative_to(m.out_dir).as_posix() for p in written) == sorted(generate.files(m))
    assert drift(m) == ""
    assert {c.status for c in generate.plan(m)} == {"unchanged"}
    assert generate.write(m) == []


def test_second_write_is_byte_identical(manifests, minimal_text):
    m = manifests.load(minimal_text)
    generate.write(m)
    first = {p: (m.out_dir / p).read_bytes() for p in generate.files(m)}
    mtimes = {p: (m.out_dir / p).stat().st_mtime_ns for p in first}
    generate.write(m)
    assert {p: (m.out_dir / p).read_bytes() for p in first} == first
    assert {p: (m.out_dir / p).stat().st_mtime_ns for p in first} == mtimes  # unchanged files are not rewritten


def test_check_reports_edit_and_missing_file_as_unified_diff(manifests, minimal_text):
    m = manifests.load(minimal_text)
    generate.write(m)
    conf = m.out_dir / "nginx.conf"
    conf.write_text(conf.read_text().replace("keepalive 16;", "keepalive 99;"))
    (m.out_dir / "docker-compose.yml").unlink()
    diff = drift(m)
    assert "--- a/nginx.conf\n+++ b/nginx.conf\n" in diff
    assert "-        keepalive 99;\n+        keepalive 16;\n" in diff
    assert "--- /dev/null\n+++ b/docker-compose.yml\n" in diff
    written = generate.write(m)
    assert {p.name for p in written} == {"nginx.conf", "docker-compose.yml"}
    assert drift(m) == ""


def test_output_dir_is_respected(manifests, minimal_text):
    m = manifests.load(minimal_text + "output_dir: deploy/out\n")
    generate.write(m)
    assert (m.base_dir / "deploy" / "out" / "nginx.conf").is_file()
    assert not (m.base_dir / "nginx.conf").exists()


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("replace", OSError(28, "No space left on device")),  # the rename over the target fails
        ("fsync", OSError(5, "Input/output error")),  # a crash while the temp file is being written
    ],
)
def test_failed_write_leaves_old_file_and_no_temp(manifests, minimal_text, monkeypatch, step, error):
    m = manifests.load(minimal_text)
    generate.write(m)
    conf = m.out_dir / "nginx.conf"
    conf.write_text("old text\n")
    before = sorted(os.listdir(m.out_dir))

    def broken(*args):
        raise error

    monkeypatch.setattr(os, step, broken)
    with pytest.raises(OSError, match=error.strerror):
        generate.write(m)
    monkeypatch.undo()
    assert conf.read_text() == "old text\n"
    assert sorted(os.listdir(m.out_dir)) == before  # no temp file left behind
