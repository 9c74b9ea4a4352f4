"""Passive ICE-TCP (RFC 6544, RFC 4571 framing) on real loopback TCP sockets: a TcpSoftPeer
connects to the endpoint's TCP candidate, runs ICE, DTLS and SRTP over the connection and
exchanges media both ways; garbage, silence and too many connections are closed and counted;
a reader that stops reading costs dropped media, not unbounded memory."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.sdp.model import MediaSection
from sfu.sdp.transport import write_local_transport
from sfu.transport.stun import build_binding_request
from sfu.transport.tcp import TCP_DROP_NAMES, TcpConnection
from sfu.transport.tcp_framing import frame
from sfu.transport.udp import MediaEndpoint

from .conftest import PEER_CONTEXT, Recorder, SkewClock, settle, wait_until
from .softpeer import SoftPeer, TcpSoftPeer
from .test_endpoint import ACCOUNTED

pytestmark = pytest.mark.timeout(30)

_RTP = struct.Struct("!BBHII")


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"payload-bytes") -> bytes:
    return _RTP.pack(0x80, 96, seq & 0xFFFF, seq * 90, ssrc) + payload


@pytest.fixture
async def tcp_endpoint(endpoint_factory: Callable[..., Any]) -> MediaEndpoint:
    ep: MediaEndpoint = await endpoint_factory(tcp_port=0)
    return ep


@pytest.fixture
async def make_tcp_peer() -> AsyncIterator[Callable[..., Any]]:
    peers: list[SoftPeer] = []

    async def make(**kwargs: Any) -> TcpSoftPeer:
        peer = await TcpSoftPeer.open(PEER_CONTEXT, **kwargs)
        peers.append(peer)
        assert isinstance(peer, TcpSoftPeer)
        return peer

    yield make
    for peer in peers:
        peer.close()
    await settle()


async def raw_connection(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(addr[0], addr[1])


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """True once the server closed the connection (EOF or reset), reading what it sends."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


def tcp_counter(endpoint: MediaEndpoint, name: str) -> int:
    assert name in TCP_DROP_NAMES or name.startswith("tcp_connections")
    return endpoint.counters()[name]


async def test_media_both_ways_over_tcp(tcp_endpoint: MediaEndpoint, make_tcp_peer: Any) -> None:
    rec = Recorder()
    transport = tcp_endpoint.create_transport(rec, rec.on_state)
    peer: TcpSoftPeer = await make_tcp_peer()
    await peer.connect(transport)
    # ICE selected the TCP connection: the transport's remote address is the client's TCP end.
    assert transport.remote_address == peer.address
    assert rec.states[-1] == ("connected", None)

    for seq in range(20):
        peer.send_raw(peer.protect_rtp(rtp(seq)))
    await wait_until(lambda: len(rec.rtp) == 20, what="20 RTP packets in over TCP")
    assert [struct.unpack_from("!H", p, 2)[0] for p in rec.rtp] == list(range(20))

    for seq in range(20):
        assert transport.send_rtp(rtp(seq, ssrc=0x55667788))
    transport.send_rtcp(struct.pack("!BBHI", 0x80, 201, 1, 0x55667788))
    await wait_until(lambda: len(peer.rtp) == 20 and len(peer.rtcp) == 1, what="media out over TCP")
    assert {struct.unpack_from("!I", p, 8)[0] for p in peer.rtp} == {0x55667788}

    # Consent checks keep working on the connection.
    assert await peer.check(use_candidate=False) is not None
    counters = tcp_endpoint.counters()
    assert counters["tcp_connections"] == 1 and counters["tcp_closed_garbage"] == 0


async def test_many_frames_in_one_write_and_a_frame_split_across_writes(
    tcp_endpoint: MediaEndpoint, make_tcp_peer: Any
) -> None:
    rec = Recorder()
    transport = tcp_endpoint.create_transport(rec, rec.on_state)
    peer: TcpSoftPeer = await make_tcp_peer()
    await peer.connect(transport)
    burst = b"".join(frame(peer.protect_rtp(rtp(seq))) for seq in range(10))
    peer.write(burst)
    await wait_until(lambda: len(rec.rtp) == 10, what="10 frames from one write")
    one = frame(peer.protect_rtp(rtp(10)))
    for i in range(len(one)):
        peer.write(one[i:i + 1])
        await asyncio.sleep(0)  # let each byte go out on its own where the kernel allows
    await wait_until(lambda: len(rec.rtp) == 11, what="a frame written byte by byte")


async def test_sdp_offers_a_passive_tcp_candidate_below_udp(tcp_endpoint: MediaEndpoint) -> None:
    transport = tcp_endpoint.create_transport()
    section = MediaSection(kind="audio", port=9, protocol="UDP/TLS/RTP/SAVPF", formats=[])
    write_local_transport(section, transport.local_params(), "passive", True)
    lines = [f"a=candidate:{c.to_value()}" for c in section.candidates]
    assert tcp_endpoint.tcp is not None
    udp, tcp = section.candidates
    assert (udp.transport, tcp.transport) == ("udp", "tcp")
    assert lines[1] == (f"a=candidate:2 1 tcp {tcp.priority} 127.0.0.1 {tcp_endpoint.tcp.port} "
                        "typ host tcptype passive generation 0")
    assert tcp.priority < udp.priority


