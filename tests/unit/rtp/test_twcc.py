"""Transport-wide congestion control feedback."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.routing.counters import WorkerCounters
from sfu.routing.ports import RoomHooks
from sfu.routing.subscriber import Subscriber
from sfu.rtp.rtcp.compound import parse_compound
from sfu.rtp.rtcp.twcc import TransportFeedback, TwccRecord
from sfu.sdp import DEFAULT_CAPABILITIES

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
    assert list(fb.records()) == RECORDS_VECTOR2
    assert (fb.status_count, fb.received_count) == (5, 4)
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
    received = {seq: delta for seq, ok, delta in fb.records() if ok}
    assert received == {100: 250, 101: 500, 102: 750, 103: 1000, 105: 1250, 106: 1500, 116: 1750}
    assert [seq for seq, _, _ in fb.records()] == list(range(100, 120))
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
            assert fb.status_count == int.from_bytes(data[10:12], "big")
            assert len(list(fb.records())) == fb.status_count


@given(cut=st.integers(0, 35), pos=st.integers(0, 35), value=st.integers(0, 255))
def test_mutated_never_raise(cut: int, pos: int, value: int) -> None:
    data = bytearray(GOLDEN_RUN_VECTOR1)
    data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        fb = TransportFeedback.parse(candidate)
        if fb is not None:
            assert fb.status_count == int.from_bytes(candidate[14:16], "big")


# --- hostile counts (issue 8: the feedback bomb) -----------------------------------------


def bomb_packet(sender: int = 1, media: int = 2) -> bytes:
    """Legal by the draft: 65,535 statuses as 'not received' runs (ten chunks), 40 bytes."""
    head = bytes.fromhex("8fcd0009") + sender.to_bytes(4, "big") + media.to_bytes(4, "big")
    body = (0).to_bytes(2, "big") + (0xFFFF).to_bytes(2, "big") + bytes(4)
    chunks = b"".join(((0 << 13) | 0x1FFF).to_bytes(2, "big") for _ in range(10))
    return head + body + chunks


def bomb_datagram() -> bytes:
    """46 of them in one compound: 1,840 bytes (1,854 as SRTCP), 3 million statuses claimed."""
    return b"".join(bomb_packet(1, 2 + i) for i in range(46))


def _peak_bytes(fn: Callable[[], object]) -> tuple[object, int]:
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_bomb_parses_without_expanding_its_statuses() -> None:
    data = bomb_datagram()
    assert len(data) == 1840
    parsed, peak = _peak_bytes(lambda: parse_compound(data))
    packets, error = cast(tuple[list[TransportFeedback], str | None], parsed)
    # The old parser held 3 million tuples (hundreds of MB); now header fields and the bytes.
    assert peak < 64 * 1024
    assert error is None
    assert [(p.status_count, p.received_count) for p in packets] == [(0xFFFF, 0)] * 46


def subscriber(counters: WorkerCounters) -> Subscriber:
    """The subscribe side alone, as the transport's handler (no transport is made: no DownTrack)."""
    return Subscriber("sub", True, lambda *_: None, counters, lambda: 0.0,  # type: ignore[arg-type,return-value]
                      DEFAULT_CAPABILITIES, RoomHooks())


def test_the_bomb_on_the_subscribe_side_is_counted_and_costs_its_bytes() -> None:
    """The worker's own path: the subscriber's RTCP handler walks the compound lazily."""
    counters = WorkerCounters()
    side = subscriber(counters)
    _, peak = _peak_bytes(lambda: side.on_rtcp(bomb_datagram()))
    assert peak < 64 * 1024
    assert counters.twcc_in == 46 and counters.rtcp_in == 1 and not counters.drops
    assert side.last_twcc is not None and side.last_twcc.status_count == 0xFFFF


@pytest.mark.parametrize(
    "chunk,deltas",
    [
        (0x2000 | 0x1FFF, 1000),  # a run of 8,191 small deltas, 1,000 delta bytes present
        (0x4000 | 0x1FFF, 16000),  # 8,191 large deltas need 16,382 bytes
        (0xBFFF, 13),  # 14 received in a 1-bit vector, 13 bytes
    ],
)
def test_received_statuses_need_their_delta_bytes(chunk: int, deltas: int) -> None:
    n = 14 if chunk >= 0x8000 else chunk & 0x1FFF
    body = bytes(8) + (0).to_bytes(2, "big") + n.to_bytes(2, "big") + bytes(4) + chunk.to_bytes(2, "big")
    body += bytes(deltas)
    pad = -(len(body) + 4) % 4  # announced padding: not delta bytes
    body += bytes(pad - 1) + bytes((pad,)) if pad else b""
    data = bytes((0xAF if pad else 0x8F, 205)) + (len(body) // 4).to_bytes(2, "big") + body
    assert TransportFeedback.parse(data) is None


def _chunk_walk_steps(data: bytes) -> int:
    return max(0, (len(data) - 20) // 2)


@given(st.binary(min_size=12, max_size=400))
def test_parse_is_bounded_by_the_bytes(raw: bytes) -> None:
    """Never raises; what it claims to have received is backed by delta bytes present."""
    words = (len(raw) + 4) // 4 - 1
    data = bytes((0x8F, 205)) + words.to_bytes(2, "big") + raw[: words * 4]
    fb = TransportFeedback.parse(data)
    if fb is None:
        return
    assert fb.received_count <= len(data) - 20
    records = list(fb.records())
    assert len(records) == fb.status_count
    assert sum(1 for r in records if r[1]) == fb.received_count
    # what it can rebuild fits in the bytes it came from (modulo chunk choice and padding)
    if fb.received_count:
        assert fb.received_count <= _chunk_walk_steps(data) * 2 + len(data)


def test_a_count_its_bytes_cannot_back_is_malformed_and_counted_after_the_good_prefix() -> None:
    """8,191 'small delta' statuses with no delta bytes: refused, the packets before it used."""
    claims = bytes.fromhex("8fcd0005") + bytes(8) + bytes(2) + (0x1FFF).to_bytes(2, "big") + bytes(4)
    claims += (0x2000 | 0x1FFF).to_bytes(2, "big") + bytes(2)
    assert TransportFeedback.parse(claims) is None
    counters = WorkerCounters()
    side = subscriber(counters)
    side.on_rtcp(bomb_packet() + claims + bomb_packet())
    assert counters.twcc_in == 1 and counters.drops == {"rtcp_malformed": 1}
