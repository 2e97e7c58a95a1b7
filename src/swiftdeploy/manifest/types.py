"""Strict scalar types for every manifest value that reaches a generated file.

Anything that could break out of a YAML scalar or an nginx directive (newline, `;`, `{`, `}`, quotes, backtick,
`$`) is refused by these patterns before a generator ever sees it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

# Characters that would let a value escape the line or directive it is rendered into.
FORBIDDEN = set("\n\r\t;{}'\"`$\\")

# Bounds of every free-text value and list (docs/manifest.md#limits): a manifest is small, and so is each value.
MAX_TEXT = 1024  # characters of one free-text value (a path, one argv word)
MAX_ITEMS = 64  # items of one list (an argv)
MAX_NUMBER = 1e9  # the largest threshold value (no threshold means anything near it)


def _no_injection(value: str) -> str:
    bad = sorted({c for c in value if c in FORBIDDEN or ord(c) < 32 or ord(c) == 127})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(f"contains forbidden character(s) {shown}; remove them")
    return value


def _pattern(regex: str, what: str, example: str):
    compiled = re.compile(regex)

    def check(value: str) -> str:
        _no_injection(value)
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what} (example: {example})")
        return value

    return check


# docker reference grammar (distribution/reference), simplified: [host[:port]/]path[:tag][@digest]
_IMAGE_RE = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)

# Field(max_length=...) comes first in each Annotated: the length is checked before any pattern runs.
ImageRef = Annotated[
    str,
    Field(max_length=255),
    AfterValidator(_pattern(_IMAGE_RE, "image reference", "ghcr.io/acme/api:1.2.3")),
]
Name = Annotated[
    str,
    Field(max_length=63),
    AfterValidator(_pattern(r"[a-z0-9][a-z0-9_-]{0,62}", "name (lowercase letters, digits, - and _)", "my-api")),
]
Version = Annotated[
    str, Field(max_length=64), AfterValidator(_pattern(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", "version", "1.4.2"))
]
Email = Annotated[
    str,
    Field(max_length=254),
    AfterValidator(
        _pattern(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+",
            "e-mail",
            "ops@example.com",
        )
    ),
]
SafeText = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_injection)]
# A list of SafeText (an argv): at least one item, at most MAX_ITEMS.
Argv = Annotated[list[SafeText], Field(min_length=1, max_length=MAX_ITEMS)]
# A threshold: a real number (no true/false, no quoted "4"), finite (no .inf, .nan, 1e400), at most MAX_NUMBER.
# Field bounds (ge/le) of each threshold narrow it further.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, le=MAX_NUMBER)]
Count = Annotated[int, Field(strict=True, le=int(MAX_NUMBER))]
# An absolute URL path (no query, no spaces): it is written into nginx.conf and the compose healthcheck.
UrlPath = Annotated[
    str,
    Field(max_length=200),
    AfterValidator(_pattern(r"/[A-Za-z0-9._~/-]*", "URL path (a leading /, letters, digits, . _ ~ - /)", "/healthz")),
]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def parse_duration(value: object) -> float:
    """`30s`, `2m`, `1h`, `250ms` or a bare number of seconds -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s' or '2m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        _no_injection(value)  # `\s` below would otherwise let a tab or newline through
        match = _DURATION_RE.fullmatch(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; use seconds (30), '30s', '2m', '1h' or '250ms'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("a duration must be a number of seconds or a string like '30s' or '2m'")
    if not 0 < seconds <= 86400:
        raise ValueError(f"duration {value!r} must be greater than 0 and at most 24h")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            ],
            "description": "seconds, or a string like '30s', '2m', '1h', '250ms'",
        }
    ),
]
