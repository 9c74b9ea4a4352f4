"""Fixtures for the transport integration tests: a started MediaEndpoint on 127.0.0.1,
aiortc peers restricted to loopback, and a recording packet handler."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu.transport.certificate import DtlsCertificate
from sfu.transport.dtls import DtlsContext
from sfu.transport.udp import MediaEndpoint
from sfu.transport.webrtc_transport import WebRtcTransport

from .softpeer import SoftPeer

_SSRC = struct.Struct("!I")

SFU_CONTEXT = DtlsContext(DtlsCertificate.generate())
PEER_CONTEXT = DtlsContext(DtlsCertificate.generate())
LOOPBACK = ["127.0.0.0/8", "::1/128"]


class Recorder:
    """TransportHandler that keeps decrypted packets and state changes."""

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.states: list[tuple[str, str | None]] = []

    def on_rtp(self, buf: bytes) -> None:
        self.rtp.append(buf)

    def on_rtcp(self, buf: bytes) -> None:
        self.rtcp.append(buf)

    def on_state(self, transport: WebRtcTransport, state: str, reason: str | None) -> None:
        self.states.append((state, reason))

    def rtp_ssrcs(self) -> set[int]:
        return {_SSRC.unpack_from(p, 8)[0] for p in self.rtp}

    def rtcp_types(self) -> set[int]:
        """Packet types found walking every received compound packet."""
        types: set[int] = set()
        for buf in self.rtcp:
            off = 0
            while off + 4 <= len(buf):
                types.add(buf[off + 1])
                off += 4 * (struct.unpack_from("!H", buf, off + 2)[0] + 1)
        return types


class SkewClock:
    """time.monotonic plus an offset the test advances (ICE consent without sleeping)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll `predicate` while the loop runs I/O; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice gathers host candidates from non-loopback interfaces only.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture
def clock() -> SkewClock:
    return SkewClock()


async def settle() -> None:
    """Let closed asyncio transports run their connection_lost callbacks."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
async def endpoint_factory(clock: SkewClock) -> AsyncIterator[Callable[..., Any]]:
    made: list[MediaEndpoint] = []

    async def make(**kwargs: Any) -> MediaEndpoint:
        kwargs.setdefault("allowed_sources", LOOPBACK)
        kwargs.setdefault("dtls_context", SFU_CONTEXT)
        kwargs.setdefault("clock", clock)
        cls = kwargs.pop("cls", MediaEndpoint)
        ep = cls(kwargs.pop("listen_ips", ["127.0.0.1"]), 0, **kwargs)
        made.append(ep)
        await ep.start()
        return ep

    yield make
    for ep in made:
        ep.close()
    await settle()


@pytest.fixture
async def endpoint(endpoint_factory: Callable[..., Any]) -> MediaEndpoint:
    ep: MediaEndpoint = await endpoint_factory()
    return ep


@pytest.fixture
async def make_pc() -> AsyncIterator[Callable[[], RTCPeerConnection]]:
    pcs: list[RTCPeerConnection] = []

    def make() -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        return pc

    yield make
    for pc in pcs:
        await pc.close()


@pytest.fixture
async def make_peer() -> AsyncIterator[Callable[..., Any]]:
    peers: list[SoftPeer] = []

    async def make(**kwargs: Any) -> SoftPeer:
        peer = await SoftPeer.open(PEER_CONTEXT, **kwargs)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()
    await settle()
