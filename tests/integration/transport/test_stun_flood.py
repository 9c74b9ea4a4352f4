"""Unauthenticated STUN over real loopback UDP (issue 8, item 11): an unknown ufrag is dropped
before any parsing or HMAC and never answered; one source host's failed requests are limited
(a token bucket per host) while another host's checks go through; no unsigned error reply is
bigger than its request."""

from __future__ import annotations

import os
from typing import Any

import pytest

from sfu.transport import ice_lite, stun
from sfu.transport.udp import MediaEndpoint

from .conftest import Recorder
from .softpeer import SoftPeer

pytestmark = pytest.mark.timeout(30)

DEFAULT_FAILURE_BURST = getattr(ice_lite, "DEFAULT_FAILURE_BURST", 40)


def request(username: str, key: bytes) -> bytes:
    return stun.build_binding_request(os.urandom(12), username, key, 0x6E0001FF, 0x1122334455667788,
                                      use_candidate=True)


async def attacker(make_peer: Any, endpoint: MediaEndpoint, host: str) -> SoftPeer:
    p: SoftPeer = await make_peer(host=host)
    p.server = endpoint.candidates[0]
    return p


async def test_unknown_ufrags_are_dropped_unanswered_and_counted(endpoint: MediaEndpoint, make_peer: Any) -> None:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    peer: SoftPeer = await make_peer()
    peer.remote = transport.local_params()
    peer.server = peer.remote.candidates[0]
    transport.set_remote(peer.ufrag, peer.pwd, [("sha-256", peer.context.fingerprint)], "server")
    for i in range(200):
        peer.send_raw(request(f"nosuchufrag{i:05d}:{peer.ufrag}", b"k" * 22))
    # The same socket's valid check is answered, and its answer is the first datagram back:
    # nothing was sent for the 200 before it (loopback keeps the order).
    assert await peer.check() is not None
    assert len(peer.stun_responses) == 1
    counts = endpoint.counters()
    assert counts.get("stun_unknown_ufrag", 0) == 200
    assert counts.get("stun_rate_limited", 0) == 0  # one lookup each: not charged to the host


async def test_one_hosts_failed_requests_are_limited_and_another_host_is_not(
    endpoint: MediaEndpoint, make_peer: Any
) -> None:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    flood = 200
    good: SoftPeer = await make_peer()
    bad = await attacker(make_peer, endpoint, "127.0.0.3")
    forged = [request(f"{transport.ice.local_ufrag}:{good.ufrag}", b"wrong-password-0000000000")
              for _ in range(flood)]
    for data in forged:
        bad.send_raw(data)
    # The participant on another host connects normally meanwhile; its check also marks the point
    # where the endpoint has handled every forged request before it.
    await good.connect(transport)
    counts = endpoint.counters()
    assert counts["stun_bad_integrity"] <= DEFAULT_FAILURE_BURST + 1
    assert counts.get("stun_rate_limited", 0) >= flood - DEFAULT_FAILURE_BURST - 1
    assert counts["stun_bad_integrity"] + counts.get("stun_rate_limited", 0) == flood
    # Every 401 it got is no bigger than its request, and it got no more than the HMACs we did.
    assert 0 < len(bad.stun_responses) <= counts["stun_bad_integrity"]
    assert all(len(r) <= len(forged[0]) for r in bad.stun_responses)
    # ...and it is limited as a host: a correct check from it is dropped unread for now.
    before = endpoint.counters().get("stun_rate_limited", 0)
    bad.send_raw(request(f"{transport.ice.local_ufrag}:{good.ufrag}", good.pwd.encode()))
    assert await good.check() is not None  # the marker again
    assert endpoint.counters().get("stun_rate_limited", 0) == before + 1


async def test_an_unsigned_error_is_never_bigger_than_the_request(endpoint: MediaEndpoint, make_peer: Any) -> None:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    good: SoftPeer = await make_peer()
    await good.connect(transport)  # its address is known: requests without USERNAME get a 400
    before = len(good.stun_responses)
    tiny = stun.build_message(stun.BINDING_REQUEST, os.urandom(12))  # 20 bytes, no attributes
    good.send_raw(tiny)
    padded = stun.build_message(stun.BINDING_REQUEST, os.urandom(12), [(stun.ATTR_SOFTWARE, "x" * 64)])
    good.send_raw(padded)
    assert await good.check() is not None  # the marker
    got = good.stun_responses[before:-1]
    assert len(got) == 1 and len(got[0]) <= len(padded)  # the 400 for the padded one only
    assert stun.parse_message(got[0]) is not None and got[0][8:20] == padded[8:20]
    assert endpoint.counters()["stun_bad_request"] == 2