async def test_tcp_off_offers_no_tcp_candidate(endpoint: MediaEndpoint) -> None:
    assert endpoint.tcp is None
    assert endpoint.create_transport().local_params().tcp_candidates == ()


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not framed STUN at all
    frame(b"\x80" + bytes(40)),  # an RTP-looking first frame
    frame(b"\x00\x01" + bytes(30)),  # STUN-looking, malformed
])
async def test_garbage_first_frame_is_closed_and_counted(tcp_endpoint: MediaEndpoint, first: bytes) -> None:
    assert tcp_endpoint.tcp is not None
    reader, writer = await raw_connection(("127.0.0.1", tcp_endpoint.tcp.port))
    writer.write(first)
    if first.startswith(b"GET"):
        writer.write(bytes(0x4745 - len(first) + 2))  # complete the "frame" its first bytes announce
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(tcp_endpoint, "tcp_closed_garbage") == 1
    await wait_until(lambda: tcp_counter(tcp_endpoint, "tcp_connections") == 0, what="connection forgotten")


async def test_binding_request_for_an_unknown_ufrag_is_closed(tcp_endpoint: MediaEndpoint) -> None:
    assert tcp_endpoint.tcp is not None
    tcp_endpoint.create_transport()
    request = build_binding_request(bytes(12), "nosuchufrag12345:peer", b"x" * 32, priority=1,
                                    tie_breaker=1, use_candidate=True)
    reader, writer = await raw_connection(("127.0.0.1", tcp_endpoint.tcp.port))
    writer.write(frame(request))
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(tcp_endpoint, "tcp_closed_garbage") == 1
    assert tcp_endpoint.counters()["stun_unknown_ufrag"] == 1


async def test_wrong_password_is_closed(tcp_endpoint: MediaEndpoint) -> None:
    assert tcp_endpoint.tcp is not None
    transport = tcp_endpoint.create_transport()
    request = build_binding_request(bytes(12), f"{transport.ice.local_ufrag}:peer", b"y" * 32, priority=1,
                                    tie_breaker=1, use_candidate=True)
    reader, writer = await raw_connection(("127.0.0.1", tcp_endpoint.tcp.port))
    writer.write(frame(request))
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(tcp_endpoint, "tcp_closed_garbage") == 1
    assert transport.remote_address is None


async def test_silent_connection_is_closed_after_the_first_frame_timeout(
    tcp_endpoint: MediaEndpoint, clock: SkewClock
) -> None:
    listener = tcp_endpoint.tcp
    assert listener is not None
    reader, writer = await raw_connection(("127.0.0.1", listener.port))
    await wait_until(lambda: len(listener.connections) == 1, what="accepted")
    writer.write(b"\x00")  # half a length: still no frame
    await asyncio.sleep(0.05)
    assert listener.tick(clock() + listener.first_frame_timeout - 0.5) == 0
    assert listener.tick(clock() + listener.first_frame_timeout + 0.1) == 1
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(tcp_endpoint, "tcp_closed_idle") == 1
    assert tcp_counter(tcp_endpoint, "tcp_connections") == 0


async def test_bound_connection_outlives_the_first_frame_timeout(
    tcp_endpoint: MediaEndpoint, make_tcp_peer: Any, clock: SkewClock
) -> None:
    listener = tcp_endpoint.tcp
    assert listener is not None
    rec = Recorder()
    transport = tcp_endpoint.create_transport(rec, rec.on_state)
    peer: TcpSoftPeer = await make_tcp_peer()
    await peer.connect(transport)
    assert listener.tick(clock() + listener.first_frame_timeout + 1) == 0
    assert transport.send_rtp(rtp(1))
    await wait_until(lambda: len(peer.rtp) == 1, what="still open")
    # Its transport closing closes the connection on the next tick.
    transport.close()
    assert listener.tick() == 1
    assert await asyncio.wait_for(peer.stream.lost, 5) is None  # type: ignore[union-attr]


async def test_connections_per_source_are_capped(endpoint_factory: Callable[..., Any]) -> None:
    ep: MediaEndpoint = await endpoint_factory(tcp_port=0, tcp_options={"max_connections_per_source": 2})
    assert ep.tcp is not None
    conns = [await raw_connection(("127.0.0.1", ep.tcp.port)) for _ in range(2)]
    await wait_until(lambda: len(ep.tcp.connections) == 2, what="two accepted")
    reader, writer = await raw_connection(("127.0.0.1", ep.tcp.port))
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(ep, "tcp_refused_source_cap") == 1
    # another source host (127.0.0.2 is loopback too) still gets in
    r2, w2 = await asyncio.open_connection("127.0.0.1", ep.tcp.port, local_addr=("127.0.0.2", 0))
    await wait_until(lambda: len(ep.tcp.connections) == 3, what="another source accepted")
    # and a freed slot is reusable
    conns[0][1].close()
    await wait_until(lambda: len(ep.tcp.connections) == 2, what="a slot freed")
    _, w3 = await raw_connection(("127.0.0.1", ep.tcp.port))
    await wait_until(lambda: len(ep.tcp.connections) == 3, what="slot reused")
    for _, w in [*conns, (r2, w2), (None, w3)]:
        w.close()


