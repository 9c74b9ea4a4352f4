"""Header extension value codecs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp import ext


@pytest.mark.parametrize(
    ("seconds", "value"),
    [
        (0.0, 0),
        (1.0, 0x040000),
        (0.5, 0x020000),
        (63.999996185302734, 0xFFFFFF),
        (64.0, 0),  # wraps every 64 s
        (65.25, 0x050000),
    ],
)
def test_abs_send_time_table(seconds: float, value: int) -> None:
    assert ext.abs_send_time_from_seconds(seconds) == value
    assert ext.encode_abs_send_time(value) == value.to_bytes(3, "big")


@given(st.floats(0, 63.99, allow_nan=False))
def test_abs_send_time_round_trip(seconds: float) -> None:
    value = ext.abs_send_time_from_seconds(seconds)
    assert abs(ext.abs_send_time_to_seconds(value) - seconds) < 1 / (1 << 18)
    buf = bytearray(5)
    ext.write_abs_send_time(buf, 1, value)
    assert ext.read_abs_send_time(buf, 1, 3) == value


def test_abs_send_time_bad_lengths() -> None:
    assert ext.read_abs_send_time(b"\x01\x02\x03", 0, 2) == -1
    assert ext.read_abs_send_time(b"\x01\x02", 0, 3) == -1


@pytest.mark.parametrize(
    ("byte", "expected"),
    [(0x00, (False, 0)), (0x7F, (False, 127)), (0x80, (True, 0)), (0xAA, (True, 42))],
)
def test_audio_level_table(byte: int, expected: tuple[bool, int]) -> None:
    assert ext.read_audio_level(bytes((byte,)), 0, 1) == expected
    assert ext.encode_audio_level(*expected) == bytes((byte,))
    buf = bytearray(1)
    ext.write_audio_level(buf, 0, *expected)
    assert buf[0] == byte


def test_audio_level_errors() -> None:
    assert ext.read_audio_level(b"", 0, 1) is None
    assert ext.read_audio_level(b"\x80", 0, 0) is None
    assert ext.read_audio_level(b"\x85\x00", 0, 2) == (True, 5)  # padded two-byte form
    with pytest.raises(ValueError):
        ext.encode_audio_level(True, 128)


@given(st.integers(0, 0x1FFFF))
def test_twcc_seq_round_trip(seq: int) -> None:
    buf = bytearray(4)
    ext.write_twcc_seq(buf, 2, seq)
    assert ext.read_twcc_seq(buf, 2, 2) == seq & 0xFFFF
    assert ext.encode_twcc_seq(seq) == bytes(buf[2:])
    assert ext.read_twcc_seq(buf, 2, 1) == -1
    assert ext.read_twcc_seq(buf, 3, 2) == -1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"0", "0"),
        (b"audio", "audio"),
        (b"hi\x00\x00", "hi"),  # NUL ends the string
        (b"", None),
        (b"\x00x", None),
        (b"a b", None),
        (b"\xc3\xa9", None),
    ],
)
def test_sdes_id_table(raw: bytes, expected: str | None) -> None:
    assert ext.read_sdes_id(raw, 0, len(raw)) == expected


def test_sdes_id_encode_and_rid_rules() -> None:
    assert ext.encode_sdes_id("q") == b"q"
    for bad in ("", "a b", "é", "x" * 256):
        with pytest.raises(ValueError):
            ext.encode_sdes_id(bad)
    assert ext.is_valid_rid("hi-res_1")
    assert not ext.is_valid_rid("hi.res")
    assert not ext.is_valid_rid("")


@given(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16)
)
def test_sdes_id_round_trip(value: str) -> None:
    data = ext.encode_sdes_id(value)
    assert ext.read_sdes_id(data, 0, len(data)) == value


@given(st.binary(max_size=8), st.integers(-2, 10), st.integers(-1, 10))
def test_readers_never_raise(data: bytes, offset: int, length: int) -> None:
    ext.read_abs_send_time(data, offset, length)
    ext.read_audio_level(data, offset, length)
    ext.read_twcc_seq(data, offset, length)
    ext.read_sdes_id(data, offset, length)
