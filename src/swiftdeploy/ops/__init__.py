"""Operations: deploy, promote, rollout, abort, rollback, teardown (under the per-manifest lock, every step in
history.jsonl), chaos and traffic. Library functions returning result objects; only swiftdeploy.cli renders them.

Each locked operation takes the manifest PATH (it loads the manifest itself after taking the lock, and edits the
file round-trip when the mode changes). chaos and traffic take a loaded Manifest.
"""

from __future__ import annotations

from .abort import abort
from .base import OpResult
from .chaos import ChaosResult, TrafficResult, chaos, traffic
from .deploy import deploy
from .promote import promote_canary, promote_stable
from .rollback import rollback, teardown
from .rollout import rollout
from .undo import undo

__all__ = [
    "ChaosResult",
    "OpResult",
    "abort",
    "TrafficResult",
    "chaos",
    "deploy",
    "promote_canary",
    "promote_stable",
    "rollback",
    "rollout",
    "teardown",
    "traffic",
    "undo",
]
