"""The store-retry helper and the keyed token buckets: pure, with injected clocks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.ratelimit import KeyedBuckets
from control.store.base import StoreError
from control.store.retry import RetryPolicy, retrying


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.sleeps.append(d)
        self.t += d


async def test_retrying_rides_out_failures_then_returns():
    ft, calls = FakeTime(), []

    async def op() -> str:
        calls.append(ft.t)
        if len(calls) < 4:
            raise StoreError("down")
        return "ok"

    assert await retrying(op, "op", RetryPolicy(10.0), ft.clock, ft.sleep) == "ok"
    assert len(calls) == 4 and len(ft.sleeps) == 3


async def test_retrying_stops_at_its_deadline_and_raises_the_store_error():
    ft = FakeTime()

    async def op() -> None:
        raise StoreError("down")

    with pytest.raises(StoreError):
        await retrying(op, "op", RetryPolicy(5.0, base_seconds=0.1, cap_seconds=1.0), ft.clock, ft.sleep)
    assert ft.t <= 5.0 and ft.sleeps and max(ft.sleeps) <= 1.0


async def test_retrying_does_not_retry_other_errors():
    ft, calls = FakeTime(), []

    async def op() -> None:
        calls.append(1)
        raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await retrying(op, "op", RetryPolicy(5.0), ft.clock, ft.sleep)
    assert calls == [1]


@given(st.integers(0, 100), st.floats(0, 1))
def test_backoff_stays_within_base_half_and_cap(attempt, r):
    p = RetryPolicy(60.0, base_seconds=0.05, cap_seconds=2.0)
    assert 0.025 <= p.delay(attempt, lambda: r) <= 2.0


def test_buckets_burst_then_rate_and_keys_apart():
    b = KeyedBuckets(rate_per_second=0.5, burst=3)
    assert [b.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take("b", 0.0)  # another key has its own bucket
    assert not b.take("a", 1.0) and b.take("a", 2.0) and not b.take("a", 2.0)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.5)), max_size=200))
def test_buckets_never_let_more_than_burst_plus_rate_times_time(events):
    b = KeyedBuckets(rate_per_second=2.0, burst=5, max_keys=10)
    t, taken = 0.0, {"a": 0, "b": 0, "c": 0}
    for key, dt in events:
        t += dt
        taken[key] += b.take(key, t)
    assert all(n <= 5 + 2.0 * t + 1e-9 for n in taken.values())


def test_buckets_are_bounded_in_memory():
    b = KeyedBuckets(rate_per_second=1.0, burst=1, max_keys=100)
    for i in range(1000):
        b.take(f"k{i}", 0.0)
    assert len(b) == 100
