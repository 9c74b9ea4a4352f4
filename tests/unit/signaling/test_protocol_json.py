"""Frames that json.loads alone refuses with something other than JSONDecodeError are a
FrameError with a code (found by tests/fuzz: a ValueError escaped per frame)."""

from __future__ import annotations

import json

import pytest

from signaling.protocol import MAX_FRAME_BYTES, ProtocolError, PublishOffer, parse_message


@pytest.mark.parametrize("frame,code", [
    ('{"type": "ping", "n": ' + "9" * 4301 + "}", "json_number_too_long"),  # more digits than int() converts
    ("[" * 30_000 + "]" * 30_000, "json_too_deep"),  # deeper than the recursion limit
    ('{"type": "join", "token": "t", "x": ' + "[" * 5000 + "]" * 5000 + "}", "json_too_deep"),
])
def test_json_the_decoder_refuses_is_a_protocol_error(frame: str, code: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_message(frame)
    assert exc.value.code == code


def test_a_frame_of_many_tiny_values_is_refused_before_parsing() -> None:
    # tests/fuzz: 256 KB of [{},{},...] cost 24 ms and 8 MB per frame; within the frame limit
    # such a frame is refused by the value count, over it by the size.
    for n in (30_000, 90_000):
        with pytest.raises(ProtocolError) as exc:
            parse_message("[" + ",".join(["{}"] * n) + "]")
        assert exc.value.code == ("json_too_many_values" if 3 * n < MAX_FRAME_BYTES else "frame_too_large")


def test_the_largest_publish_offer_the_sfu_takes_fits_in_a_frame() -> None:
    # sfu/sdp/publish.py refuses offers over 64 KiB characters; a frame must carry one that
    # size, of short lines (JSON doubles each CRLF's length), colons, commas and braces.
    line = "a=ssrc:1 cname:{7e2b}\\r\\n"  # as the JSON text holds it: 23 characters of SDP
    sdp_lines = 64 * 1024 // 23
    frame = '{"type": "publish_offer", "sdp": "' + line * sdp_lines + '"}'
    assert len(frame) <= MAX_FRAME_BYTES
    m = parse_message(frame)
    assert isinstance(m, PublishOffer) and m.sdp == json.loads(frame)["sdp"]
