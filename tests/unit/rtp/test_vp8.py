"""VP8 payload descriptor, keyframe detection, in-place rewrites, PictureID munging."""

from __future__ import annotations

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.packet import build_rtp, parse_rtp
from sfu.rtp.vp8 import (
    PictureIdMunger,
    Tl0PicIdxMunger,
    Vp8Descriptor,
    build_vp8_descriptor,
    is_vp8_keyframe,
    parse_vp8,
    set_picture_id,
    set_tl0picidx,
    vp8_keyframe_size,
)

# Hand-written: X=1 S=1 PID=0 | I L T | M=1 PictureID 0x1234 | TL0PICIDX 5 |
# TID 0 Y=1 | VP8 frame tag (P=0: keyframe) ... start code 9d 01 2a, 640x480.
KEYFRAME = bytes.fromhex("90e0923405205042009d012a8002e001aabb")


def test_golden_keyframe_descriptor() -> None:
    d = parse_vp8(KEYFRAME)
    assert d is not None
    assert d.start and d.partition_id == 0 and not d.non_reference
    assert (d.picture_id, d.picture_id_bits, d.picture_id_offset) == (0x1234, 15, 2)
    assert (d.tl0picidx, d.tl0picidx_offset) == (5, 4)
    assert (d.tid, d.layer_sync, d.keyidx) == (0, True, -1)
    assert d.size == 6 and d.payload_offset == 6
    assert d.keyframe and is_vp8_keyframe(KEYFRAME)
    assert vp8_keyframe_size(KEYFRAME, d.payload_offset) == (640, 480)


@pytest.mark.parametrize(
    ("data", "keyframe"),
    [
        (bytes.fromhex("1050"), True),  # minimal: S=1 PID=0, P=0
        (bytes.fromhex("1051"), False),  # P=1: interframe
        (bytes.fromhex("0050"), False),  # not the start of a partition
        (bytes.fromhex("1150"), False),  # partition 1
        (bytes.fromhex("90800550"), True),  # 7-bit PictureID
        (bytes.fromhex("b010e350"), True),  # N=1, K only: KEYIDX 3
    ],
)
def test_keyframe_table(data: bytes, keyframe: bool) -> None:
    d = parse_vp8(data)
    assert d is not None and d.keyframe is keyframe


def test_short_fields() -> None:
    d = parse_vp8(bytes.fromhex("90800550"))
    assert d is not None and (d.picture_id, d.picture_id_bits, d.tl0picidx, d.tid) == (5, 7, -1, -1)
    d = parse_vp8(bytes.fromhex("b010e350"))
    assert d is not None and d.non_reference and (d.keyidx, d.tid, d.picture_id) == (3, -1, -1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("10"),  # no payload byte
        bytes.fromhex("90"),  # X without extension octet
        bytes.fromhex("9080"),  # I without PictureID
        bytes.fromhex("908092"),  # M=1 with one byte
        bytes.fromhex("9040"),  # L without TL0PICIDX
        bytes.fromhex("9020"),  # T without TID octet
        bytes.fromhex("90e092340520"),  # descriptor only, no payload
    ],
)
def test_malformed(data: bytes) -> None:
    assert parse_vp8(data) is None
    assert not is_vp8_keyframe(data)


def test_offsets_inside_an_rtp_packet_and_rewrites() -> None:
    pkt = bytearray(build_rtp(96, 1, 2, 3, KEYFRAME, extensions=[(1, b"0")]))
    h = parse_rtp(pkt)
    assert h is not None
    end = h.payload_offset + h.payload_length
    d = Vp8Descriptor()
    assert d.load(pkt, h.payload_offset, end) and d.keyframe
    assert set_picture_id(pkt, d, 0x8001)  # wraps to 15 bits, M bit kept
    assert set_tl0picidx(pkt, d, 0x1FF)
    again = parse_vp8(pkt, h.payload_offset, end)
    assert again is not None and (again.picture_id, again.picture_id_bits, again.tl0picidx) == (
        1,
        15,
        0xFF,
    )
    short = bytearray(bytes.fromhex("90800550"))
    ds = parse_vp8(short)
    assert ds is not None and set_picture_id(short, ds, 200)
    assert parse_vp8(short).picture_id == 200 & 0x7F  # type: ignore[union-attr]
    plain = bytearray(b"\x10\x50")
    dp = parse_vp8(plain)
    assert dp is not None and not set_picture_id(plain, dp, 1) and not set_tl0picidx(plain, dp, 1)


