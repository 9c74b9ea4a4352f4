"""RTP header view, extension lookup, in-place writers, builder; aiortc as the
independent implementation for golden packets."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp import ext
from sfu.rtp.packet import (
    EXT_PROFILE_ONE_BYTE,
    EXT_PROFILE_TWO_BYTE,
    RtpHeader,
    build_rtp,
    is_rtcp,
    parse_rtp,
    rtx_original_seq,
    set_extension_value,
    set_marker,
    set_payload_type,
    set_seq,
    set_seq_ts_ssrc,
    set_ssrc,
    set_timestamp,
)

ID_MID, ID_ABS, ID_TWCC, ID_LEVEL, ID_RID = 1, 3, 5, 10, 12


def aiortc_map() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=ID_MID, uri=ext.URI_MID),
                RTCRtpHeaderExtensionParameters(id=ID_ABS, uri=ext.URI_ABS_SEND_TIME),
                RTCRtpHeaderExtensionParameters(id=ID_TWCC, uri=ext.URI_TRANSPORT_CC),
                RTCRtpHeaderExtensionParameters(id=ID_LEVEL, uri=ext.URI_AUDIO_LEVEL),
                RTCRtpHeaderExtensionParameters(id=ID_RID, uri=ext.URI_RID),
            ]
        )
    )
    return m


# --- golden: hand-written bytes -----------------------------------------------------

GOLDEN = bytes.fromhex(
    "b0"  # V=2 P=1 X=1 CC=0
    "e0"  # M=1 PT=96
    "1234"  # seq
    "deadbeef"  # timestamp
    "cafebabe"  # ssrc
    "bede0002"  # one-byte profile, 2 words
    "10"
    "30"  # id 1 len 1: "0"
    "51"
    "0102"  # id 5 len 2: twcc seq 0x0102
    "00"  # padding byte between elements
    "0000"  # pad to the word
    "aabbcc"  # payload
    "0000"
    "03"  # 3 bytes of RTP padding
)


def test_golden_hand_written() -> None:
    h = parse_rtp(GOLDEN)
    assert h is not None
    assert (h.payload_type, h.seq, h.timestamp, h.ssrc) == (96, 0x1234, 0xDEADBEEF, 0xCAFEBABE)
    assert h.marker and h.padding and h.extension
    assert h.ext_profile == EXT_PROFILE_ONE_BYTE and (h.ext_offset, h.ext_length) == (16, 8)
    assert (h.payload_offset, h.payload_length, h.padding_length) == (24, 3, 3)
    assert bytes(h.payload()) == b"\xaa\xbb\xcc"
    assert h.find_extension(1) == (17, 1)
    assert h.find_extension(5) == (19, 2)
    assert h.find_extension(2) is None
    assert list(h.extensions()) == [(1, 17, 1), (5, 19, 2)]
    assert ext.read_twcc_seq(GOLDEN, 19, 2) == 0x0102
    assert ext.read_sdes_id(GOLDEN, 17, 1) == "0"


def test_one_byte_stop_id_and_truncated_element() -> None:
    # id 15 ends processing; the bytes after it are not elements.
    block = bytes.fromhex("1041f02000000000")
    pkt = build_rtp(96, 1, 2, 3, raw_extension=(EXT_PROFILE_ONE_BYTE, block))
    h = parse_rtp(pkt)
    assert h is not None
    assert h.find_extension(1) == (h.ext_offset + 1, 1)
    assert h.find_extension(2) is None
    assert list(h.extensions()) == [(1, h.ext_offset + 1, 1)]
    # Element length runs past the block: not found, no exception.
    bad = build_rtp(96, 1, 2, 3, raw_extension=(EXT_PROFILE_ONE_BYTE, bytes.fromhex("1f000000")))
    hb = parse_rtp(bad)
    assert hb is not None and hb.find_extension(1) is None and list(hb.extensions()) == []


def test_two_byte_form_and_appbits() -> None:
    pkt = build_rtp(111, 7, 8, 9, b"x", extensions=[(1, b""), (20, b"abc"), (2, bytes(17))])
    h = parse_rtp(pkt)
    assert h is not None and h.ext_profile == EXT_PROFILE_TWO_BYTE
    assert h.find_extension(1) == (h.ext_offset + 2, 0)
    off, size = h.find_extension(20) or (-1, -1)
    assert pkt[off : off + size] == b"abc"
    assert h.find_extension(2) is not None and h.find_extension(2)[1] == 17  # type: ignore[index]
    # appbits in the low nibble of 0x100X are still the two-byte form
    raw = bytearray(pkt)
    raw[h.ext_offset - 3] = 0x05
    h2 = parse_rtp(bytes(raw))
    assert h2 is not None and h2.ext_profile == 0x1005 and h2.find_extension(20) is not None


def test_non_8285_profile_exposed_raw() -> None:
    pkt = build_rtp(96, 1, 2, 3, b"pp", raw_extension=(0xABCD, b"12345678"))
    h = parse_rtp(pkt)
    assert h is not None and h.ext_profile == 0xABCD
    assert pkt[h.ext_offset : h.ext_offset + h.ext_length] == b"12345678"
    assert h.find_extension(1) is None and list(h.extensions()) == []
    assert bytes(h.payload()) == b"pp"


def test_csrcs() -> None:
    pkt = build_rtp(0, 1, 2, 3, b"a", csrcs=[10, 0xFFFFFFFF, 12])
    h = parse_rtp(pkt)
    assert h is not None and h.csrc_count == 3 and h.csrcs() == [10, 0xFFFFFFFF, 12]
    assert h.payload_offset == 24


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(11),
        bytes.fromhex("40600001000000020000000300"),  # version 1
        bytes.fromhex("836000010000000200000003"),  # CC=3 but no CSRCs
        bytes.fromhex("906000010000000200000003bede"),  # truncated extension header
        bytes.fromhex("906000010000000200000003bede0001"),  # extension words missing
        bytes.fromhex("a06000010000000200000003aa00"),  # padding count 0
        bytes.fromhex("a06000010000000200000003aa05"),  # padding past the header
    ],
)
def test_malformed_rtp(data: bytes) -> None:
    assert parse_rtp(data) is None
    assert RtpHeader().load(data) is False


def test_padding_only_packet() -> None:
    pkt = build_rtp(96, 1, 2, 3, padding=200)
    h = parse_rtp(pkt)
    assert h is not None and h.payload_length == 0 and h.padding_length == 200


def test_load_reuses_header_object_and_memoryview() -> None:
    h = RtpHeader()
    a = build_rtp(96, 1, 100, 5, b"one", marker=True)
    b = build_rtp(97, 2, 200, 6, b"twotwo")
    assert h.load(memoryview(a)) and (h.seq, h.marker, h.payload_length) == (1, True, 3)
    assert h.load(bytearray(b)) and (h.seq, h.marker, h.payload_type) == (2, False, 97)
    assert bytes(h.payload()) == b"twotwo"


# --- writers ------------------------------------------------------------------------


def test_in_place_writers() -> None:
    buf = bytearray(
        build_rtp(96, 0xFFFF, 0xFFFFFFFF, 1, b"data", extensions=[(3, b"\x01\x02\x03")])
    )
    set_seq(buf, 0x10000)  # wraps
    set_timestamp(buf, 0x1_0000_0005)
    set_ssrc(buf, 0xABCDEF01)
    set_payload_type(buf, 100)
    set_marker(buf, True)
    h = parse_rtp(buf)
    assert h is not None
    assert (h.seq, h.timestamp, h.ssrc, h.payload_type, h.marker) == (0, 5, 0xABCDEF01, 100, True)
    set_marker(buf, False)
    set_payload_type(buf, 0x7F)
    set_seq_ts_ssrc(buf, 42, 43, 44)
    h = parse_rtp(buf)
    assert h is not None
    assert (h.seq, h.timestamp, h.ssrc, h.payload_type, h.marker) == (42, 43, 44, 127, False)
    assert set_extension_value(buf, h, 3, b"\x09\x08\x07")
    assert not set_extension_value(buf, h, 3, b"\x09")  # other length
    assert not set_extension_value(buf, h, 4, b"\x09\x08\x07")  # absent
    off, size = h.find_extension(3) or (0, 0)
    assert buf[off : off + size] == b"\x09\x08\x07"
    assert bytes(h.payload()) == b"data"
    # writers through a memoryview of a larger receive buffer
    big = bytearray(2000)
    big[: len(buf)] = buf
    view = memoryview(big)[: len(buf)]
    set_seq(view, 7)
    assert parse_rtp(view) is not None and parse_rtp(view).seq == 7  # type: ignore[union-attr]


def test_rtx_original_seq() -> None:
    h = parse_rtp(build_rtp(97, 1, 2, 3, b"\x12\x34payload"))
    assert h is not None and rtx_original_seq(h) == 0x1234
    h = parse_rtp(build_rtp(97, 1, 2, 3, b"\x12"))
    assert h is not None and rtx_original_seq(h) == -1


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (96, False),
        (0xE0, False),
        (191, False),
        (192, True),
        (200, True),
        (206, True),
        (223, True),
        (224, False),
    ],
)
def test_is_rtcp(second: int, expected: bool) -> None:
    assert is_rtcp(bytes((0x80, second, 0, 1))) is expected
    assert is_rtcp(b"\x80") is False


def test_builder_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        build_rtp(128, 1, 2, 3)
    with pytest.raises(ValueError):
        build_rtp(96, 1, 2, 3, csrcs=list(range(16)))
    with pytest.raises(ValueError):
        build_rtp(96, 1, 2, 3, extensions=[(15, b"a")], two_byte=False)
    with pytest.raises(ValueError):
        build_rtp(96, 1, 2, 3, raw_extension=(0x1234, b"abc"))
    with pytest.raises(ValueError):
        build_rtp(96, 1, 2, 3, extensions=[(1, b"a")], raw_extension=(0x1234, b""))


# --- golden against aiortc ----------------------------------------------------------


def test_aiortc_serialized_packet_parses() -> None:
    pkt = RtpPacket(
        payload_type=111,
        marker=1,
        sequence_number=65535,
        timestamp=4294967295,
        ssrc=0x11223344,
        payload=b"opus",
    )
    pkt.csrc = [5, 6]
    pkt.extensions.mid = "audio"
    pkt.extensions.abs_send_time = 0x123456
    pkt.extensions.audio_level = (True, 42)
    pkt.extensions.transport_sequence_number = 0xBEEF
    data = pkt.serialize(aiortc_map())
    h = parse_rtp(data)
    assert h is not None
    assert (h.payload_type, h.marker, h.seq, h.timestamp, h.ssrc) == (
        111,
        True,
        65535,
        4294967295,
        0x11223344,
    )
    assert h.csrcs() == [5, 6]
    assert bytes(h.payload()) == b"opus"
    off, size = h.find_extension(ID_MID) or (0, 0)
    assert ext.read_sdes_id(data, off, size) == "audio"
    off, size = h.find_extension(ID_ABS) or (0, 0)
    assert ext.read_abs_send_time(data, off, size) == 0x123456
    off, size = h.find_extension(ID_LEVEL) or (0, 0)
    assert ext.read_audio_level(data, off, size) == (True, 42)
    off, size = h.find_extension(ID_TWCC) or (0, 0)
    assert ext.read_twcc_seq(data, off, size) == 0xBEEF


@pytest.mark.parametrize("two_byte", [False, True])
def test_our_packet_parses_in_aiortc(two_byte: bool) -> None:
    data = build_rtp(
        96,
        0xFFFE,
        123456789,
        0xA1B2C3D4,
        b"\x90\x80vp8",
        marker=True,
        csrcs=[77],
        extensions=[
            (ID_MID, ext.encode_sdes_id("1")),
            (ID_RID, ext.encode_sdes_id("hi")),
            (ID_ABS, ext.encode_abs_send_time(ext.abs_send_time_from_seconds(1.5))),
            (ID_TWCC, ext.encode_twcc_seq(0xFFFF)),
            (ID_LEVEL, ext.encode_audio_level(False, 127)),
        ],
        two_byte=two_byte,
        padding=4,
    )
    pkt = RtpPacket.parse(data, aiortc_map())
    assert (pkt.payload_type, pkt.marker, pkt.sequence_number, pkt.timestamp, pkt.ssrc) == (
        96,
        1,
        0xFFFE,
        123456789,
        0xA1B2C3D4,
    )
    assert pkt.csrc == [77] and pkt.payload == b"\x90\x80vp8" and pkt.padding_size == 4
    assert pkt.extensions.mid == "1" and pkt.extensions.rtp_stream_id == "hi"
    assert pkt.extensions.abs_send_time == int(1.5 * (1 << 18))
    assert pkt.extensions.transport_sequence_number == 0xFFFF
    assert pkt.extensions.audio_level == (False, 127)


# --- properties ---------------------------------------------------------------------

ext_values = st.lists(
    st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)),
    max_size=6,
    unique_by=lambda t: t[0],
)


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    exts=ext_values,
    two_byte=st.booleans(),
    padding=st.integers(0, 255),
)
def test_build_parse_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: list[int],
    exts: list[tuple[int, bytes]],
    two_byte: bool,
    padding: int,
) -> None:
    data = build_rtp(
        pt,
        seq,
        ts,
        ssrc,
        payload,
        marker=marker,
        csrcs=csrcs,
        extensions=exts,
        two_byte=two_byte,
        padding=padding,
    )
    h = parse_rtp(data)
    assert h is not None
    assert (h.payload_type, h.seq, h.timestamp, h.ssrc, h.marker) == (pt, seq, ts, ssrc, marker)
    assert h.csrcs() == csrcs
    assert bytes(h.payload()) == payload
    assert h.padding_length == padding
    assert h.extension == bool(exts)
    found = {i: data[o : o + n] for i, o, n in h.extensions()}
    assert found == dict(exts)
    for ext_id, value in exts:
        off, size = h.find_extension(ext_id) or (0, 0)
        assert data[off : off + size] == value
    # aiortc reads the same fixed header
    theirs = RtpPacket.parse(data)
    assert (theirs.sequence_number, theirs.timestamp, theirs.ssrc, theirs.payload) == (
        seq,
        ts,
        ssrc,
        payload,
    )


@given(st.binary(max_size=120))
def test_random_bytes_never_raise(data: bytes) -> None:
    h = parse_rtp(data)
    if h is None:
        return
    assert 12 <= h.payload_offset <= len(data)
    assert h.payload_offset + h.payload_length + h.padding_length == len(data)
    for ext_id in (1, 5, 14, 15, 200):
        found = h.find_extension(ext_id)
        if found is not None:
            off, size = found
            assert h.ext_offset <= off and off + size <= h.ext_offset + h.ext_length
            ext.read_sdes_id(data, off, size)
            ext.read_abs_send_time(data, off, size)
            ext.read_audio_level(data, off, size)
            ext.read_twcc_seq(data, off, size)
    list(h.extensions())


@given(
    exts=ext_values,
    two_byte=st.booleans(),
    cut=st.integers(0, 200),
    flip=st.tuples(st.integers(0, 200), st.integers(0, 255)),
)
def test_truncated_and_mutated_never_raise(
    exts: list[tuple[int, bytes]], two_byte: bool, cut: int, flip: tuple[int, int]
) -> None:
    data = bytearray(
        build_rtp(96, 1, 2, 3, b"payload", extensions=exts, two_byte=two_byte, padding=3)
    )
    pos, value = flip
    if pos < len(data):
        data[pos] = value
    for candidate in (bytes(data[:cut]), bytes(data)):
        h = parse_rtp(candidate)
        if h is not None:
            list(h.extensions())
            for ext_id, _ in exts:
                h.find_extension(ext_id)
