"""The gate on WebSockets that have not joined yet: per source (an IPv4 address, an IPv6 /64)
and in total, where the oldest unjoined socket is let go to make room for a new one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from signaling.server import UnjoinedGate, source_key


def test_source_key_is_the_address_or_the_ipv6_slash_64() -> None:
    assert source_key("127.0.0.2") == "127.0.0.2"
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::5") != source_key("2001:db8:1:2::5")
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("not an address:") == "not an address:"
    assert source_key("") == ""


def test_per_source_cap_refuses_and_a_full_node_lets_the_oldest_go() -> None:
    gate = UnjoinedGate(per_source=2, total=3)
    let_go: list[str] = []
    a1, _ = gate.acquire("10.0.0.1", lambda: let_go.append("a1"))
    a2, _ = gate.acquire("10.0.0.1", lambda: let_go.append("a2"))
    assert gate.acquire("10.0.0.1", lambda: let_go.append("a3")) == (0, "per_source")
    b1, _ = gate.acquire("2001:db8::1", lambda: let_go.append("b1"))
    assert gate.count == 3 and let_go == []
    # The node is full: a fourth source gets in, and the oldest socket (a1) is let go.
    c1, refused = gate.acquire("10.0.0.9", lambda: let_go.append("c1"))
    assert refused == "" and c1 and let_go == ["a1"]
    assert gate.count == 3 and gate.by_source["10.0.0.1"] == 1
    # An IPv6 /64 is one source: a second address in it fits (cap 2), a third does not.
    b2, refused = gate.acquire("2001:db8::2", lambda: let_go.append("b2"))
    assert refused == "" and let_go == ["a1", "a2"]
    assert gate.acquire("2001:db8::3", lambda: None) == (0, "per_source")
    gate.release(a1)  # already let go: nothing changes
    assert gate.count == 3
    for t in (b1, c1, b2, b2):
        gate.release(t)
    assert gate.count == 0 and gate.by_source == {}
    assert a2


def test_a_node_that_takes_no_unjoined_socket_refuses() -> None:
    assert UnjoinedGate(per_source=5, total=0).acquire("10.0.0.1", lambda: None) == (0, "total")


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=200),
       st.integers(1, 4), st.integers(1, 6))
def test_the_gate_never_holds_more_than_its_caps(ops: list[tuple[bool, int]], per_source: int, total: int) -> None:
    gate = UnjoinedGate(per_source=per_source, total=total)
    held: dict[int, str] = {}
    for release, who in ops:
        if release and held:
            ticket = next(iter(held))
            gate.release(ticket)
            held.pop(ticket)
            continue
        source = f"10.0.0.{who}"
        ticket, refused = gate.acquire(source, lambda: None)
        if not refused:
            held[ticket] = source
        # let-go tickets vanish from the gate; keep only those it still holds
        held = {t: s for t, s in held.items() if t in gate._unjoined}
        assert gate.count == len(held) <= total
        for key, n in gate.by_source.items():
            assert 0 < n <= per_source
            assert n == sum(1 for s in held.values() if s == key)
