"""`swiftdeploy schema`: the manifest's JSON Schema, for editors (yaml-language-server)."""

from __future__ import annotations

from .app import app


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema."""
    from ..manifest import Manifest
    from .common import print_json

    document = Manifest.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "swiftdeploy manifest"
    print_json(document)
