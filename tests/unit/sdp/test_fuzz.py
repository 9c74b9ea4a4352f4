"""Hypothesis: random and mutated SDP never raises anything but SdpError, and whatever
parses survives a write/parse round trip unchanged."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sfu.sdp import (
    NegotiatedCodec,
    OutTrack,
    SdpError,
    SessionDescription,
    answer_publish_offer,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)

from .conftest import FIXTURE_NAMES, LOCAL, find_fixture

FIXTURES = [
    path.read_bytes().decode().replace("\r\n", "\n").strip().split("\n")
    for path in map(find_fixture, FIXTURE_NAMES)
    if path is not None
]

KNOWN_ATTRIBUTES = [
    "rtpmap", "fmtp", "rtcp-fb", "extmap", "candidate", "ssrc", "ssrc-group", "rid", "simulcast", "msid",
    "mid", "setup", "fingerprint", "ice-ufrag", "ice-pwd", "ice-options", "group", "msid-semantic", "rtcp",
    "rtcp-mux", "rtcp-rsize", "sendonly", "recvonly", "inactive", "sendrecv", "bundle-only", "ice-lite",
    "end-of-candidates", "extmap-allow-mixed", "x-unknown",
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

tokens = st.one_of(
    st.sampled_from(["96", "97", "0", "-1", "128", "4294967296", "typ", "host", "send", "recv", "~q", "q;h", ";",
                     "apt=96", "VP8/90000", "opus/48000/2", "H264/90000", "rtx/90000", "nack", "pli", "actpass",
                     "BUNDLE", "FID", "SIM", "0", "1", "urn:ietf:params:rtp-hdrext:sdes:mid", "sha-256", "AB:CD",
                     "packetization-mode=1;profile-level-id=42e01f", "/", ":", "=", "", " ", "\t", "\r"]),
    st.text(max_size=8),
)
attribute_value = st.lists(tokens, max_size=6).map(" ".join)


def check_text(text: str) -> SessionDescription | None:
    """Parse; on success the round trip must be exact. Only SdpError may escape."""
    try:
        d = parse_sdp(text)
    except SdpError as exc:
        assert exc.code and exc.message
        return None
    assert parse_sdp(d.to_text()) == d
    return d


def check_answer(d: SessionDescription) -> None:
    try:
        answer, _ = answer_publish_offer(d, LOCAL)
    except SdpError:
        return
    assert parse_sdp(answer.to_text()) == answer


@SETTINGS
@given(st.lists(st.text(max_size=40), max_size=20))
def test_random_lines(lines: list[str]) -> None:
    check_text("\r\n".join(["v=0", *lines]))
    check_text("\n".join(lines))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KNOWN_ATTRIBUTES), st.booleans(), attribute_value), max_size=12),
       st.booleans())
@example([("rtpmap", True, "96 VP8/90000"), ("fmtp", True, "96 ;;=x;a=")], True)
@example([("simulcast", True, "send rid=q;~h,i recv x")], True)
def test_random_attributes(attrs: list[tuple[str, bool, str]], in_media: bool) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    if in_media:
        lines.append("m=video 9 UDP/TLS/RTP/SAVPF 96 97")
    for name, with_value, value in attrs:
        lines.append(f"a={name}:{value}" if with_value else f"a={name}")
    d = check_text("\r\n".join(lines))
    if d is not None:
        check_answer(d)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> str:
    lines = list(draw(st.sampled_from(FIXTURES or [["v=0"]])))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "truncate", "replace_token", "insert", "swap"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "replace_token":
            parts = lines[i].split(" ")
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] = draw(tokens)
            lines[i] = " ".join(parts)
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.skipif(not FIXTURES, reason="no SDP fixture in tests/fixtures/sdp/ nor ../shared/fixtures/sdp/")
@SETTINGS
@given(mutated_fixture())
def test_mutated_chromium_offers(text: str) -> None:
    d = check_text(text)
    if d is not None:
        check_answer(d)


OPUS = NegotiatedCodec("audio", "opus", 111, 48000, 2, (("useinbandfec", "1"),))
VP8 = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
SUB_OFFER = build_subscribe_offer(
    LOCAL, [OutTrack("audio", "s", "a", 1, OPUS), OutTrack("video", "s", "v", 2, VP8, rtx_ssrc=3)]
)
SUB_ANSWER_LINES = (
    SUB_OFFER.to_text()
    .replace("a=sendonly", "a=recvonly")
    .replace("a=setup:actpass", "a=setup:active")
    .replace("a=ice-lite\r\n", "")
    .strip()
    .split("\r\n")
)


@SETTINGS
@given(st.data())
def test_mutated_subscribe_answers(data: st.DataObject) -> None:
    lines = list(SUB_ANSWER_LINES)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        if data.draw(st.booleans()):
            del lines[i]
        else:
            parts = lines[i].split(" ")
            j = data.draw(st.integers(0, len(parts) - 1))
            parts[j] = data.draw(tokens)
            lines[i] = " ".join(parts)
    d = check_text("\r\n".join(lines) + "\r\n")
    if d is None:
        return
    try:
        params = apply_subscribe_answer(SUB_OFFER, d)
    except SdpError:
        return
    assert {t.mid for t in params.tracks} <= {"0", "1"}


def test_unmutated_subscribe_answer_applies() -> None:
    params = apply_subscribe_answer(SUB_OFFER, parse_sdp("\r\n".join(SUB_ANSWER_LINES) + "\r\n"))
    assert [t.mid for t in params.tracks] == ["0", "1"]
