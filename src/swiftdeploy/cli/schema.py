"""`swiftdeploy schema`: the manifest's JSON Schema, for editors (library: `manifest/model.py`)."""

from __future__ import annotations


def schema() -> None:
    """Print the manifest's JSON Schema."""
    from ..manifest import Manifest
    from .output import print_json

    document = Manifest.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "swiftdeploy manifest"
    print_json(document)
