"""Host facts for the infrastructure domain (field names: docs/contracts.md#inputs), read with psutil.

A fact that cannot be read is left out and named under "unavailable" - never sent as 0, which could pass a
threshold by accident. The policy then reports the missing field and denies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GB = 1024**3


def host_facts(path: Path) -> dict[str, Any]:
    """Facts about this host; disk figures are for the filesystem holding `path` (the manifest's folder)."""
    import psutil

    facts: dict[str, Any] = {}
    unavailable: list[str] = []
    disk_path = _existing(Path(path))
    facts["disk_path"] = str(disk_path)

    def read(names: tuple[str, ...], reader) -> None:
        try:
            values = reader()
        except (OSError, RuntimeError, AttributeError, ValueError):
            unavailable.extend(names)
            return
        for name, value in zip(names, values, strict=True):
            if value is None:
                unavailable.append(name)
            else:
                facts[name] = value

    read(("disk_free_gb",), lambda: (round(psutil.disk_usage(str(disk_path)).free / GB, 2),))
    read(("cpu_load_1m",), lambda: (round(_load_1m(psutil), 2),))
    read(("cpu_count",), lambda: (psutil.cpu_count(logical=True),))

    def memory() -> tuple[float, float]:
        vm = psutil.virtual_memory()
        return round(vm.percent, 1), round(vm.available / GB, 2)

    read(("memory_used_percent", "memory_available_gb"), memory)
    if unavailable:
        facts["unavailable"] = unavailable
    return facts


def _load_1m(psutil) -> float:
    # os.getloadavg is exact on Linux/macOS; psutil emulates it elsewhere (Windows, where the first call is 0).
    if hasattr(os, "getloadavg"):
        return os.getloadavg()[0]
    return psutil.getloadavg()[0]


def _existing(path: Path) -> Path:
    """The nearest existing folder (the manifest's folder may not exist yet in a dry run)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent
