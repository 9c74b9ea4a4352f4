"""Frames that json.loads alone refuses with something other than JSONDecodeError are a
FrameError with a code (found by tests/fuzz: a ValueError escaped per frame)."""

from __future__ import annotations

import pytest

from signaling.protocol import ProtocolError, parse_message


@pytest.mark.parametrize("frame,code", [
    ('{"type": "ping", "n": ' + "9" * 4301 + "}", "json_number_too_long"),  # more digits than int() converts
    ("[" * 100_000 + "]" * 100_000, "json_too_deep"),  # deeper than the recursion limit
    ('{"type": "join", "token": "t", "x": ' + "[" * 5000 + "]" * 5000 + "}", "json_too_deep"),
])
def test_json_the_decoder_refuses_is_a_protocol_error(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_message(frame)
    assert exc.value.code == code
