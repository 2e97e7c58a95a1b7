"""The manifest: models, strict types, and the located-error loader."""

from .loader import load_manifest, parse_manifest
from .model import Manifest

__all__ = ["Manifest", "load_manifest", "parse_manifest"]
