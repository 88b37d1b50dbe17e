"""The one encoding of key/value values: what the API accepts, stores, and can serve back.

A value is stored as compact JSON text. Anything that could not be served back as JSON in UTF-8 (NaN, Infinity,
lone surrogates such as "\\ud800", nesting beyond Python's parser) is refused when written, and a stored text that
fails the same checks is reported as unreadable instead of failing while the answer is encoded.
"""

from __future__ import annotations

import json
from typing import Any

MAX_VALUE_BYTES = 64 * 1024


class BadValue(ValueError):
    """The value cannot be stored or served; the message says why, without quoting the value."""


def _refuse_constant(name: str) -> Any:
    raise BadValue(f"{name} is not JSON")


def _dump(value: Any) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError as exc:
        raise BadValue("nested too deeply") from exc
    except ValueError as exc:  # NaN/Infinity, or an integer beyond Python's digit limit
        raise BadValue(f"cannot be written as JSON: {exc}") from exc
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate survives JSON parsing ("\ud800" is valid JSON syntax) but is not Unicode text: stored, it
        # would make every later read of the key fail.
        raise BadValue("strings must be valid Unicode (a lone surrogate such as \\ud800 is not)") from exc
    return text


def encode(value: Any) -> str:
    """Compact JSON of value, or BadValue naming the problem (non-finite number, lone surrogate, size)."""
    text = _dump(value)
    if len(text.encode("utf-8")) > MAX_VALUE_BYTES:
        raise BadValue(f"larger than {MAX_VALUE_BYTES} bytes once encoded")
    return text


def decode(text: Any) -> Any:
    """The value a stored text holds, checked as encode() checks a new one; BadValue when it is not servable."""
    if not isinstance(text, str):
        raise BadValue(f"the stored value is a {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as exc:
        raise BadValue("the stored value is nested too deeply") from exc
    except BadValue:
        raise
    except ValueError as exc:
        raise BadValue(f"the stored value is not valid JSON ({exc})") from exc
    _dump(value)
    return value
