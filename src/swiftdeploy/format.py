"""The one number formatter: every human view (gate output, status, history, audit) prints a value through
`format_number`, so the same observation reads the same everywhere. Stdlib only (imported by light modules)."""

from __future__ import annotations

import math
from typing import Any


def format_number(value: Any, unit: str = "") -> str:
    """`612.346` -> "612.35", `0.004912` -> "0.00491", `3.0` -> "3", `None` -> "null"; `unit` is appended after a
    space ("ms", "%" is attached without one). Integers print as they are; non-numbers as `str(value)`."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = _float(value)
    else:
        text = str(value)
    if not unit:
        return text
    return f"{text}{unit}" if unit == "%" else f"{text} {unit}"


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if abs(value) >= 1:
        text = f"{value:.2f}"
    else:  # three significant digits below 1: 0.00491, 0.125
        decimals = min(12, 2 - math.floor(math.log10(abs(value))))
        text = f"{value:.{decimals}f}"
    text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
