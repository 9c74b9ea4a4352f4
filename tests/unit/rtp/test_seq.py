"""Wrap-around math, Unwrapper, SeqMunger, TimestampMunger."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.seq import SeqMunger, TimestampMunger, Unwrapper, add, diff, is_newer, mask_of

# --- diff / is_newer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "bits", "expected"),
    [
        (1, 0, 16, 1),
        (0, 1, 16, -1),
        (0, 0xFFFF, 16, 1),
        (0xFFFF, 0, 16, -1),
        (5, 0xFFFA, 16, 11),
        (0x8000, 0, 16, 0x8000),  # exactly half counts forward
        (0, 0x8000, 16, 0x8000),
        (0x7FFF, 0, 16, 0x7FFF),
        (0x8001, 0, 16, -0x7FFF),
        (0, 0xFFFFFFFF, 32, 1),
        (0xFFFFFFFF, 0, 32, -1),
        (0, 7, 3, 1),
        (7, 0, 3, -1),
        (4, 0, 3, 4),
        (5, 0, 3, -3),
        (0, 32500, 15, 268),
    ],
)
def test_diff_table(a: int, b: int, bits: int, expected: int) -> None:
    assert diff(a, b, bits) == expected


@pytest.mark.parametrize(
    ("a", "b", "bits", "expected"),
    [
        (0, 65000, 16, True),
        (65000, 0, 16, False),
        (3, 3, 16, False),
        (0x8000, 0, 16, True),
        (0, 0x8000, 16, True),  # the ambiguous half: both sides "newer"
        (0, 32500, 15, True),
        (0, 0xFFFFFFF0, 32, True),
        (0, 7, 3, True),
        (7, 0, 3, False),
    ],
)
def test_is_newer_table(a: int, b: int, bits: int, expected: bool) -> None:
    assert is_newer(a, b, bits) is expected


@given(
    st.integers(2, 32).flatmap(
        lambda bits: st.tuples(
            st.just(bits), st.integers(0, mask_of(bits)), st.integers(0, mask_of(bits))
        )
    )
)
def test_diff_properties(args: tuple[int, int, int]) -> None:
    bits, a, b = args
    d = diff(a, b, bits)
    half = 1 << (bits - 1)
    assert -half < d <= half
    assert add(b, d, bits) == a
    assert is_newer(a, b, bits) == (d > 0)
    if abs(d) != half:
        assert diff(b, a, bits) == -d


# --- Unwrapper ---------------------------------------------------------------------


def test_unwrapper_crosses_16_bit_wrap() -> None:
    u = Unwrapper(16)
    assert [u.unwrap(v) for v in (0xFFFD, 0xFFFE, 0xFFFF, 0, 1)] == [
        0xFFFD,
        0xFFFE,
        0xFFFF,
        0x10000,
        0x10001,
    ]
    assert u.cycles == 1
    assert u.unwrap(0xFFFE) == 0xFFFE  # late packet from the previous cycle
    assert u.highest == 0x10001


def test_unwrapper_32_bit_and_before_first() -> None:
    u = Unwrapper(32)
    assert u.unwrap(0xFFFFFFFF) == 0xFFFFFFFF
    assert u.unwrap(5) == 0x100000005
    u2 = Unwrapper(16)
    assert u2.unwrap(0) == 0
    assert u2.unwrap(0xFFFF) == -1  # older than the first packet, across the wrap
    assert u2.unwrap(0xFFFF) & 0xFFFF == 0xFFFF
    assert u2.peek(2) == 2 and u2.highest == 0


def test_unwrapper_3_bit_many_cycles() -> None:
    u = Unwrapper(3)
    got = [u.unwrap(i & 7) for i in range(0, 40, 3)]
    assert got == list(range(0, 40, 3))
    assert u.cycles == 39 >> 3


@given(
    st.integers(3, 32).flatmap(
        lambda bits: st.tuples(
            st.just(bits),
            st.integers(0, mask_of(bits)),
            st.lists(st.integers(-(1 << (bits - 1)) + 1, 1 << (bits - 1)), max_size=60),
        )
    )
)
def test_unwrapper_recovers_true_values(args: tuple[int, int, list[int]]) -> None:
    bits, first, steps = args
    u = Unwrapper(bits)
    assert u.unwrap(first) == first
    highest = first
    for step in steps:
        true = highest + step
        assert u.unwrap(true & mask_of(bits)) == true
        highest = max(highest, true)
        assert u.highest == highest


# --- SeqMunger tables --------------------------------------------------------------

Op = tuple[str, int, int | None | bool]


def run_ops(m: SeqMunger, ops: list[Op]) -> None:
    for i, (op, value, expected) in enumerate(ops):
        if op == "m":
            assert m.munge(value) == expected, (i, op, value)
        elif op == "d":
            assert m.drop(value) is expected, (i, op, value)
        elif op == "s":
            m.sync(value)
            assert m.munge(value) == expected, (i, op, value)
        else:
            raise AssertionError(op)


def test_munger_identity_in_order_across_wrap() -> None:
    m = SeqMunger(16)
    run_ops(m, [("m", v, v) for v in (65533, 65534, 65535, 0, 1)])
    assert m.last_out == 1


def test_munger_start_value() -> None:
    m = SeqMunger(16, start=1000)
    run_ops(m, [("m", 50, 1000), ("m", 51, 1001), ("m", 53, 1003), ("m", 52, 1002)])


def test_munger_source_switch() -> None:
    m = SeqMunger(16)
    run_ops(
        m,
        [
            ("m", 10, 10),
            ("m", 11, 11),
            ("s", 40000, 12),  # publisher reconnected: new random base
            ("m", 40001, 13),
            # (the DownTrack filters the old source by SSRC; the munger only sees
            # this one's numbers)
            ("m", 39999, None),  # older than the new source's first packet
            ("m", 39000, None),
            ("s", 65535, 14),
            ("m", 0, 15),
            ("m", 1, 16),
        ],
    )


def test_munger_drops_leave_no_gap() -> None:
    m = SeqMunger(16)
    run_ops(
        m,
        [
            ("m", 0, 0),
            ("d", 1, True),
            ("m", 100, 99),  # a jump upstream is a real gap (losses)
            ("m", 100, 99),  # duplicate maps the same
            ("d", 103, True),  # dropped with 101, 102 still missing
            ("m", 101, 100),  # missing ones keep their slots
            ("m", 102, 101),
            ("m", 104, 102),
            ("m", 103, None),  # a retransmission of the dropped one is refused
            ("d", 102, False),  # too late to drop: already sent
            ("m", 1, None),
        ],
    )


def test_munger_drop_then_older_arrives() -> None:
    m = SeqMunger(16)
    run_ops(m, [("m", 0, 0), ("d", 2, True), ("m", 3, 2), ("m", 4, 3), ("m", 1, 1)])


def test_munger_many_drops_at_start_keyframe_wait() -> None:
    m = SeqMunger(16)
    ops: list[Op] = [("m", 1, 1)]
    ops += [("d", v, True) for v in range(2, 10)]
    ops += [("m", v, v - 8) for v in range(120, 140)]
    run_ops(m, ops)
    assert len(m._entries) == 1  # consecutive drops are one range


def test_munger_drop_before_first_packet() -> None:
    m = SeqMunger(16, start=500)
    assert m.drop(7) is True
    assert m.munge(8) == 500
    assert m.munge(7) is None


def test_munger_drops_around_wrap() -> None:
    m = SeqMunger(16)
    m.sync(65530)
    run_ops(
        m,
        [
            ("m", 65530, 65530),
            ("m", 65531, 65531),
            ("d", 65532, True),
            ("d", 65533, True),
            ("m", 65535, 65533),  # 65534 is missing: it keeps slot 65532
            ("m", 0, 65534),
            ("m", 65534, 65532),
            ("m", 65533, None),
            ("m", 1, 65535),
            ("m", 2, 0),
        ],
    )


def test_munger_insert_shifts_later_packets() -> None:
    m = SeqMunger(16)
    run_ops(m, [("m", 10, 10), ("m", 12, 12)])
    assert m.insert(3) == 13
    run_ops(m, [("m", 13, 16), ("m", 11, 11), ("m", 12, 12)])
    assert m.last_out == 16


def test_munger_insert_after_dropped_head_keeps_gap_slot() -> None:
    m = SeqMunger(16)
    run_ops(m, [("m", 10, 10), ("d", 12, True)])
    assert m.insert(1) == 12  # 11 is missing and keeps slot 11
    run_ops(m, [("m", 11, 11), ("m", 13, 13)])


def test_munger_sync_skip_and_insert_errors() -> None:
    m = SeqMunger(16)
    with pytest.raises(ValueError):
        m.insert()
    m.munge(5)
    m.sync(900, skip=10)
    assert m.munge(900) == 16
    with pytest.raises(ValueError):
        m.insert(0)


def test_munger_refuses_packets_older_than_window() -> None:
    m = SeqMunger(16, window=10)
    for v in range(100):
        assert m.munge(v) == v
    assert m.munge(88) is None  # 11 behind the newest
    assert m.munge(89) == 89


def test_munger_max_entries_raises_floor() -> None:
    m = SeqMunger(16, max_entries=4)
    m.munge(0)
    for v in range(1, 20, 2):  # forward odd, drop even -> separate entries
        assert m.drop(v + 1) is True
        m.munge(v + 2)
    assert len(m._entries) <= 4
    assert m.munge(1) is None  # its offset history was discarded


def test_munger_3_bit_through_wraps() -> None:
    m = SeqMunger(3)
    outs = []
    for i in range(48):
        v = i & 7
        if i % 5 == 2:
            assert m.drop(v)
        else:
            outs.append(m.munge(v))
    assert outs == [i & 7 for i in range(len(outs))]


def test_munger_3_bit_sync_and_reorder() -> None:
    m = SeqMunger(3)
    run_ops(
        m,
        [
            ("m", 6, 6),
            ("m", 7, 7),
            ("m", 1, 1),  # 0 missing
            ("m", 0, 0),  # arrives late
            ("s", 3, 2),
            ("m", 5, 4),
            ("m", 4, 3),
            ("d", 6, True),
            ("m", 7, 5),
            ("m", 0, 6),
            ("m", 6, None),
        ],
    )


# --- SeqMunger properties ----------------------------------------------------------


@settings(max_examples=150)
@given(
    bits=st.sampled_from([3, 4, 8, 15, 16]),
    start=st.integers(0, 0xFFFF),
    events=st.lists(
        st.one_of(
            st.tuples(st.just("pkt"), st.sampled_from(["fwd", "fwd", "fwd", "drop", "lost"])),
            st.tuples(st.just("sync"), st.integers(0, 0xFFFF)),
            st.tuples(st.just("insert"), st.integers(1, 3)),
        ),
        max_size=80,
    ),
)
def test_munger_in_order_model(bits: int, start: int, events: list[tuple[str, int | str]]) -> None:
    """In-order arrival against a slot-counting model.

    ``nxt`` is the slot of the next in-order packet, ``pending`` the upstream losses
    since the last handled packet (they get slots only once a later packet is
    handled), ``last`` the highest slot produced or reserved.
    """
    mask = mask_of(bits)
    m = SeqMunger(bits)
    seq = start & mask
    nxt = last = 0
    pending = 0
    begun = False
    for kind, arg in events:
        if kind == "sync":
            seq = int(arg) & mask
            if begun:
                m.sync(seq)
                nxt = last + 1
            pending = 0
            continue
        if kind == "insert":
            if begun:
                first = max(last, nxt - 1) + 1
                assert m.insert(int(arg)) == first & mask
                last = first + int(arg) - 1
                nxt = last + 1
            continue
        if arg == "lost":
            if begun:
                pending += 1
        else:
            if not begun:
                begun = True
                nxt = seq  # identity with the first handled packet
                last = seq - 1
            if arg == "drop":
                assert m.drop(seq) is True
                nxt += pending
            else:
                out = nxt + pending
                assert m.munge(seq) == out & mask
                nxt = last = out
                nxt += 1
            pending = 0
        seq = (seq + 1) & mask


def _shuffle_locally(n: int, reach: int, rnd: random.Random) -> list[int]:
    """A permutation of range(n) where each element moves at most ``reach``."""
    keys = {k: k + rnd.random() * reach for k in range(n)}
    order = sorted(range(n), key=keys.__getitem__)
    assert all(abs(order[p] - p) <= reach for p in range(n))
    return order


@settings(max_examples=150)
@given(
    bits=st.sampled_from([3, 16]),
    first=st.integers(0, 0xFFFF),
    n=st.integers(1, 60),
    seed=st.integers(0, 2**32),
    drop_rate=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_munger_reordering_model(
    bits: int, first: int, n: int, seed: int, drop_rate: float
) -> None:
    """Reordered arrival with drops: forwarded packet k gets
    ``k - (# successful drops before k)``; a drop succeeds only on the newest
    packet so far; packets older than the first arrival are refused."""
    rnd = random.Random(seed)
    mask = mask_of(bits)
    reach = 1 if bits == 3 else 8
    order = _shuffle_locally(n, reach, rnd)
    m = SeqMunger(bits)
    first &= mask
    base = order[0]  # identity: the first arrival maps to its own wire value
    newest = -1
    dropped: set[int] = set()
    for k in order:
        wire = (first + k) & mask
        if rnd.random() < drop_rate:
            ok = m.drop(wire)
            assert ok is (k > newest)
            if ok:
                dropped.add(k)
        else:
            got = m.munge(wire)
            if k < base or k in dropped:
                assert got is None
            else:
                expected = first + k - sum(1 for d in dropped if d < k)
                assert got == expected & mask, (k, order)
        newest = max(newest, k)


@given(first=st.integers(0, 0xFFFF), n=st.integers(1, 80), seed=st.integers(0, 2**32))
def test_munger_identity_reorder_property(first: int, n: int, seed: int) -> None:
    """With no drops or switches an identity munger never changes a value."""
    order = _shuffle_locally(n, 10, random.Random(seed))
    m = SeqMunger(16)
    for k in order:
        got = m.munge((first + k) & 0xFFFF)
        assert got is None if k < order[0] else got == (first + k) & 0xFFFF


# --- TimestampMunger ---------------------------------------------------------------


def test_ts_munger_identity_and_switch_by_elapsed_time() -> None:
    m = TimestampMunger()
    assert m.munge(1000, now=10.0) == 1000
    assert m.munge(4000, now=10.033) == 4000
    assert m.munge(2500, now=10.04) == 2500  # older: last stays
    assert m.last_out == 4000
    # New source after 0.5 s of 90 kHz video.
    assert m.sync(777, now=10.533, clock_rate=90000) == 4000 + 45000
    assert m.munge(777 + 3000, now=10.566) == 4000 + 45000 + 3000


def test_ts_munger_min_step_and_wrap() -> None:
    m = TimestampMunger(start=0xFFFFFF00)
    assert m.munge(5, now=1.0) == 0xFFFFFF00
    assert m.munge(5 + 0x200, now=1.01) == 0x100
    assert m.sync(123, now=1.01, clock_rate=48000) == 0x101  # no time passed: +1
    assert m.sync(9, now=1.0, clock_rate=48000, min_step=960) == 0x101 + 960


def test_ts_munger_3_bit() -> None:
    m = TimestampMunger(bits=3)
    outs = [m.munge(v & 7, now=float(v)) for v in range(10)]
    assert outs == [v & 7 for v in range(10)]
    assert m.sync(5, now=11.0, clock_rate=1) == (9 + 2) & 7


@given(
    start=st.integers(0, 0xFFFFFFFF),
    first=st.integers(0, 0xFFFFFFFF),
    steps=st.lists(st.integers(0, 10_000), max_size=30),
    gap=st.floats(0.0, 100.0),
    rate=st.sampled_from([8000, 48000, 90000]),
)
def test_ts_munger_keeps_deltas(
    start: int, first: int, steps: list[int], gap: float, rate: int
) -> None:
    m = TimestampMunger(start=start)
    ts = first
    now = 0.0
    out0 = m.munge(ts, now)
    assert out0 == start
    for step in steps:
        ts = (ts + step) & 0xFFFFFFFF
        now += step / rate
        assert m.munge(ts, now) == (ts - first + start) & 0xFFFFFFFF
    last = m.last_out
    new = m.sync(12345, now + gap, rate)
    assert diff(new, last, 32) == max(1, round(gap * rate))
