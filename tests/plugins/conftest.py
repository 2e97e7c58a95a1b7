"""Plugin tests run the real console script in a subprocess, with plugins put on its sys.path via PYTHONPATH.

The example plugin is really built and installed (pip --target, no network); broken or clashing plugins are tiny
hand-written dist-info folders, which is all importlib.metadata needs to discover an entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import REPO, SWIFTDEPLOY

HELLO_SRC = REPO / "examples" / "plugins" / "swiftdeploy-hello"


@pytest.fixture(scope="session")
def hello_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, built with hatchling and installed by pip into its own folder."""
    target = tmp_path_factory.mktemp("hello-site")
    build = tmp_path_factory.mktemp("hello-src")
    # Build from a copy so no build artefact lands in the repository.
    subprocess.run(["cp", "-r", str(HELLO_SRC) + "/.", str(build)], check=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(build),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert list(target.glob("swiftdeploy_hello-0.1.0.dist-info/entry_points.txt"))
    return target


Runner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def swiftdeploy(tmp_path: Path) -> Runner:
    """Run the installed console script with the given plugin folders on PYTHONPATH."""

    def run(*args: str, sites: tuple[Path, ...] = (), plugins: str | None = None, module: bool = False):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWIFTDEPLOY_")}
        env.update(PYTHONPATH=os.pathsep.join(map(str, sites)), COLUMNS="120", NO_COLOR="1", TERM="dumb")
        if plugins is not None:
            env["SWIFTDEPLOY_PLUGINS"] = plugins
        argv = [sys.executable, "-m", "swiftdeploy"] if module else [SWIFTDEPLOY]
        return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    return run
