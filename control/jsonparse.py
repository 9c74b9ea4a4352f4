"""JSON that arrives from the network (API bodies, signaling frames), parsed within bounds.

`json.loads` alone turns hostile input into builtin exceptions deep inside a handler: a
number of more than 4,300 digits raises ValueError (CPython's int-digit limit), a few
thousand nested brackets raise RecursionError, and `NaN`/`Infinity` are accepted although
JSON has no such values. `parse` refuses each of these with a `JsonInputError` whose
`reason` is a stable code, before any of it reaches the caller:

- `invalid_json`: not UTF-8, not JSON, a non-standard constant (NaN, Infinity), or a string
  holding a lone UTF-16 surrogate (`"\\ud800"`: no text, and not encodable as UTF-8 again);
- `json_too_deep`: arrays/objects nested deeper than `max_depth` (default 32);
- `json_number_too_long`: a number literal longer than `MAX_NUMBER_CHARS` characters.

Cost: one C-speed parse; a number hook per numeric literal; the depth walk runs only when
the text holds more opening brackets than `max_depth` (a normal message holds a few), the
surrogate walk only when it holds a `\\u` escape.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100  # sign, digits, fraction and exponent; no field of ours needs more than 20


class JsonInputError(Exception):
    """Input that is not acceptable JSON; `reason` is one of the codes in the module docstring."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _NumberTooLong(Exception):
    pass


class _BadConstant(Exception):
    pass


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _NumberTooLong
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _NumberTooLong
    return float(text)


def _constant(text: str) -> Any:
    raise _BadConstant(text)


def parse(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document. Raises JsonInputError, never a builtin exception."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonInputError("invalid_json", "the body is not valid UTF-8") from None
    else:
        text = data
    try:
        value = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _NumberTooLong:
        raise JsonInputError("json_number_too_long",
                             f"a number is longer than {MAX_NUMBER_CHARS} characters") from None
    except _BadConstant as e:
        raise JsonInputError("invalid_json", f"{str(e)[:20]} is not a JSON value") from None
    except RecursionError:
        raise JsonInputError("json_too_deep", f"arrays and objects nest at most {max_depth} deep") from None
    except json.JSONDecodeError as e:
        raise JsonInputError("invalid_json", f"not valid JSON: {e.msg} at character {e.pos}") from None
    if text.count("[") + text.count("{") > max_depth and _too_deep(value, max_depth):
        raise JsonInputError("json_too_deep", f"arrays and objects nest at most {max_depth} deep")
    if "\\u" in text and _has_lone_surrogate(value):
        raise JsonInputError("invalid_json", "a string holds a lone UTF-16 surrogate")
    return value


_CONTAINERS = (dict, list)


def _too_deep(value: Any, max_depth: int) -> bool:
    """Whether arrays and objects nest deeper than max_depth in a parsed value: level by level, no recursion."""
    level = [value] if value.__class__ in _CONTAINERS else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        below: list[Any] = []
        for v in level:
            below.extend([c for c in (v.values() if v.__class__ is dict else v) if c.__class__ in _CONTAINERS])
        level = below
    return False


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) in an already depth-checked value cannot be encoded as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if v.__class__ is str:
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif v.__class__ is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif v.__class__ is list:
            stack.extend(v)
    return False
