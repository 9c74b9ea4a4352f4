"""JSON that arrives from the network (API bodies, signaling frames), parsed within bounds.

`json.loads` alone turns hostile input into builtin exceptions deep inside a handler: a
number of more than 4,300 digits raises ValueError (CPython's int-digit limit), a few
thousand nested brackets raise RecursionError, and `NaN`/`Infinity` are accepted although
JSON has no such values; and a document of many tiny values (`[{},{},…]`) costs about 24
bytes of memory and 60 ns of CPU per input byte. `parse` refuses each of these with a
`JsonInputError` whose `reason` is a stable code, before any of it reaches the caller:

- `invalid_json`: not UTF-8, not JSON, a non-standard constant (NaN, Infinity), or a string
  holding a lone UTF-16 surrogate (`"\\ud800"`: no text, and not encodable as UTF-8 again);
- `json_too_deep`: arrays/objects nested deeper than `max_depth` (default 32);
- `json_number_too_long`: a number literal longer than `MAX_NUMBER_CHARS` characters;
- `json_too_many_values`: more than `max_values` keys and values in all (default 1,024),
  refused before parsing. They are counted as 1 + the `,` `:` `[` `{` outside strings (every
  key and value but the first follows one), so an empty array or object counts as two.

Cost: a few `str.count` calls over the text, then one C-speed parse with a hook per numeric
literal. Only when those counts are high (more `,` `:` `[` `{` than `max_values`, more
brackets than `max_depth`: a 64 KB SDP string holds a few thousand colons) is the text's
skeleton taken, the part outside strings (three C-speed replace/split/join calls, its size
bounded by the quote count first), and counted exactly; the depth is then found in at most
a couple of thousand brackets, stripping the innermost pairs (`bytes.replace`, at most
`max_depth` rounds). No walk of the parsed value, except for surrogates, and that only
when the text holds a `\\uD8..`-`\\uDF..` escape.
Measured in bench/RESULTS.md ("Fuzzing, coverage-guided").
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100  # sign, digits, fraction and exponent; no field of ours needs more than 20
# Keys and values in one document. Ours hold a few dozen (an appointment's client_ids at most
# rooms.max_participants, 100); 1,024 tiny values parse in ~50 us into ~100 KB.
MAX_VALUES = 1024


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


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(c for c in range(128) if c not in b"[]{}")


def parse(data: str | bytes, *, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> Any:
    """Parse one JSON document. Raises JsonInputError, never a builtin exception."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JsonInputError("invalid_json", "the body is not valid UTF-8") from None
    else:
        text = data
    # Over-estimates (they count inside strings too): every key and value but the first
    # follows a `,` `:` `[` or `{`.
    opens = text.count("[") + text.count("{")
    skeleton = None
    if opens + text.count(",") + text.count(":") >= max_values:
        skeleton = _skeleton(text, max_values)
        marks = max_values
        if skeleton is not text:  # exact now
            opens = skeleton.count("[") + skeleton.count("{")
            marks = opens + skeleton.count(",") + skeleton.count(":")
        if marks >= max_values:
            if skeleton.find("[" * (max_depth + 1)) >= 0:  # the more telling reason, when it is that plain
                raise JsonInputError("json_too_deep", f"arrays and objects nest at most {max_depth} deep")
            raise JsonInputError("json_too_many_values", f"a document holds at most {max_values} keys and values")
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
    if opens > max_depth:
        if _too_deep(_skeleton(text, max_values) if skeleton is None else skeleton, max_depth):
            raise JsonInputError("json_too_deep", f"arrays and objects nest at most {max_depth} deep")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise JsonInputError("invalid_json", "a string holds a lone UTF-16 surrogate")
    return value


def _skeleton(text: str, max_values: int) -> str:
    """The text outside its strings. Escaped backslashes, then escaped quotes, are dropped
    first (left to right, as a JSON reader pairs them), so each `"` left opens or closes a
    string. Exact for valid JSON; for anything else json.loads decides. More than
    2 * max_values quotes is refused here: each string is a key or a value."""
    t = text
    if "\\" in t:
        t = t.replace("\\\\", "").replace('\\"', "")
    if '"' not in t:
        return t
    if t.count('"') > 2 * max_values:
        raise JsonInputError("json_too_many_values", f"a document holds at most {max_values} keys and values")
    return "".join(t.split('"')[::2])


def _brackets(skeleton: str) -> bytes:
    """A skeleton's brackets alone, each opening one as b"(" and each closing one as b")"."""
    return skeleton.encode("ascii", "ignore").translate(_BRACKETS, _NOT_BRACKETS)


def _too_deep(skeleton: str, max_depth: int) -> bool:
    """Whether the brackets of a valid document's skeleton (fewer than 2 * MAX_VALUES of
    them, checked before) nest deeper than max_depth: each round deletes the innermost
    pairs, so a document of depth d is empty after d rounds."""
    s = _brackets(skeleton)
    if s.find(b"(" * (max_depth + 1)) >= 0:
        return True
    for _ in range(max_depth):
        if not s:
            return False
        s = s.replace(b"()", b"")
    return bool(s)


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a string (key or value) in an already bounded value cannot be encoded as UTF-8."""
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
