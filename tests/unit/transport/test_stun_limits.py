"""The cheap STUN checks that run before any parsing or HMAC: the USERNAME's local ufrag read
from the attribute headers, and the per-host limiter of failed requests."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.transport import stun
from sfu.transport.ice_lite import FailureLimiter


def request(username: str, software: str | None = None) -> bytes:
    return stun.build_binding_request(os.urandom(12), username, b"k" * 22, 1, 2, software=software)


@pytest.mark.parametrize(
    ("username", "ufrag"),
    [("abcd:efgh", "abcd"), ("abcd", "abcd"), (":x", ""), ("a" * 200 + ":b", "a" * 200), ("é:x", "")],
)
def test_username_ufrag_reads_the_local_part(username: str, ufrag: str) -> None:
    assert stun.username_ufrag(request(username, software="telesfu test")) == ufrag


def test_username_ufrag_none_without_username_or_with_a_bad_header() -> None:
    assert stun.username_ufrag(stun.build_message(stun.BINDING_REQUEST, os.urandom(12))) is None
    data = bytearray(request("abcd:efgh"))
    assert stun.username_ufrag(bytes(data[:-1])) is None  # length disagrees
    data[4] ^= 0xFF  # cookie
    assert stun.username_ufrag(bytes(data)) is None
    assert stun.username_ufrag(b"") is None


@given(st.binary(max_size=120))
def test_username_ufrag_never_raises_and_agrees_with_the_parser(tail: bytes) -> None:
    framed = (stun.BINDING_REQUEST.to_bytes(2, "big") + (len(tail) & ~3).to_bytes(2, "big")
              + stun.MAGIC_COOKIE.to_bytes(4, "big") + bytes(12) + tail[: len(tail) & ~3])
    for data in (tail, framed):
        got = stun.username_ufrag(data)
        msg = stun.parse_message(data)
        if msg is not None and stun.ATTR_USERNAME in msg.attributes:
            local = msg.attributes[stun.ATTR_USERNAME].partition(":")[0]
            assert got == (local if local.isascii() else "")


def test_the_limiter_allows_a_burst_then_the_rate() -> None:
    lim = FailureLimiter(rate=10.0, burst=5.0)
    for _ in range(5):
        assert not lim.limited("h", 0.0)
        lim.charge("h", 0.0)
    assert lim.limited("h", 0.0)
    assert not lim.limited("other", 0.0)  # per host
    assert not lim.limited("h", 0.1)  # one token back after 100 ms
    lim.charge("h", 0.1)
    assert lim.limited("h", 0.1)


@given(
    max_sources=st.sampled_from([1, 2, 8, 32]),
    rate=st.floats(0.0, 100.0),
    burst=st.floats(1.0, 20.0),
    ops=st.lists(st.tuples(st.integers(0, 20), st.floats(0.0, 0.2)), max_size=80),
)
def test_the_limiter_is_bounded(max_sources: int, rate: float, burst: float, ops: list[tuple[int, float]]) -> None:
    lim = FailureLimiter(rate=rate, burst=burst, max_sources=max_sources)
    now = 0.0
    admitted: dict[str, int] = {}
    for host_i, dt in ops:
        now += dt
        host = f"h{host_i}"
        if not lim.limited(host, now):
            admitted[host] = admitted.get(host, 0) + 1
            lim.charge(host, now)
        assert len(lim) <= max_sources
    # A host never gets more than a burst plus the rate over the time (eviction only forgets
    # hosts, which then start from a full burst again: bounded by the table, not unbounded per host).
    if max_sources >= 21:
        for n in admitted.values():
            assert n <= burst + rate * now + 1


def test_limiter_arguments() -> None:
    with pytest.raises(ValueError):
        FailureLimiter(burst=0.5)
    with pytest.raises(ValueError):
        FailureLimiter(max_sources=0)
