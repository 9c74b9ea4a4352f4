"""KeyframeRequester rate limiting on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.keyframe import KeyframeRequester


def test_scenario_table() -> None:
    kf = KeyframeRequester(min_interval=0.5, retry_after=1.0)
    steps: list[tuple[float, str, bool]] = [
        (0.0, "request", True),  # first request goes out
        (0.1, "request", False),  # outstanding: suppressed
        (0.9, "request", False),
        (0.95, "tick", False),
        (1.0, "request", True),  # no keyframe within 1 s: repeat
        (1.2, "keyframe", False),
        (1.3, "request", True),  # 0.3 s since the last send, but a keyframe came in between: a new need
        (1.4, "tick", False),
        (1.5, "tick", False),  # outstanding, not due for a repeat
        (1.6, "keyframe", False),
        (1.7, "request", True),  # again a keyframe since the last send
        (1.75, "request", False),  # outstanding: suppressed
        (1.8, "keyframe", False),
        (2.1, "tick", False),
        (2.2, "request", True),
    ]
    for now, op, want in steps:
        if op == "request":
            got = kf.request(now, "test")
        elif op == "tick":
            got = kf.tick(now)
        else:
            kf.on_keyframe(now)
            got = False
        assert got is want, (now, op)
    assert (kf.requested, kf.sent, kf.suppressed, kf.retried, kf.keyframes) == (8, 5, 3, 1, 3)
    assert kf.last_reason == "test"
    assert kf.last_keyframe_at == 1.8


def test_fir_sequence_number_changes_per_new_request_only() -> None:
    kf = KeyframeRequester(use_fir=True)
    assert kf.kind == "fir"
    assert KeyframeRequester().kind == "pli"
    assert kf.request(0.0)
    assert kf.fir_seq == 1
    assert kf.tick(1.0)  # repeat: same command
    assert kf.fir_seq == 1
    kf.on_keyframe(1.1)
    assert kf.request(2.0)
    assert kf.fir_seq == 2
    kf.fir_seq = 255
    kf.on_keyframe(2.1)
    assert kf.request(3.0)
    assert kf.fir_seq == 0


def test_automatic_repeats_stop_after_max_retries() -> None:
    kf = KeyframeRequester(retry_after=1.0, max_retries=2)
    assert kf.request(10.0)
    sends = [t / 10 for t in range(101, 200) if kf.tick(t / 10)]
    assert sends == [11.0, 12.0]
    assert kf.gave_up == 1
    assert not kf.pending
    assert kf.request(20.0)  # a new need starts over


def test_repeats_continue_while_someone_asks() -> None:
    kf = KeyframeRequester(retry_after=1.0, max_retries=0)
    assert kf.request(0.0)
    assert not kf.request(0.5)  # asked while outstanding
    assert kf.tick(1.0)  # repeated despite max_retries=0
    assert not kf.tick(2.0)  # nobody asked since: give up
    assert kf.gave_up == 1


def test_bad_timing_raises() -> None:
    with pytest.raises(ValueError):
        KeyframeRequester(retry_after=0.0)
    with pytest.raises(ValueError):
        KeyframeRequester(min_interval=-1.0)


EVENTS = st.lists(
    st.tuples(st.integers(1, 400), st.sampled_from(["request", "request", "keyframe", "idle"])),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.sampled_from([(0.5, 1.0), (0.2, 0.3), (1.0, 1.0)]), st.integers(0, 4))
def test_rate_limit_and_liveness(
    events: list[tuple[int, str]], timing: tuple[float, float], max_retries: int
) -> None:
    """Ticks every 100 ms; events at ms offsets."""
    min_interval, retry_after = timing
    kf = KeyframeRequester(
        min_interval=min_interval, retry_after=retry_after, max_retries=max_retries
    )
    tick_period = 0.1
    sends: list[float] = []
    keyframes: list[float] = []
    requests: list[float] = []
    now_ms = 0
    schedule: list[tuple[int, str]] = []
    for delta, op in events:
        now_ms += delta
        schedule.append((now_ms, op))
    end_ms = now_ms + int((retry_after + 2 * tick_period) * 1000) + 100
    schedule.extend((t, "tick") for t in range(0, end_ms, 100))
    schedule.sort(key=lambda e: (e[0], e[1] == "tick"))
    for t_ms, op in schedule:
        now = t_ms / 1000
        if op == "request":
            requests.append(now)
            if kf.request(now):
                sends.append(now)
        elif op == "tick":
            if kf.tick(now):
                sends.append(now)
        elif op == "keyframe":
            kf.on_keyframe(now)
            keyframes.append(now)
    for a, b in zip(sends, sends[1:], strict=False):
        if not any(a < k <= b for k in keyframes):
            # without a keyframe in between, sends respect the minimum interval, and a repeat
            # waits for the retry time; with one, the PLI rate is bounded by the keyframe rate
            assert b - a >= min_interval - 1e-9
            assert b - a >= retry_after - 1e-9
    for r in requests:
        horizon = r + retry_after + tick_period + 1e-9
        assert any(r <= s <= horizon for s in sends) or any(r < k <= horizon for k in keyframes), r
    assert kf.sent == len(sends)
    assert kf.requested == len(requests)


def test_a_keyframe_since_the_last_request_lifts_the_minimum_interval() -> None:
    """A new subscriber that needs a keyframe right after one arrived (which it could not use)
    gets a request at once, not min_interval later."""
    kr = KeyframeRequester(min_interval=0.5)
    assert kr.request(10.0, "first subscriber")
    kr.on_keyframe(10.05)
    assert kr.request(10.1, "second subscriber")  # within 0.5 s, but a keyframe came in between
    assert not kr.request(10.2, "third")  # pending again: suppressed until the next keyframe
