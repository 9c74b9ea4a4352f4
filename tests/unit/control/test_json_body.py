"""Request bodies that json.loads refuses with something other than JSONDecodeError are a 400
invalid_json, not a 500 (found by tests/fuzz)."""

from __future__ import annotations

import pytest

from control.api.validation import RequestError, parse_json_body


@pytest.mark.parametrize("raw", [
    b'{"name": ' + b"1" * 5000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b"\xff\xfe",
    b"{",
])
def test_bodies_json_refuses_are_invalid_json(raw: bytes) -> None:
    with pytest.raises(RequestError) as exc:
        parse_json_body(raw)
    assert (exc.value.code, exc.value.status) == ("invalid_json", 400)


def test_empty_optional_body_is_none() -> None:
    assert parse_json_body(b"  ", optional=True) is None
    with pytest.raises(RequestError):
        parse_json_body(b"")
