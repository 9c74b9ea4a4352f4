"""NackGenerator, RetransmissionBuffer, the resend policy and budget on a fake clock."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.nack import (
    DEFAULT_RESEND_INTERVAL,
    RESEND_INTERVAL_FLOOR,
    RESEND_OK,
    RESEND_TOO_MANY,
    RESEND_TOO_SOON,
    NackGenerator,
    ResendBudget,
    ResendPolicy,
    RetransmissionBuffer,
    resend_verdict,
)

# --- NackGenerator: tables --------------------------------------------------------


def feed(gen: NackGenerator, seqs: list[int], now: float = 0.0) -> list[bool]:
    return [gen.on_packet(s, now) for s in seqs]


def test_gap_is_nacked_on_the_next_tick() -> None:
    gen = NackGenerator()
    assert feed(gen, [1, 2, 5]) == [False, False, False]
    assert gen.missing() == [3, 4]
    assert gen.tick(0.005) == []  # within the reorder delay
    assert gen.tick(0.02) == [3, 4]
    assert gen.nacks_sent == 2


def test_no_gap_no_nack() -> None:
    gen = NackGenerator()
    feed(gen, list(range(100, 200)))
    assert gen.tick(1.0) == []
    assert gen.missing_count == 0


@pytest.mark.parametrize(
    ("seqs", "missing"),
    [
        ([65534, 1], [65535, 0]),
        ([65535, 0, 2], [1]),
        ([65533, 65535, 1], [65534, 0]),
        ([0xFFF0, 0x0005], list(range(0xFFF1, 0x10000)) + list(range(0, 5))),
    ],
)
def test_gap_across_wrap(seqs: list[int], missing: list[int]) -> None:
    gen = NackGenerator()
    feed(gen, seqs)
    assert gen.missing() == missing
    assert gen.tick(0.02) == missing


def test_reordered_packet_before_the_nack_is_not_nacked() -> None:
    gen = NackGenerator()
    feed(gen, [10, 11, 14])
    assert gen.on_packet(12, 0.004) is True
    assert gen.tick(0.02) == [13]
    assert gen.packets_reordered == 1
    assert gen.packets_recovered == 0


def test_recovered_packet_stops_nacks() -> None:
    gen = NackGenerator()
    feed(gen, [10, 12])
    assert gen.tick(0.02) == [11]
    assert gen.on_packet(11, 0.06) is True
    assert gen.packets_recovered == 1
    assert gen.tick(0.5) == []
    assert gen.on_packet(11, 0.07) is False  # the duplicate of a recovered packet
    assert gen.duplicate is True


def test_duplicates() -> None:
    gen = NackGenerator()
    feed(gen, [1, 2, 3])
    assert gen.on_packet(3, 0.0) is False
    assert gen.duplicate is True
    assert gen.on_packet(2, 0.0) is False
    assert gen.on_packet(4, 0.0) is False
    assert gen.duplicate is False
    assert gen.duplicates == 2


@pytest.mark.parametrize(
    ("rtt", "spacing"),
    [(-1.0, 0.1), (0.0, 0.1), (0.25, 0.25), (0.001, 0.02), (0.05, 0.05)],
)
def test_retry_spacing_follows_rtt(rtt: float, spacing: float) -> None:
    gen = NackGenerator(reorder_delay=0.0)
    feed(gen, [1, 3])
    assert gen.tick(0.0, rtt) == [2]
    assert gen.tick(spacing - 0.001, rtt) == []
    assert gen.tick(spacing, rtt) == [2]
    assert gen.tick(2 * spacing - 0.001, rtt) == []
    assert gen.tick(2 * spacing, rtt) == [2]


def test_max_retries_then_lost_for_good() -> None:
    gen = NackGenerator(max_retries=3, reorder_delay=0.0)
    feed(gen, [1, 3])
    sent = [t for t in range(0, 1000, 20) if gen.tick(t / 1000, 0.1)]
    assert sent == [0, 100, 200]
    assert gen.missing_count == 0
    assert gen.packets_lost_for_good == 1
    assert gen.take_keyframe_request() is True
    assert gen.take_keyframe_request() is False
    assert gen.on_packet(2, 1.0) is True  # late after giving up
    assert gen.packets_late == 1


def test_max_age_gives_up() -> None:
    gen = NackGenerator(max_age=0.5, reorder_delay=0.0)
    feed(gen, [1, 3])
    seen = [t for t in range(0, 2000, 20) if gen.tick(t / 1000, 0.05)]
    assert seen == [0, 60, 120, 180, 240, 300, 360, 420, 480]
    assert gen.packets_lost_for_good == 1


def test_out_of_window_is_given_up() -> None:
    gen = NackGenerator(window=64)
    feed(gen, [0, 2])
    feed(gen, list(range(3, 66)))
    assert gen.missing() == [1]
    gen.on_packet(66, 0.0)  # highest - window = 2: seq 1 is out (pruned by the ticker)
    assert gen.tick(0.1) == []
    assert gen.missing() == []
    assert gen.packets_lost_for_good == 1
    gen2 = NackGenerator(window=64)
    feed(gen2, [0, 2, 60, 66])  # a gap also prunes what fell out of the window
    assert gen2.missing() == list(range(3, 60)) + list(range(61, 66))
    assert gen2.packets_lost_for_good == 1


def test_huge_jump_resets() -> None:
    gen = NackGenerator(window=512)
    feed(gen, [100, 102])
    gen.on_packet(102 + 513, 0.0)
    assert gen.missing() == []
    assert gen.resets == 1
    assert gen.packets_lost_for_good == 1  # the gap before the jump
    assert gen.take_keyframe_request() is True
    feed(gen, [102 + 515])
    assert gen.missing() == [102 + 514]


def test_jump_within_window_is_nacked() -> None:
    gen = NackGenerator(window=512)
    feed(gen, [100, 100 + 512])
    assert gen.missing_count == 511
    assert gen.resets == 0


def test_restart_far_behind_needs_two_packets() -> None:
    gen = NackGenerator(window=256)
    feed(gen, [30000, 30001])
    assert gen.on_packet(100, 0.0) is False
    assert gen.too_old == 1
    assert gen.resets == 0
    gen.on_packet(101, 0.0)
    assert gen.resets == 1
    gen.on_packet(103, 0.0)
    assert gen.missing() == [102]


def test_single_stray_old_packet_is_ignored() -> None:
    gen = NackGenerator(window=256)
    feed(gen, [30000, 30001])
    gen.on_packet(100, 0.0)
    gen.on_packet(30002, 0.0)
    gen.on_packet(101, 0.0)  # not right after 100: no restart
    assert gen.resets == 0
    assert gen.too_old == 2


def test_on_keyframe_drops_older_losses() -> None:
    gen = NackGenerator()
    feed(gen, [1, 3, 6, 10])
    assert gen.on_keyframe(6) == 3  # 2, 4, 5
    assert gen.missing() == [7, 8, 9]
    assert gen.take_keyframe_request() is False


def test_per_tick_bound_prefers_first_nacks() -> None:
    gen = NackGenerator(max_per_tick=4, reorder_delay=0.0)
    feed(gen, [0, 7])  # 1..6 missing
    assert gen.tick(0.0, 0.02) == [1, 2, 3, 4]
    feed(gen, [10], 0.01)  # 8, 9 missing
    assert gen.tick(0.02, 0.02) == [5, 6, 8, 9]
    assert gen.tick(0.04, 0.02) == [1, 2, 3, 4]


def test_reset_forgets_stream() -> None:
    gen = NackGenerator()
    feed(gen, [1, 5])
    gen.reset()
    feed(gen, [40000, 40001])
    assert gen.missing() == []
    assert gen.tick(1.0) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NackGenerator(window=1000)
    with pytest.raises(ValueError):
        NackGenerator(max_retries=0)
    with pytest.raises(ValueError):
        RetransmissionBuffer(size=3)
    with pytest.raises(ValueError):
        ResendPolicy(burst_seconds=0)


# --- NackGenerator: property over random loss/reorder/recovery ----------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[int], list[bool], float, float, int, int]:
    start = draw(st.one_of(st.integers(65536 - 300, 65535), st.integers(0, 65535)))
    n = draw(st.integers(2, 300))
    lost = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    # Local reordering: each packet is delayed by 0..k send slots.
    delays = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    recover = draw(st.floats(0.0, 1.0))
    rtt = draw(st.sampled_from([-1.0, 0.01, 0.05, 0.2]))
    max_per_tick = draw(st.sampled_from([8, 256]))
    seed = draw(st.integers(0, 2**32 - 1))
    return start, delays, lost, recover, rtt, max_per_tick, seed


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_nack_properties(
    scenario: tuple[int, list[int], list[bool], float, float, int, int],
) -> None:
    start, delays, lost, recover, rtt, max_per_tick, seed = scenario
    rng = random.Random(seed)
    n = len(lost)
    dt = 0.005  # 200 packets/s
    tick_every = 0.02
    link_rtt = 0.04  # time for a retransmission to come back
    gen = NackGenerator(max_per_tick=max_per_tick)
    interval = max(rtt if rtt > 0 else 0.1, 0.02)

    events: list[tuple[float, int, int]] = []  # (time, order, offset of seq)
    order = 0
    for i in range(n):
        if not lost[i]:
            heapq.heappush(events, (i * dt + delays[i] * dt + 0.0001, order, i))
            order += 1
    received: set[int] = set()
    first_arrival = -1
    nacked: dict[int, list[float]] = {}
    t_tick = 0.0
    end = n * dt + 2.0
    while t_tick <= end:
        while events and events[0][0] < t_tick:
            at, _, off = heapq.heappop(events)
            gen.on_packet((start + off) & 0xFFFF, at)
            received.add(off)
            if first_arrival < 0:
                first_arrival = off
        seqs = gen.tick(t_tick, rtt)
        assert len(seqs) <= max_per_tick
        for s in seqs:
            off = (s - start) & 0xFFFF
            assert 0 <= off < n, "NACK for a sequence number never sent"
            assert off not in received, "NACK for a received packet"
            times = nacked.setdefault(off, [])
            if times:
                assert t_tick - times[-1] >= interval - 1e-9
            times.append(t_tick)
            if rng.random() < recover:
                heapq.heappush(events, (t_tick + link_rtt, order, off))
                order += 1
        t_tick = round(t_tick + tick_every, 6)

    assert all(len(t) <= gen.max_retries for t in nacked.values())
    # Every packet never received, between the first arrival and a later received
    # one, was NACKed.
    top = max(received, default=-1)
    for off in range(first_arrival + 1, n):
        if off not in received and off < top:
            assert off in nacked, f"seq offset {off} never NACKed"
    assert gen.missing_count == 0  # everything was settled by the end
    assert gen.nacks_sent == sum(len(t) for t in nacked.values())


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 65535),
    st.lists(st.integers(1, 40), min_size=1, max_size=200),
)
def test_missing_is_exactly_the_holes(start: int, steps: list[int]) -> None:
    """In-order arrival with gaps: missing == every skipped number, across wraps."""
    gen = NackGenerator(window=1024, max_age=100.0)
    seq = start
    gen.on_packet(seq, 0.0)
    holes: list[int] = []
    offset = 0
    for step in steps:
        holes.extend((start + offset + k) & 0xFFFF for k in range(1, step))
        offset += step
        gen.on_packet((start + offset) & 0xFFFF, 0.0)
    # Only holes within the window survive.
    keep = [h for h in holes if ((start + offset - h) & 0xFFFF) < 1024]
    assert gen.missing() == keep


# --- RetransmissionBuffer -----------------------------------------------------------


def pkt(ext: int) -> bytes:
    return ext.to_bytes(8, "big", signed=True)


def test_buffer_store_get() -> None:
    buf = RetransmissionBuffer(size=8)
    for e in range(100, 110):
        assert buf.store(e, pkt(e), e / 100)
    assert buf.get(101) is None  # evicted by 109
    assert buf.get(102) == (pkt(102), 1.02)
    assert buf.get(109) == (pkt(109), 1.09)
    assert buf.get(110) is None
    assert buf.get(94) is None  # same slot as 102, different ext
    assert buf.hits == 2 and buf.misses == 3


def test_buffer_refuses_packets_that_would_evict_newer() -> None:
    buf = RetransmissionBuffer(size=8)
    buf.store(100, pkt(100), 0.0)
    assert buf.store(92, pkt(92), 0.0) is False  # same slot as 100
    assert buf.store(93, pkt(93), 0.0) is True
    assert buf.get(100) == (pkt(100), 0.0)
    assert buf.refused == 1


def test_buffer_max_age() -> None:
    buf = RetransmissionBuffer(size=16, max_age=1.0)
    buf.store(5, pkt(5), 10.0)
    assert buf.get(5, 10.5) is not None
    assert buf.get(5, 11.0) is not None
    assert buf.get(5, 11.01) is None
    assert buf.get(5) is not None  # no clock: no age check


def test_buffer_negative_and_large_ext() -> None:
    buf = RetransmissionBuffer(size=16)
    for e in (-3, -2, -1, 0, 1):
        buf.store(e, pkt(e), 0.0)
    assert [buf.get(e) is not None for e in (-3, -2, -1, 0, 1)] == [True] * 5
    buf.store(1 << 40, pkt(1 << 40), 0.0)
    assert buf.get(1 << 40) == (pkt(1 << 40), 0.0)
    assert buf.get(0) is None or buf.get(0) == (pkt(0), 0.0)


def test_buffer_reset() -> None:
    buf = RetransmissionBuffer(size=16)
    buf.store(1000, pkt(1000), 0.0)
    buf.reset()
    assert buf.get(1000) is None
    assert buf.store(5, pkt(5), 0.0) is True  # far older than before: accepted after reset


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([4, 16, 64]),
    st.integers(-5, 1 << 20),
    st.lists(st.integers(-20, 40), min_size=1, max_size=300),
)
def test_buffer_model(size: int, start: int, steps: list[int]) -> None:
    buf = RetransmissionBuffer(size=size)
    highest: int | None = None
    last_in_slot: dict[int, int] = {}  # slot -> ext of the last accepted store
    accepted: set[int] = set()
    ext = start
    for step in steps:
        ext += step
        ok = buf.store(ext, pkt(ext), 0.0)
        assert ok == (highest is None or ext > highest - size)
        if ok:
            highest = ext if highest is None else max(highest, ext)
            last_in_slot[ext % size] = ext
            accepted.add(ext)
    assert highest is not None
    for e in range(highest - 3 * size, highest + 2):
        got = buf.get(e)
        if got is not None:
            assert got[0] == pkt(e)
        expect = e in accepted and last_in_slot[e % size] == e
        assert (got is not None) == expect
        if e > highest - size and e in accepted:
            # Within the window, a stored packet is evicted only by a re-store of itself.
            assert got is not None


# --- answering NACKs: resend_verdict, ResendBudget ------------------------------------------


def test_resend_verdict() -> None:
    assert resend_verdict(0, 0.0, 0.1, 0.05, 2) == RESEND_OK
    assert resend_verdict(1, 0.1, 0.14, 0.05, 2) == RESEND_TOO_SOON
    assert resend_verdict(1, 0.1, 0.2, 0.05, 2) == RESEND_OK
    assert resend_verdict(2, 0.2, 5.0, 0.05, 2) == RESEND_TOO_MANY


def test_resend_interval_follows_the_rtt_with_a_floor() -> None:
    policy = ResendPolicy()
    assert policy.interval(-1.0) == DEFAULT_RESEND_INTERVAL
    assert policy.interval(0.25) == 0.25
    assert policy.interval(0.001) == RESEND_INTERVAL_FLOOR
    with pytest.raises(ValueError):
        ResendPolicy(max_resends=0)


@given(
    rate=st.integers(0, 1_000_000),
    burst=st.floats(0.01, 2.0),
    steps=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 3000)), max_size=60),
)
def test_budget_never_gives_more_than_burst_plus_rate_times_time(
    rate: int, burst: float, steps: list[tuple[float, int]]
) -> None:
    policy = ResendPolicy(bytes_per_second=rate, burst_seconds=burst)
    budget = ResendBudget(policy)
    now = 0.0
    taken = 0
    for dt, size in steps:
        now += dt
        before = budget.tokens
        if budget.take(size, now):
            taken += size
        else:
            assert budget.tokens < size  # refused only when it did not hold them
        assert 0 <= budget.tokens <= policy.burst_bytes + 1e-6
        assert budget.tokens <= before + dt * rate + 1e-6
    assert taken <= policy.burst_bytes + rate * now + 1e-6
