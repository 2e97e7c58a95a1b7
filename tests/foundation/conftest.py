"""Fixtures for the foundation tests (manifest, render, generate, init, validate); shared ones are in
tests/conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import EXAMPLE, MINIMAL_MANIFEST


class Manifests:
    """Writes manifests into a fresh folder and loads them (the folder is where generated files go)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def write(self, text: str, name: str = "manifest.yaml") -> Path:
        self.count += 1
        folder = self.root / f"m{self.count}"
        folder.mkdir()
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    def load(self, text: str):
        from swiftdeploy.manifest import load_manifest

        return load_manifest(self.write(text))

    @staticmethod
    def example_text(*replace: tuple[str, str]) -> str:
        """The example manifest with (old, new) text replacements, each applied once and required to match."""
        text = EXAMPLE.read_text(encoding="utf-8")
        for old, new in replace:
            assert old in text, old
            text = text.replace(old, new, 1)
        return text


@pytest.fixture
def manifests(tmp_path: Path) -> Manifests:
    return Manifests(tmp_path)


@pytest.fixture
def minimal_text() -> str:
    return MINIMAL_MANIFEST


@pytest.fixture
def example_path() -> Path:
    return EXAMPLE


class NginxT:
    """`nginx -t` with upstream names resolvable only through a test hosts file inside a private mount namespace."""

    def __init__(self, nginx: str, tmp: Path) -> None:
        self.nginx = nginx
        self.tmp = tmp

    def run(self, conf: Path, names: list[str], *, private_tmp: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() != 0 or not shutil.which("unshare"):
            pytest.skip("needs root and unshare(1) to bind-mount a test hosts file over /etc/hosts")
        hosts = self.tmp / f"hosts-{conf.parent.name}-{conf.name}"
        hosts.write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in names), encoding="utf-8")
        # The docker target keeps its pid/temp paths in /tmp: cover /tmp with a private tmpfs (after opening the
        # conf as fd 3) so the test leaves nothing on the host.
        tail = (
            'exec 3< "$2" && mount -t tmpfs t /tmp && exec "$3" -t -c /proc/self/fd/3'
            if private_tmp
            else ('exec "$3" -t -c "$2"')
        )
        script = 'mount --bind "$1" /etc/hosts && ' + tail
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(hosts), str(conf), self.nginx]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def nginx_t(nginx_binary: str, tmp_path: Path) -> NginxT:
    return NginxT(nginx_binary, tmp_path)
