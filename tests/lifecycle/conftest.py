"""Fixtures for the lifecycle tests (helpers live in tests/support.py)."""

from __future__ import annotations

import pytest
from support import cli, kill_leftovers


@pytest.fixture
def stack_dir(tmp_path):
    """A folder for one stack; whatever happens, every process started for it is stopped afterwards."""
    folder = tmp_path / "stack"
    folder.mkdir()
    try:
        yield folder
    finally:
        manifest = folder / "manifest.yaml"
        pids = folder / ".swiftdeploy" / "pids"
        if manifest.exists() and pids.is_dir() and any(pids.glob("*.json")):
            cli(manifest, "teardown", timeout=60)
        kill_leftovers(folder)
