"""Round-trip manifest edits keep comments, order and flow style, and never write an invalid manifest."""

from __future__ import annotations

import hashlib

import pytest
from support import MINIMAL_MANIFEST

from swiftdeploy.errors import ManifestError, OperationFailed
from swiftdeploy.manifest import load_manifest
from swiftdeploy.manifest.edit import restore, set_values

COMMENTED = """\
# Our API. Edit me, then `swiftdeploy init`.
services:
  name: app
  image: "swift-deploy-1-node:latest"   # stable image
  port: 3000
  version: '1.0.0'
  mode: stable  # promote/rollback change this
canary:
  image: swift-deploy-1-node:next  # the candidate
  version: "2.0.0"
  weight: 10
nginx:
  port: 8080
"""


def test_edit_keeps_comments_order_and_quotes(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(COMMENTED)
    old, new = set_values(path, {("services", "mode"): "canary"})
    assert old == COMMENTED
    assert path.read_text() == new == COMMENTED.replace("mode: stable ", "mode: canary ")
    assert load_manifest(path).services.mode == "canary"


def test_promotion_edit_changes_only_the_promoted_values(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(COMMENTED)
    set_values(
        path,
        {
            ("services", "image"): "swift-deploy-1-node:next",
            ("services", "version"): "2.0.0",
            ("services", "mode"): "stable",
        },
    )
    text = path.read_text()
    for comment in ("# Our API.", "# stable image", "# promote/rollback change this", "# the candidate"):
        assert comment in text
    assert 'image: "swift-deploy-1-node:next"' in text  # the person's quote style survives
    assert "version: '2.0.0'" in text
    m = load_manifest(path)
    assert (m.services.image, m.services.version, m.services.mode) == ("swift-deploy-1-node:next", "2.0.0", "stable")
    assert [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")] == [
        "# Our API. Edit me, then `swiftdeploy init`.",
        "services",
        "canary",
        "nginx",
    ]


def test_flow_style_minimal_manifest(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(MINIMAL_MANIFEST)
    set_values(path, {("services", "mode"): "canary", ("canary", "weight"): 50})
    text = path.read_text()
    assert "services: {image: swift-deploy-1-node:latest, port: 3000, mode: canary}" in text
    m = load_manifest(path)
    assert m.services.mode == "canary" and m.canary.weight == 50


def test_invalid_edit_is_refused_and_file_untouched(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(COMMENTED)
    with pytest.raises(ManifestError):
        set_values(path, {("services", "mode"): "blue"})
    with pytest.raises(ManifestError):
        set_values(path, {("services", "image"): "evil;rm -rf /"})
    assert path.read_text() == COMMENTED


def test_edit_refused_when_file_changed_meanwhile(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(COMMENTED)
    sha = hashlib.sha256(COMMENTED.encode()).hexdigest()
    path.write_text(COMMENTED + "# someone else's edit\n")
    with pytest.raises(OperationFailed, match="changed while"):
        set_values(path, {("services", "mode"): "canary"}, expect_sha256=sha)
    assert path.read_text().endswith("# someone else's edit\n")


def test_restore_puts_back_the_old_text(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text(COMMENTED)
    old, _ = set_values(path, {("services", "mode"): "canary"})
    restore(path, old)
    assert path.read_text() == COMMENTED