async def test_connections_in_total_are_capped(endpoint_factory: Callable[..., Any]) -> None:
    ep: MediaEndpoint = await endpoint_factory(tcp_port=0, tcp_options={"max_connections": 2})
    assert ep.tcp is not None
    conns = [await asyncio.open_connection("127.0.0.1", ep.tcp.port, local_addr=(f"127.0.0.{i + 2}", 0))
             for i in range(2)]
    await wait_until(lambda: len(ep.tcp.connections) == 2, what="two accepted")
    reader, writer = await asyncio.open_connection("127.0.0.1", ep.tcp.port, local_addr=("127.0.0.9", 0))
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(ep, "tcp_refused_connection_cap") == 1
    for _, w in conns:
        w.close()


async def test_source_filter_applies_to_tcp(endpoint_factory: Callable[..., Any]) -> None:
    ep: MediaEndpoint = await endpoint_factory(tcp_port=0, allowed_sources=["10.0.0.0/8"])
    assert ep.tcp is not None
    reader, writer = await raw_connection(("127.0.0.1", ep.tcp.port))
    assert await closed_by_server(reader)
    writer.close()
    assert tcp_counter(ep, "tcp_refused_source_not_allowed") == 1


async def test_a_reader_that_stops_reading_costs_dropped_media_not_memory(
    endpoint_factory: Callable[..., Any], make_tcp_peer: Any
) -> None:
    limit = 64 * 1024
    ep: MediaEndpoint = await endpoint_factory(tcp_port=0, send_buffer_limit=limit)
    transport = ep.create_transport()
    peer: TcpSoftPeer = await make_tcp_peer()
    await peer.connect(transport)
    assert peer.stream is not None and peer.stream.transport is not None
    peer.stream.transport.pause_reading()
    conn = next(iter(ep.tcp.connections))  # type: ignore[union-attr]
    assert isinstance(conn, TcpConnection)
    payload = bytes(1100)
    sent = offered = 0
    # Until the kernel's buffers on both ends and then asyncio's (the limit) are full, and
    # 200 more: bounded at 40 MB offered.
    while ep.counters()["send_buffer_full"] < 200 and offered < 36000:
        if transport.send_rtp(rtp(offered, payload=payload)):
            sent += 1
        offered += 1
        if offered % 100 == 0:
            await asyncio.sleep(0)
        assert conn.get_write_buffer_size() <= limit + 1200
    dropped = ep.counters()["send_buffer_full"]
    assert dropped == 200 and sent + dropped == offered
    # The reader resumes: what was queued arrives, whole frames only (SRTP authenticates each).
    peer.stream.transport.resume_reading()
    await wait_until(lambda: len(peer.rtp) == sent, timeout=10, what="queued media delivered")


TCP_ACCOUNTED = (*ACCOUNTED, "tcp_frame_too_short", "tcp_frame_too_long", "tcp_unknown_first_byte",
                 "tcp_stun_other_ufrag")


async def test_fuzzed_frames_on_a_bound_connection_never_raise_and_are_each_counted_once(
    tcp_endpoint: MediaEndpoint, make_tcp_peer: Any
) -> None:
    """Hostile frames, cut anywhere, from a peer that authenticated: each frame lands in one
    counter, nothing raises, the connection stays open (the framing parser's fuzz target)."""
    rec = Recorder()
    transport = tcp_endpoint.create_transport(rec, rec.on_state)
    peer: TcpSoftPeer = await make_tcp_peer()
    await peer.connect(transport)
    conn = next(iter(tcp_endpoint.tcp.connections))  # type: ignore[union-attr]

    def accounted() -> int:
        totals = tcp_endpoint.totals()
        return sum(totals.get(name, 0) for name in TCP_ACCOUNTED)

    first_bytes = st.sampled_from([0, 1, 3, 4, 20, 22, 23, 63, 64, 127, 128, 144, 191, 192, 255])
    frames = st.lists(st.tuples(first_bytes, st.binary(max_size=300)), min_size=1, max_size=8)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames=frames, cuts=st.lists(st.integers(min_value=0), max_size=6), big=st.booleans())
    def feed(frames: list[tuple[int, bytes]], cuts: list[int], big: bool) -> None:
        datagrams = [bytes([first]) + rest for first, rest in frames]
        if big:
            datagrams.append(b"\x80" + bytes(65534))  # a maximum-size frame: too long for media
        stream = b"".join(frame(d) for d in datagrams)
        points = sorted({c % (len(stream) + 1) for c in cuts})
        before = accounted()
        for a, b in zip([0, *points], [*points, len(stream)], strict=True):
            conn.data_received(stream[a:b])
        assert accounted() == before + len(datagrams)

    feed()
    counters = tcp_endpoint.counters()
    assert counters["tcp_internal_error"] == 0 and counters["internal_error"] == 0
    assert counters["tcp_frame_too_long"] > 0
    assert not conn.closed and conn.bound is transport
