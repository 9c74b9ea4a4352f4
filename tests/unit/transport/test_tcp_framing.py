"""RFC 4571 framing decoder: chunking never changes the frames; sizes up to 65,535 bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.transport.tcp_framing import MAX_FRAME, FrameDecoder, FrameTooLarge, encode_header, frame


def decode(chunks: list[bytes]) -> tuple[list[bytes], FrameDecoder]:
    out: list[bytes] = []
    decoder = FrameDecoder(out.append)
    for chunk in chunks:
        decoder.feed(chunk)
    return out, decoder


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def test_one_frame_in_one_read() -> None:
    out, decoder = decode([frame(b"hello")])
    assert out == [b"hello"]
    assert decoder.buffered == 0 and decoder.frames == 1


def test_ten_frames_in_one_read() -> None:
    payloads = [bytes([i]) * (i * 37 + 1) for i in range(10)]
    out, decoder = decode([b"".join(frame(p) for p in payloads)])
    assert out == payloads
    assert decoder.buffered == 0


def test_one_byte_chunks() -> None:
    payloads = [b"\x00\x01" + b"x" * 98, b"", b"\x80" * 300]
    stream = b"".join(frame(p) for p in payloads)
    out, decoder = decode([stream[i:i + 1] for i in range(len(stream))])
    assert out == payloads
    assert decoder.buffered == 0


def test_maximum_size_frames() -> None:
    big = bytes(range(256)) * 255 + bytes(range(255))
    assert len(big) == MAX_FRAME
    stream = frame(big) + frame(big[::-1]) + frame(b"tail")
    out, _ = decode([stream])
    assert out == [big, big[::-1], b"tail"]
    # and cut inside the header and inside the body
    out, _ = decode([stream[:1], stream[1:40000], stream[40000:65538], stream[65538:]])
    assert out == [big, big[::-1], b"tail"]


def test_partial_frame_is_held_not_delivered() -> None:
    out, decoder = decode([frame(b"abcdef")[:5]])
    assert out == []
    assert decoder.buffered == 5
    decoder.reset()
    assert decoder.buffered == 0


def test_header_of_a_datagram_too_large_to_frame() -> None:
    assert encode_header(MAX_FRAME) == b"\xff\xff"
    with pytest.raises(FrameTooLarge) as err:
        encode_header(MAX_FRAME + 1)
    assert err.value.code == "frame_too_large"


payload_lists = st.lists(st.binary(max_size=600), max_size=12)


@given(payload_lists, st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    out, decoder = decode(split(stream, cuts))
    assert out == payloads
    assert decoder.buffered == 0
    assert decoder.frames == len(payloads)


@settings(max_examples=300)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_never_raises_and_accounts_for_every_byte(data: bytes, cuts: list[int]) -> None:
    """Whatever the bytes, the frames delivered plus what is held rebuild the input."""
    out, decoder = decode(split(data, cuts))
    rebuilt = b"".join(frame(p) for p in out)
    assert rebuilt == data[:len(rebuilt)]
    assert len(rebuilt) + decoder.buffered == len(data)
    assert decoder.buffered <= 2 + MAX_FRAME


@given(payload_lists, st.lists(st.integers(min_value=0), max_size=30))
def test_chunking_matches_one_read(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads) + b"\x00"  # a trailing partial header
    whole, d1 = decode([stream])
    chunked, d2 = decode(split(stream, cuts))
    assert whole == chunked == payloads
    assert d1.buffered == d2.buffered == 1
