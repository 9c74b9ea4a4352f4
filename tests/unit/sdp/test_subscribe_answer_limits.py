"""A subscriber's answer is bounded before it is parsed (found by tests/fuzz: a 200 KB answer,
which the signaling frame limit lets through, cost ~10-20 ms to parse before it was refused)."""

from __future__ import annotations

import pytest

from sfu.sdp import (
    NegotiatedCodec,
    OutTrack,
    SdpError,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)
from sfu.sdp.errors import ANSWER_MISMATCH, SDP_TOO_LARGE
from sfu.sdp.subscribe import (
    MAX_ANSWER_BASE_SIZE,
    MAX_ANSWER_SECTION_SIZE,
    check_subscribe_answer_text,
)

from .conftest import LOCAL

OFFER = build_subscribe_offer(LOCAL, [
    OutTrack("audio", "s", "a", 1, NegotiatedCodec("audio", "opus", 111, 48000, 2)),
    OutTrack("video", "s", "v", 2, NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97), rtx_ssrc=3),
])
ANSWER = (OFFER.to_text().replace("a=sendonly", "a=recvonly").replace("a=setup:actpass", "a=setup:active")
          .replace("a=ice-lite\r\n", ""))


def checked(text: str) -> list[str]:
    check_subscribe_answer_text(text, OFFER)
    return [t.mid for t in apply_subscribe_answer(OFFER, parse_sdp(text)).tracks]


def test_a_real_sized_answer_passes() -> None:
    assert checked(ANSWER) == ["0", "1"]
    assert checked(ANSWER + "a=x-pad:" + "y" * 1000 + "\r\n") == ["0", "1"]


def test_an_answer_longer_than_its_offer_can_need_is_refused_before_parsing() -> None:
    limit = MAX_ANSWER_BASE_SIZE + 2 * MAX_ANSWER_SECTION_SIZE
    padded = ANSWER + "a=x-pad:" + "y" * limit + "\r\n"
    with pytest.raises(SdpError) as exc:
        checked(padded)
    assert exc.value.code == SDP_TOO_LARGE


@pytest.mark.parametrize("extra", ["", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 100])
def test_not_one_m_line_per_offered_section_is_a_mismatch(extra: str) -> None:
    text = ANSWER.split("m=")[0] + extra if not extra else ANSWER + extra
    with pytest.raises(SdpError) as exc:
        checked(text[: MAX_ANSWER_BASE_SIZE])
    assert exc.value.code == ANSWER_MISMATCH