def test_keyframe_size_rejects_non_keyframes() -> None:
    assert vp8_keyframe_size(KEYFRAME, 6, 10) is None  # too short
    assert vp8_keyframe_size(b"\x51\x42\x00\x9d\x01\x2a\x80\x02\xe0\x01", 0) is None
    assert vp8_keyframe_size(b"\x50\x42\x00\x9d\x01\x2b\x80\x02\xe0\x01", 0) is None


# --- aiortc as the independent implementation ---------------------------------------


@given(
    start=st.booleans(),
    pid=st.integers(0, 7),
    picture_id=st.one_of(st.none(), st.integers(0, 0x7FFF)),
    tl0=st.one_of(st.none(), st.integers(0, 255)),
    tid=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 1))),
    keyidx=st.one_of(st.none(), st.integers(0, 31)),
    payload=st.binary(min_size=1, max_size=8),
)
def test_aiortc_descriptor_both_ways(
    start: bool,
    pid: int,
    picture_id: int | None,
    tl0: int | None,
    tid: tuple[int, int] | None,
    keyidx: int | None,
    payload: bytes,
) -> None:
    theirs = VpxPayloadDescriptor(int(start), pid, picture_id, tl0, tid, keyidx)
    data = bytes(theirs) + payload
    d = parse_vp8(data)
    assert d is not None
    assert (d.start, d.partition_id) == (start, pid)
    assert d.picture_id == (-1 if picture_id is None else picture_id)
    assert d.tl0picidx == (-1 if tl0 is None else tl0)
    assert (d.tid, d.layer_sync) == ((-1, False) if tid is None else (tid[0], bool(tid[1])))
    assert d.keyidx == (-1 if keyidx is None else keyidx)
    assert d.keyframe == (start and pid == 0 and not payload[0] & 1)
    ours = build_vp8_descriptor(
        start=start,
        partition_id=pid,
        picture_id=-1 if picture_id is None else picture_id,
        tl0picidx=-1 if tl0 is None else tl0,
        tid=-1 if tid is None else tid[0],
        layer_sync=bool(tid and tid[1]),
        keyidx=-1 if keyidx is None else keyidx,
    )
    parsed, rest = VpxPayloadDescriptor.parse(ours + payload)
    assert rest == payload
    assert (parsed.partition_start, parsed.partition_id) == (int(start), pid)
    assert (parsed.picture_id, parsed.tl0picidx, parsed.keyidx) == (picture_id, tl0, keyidx)
    if tid is not None:
        assert parsed.tid == tid


@given(st.binary(max_size=16), st.integers(0, 4), st.integers(-1, 20))
def test_random_bytes_never_raise(data: bytes, offset: int, end: int) -> None:
    d = parse_vp8(data, offset, end)
    if d is not None:
        assert d.payload_offset < (len(data) if end < 0 or end > len(data) else end)
    is_vp8_keyframe(data, offset, end)
    vp8_keyframe_size(data, offset, end)


# --- PictureID / TL0PICIDX continuity -----------------------------------------------


def test_picture_id_munger_across_source_switch_15_bit() -> None:
    m = PictureIdMunger()
    outs = [m.munge(p) for p in (32766, 32766, 32767, 0, 0, 1)]
    assert outs == [32766, 32766, 32767, 0, 0, 1]
    m.sync(500)  # new publisher: picture ids restart elsewhere
    assert [m.munge(p) for p in (500, 500, 501)] == [2, 2, 3]


def test_picture_id_munger_drops_a_temporal_layer_picture() -> None:
    m = PictureIdMunger(bits=7)
    assert m.munge(126) == 126
    assert m.drop(127)  # first packet of a dropped picture
    assert m.drop(127) is False  # its other packets: already dropped
    assert m.munge(127) is None
    assert [m.munge(0), m.munge(1)] == [127, 0]


def test_tl0picidx_munger_wraps_8_bit() -> None:
    m = Tl0PicIdxMunger(start=254)
    assert [m.munge(v) for v in (10, 11, 12, 13)] == [254, 255, 0, 1]
