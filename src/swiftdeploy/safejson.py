"""JSON from outside swiftdeploy's own process (OPA's answers, `policy eval --input`, history lines, the admin
listener's answers), parsed with bounds: `loads` is json.loads that also refuses

- nesting deeper than MAX_DEPTH arrays/objects (json.loads itself recurses: a few hundred kB of `[` is a
  RecursionError, and a record nested just below that limit crashes whatever walks it next);
- NaN, Infinity and numbers that are not finite as floats (`1e400`), and integers of more than MAX_INT_DIGITS
  digits (a 4000-digit integer parses, then `float()` of it is an OverflowError);
- lone UTF-16 surrogates (`"\\ud800"`): such a string cannot be written back as UTF-8.

Every refusal is a ValueError (TooDeep, or json.JSONDecodeError for malformed text), so a caller catching
ValueError handles all of them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 100
MAX_INT_DIGITS = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Only text with a digit before an exponent mark or a run of more than MAX_INT_DIGITS digits can hold a float that
# overflows or an integer over the cap: the per-number hooks (a Python call per number) run only then. The check
# maps every digit to "0" and "E" to "e" (C speed) and looks for "0e" and MAX_INT_DIGITS + 1 zeros.
_DIGITS_B = bytes.maketrans(b"123456789E", b"000000000e")
_DIGITS_S = str.maketrans("123456789E", "000000000e")
_LONG_B = b"0" * (MAX_INT_DIGITS + 1)
_LONG_S = "0" * (MAX_INT_DIGITS + 1)


def _may_hold_big_numbers(raw: bytes | str) -> bool:
    if isinstance(raw, bytes):
        mapped_b = raw.translate(_DIGITS_B)
        return b"0e" in mapped_b or _LONG_B in mapped_b
    mapped = raw.translate(_DIGITS_S)
    return "0e" in mapped or _LONG_S in mapped


class TooDeep(ValueError):
    pass


def _constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"the number {token[:20]}{'...' if len(token) > 20 else ''} is out of range")
    return value


def _int(token: str) -> int:
    if len(token.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(token.lstrip('-'))} digits is out of range")
    return int(token)


# Built once: json.loads with any keyword builds a new decoder per call.
_FAST = json.JSONDecoder(parse_constant=_constant)
_CHECKED = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def depth_ok(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether `text` nests at most `max_depth` arrays/objects (brackets inside strings do not count)."""
    if text.count("[") + text.count("{") <= max_depth:
        return True  # the common case, at C speed
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return False
        else:
            depth -= 1
    return True


def loads(text: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads with the bounds of the module doc. Raises ValueError (UnicodeDecodeError for bytes that are not
    UTF-8, TooDeep, json.JSONDecodeError, or a plain ValueError naming the number or the surrogate)."""
    big = _may_hold_big_numbers(bytes(text) if isinstance(text, bytearray) else text)
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    if not depth_ok(text, max_depth):
        raise TooDeep(f"nested deeper than {max_depth} arrays/objects")
    try:
        value = (_CHECKED if big else _FAST).decode(text)
    except RecursionError:  # unreachable after depth_ok; kept so no input can ever raise it from here
        raise TooDeep(f"nested deeper than {max_depth} arrays/objects") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


def _check_strings(value: Any) -> None:
    """ValueError when a string (or key) in `value` holds a lone surrogate (iterative: the depth is bounded but
    the width is not)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
