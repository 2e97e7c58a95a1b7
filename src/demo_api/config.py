"""Settings read from the environment; one clear error per bad value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Mode = Literal["stable", "canary"]

MODES: tuple[str, ...] = ("stable", "canary")
# The version is echoed in a response header and in JSON, so keep it to a safe, bounded alphabet.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class ConfigError(ValueError):
    """A configuration variable holds a value the service cannot start with."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {variable}={value!r}: allowed values are {allowed}")


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = "stable"
    version: str = "1.0.0"
    port: int = 3000
    host: str = "0.0.0.0"
    metrics_enabled: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from MODE, APP_VERSION, APP_PORT, APP_HOST, METRICS_ENABLED (unset -> default)."""
        env = os.environ if env is None else env
        mode = env.get("MODE", "stable").strip()
        if mode not in MODES:
            raise ConfigError("MODE", mode, " or ".join(MODES))

        version = env.get("APP_VERSION", "1.0.0").strip()
        if not _VERSION_RE.fullmatch(version):
            raise ConfigError(
                "APP_VERSION", version, "1-64 characters from A-Z a-z 0-9 . _ + - starting with a letter or digit"
            )

        raw_port = env.get("APP_PORT", "3000").strip()
        if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
            raise ConfigError("APP_PORT", raw_port, "an integer from 1 to 65535")

        host = env.get("APP_HOST", "0.0.0.0").strip()
        if not host or any(c.isspace() for c in host):
            raise ConfigError("APP_HOST", host, "an IP address or host name to listen on, e.g. 0.0.0.0 or 127.0.0.1")

        raw_metrics = env.get("METRICS_ENABLED", "1").strip().lower()
        if raw_metrics not in _TRUE + _FALSE:
            raise ConfigError("METRICS_ENABLED", raw_metrics, "1 or 0 (also true/false, yes/no, on/off)")

        return cls(
            mode=mode,  # type: ignore[arg-type]  # checked against MODES above
            version=version,
            port=int(raw_port),
            host=host,
            metrics_enabled=raw_metrics in _TRUE,
        )
