"""Runtimes: where the stack runs. `get_runtime(m)` picks the one the manifest names (`runtime: docker|local`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Runtime, ServiceHealth, Track, service_of

if TYPE_CHECKING:
    from ..manifest import Manifest

__all__ = ["Runtime", "ServiceHealth", "Track", "get_runtime", "service_of"]


def get_runtime(m: Manifest) -> Runtime:
    # Imported here: the docker runtime pulls in the docker SDK lazily, the local one psutil.
    if m.runtime == "local":
        from .local import LocalRuntime

        return LocalRuntime()
    from .docker import DockerRuntime

    return DockerRuntime()
