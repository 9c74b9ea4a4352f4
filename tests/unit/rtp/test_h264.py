"""H.264 NAL types and keyframe detection."""

from __future__ import annotations

import pytest
from aiortc.codecs.h264 import H264Encoder, H264PayloadDescriptor
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.h264 import (
    NAL_FU_A,
    NAL_IDR,
    NAL_STAP_A,
    build_fu_a,
    build_stap_a,
    fu_a_header,
    is_h264_keyframe,
    nal_type,
    stap_a_nal_types,
)

SPS = bytes.fromhex("6742c01f8c8d40")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65b8") + bytes(range(256)) * 8
SLICE = bytes.fromhex("419a") + bytes(range(256)) * 8

# Hand-written STAP-A: NRI=3 type 24 | len 4 SPS | len 2 PPS.
STAP_A = bytes.fromhex("7800046742c01f000268ce")


@pytest.mark.parametrize(
    ("payload", "kind", "keyframe"),
    [
        (bytes.fromhex("65b800"), 5, True),  # IDR slice
        (bytes.fromhex("6742c0"), 7, True),  # SPS
        (bytes.fromhex("68ce"), 8, True),  # PPS
        (bytes.fromhex("419a00"), 1, False),  # non-IDR slice
        (bytes.fromhex("06050a"), 6, False),  # SEI
        (STAP_A, 24, True),
        (bytes.fromhex("78000206050003419a00"), 24, False),  # SEI + slice
        (bytes.fromhex("7c85aabb"), 28, True),  # FU-A start of an IDR
        (bytes.fromhex("7c05aabb"), 28, False),  # FU-A middle
        (bytes.fromhex("7c45aabb"), 28, False),  # FU-A end
        (bytes.fromhex("7c81aabb"), 28, False),  # FU-A start of a non-IDR slice
        (bytes.fromhex("e5b8"), -1, False),  # forbidden bit
        (b"", -1, False),
    ],
)
def test_table(payload: bytes, kind: int, keyframe: bool) -> None:
    assert nal_type(payload) == kind
    assert is_h264_keyframe(payload) is keyframe


def test_stap_a_and_fu_a_details() -> None:
    assert stap_a_nal_types(STAP_A) == [7, 8]
    assert fu_a_header(bytes.fromhex("7c85aa")) == (True, False, 5)
    assert fu_a_header(bytes.fromhex("7c45aa")) == (False, True, 5)


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("78"),  # STAP-A without NALs
        bytes.fromhex("7800"),  # truncated length
        bytes.fromhex("7800056742"),  # length past the end
        bytes.fromhex("780000"),  # zero-length NAL
        bytes.fromhex("780002e742"),  # forbidden bit inside
        bytes.fromhex("7c"),  # FU-A without FU header
        bytes.fromhex("7cc5aa"),  # start and end both set
    ],
)
def test_malformed(payload: bytes) -> None:
    assert not is_h264_keyframe(payload)
    assert stap_a_nal_types(payload) is None or fu_a_header(payload) is None


def test_offsets_and_end() -> None:
    buf = b"\xff\xff" + STAP_A + b"\xee"
    assert is_h264_keyframe(buf, 2, 2 + len(STAP_A))
    assert not is_h264_keyframe(buf, 2)  # trailing byte breaks the STAP-A walk
    assert nal_type(buf, 2, 2) == -1


def test_aiortc_packetizer_golden() -> None:
    payloads = H264Encoder._packetize([SPS, PPS, IDR])
    assert nal_type(payloads[0]) == NAL_STAP_A and stap_a_nal_types(payloads[0]) == [7, 8]
    assert all(nal_type(p) == NAL_FU_A for p in payloads[1:])
    assert [is_h264_keyframe(p) for p in payloads] == [True, True] + [False] * (len(payloads) - 2)
    assert fu_a_header(payloads[1]) == (True, False, NAL_IDR)
    slices = H264Encoder._packetize([SLICE])
    assert len(slices) > 1 and not any(is_h264_keyframe(p) for p in slices)


def test_our_builders_read_by_aiortc() -> None:
    _, annexb = H264PayloadDescriptor.parse(build_stap_a([SPS, PPS]))
    assert annexb == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS
    frags = build_fu_a(IDR, 1200)
    assert is_h264_keyframe(frags[0]) and not any(is_h264_keyframe(f) for f in frags[1:])
    assert fu_a_header(frags[-1]) == (False, True, NAL_IDR)
    out = b"".join(H264PayloadDescriptor.parse(f)[1] for f in frags)
    assert out == b"\x00\x00\x00\x01" + IDR
    with pytest.raises(ValueError):
        build_fu_a(SPS, 1200)
    with pytest.raises(ValueError):
        build_stap_a([])


@given(st.binary(max_size=40), st.integers(0, 5), st.integers(-1, 45))
def test_random_bytes_never_raise(data: bytes, offset: int, end: int) -> None:
    is_h264_keyframe(data, offset, end)
    stap_a_nal_types(data, offset, end)
    fu_a_header(data, offset, end)
    assert -1 <= nal_type(data, offset, end) <= 31


@given(
    nals=st.lists(
        st.binary(min_size=1, max_size=30).map(lambda b: bytes((b[0] & 0x7F,)) + b[1:]),
        min_size=1,
        max_size=5,
    )
)
def test_stap_a_round_trip(nals: list[bytes]) -> None:
    assert stap_a_nal_types(build_stap_a(nals)) == [n[0] & 0x1F for n in nals]
