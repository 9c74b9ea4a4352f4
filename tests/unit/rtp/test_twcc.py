"""Transport-wide congestion control feedback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.rtcp.twcc import TransportFeedback, TwccRecord

# Hand-computed: base 0xFFFE, 5 packets, one 2-bit status vector chunk
# (small, lost, large, small, small), deltas 4, -8 (2 bytes), 255, 0 ticks; one byte
# of padding announced by the P bit.
GOLDEN_VECTOR2 = bytes.fromhex(
    "afcd0006"
    "01020304"
    "0a0b0c0d"
    "fffe0005"
    "12345607"  # reference time 0x123456, feedback count 7
    "d250"  # 1 1 | 01 00 10 01 01 00 00
    "04"
    "fff8"
    "ff"
    "00"
    "01"
)
RECORDS_VECTOR2: list[TwccRecord] = [
    (0xFFFE, True, 1000),
    (0xFFFF, False, 0),
    (0x0000, True, -2000),
    (0x0001, True, 63750),
    (0x0002, True, 0),
]

# Hand-computed: base 100, 20 packets: run of 3 small deltas, a 1-bit vector
# 10110000000001, a run of 3 not received; seven 1-byte deltas; 3 bytes padding.
GOLDEN_RUN_VECTOR1 = bytes.fromhex(
    "afcd0008000000010000000200640014000001002003ac01000301020304050607000003"
)


def test_golden_status_vector_2_bit() -> None:
    fb = TransportFeedback.parse(GOLDEN_VECTOR2)
    assert fb is not None
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_seq) == (0x01020304, 0x0A0B0C0D, 0xFFFE)
    assert (fb.reference_time, fb.fb_count) == (0x123456, 7)
    assert fb.packets == RECORDS_VECTOR2
    assert fb.arrivals_us() == [
        (0xFFFE, 0x123456 * 64000 + 1000),
        (0x0000, 0x123456 * 64000 - 1000),
        (0x0001, 0x123456 * 64000 + 62750),
        (0x0002, 0x123456 * 64000 + 62750),
    ]
    # our encoder picks the same chunk and padding
    assert (
        TransportFeedback(0x01020304, 0x0A0B0C0D, 0xFFFE, 0x123456, 7, RECORDS_VECTOR2).to_bytes()
        == GOLDEN_VECTOR2
    )


def test_golden_run_length_and_1_bit_vector() -> None:
    fb = TransportFeedback.parse(GOLDEN_RUN_VECTOR1)
    assert fb is not None and fb.base_seq == 100 and fb.reference_time == 1 and fb.fb_count == 0
    received = {seq: delta for seq, ok, delta in fb.packets if ok}
    assert received == {100: 250, 101: 500, 102: 750, 103: 1000, 105: 1250, 106: 1500, 116: 1750}
    assert [seq for seq, _, _ in fb.packets] == list(range(100, 120))
    again = TransportFeedback.parse(fb.to_bytes())
    assert again == fb


@pytest.mark.parametrize(
    "data",
    [
        GOLDEN_VECTOR2[:-4],  # length disagrees
        GOLDEN_VECTOR2[:4] + GOLDEN_VECTOR2[4:20],  # no chunks
        # status count larger than the chunks cover
        GOLDEN_VECTOR2[:14] + b"\x00\x09" + GOLDEN_VECTOR2[16:],
        # a run of the reserved symbol
        bytes.fromhex("8fcd00050000000100000002000000010000000060010000"),
        # two large deltas announced, room for one
        bytes.fromhex("8fcd00050000000100000002000000020000000040020000"),
    ],
)
def test_malformed(data: bytes) -> None:
    assert TransportFeedback.parse(data) is None


def test_builder_errors() -> None:
    with pytest.raises(ValueError):
        TransportFeedback(1, 2, 10, 0, 0, []).to_bytes()
    with pytest.raises(ValueError):
        TransportFeedback(1, 2, 10, 0, 0, [(10, True, 0), (12, True, 0)]).to_bytes()
    with pytest.raises(ValueError):
        TransportFeedback(1, 2, 10, 0, 0, [(10, True, 250 * 40000)]).to_bytes()


statuses = st.one_of(
    st.just((False, 0)),
    st.tuples(st.just(True), st.integers(0, 255).map(lambda t: t * 250)),
    st.tuples(st.just(True), st.integers(-32768, 32767).map(lambda t: t * 250)),
)


@given(
    base=st.integers(0, 0xFFFF),
    ref=st.integers(0, 0xFFFFFF),
    fb=st.integers(0, 255),
    body=st.lists(
        st.tuples(statuses, st.integers(1, 40)),  # (status, repeat) makes runs likely
        min_size=1,
        max_size=20,
    ),
)
def test_round_trip(base: int, ref: int, fb: int, body: list[tuple[tuple[bool, int], int]]) -> None:
    flat = [status for status, repeat in body for _ in range(repeat)]
    records = [((base + i) & 0xFFFF, ok, delta) for i, (ok, delta) in enumerate(flat)]
    packet = TransportFeedback(0xAAAA, 0xBBBB, base, ref, fb, records)
    data = packet.to_bytes()
    assert len(data) % 4 == 0
    assert TransportFeedback.parse(data) == packet


@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data: bytes) -> None:
    TransportFeedback.parse(data)
    # force a valid header so the chunk walker sees the random body
    if len(data) >= 16:
        words = (len(data) + 4) // 4 - 1
        framed = bytes((0x8F, 205)) + words.to_bytes(2, "big") + data[: words * 4]
        fb = TransportFeedback.parse(framed)
        if fb is not None:
            assert len(fb.packets) == int.from_bytes(data[10:12], "big")


@given(cut=st.integers(0, 35), pos=st.integers(0, 35), value=st.integers(0, 255))
def test_mutated_never_raise(cut: int, pos: int, value: int) -> None:
    data = bytearray(GOLDEN_RUN_VECTOR1)
    data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        fb = TransportFeedback.parse(candidate)
        if fb is not None:
            assert len(fb.packets) == int.from_bytes(candidate[14:16], "big")
