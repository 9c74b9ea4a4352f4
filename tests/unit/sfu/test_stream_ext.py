"""RecvStream.translate_ext_into renumbers a publisher's header extensions in place: whatever the
extension block holds, the packet keeps its length and its payload (found by tests/fuzz)."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.rtp.packet import RtpHeader, build_rtp

ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"


def stream() -> RecvStream:
    forwarded = {LEVEL: 1, ABS: 2}
    return RecvStream(SimpleNamespace(kind="audio"), 1, None, 111, None, 48000, "opus",  # type: ignore[arg-type]
                      build_ext_map({LEVEL: 5, ABS: 3, MID: 4}, forwarded), 1, False, None,
                      build_ext_lengths(forwarded))


def translate(data: bytes) -> tuple[RtpHeader, bytearray]:
    hdr = RtpHeader()
    assert hdr.load(data)
    pkt = bytearray(data)
    stream().translate_ext_into(pkt, hdr)
    return hdr, pkt


def test_well_formed_elements_are_renumbered_and_the_mid_erased() -> None:
    data = build_rtp(111, 1, 0, 1, b"payload!", extensions=[(5, b"\x85"), (3, b"\1\2\3"), (4, b"0")])
    hdr, pkt = translate(data)
    assert dict((i, bytes(pkt[o:o + n])) for i, o, n in RtpHeader.extensions(_load(pkt))) == {
        1: b"\x85", 2: b"\1\2\3"}
    assert pkt[hdr.payload_offset:] == b"payload!"


def _load(pkt: bytearray) -> RtpHeader:
    h = RtpHeader()
    assert h.load(bytes(pkt))
    return h


def test_one_byte_element_running_past_the_block_keeps_length_and_payload() -> None:
    # One word of extensions: a level element (2 bytes), then an element claiming 16 data bytes.
    data = build_rtp(111, 1, 0, 1, b"payload-bytes", raw_extension=(0xBEDE, b"\x50\x85\x4f\x00"))
    hdr, pkt = translate(data)
    assert len(pkt) == len(data)
    assert pkt[hdr.payload_offset:] == b"payload-bytes"
    assert pkt[hdr.ext_offset:hdr.ext_offset + 4] == b"\x10\x85\x00\x00"  # renumbered, then erased


def test_two_byte_element_running_past_the_block_keeps_length_and_payload() -> None:
    data = build_rtp(111, 1, 0, 1, b"payload-bytes", raw_extension=(0x1000, b"\x05\x01\x85\x03"))
    hdr, pkt = translate(data)
    assert len(pkt) == len(data)
    assert pkt[hdr.payload_offset:] == b"payload-bytes"
    assert pkt[hdr.ext_offset:hdr.ext_offset + 4] == b"\x01\x01\x85\x00"  # the lone id erased


def test_fuzzer_reproducer() -> None:
    data = bytes.fromhex("90e0000200000bb800005678bede0003b0a0716831000840000000004090f0846301071000d2029d2a8000")
    hdr, pkt = translate(data)
    assert len(pkt) == len(data)
    assert pkt[hdr.payload_offset:] == data[hdr.payload_offset:]
    assert struct.unpack_from("!H", pkt, hdr.ext_offset - 2)[0] == 3
