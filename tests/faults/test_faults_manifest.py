"""The hostile-manifest corpus through the real CLI (issue 14 items 1, 2, 7; the corpus: hostile_manifests.py).

Each case runs `swiftdeploy -m X <command>` in a subprocess under an address-space limit (1 GiB) and a wall budget
that only guards against a hang (an alias bomb took 46 s and 1.1 GB before; a FIFO hung forever). Every case must
answer with its documented exit code and one readable `error:` line (no traceback, no "this is a bug"), write no
file in the project, and leave the `outside/` folder next to the project - where the symbolic links point -
exactly as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hostile_manifests import CASES, Case, prepare, run_case, snapshot


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_hostile_manifest_gets_one_line_and_its_exit_code(case: Case, tmp_path: Path) -> None:
    project, outside, target = prepare(case, tmp_path)
    before_outside, before_project = snapshot(outside), snapshot(project)
    outcome = run_case(case, target)
    assert not outcome.timed_out, f"{case.id}: still running after the budget"
    assert outcome.returncode == case.exit_code, outcome.stderr
    assert "Traceback" not in outcome.stderr and "this is a bug" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), outcome.stderr
    assert case.says in outcome.stderr, outcome.stderr
    # One line, or the problems list of an invalid manifest: at most 20 problems and the "... and N more" line.
    assert len(lines) <= 23 and len(outcome.stderr) < 12_000, outcome.stderr[:2000]
    assert snapshot(outside) == before_outside  # nothing written (or truncated) through a link
    after_project = snapshot(project)
    if after_project.get(".swiftdeploy/lock") == ("file", b"") and ".swiftdeploy/lock" not in before_project:
        del after_project[".swiftdeploy/lock"]  # the lock a lifecycle command takes first, released empty
    assert after_project == before_project  # a refused run writes nothing in the project


def test_the_corpus_is_large_and_covers_each_defect_class() -> None:
    assert len(CASES) >= 40
    ids = " ".join(c.id for c in CASES)
    for kind in ("alias", "tag", "size", "fifo", "dev-zero", "threshold", "link", "policy-dir-proc-self", "lock"):
        assert kind in ids, kind
