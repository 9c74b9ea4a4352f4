"""MediaEndpoint over real loopback UDP with SoftPeer far sides: demux and drop
accounting, replay/tamper, source filter, ICE address change, consent expiry on an
injected clock, DTLS client role, IPv6 on a second socket, lifecycle and fuzzing."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.transport import ice_lite
from sfu.transport.dtls import DtlsRole
from sfu.transport.udp import (
    DROP_NAMES,
    KIND_DTLS,
    KIND_OTHER,
    KIND_RTP,
    KIND_STUN,
    MAX_DATAGRAM,
    MediaEndpoint,
    SourceFilter,
    classify,
)
from sfu.transport.webrtc_transport import WebRtcTransport

from .conftest import Recorder, SkewClock, wait_until
from .softpeer import SoftPeer

pytestmark = pytest.mark.timeout(30)

_RTP = struct.Struct("!BBHII")


def rtp(seq: int, ssrc: int = 0x11223344, pt: int = 96, payload: bytes = b"payload-bytes") -> bytes:
    return _RTP.pack(0x80, pt, seq & 0xFFFF, seq * 90, ssrc) + payload


def rtcp_rr(ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)  # RR with no report block


# Every datagram the endpoint sees must land in exactly one of these counters.
ACCOUNTED = (
    *(n for n in DROP_NAMES if not n.startswith("send_")),
    "stun_check",
    "stun_selected",
    "stun_address_changed",
    "stun_indication",
    *ice_lite.EVENT_NAMES[ice_lite.DROP_FIRST:],
    "dtls_datagrams_in",
    "rtp_packets_in",
    "rtcp_packets_in",
    "srtp_auth_failed",
    "srtp_replay",
    "srtp_bad_packet",
    "srtp_before_connected",
)


def accounted(endpoint: MediaEndpoint) -> int:
    totals = endpoint.totals()
    return sum(totals.get(name, 0) for name in ACCOUNTED)


def grew(endpoint: MediaEndpoint, before: int) -> bool:
    return accounted(endpoint) > before


async def connected_pair(endpoint: MediaEndpoint, make_peer: Any, **peer: Any) -> tuple[WebRtcTransport, Recorder, SoftPeer]:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    p: SoftPeer = await make_peer(**peer)
    await p.connect(transport)
    return transport, rec, p


# -- pure helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "kind"),
    [(0, KIND_STUN), (3, KIND_STUN), (4, KIND_OTHER), (19, KIND_OTHER), (20, KIND_DTLS), (63, KIND_DTLS),
     (64, KIND_OTHER), (127, KIND_OTHER), (128, KIND_RTP), (191, KIND_RTP), (192, KIND_OTHER), (255, KIND_OTHER)],
)
def test_first_byte_classes_follow_rfc7983(first: int, kind: int) -> None:
    assert classify(first) == kind


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("10.0.0.1", False), ("::1", True), ("::2", False),
     ("::ffff:127.0.0.1", True), ("fe80::1%eth0", False), ("not-an-ip", False), ("", False)],
)
def test_source_filter(host: str, allowed: bool) -> None:
    f = SourceFilter(["127.0.0.0/8", "::1"])
    assert f.allowed(host) is allowed
    assert f.allowed(host) is allowed  # cached verdict


def test_endpoint_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        MediaEndpoint(["0.0.0.0"])  # a wildcard needs an announced ip
    with pytest.raises(ValueError):
        MediaEndpoint(["localhost"])
    with pytest.raises(ValueError):
        MediaEndpoint([])
    ep = MediaEndpoint(["0.0.0.0"], 40000, announced_ip="203.0.113.7")
    assert ep.candidates == (("203.0.113.7", 40000),)


# -- over UDP ----------------------------------------------------------------------


async def test_softpeer_round_trip_and_counters(endpoint: MediaEndpoint, make_peer: Any) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer)
    assert transport.remote_address == peer.address
    assert rec.states == [("connecting", None), ("connected", None)]
    sent = [peer.protect_rtp(rtp(seq)) for seq in range(5)] + [peer.protect_rtcp(rtcp_rr())]
    for data in sent:
        peer.send_raw(data)
    await wait_until(lambda: len(rec.rtp) == 5 and len(rec.rtcp) == 1, what="packets at the SFU")
    assert rec.rtp == [rtp(seq) for seq in range(5)] and rec.rtcp == [rtcp_rr()]
    for seq in range(3):
        assert transport.send_rtp(rtp(seq, ssrc=0xABCDEF01))
    assert transport.send_rtcp(rtcp_rr(0xABCDEF01))
    await wait_until(lambda: len(peer.rtp) == 3 and len(peer.rtcp) == 1, what="packets at the peer")
    assert peer.rtp == [rtp(seq, ssrc=0xABCDEF01) for seq in range(3)]
    c = transport.counters()
    assert (c["rtp_packets_in"], c["rtcp_packets_in"], c["rtp_packets_out"], c["rtcp_packets_out"]) == (5, 1, 3, 1)
    assert (c["rtp_bytes_in"], c["rtcp_bytes_in"]) == (sum(map(len, sent[:5])), len(sent[5]))
    overhead = transport.srtp.profile.rtp_overhead  # type: ignore[union-attr]
    assert c["rtp_bytes_out"] == 3 * (len(rtp(0)) + overhead) and c["srtp_auth_failed"] == 0
    # the endpoint's own sendto picks the socket of the address family
    assert endpoint.sendto(b"\x01" + bytes(19), peer.address)
    await wait_until(lambda: peer.stun_responses[-1] == b"\x01" + bytes(19), what="raw sendto")


async def test_garbage_of_each_class_is_counted_and_never_raises(endpoint: MediaEndpoint, make_peer: Any) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer)
    stranger: SoftPeer = await make_peer()
    stranger.server = peer.server
    # (sender, datagram, counter that must grow by one)
    cases: list[tuple[SoftPeer, bytes, str]] = [
        (stranger, b"\x80" + os.urandom(5), "too_short"),
        (stranger, b"\x80" + bytes(MAX_DATAGRAM), "too_long"),
        (stranger, bytes([0x01]) + os.urandom(40), "stun_malformed"),
        (stranger, bytes([4]) + os.urandom(40), "unknown_first_byte"),
        (stranger, bytes([64]) + os.urandom(40), "unknown_first_byte"),
        (stranger, bytes([200]) + os.urandom(40), "unknown_first_byte"),
        (stranger, bytes([22]) + os.urandom(40), "unknown_address"),
        (stranger, bytes([0x80]) + os.urandom(40), "unknown_address"),
        (peer, bytes([0x00]) + os.urandom(40), "stun_malformed"),
        (peer, bytes([25]) + os.urandom(40), "dtls_bad_record"),
        (peer, rtp(77) + os.urandom(10), "srtp_auth_failed"),
        (peer, bytes([0x80, 200]) + os.urandom(40), "srtp_auth_failed"),
    ]
    for sender, data, counter in cases:
        before = endpoint.totals()
        total_before = accounted(endpoint)
        sender.send_raw(data)
        await wait_until(partial(grew, endpoint, total_before), what=f"{counter} accounted")
        after = endpoint.totals()
        assert after[counter] == before[counter] + 1, (counter, data[:2])
        assert accounted(endpoint) == total_before + 1
    assert endpoint.counters()["internal_error"] == 0 and rec.rtp == []
    # the transport is unharmed
    peer.send_raw(peer.protect_rtp(rtp(1)))
    await wait_until(lambda: rec.rtp == [rtp(1)], what="valid packet after the garbage")
    assert transport.state == "connected"


async def test_replayed_and_tampered_srtp_are_dropped(endpoint: MediaEndpoint, make_peer: Any) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer)
    srtp_packet = peer.protect_rtp(rtp(10))
    srtcp_packet = peer.protect_rtcp(rtcp_rr())
    for data in (srtp_packet, srtp_packet, srtcp_packet, srtcp_packet):
        peer.send_raw(data)
    tampered = bytearray(peer.protect_rtp(rtp(11)))
    tampered[20] ^= 0xFF  # payload: authentication fails
    peer.send_raw(bytes(tampered))
    tampered_rtcp = bytearray(peer.protect_rtcp(rtcp_rr()))
    tampered_rtcp[9] ^= 0xFF
    peer.send_raw(bytes(tampered_rtcp))
    await wait_until(lambda: transport.counters()["srtp_auth_failed"] == 2, what="tampered packets")
    c = transport.counters()
    assert (c["srtp_replay"], c["srtp_auth_failed"], c["srtp_bad_packet"]) == (2, 2, 0)
    assert rec.rtp == [rtp(10)] and rec.rtcp == [rtcp_rr()]


async def test_source_filter_drops_other_hosts_unanswered(endpoint_factory: Any, make_peer: Any) -> None:
    endpoint: MediaEndpoint = await endpoint_factory(allowed_sources=["127.0.0.1/32"])
    transport = endpoint.create_transport()
    outsider: SoftPeer = await make_peer(host="127.0.0.2")
    outsider.remote = transport.local_params()
    outsider.server = outsider.remote.candidates[0]
    with pytest.raises(TimeoutError):
        await outsider.check(timeout=0.3)
    outsider.send_raw(rtp(1))
    outsider.send_raw(bytes([22]) + bytes(30))
    await wait_until(lambda: endpoint.counters()["source_not_allowed"] == 3, what="filtered datagrams")
    assert outsider.stun_responses == [] and transport.state == "new"
    assert endpoint.counters()["unknown_address"] == 0
    # the same transport still connects from an allowed host
    peer: SoftPeer = await make_peer()
    await peer.connect(transport)
    assert transport.remote_address == peer.address


async def test_ice_address_change_moves_the_transport(endpoint: MediaEndpoint, make_peer: Any) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer)
    old = peer.address
    assert peer.sock is not None
    peer.sock.close()
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
    assert peer.address != old
    assert await peer.check(use_candidate=True) is not None
    assert transport.remote_address == peer.address
    assert endpoint.registry.by_address == {peer.address: transport}
    assert endpoint.counters()["stun_address_changed"] == 1
    peer.send_raw(peer.protect_rtp(rtp(5)))
    assert transport.send_rtp(rtp(6))
    await wait_until(lambda: rec.rtp == [rtp(5)] and peer.rtp == [rtp(6)], what="media on the new address")
    assert rec.states[-1] == ("connected", None)


async def test_silent_peer_expires_on_consent_timeout(
    endpoint_factory: Any, make_peer: Any, clock: SkewClock
) -> None:
    endpoint: MediaEndpoint = await endpoint_factory(tick_interval=0.02)
    silent_t, silent_rec, silent = await connected_pair(endpoint, make_peer)
    alive_t, alive_rec, alive = await connected_pair(endpoint, make_peer)
    never_rec = Recorder()
    never_t = endpoint.create_transport(never_rec, never_rec.on_state)
    timeout = endpoint.consent_timeout

    clock.skew += timeout * 0.6
    assert await alive.check(use_candidate=False) is not None  # consent refreshed
    assert endpoint.tick() == 0
    clock.skew += timeout * 0.6  # silent: 1.2 x timeout since its last check; alive: 0.6 x
    await wait_until(lambda: silent_t.closed and never_t.closed, timeout=2.0, what="expiry by the ticker")
    assert silent_rec.states[-1] == ("failed", "ice_consent_expired")
    assert never_rec.states == [("failed", "ice_connect_timeout")]
    assert alive_t.state == "connected" and len(endpoint.transports) == 1
    assert endpoint.registry.by_address == {alive.address: alive_t}
    # no close_notify after consent loss (RFC 7675): the silent peer heard nothing
    await asyncio.sleep(0.05)
    assert silent.dtls is not None and silent.dtls.state.name == "CONNECTED"
    # its media is no longer routed; its counters survive in the endpoint totals
    silent.send_raw(silent.protect_rtp(rtp(1)))
    await wait_until(lambda: endpoint.counters()["unknown_address"] == 1, what="unrouted media")
    assert silent_rec.rtp == [] and endpoint.totals()["dtls_datagrams_in"] >= 2


async def test_sfu_as_dtls_client_against_softpeer_server(endpoint: MediaEndpoint, make_peer: Any) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer, role=DtlsRole.SERVER)
    assert transport.dtls is not None and transport.dtls.role == DtlsRole.CLIENT
    peer.send_raw(peer.protect_rtp(rtp(3)))
    await wait_until(lambda: rec.rtp == [rtp(3)], what="media")


async def test_ipv6_on_a_second_listen_socket(endpoint_factory: Any, make_peer: Any) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    endpoint: MediaEndpoint = await endpoint_factory(listen_ips=["127.0.0.1", "::1"])
    assert endpoint.candidates == (("127.0.0.1", endpoint.port), ("::1", endpoint.port))
    rec = Recorder()
    transport = endpoint.create_transport(rec)
    peer: SoftPeer = await make_peer(host="::1")
    await peer.connect(transport, candidate=1)
    assert transport.remote_address == peer.address and len(transport.remote_address) == 2
    peer.send_raw(peer.protect_rtp(rtp(9)))
    assert transport.send_rtp(rtp(10))
    await wait_until(lambda: rec.rtp == [rtp(9)] and peer.rtp == [rtp(10)], what="IPv6 media both ways")


async def test_lifecycle_and_send_before_connected(endpoint: MediaEndpoint, make_peer: Any) -> None:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    assert not transport.send_rtp(rtp(1)) and not transport.send_rtcp(rtcp_rr())
    assert transport.counters()["send_not_connected"] == 2
    with pytest.raises(ValueError):
        transport.set_remote("ab", "short", [("sha-256", "00")], "server")
    with pytest.raises(ValueError):
        transport.set_remote("abcd", "x" * 22, [("sha-256", "zz")], "server")
    with pytest.raises(ValueError):
        transport.set_remote("abcd", "x" * 22, [("sha-256", "AB:CD")], "both")
    assert transport.dtls is None and transport.ice.remote_ufrag is None  # nothing applied
    # a second set_remote asking for the other DTLS role fails the transport
    transport.set_remote("abcd", "x" * 22, [("sha-256", ":".join(["AB"] * 32))], "server")
    transport.set_remote("abcd", "x" * 22, [("sha-256", ":".join(["AB"] * 32))], "client")
    assert rec.states == [("failed", "dtls_role_conflict")]
    transport.close()
    assert rec.states == [("failed", "dtls_role_conflict")]  # final states stay
    with pytest.raises(ValueError):
        transport.set_remote("abcd", "x" * 22, [("sha-256", ":".join(["AB"] * 32))], "server")

    t2, rec2, peer = await connected_pair(endpoint, make_peer)
    t2.close()
    t2.close()
    assert rec2.states[-1] == ("closed", "closed") and [s for s, _ in rec2.states].count("closed") == 1
    await wait_until(lambda: peer.dtls is not None and peer.dtls.state.name == "CLOSED", what="close_notify")
    assert not t2.send_rtp(rtp(1))

    t3, rec3, _ = await connected_pair(endpoint, make_peer)
    endpoint.close()
    assert rec3.states[-1] == ("closed", "endpoint_closed") and endpoint.transports == frozenset()
    with pytest.raises(ValueError):
        endpoint.create_transport()


async def test_fuzzed_datagrams_never_raise_and_are_each_counted_once(
    endpoint: MediaEndpoint, make_peer: Any
) -> None:
    transport, rec, peer = await connected_pair(endpoint, make_peer)
    addresses = [peer.address, ("127.0.0.1", 9), ("::1", 9, 0, 0)]

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        first=st.sampled_from([0, 1, 3, 4, 20, 22, 23, 63, 64, 127, 128, 144, 191, 192, 255]),
        second=st.integers(0, 255),
        rest=st.binary(max_size=200),
        source=st.integers(0, len(addresses) - 1),
    )
    def feed(first: int, second: int, rest: bytes, source: int) -> None:
        before = accounted(endpoint)
        endpoint.datagram_received(bytes([first, second]) + rest, addresses[source])
        assert accounted(endpoint) == before + 1

    feed()
    assert endpoint.counters()["internal_error"] == 0
    assert rec.rtp == [] and rec.rtcp == []


async def test_fingerprint_mismatch_fails_the_transport(endpoint: MediaEndpoint, make_peer: Any) -> None:
    from sfu.transport.dtls import DtlsEndpoint

    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    peer: SoftPeer = await make_peer()
    peer.remote = transport.local_params()
    peer.server = peer.remote.candidates[0]
    transport.set_remote(peer.ufrag, peer.pwd, [("sha-256", ":".join(["00"] * 32))], "server")
    peer.dtls = DtlsEndpoint(peer.context, DtlsRole.CLIENT, peer.send_raw,
                             [(peer.remote.fingerprint.algorithm, peer.remote.fingerprint.value)])
    assert await peer.check() is not None
    peer.dtls.start()
    await wait_until(lambda: transport.closed, what="DTLS failure")
    assert rec.states == [("connecting", None), ("failed", "dtls_fingerprint_mismatch")]
    assert transport.detail and "matches no remote SDP fingerprint" in transport.detail
    assert transport not in endpoint.transports and endpoint.totals()["dtls_fingerprint_mismatch"] == 1


async def test_dtls_handshake_timeout_runs_on_the_transport_timer(
    endpoint_factory: Any, make_peer: Any
) -> None:
    """SFU as DTLS client, the peer never answers: failed after dtls_handshake_timeout."""
    endpoint: MediaEndpoint = await endpoint_factory(dtls_handshake_timeout=0.3)
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    peer: SoftPeer = await make_peer()
    peer.remote = transport.local_params()
    peer.server = peer.remote.candidates[0]
    transport.set_remote(peer.ufrag, peer.pwd, [("sha-256", peer.context.fingerprint)], "client")
    assert await peer.check() is not None  # selected: the SFU sends its ClientHello
    await wait_until(lambda: transport.closed, timeout=2.0, what="handshake timeout")
    assert rec.states == [("connecting", None), ("failed", "dtls_handshake_timeout")]
    assert transport.dtls is None
