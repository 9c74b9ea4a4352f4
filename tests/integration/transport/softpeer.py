"""A minimal WebRTC far side built from the project's own modules, over a real UDP socket
(or, TcpSoftPeer, an active ICE-TCP connection): a controlling ICE agent
(stun.build_binding_request), a DtlsEndpoint and an SrtpContext.

Unlike aiortc it exposes its SRTP keys and raw socket, so tests can replay, tamper,
move address or go silent at will.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from sfu.sdp import LocalTransportParams
from sfu.transport import stun
from sfu.transport.dtls import DtlsContext, DtlsEndpoint, DtlsRole, DtlsState
from sfu.transport.ice_lite import PWD_LENGTH, UFRAG_LENGTH, random_ice_string
from sfu.transport.srtp import SrtpContext
from sfu.transport.stun import Address
from sfu.transport.tcp_framing import FrameDecoder, frame
from sfu.transport.webrtc_transport import WebRtcTransport


class SoftPeer(asyncio.DatagramProtocol):
    """One peer connection's far side. `role` is the peer's DTLS role (the SFU takes the other)."""

    def __init__(self, context: DtlsContext, role: DtlsRole = DtlsRole.CLIENT) -> None:
        self.context = context
        self.role = role
        self.ufrag = random_ice_string(UFRAG_LENGTH)
        self.pwd = random_ice_string(PWD_LENGTH)
        self.sock: asyncio.DatagramTransport | None = None
        self.server: Address | None = None
        self.remote: LocalTransportParams | None = None
        self.dtls: DtlsEndpoint | None = None
        self.srtp: SrtpContext | None = None
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.stun_responses: list[bytes] = []
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(cls, context: DtlsContext, host: str = "127.0.0.1", role: DtlsRole = DtlsRole.CLIENT) -> SoftPeer:
        loop = asyncio.get_running_loop()
        peer = cls(context, role)
        await loop.create_datagram_endpoint(lambda: peer, local_addr=(host, 0))
        return peer

    @property
    def address(self) -> Address:
        assert self.sock is not None
        host, port = self.sock.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport  # type: ignore[assignment]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.sock is not None:
            self.sock.close()

    # -- wire ----------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None and self.server is not None
        self.sock.sendto(data, self.server)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        first = data[0]
        if first < 4:
            self.stun_responses.append(data)
            future = self._pending.pop(data[8:20], None)
            if future is not None and not future.done():
                future.set_result(data)
        elif 20 <= first <= 63 and self.dtls is not None:
            self.dtls.handle_datagram(data)
            self._arm()
        elif 128 <= first <= 191 and self.srtp is not None:
            if 192 <= data[1] <= 223:
                buf = self.srtp.unprotect_rtcp(data)
                if buf is not None:
                    self.rtcp.append(buf)
            else:
                buf = self.srtp.unprotect_rtp(data)
                if buf is not None:
                    self.rtp.append(buf)

    # -- ICE -----------------------------------------------------------------------

    def binding_request(self, use_candidate: bool = True) -> tuple[bytes, bytes]:
        assert self.remote is not None
        txid = os.urandom(12)
        request = stun.build_binding_request(
            txid,
            f"{self.remote.ice_ufrag}:{self.ufrag}",
            self.remote.ice_pwd.encode(),
            priority=0x6E0001FF,
            tie_breaker=0x1122334455667788,
            use_candidate=use_candidate,
        )
        return txid, request

    async def check(self, use_candidate: bool = True, timeout: float = 2.0) -> tuple[bytes, Address] | None:
        """Send one connectivity check; the verified success response, or None."""
        txid, request = self.binding_request(use_candidate)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[txid] = future
        self.send_raw(request)
        try:
            response = await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(txid, None)
        assert self.remote is not None
        return stun.parse_binding_success(response, self.remote.ice_pwd.encode())

    # -- DTLS/SRTP -----------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dtls = self.dtls
        at = dtls.next_timeout() if dtls is not None else None
        if at is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.dtls is not None:
            self.dtls.handle_timeout()
            self._arm()

    def _on_dtls_state(self, dtls: DtlsEndpoint) -> None:
        if dtls.state == DtlsState.CONNECTED and dtls.srtp_keys is not None:
            self.srtp = SrtpContext.from_keys(dtls.srtp_keys)

    async def connect(self, transport: WebRtcTransport, timeout: float = 5.0, candidate: int = 0) -> None:
        """Signal with `transport` (as an SDP exchange would), nominate the SFU's
        `candidate`-th host candidate, run DTLS."""
        self.remote = transport.local_params()
        self.server = self.remote.candidates[candidate]
        sfu_role = "server" if self.role == DtlsRole.CLIENT else "client"
        fingerprint = ("sha-256", self.context.fingerprint)
        transport.set_remote(self.ufrag, self.pwd, [fingerprint], sfu_role)
        loop = asyncio.get_running_loop()
        self.dtls = DtlsEndpoint(
            self.context,
            self.role,
            self.send_raw,
            [(self.remote.fingerprint.algorithm, self.remote.fingerprint.value)],
            clock=loop.time,
            on_state=self._on_dtls_state,
        )
        assert await self.check(use_candidate=True) is not None
        self.dtls.start()
        self._arm()
        deadline = loop.time() + timeout
        while self.srtp is None or not transport.connected:
            if loop.time() > deadline:
                raise TimeoutError(f"SoftPeer not connected: {self.dtls!r}, {transport!r}")
            await asyncio.sleep(0.01)

    def protect_rtp(self, packet: bytes) -> bytes:
        assert self.srtp is not None
        return self.srtp.protect_rtp(packet)

    def protect_rtcp(self, packet: bytes) -> bytes:
        assert self.srtp is not None
        return self.srtp.protect_rtcp(packet)


class _Framed(asyncio.Protocol):
    """The client end of an ICE-TCP connection: RFC 4571 frames in, datagrams to the peer."""

    def __init__(self, peer: TcpSoftPeer) -> None:
        self.peer = peer
        self.decoder = FrameDecoder(self._frame)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)

    def _frame(self, frame: bytes) -> None:
        if frame:
            self.peer.datagram_received(frame, ("", 0))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class TcpSoftPeer(SoftPeer):
    """SoftPeer over an active ICE-TCP connection (RFC 6544) to the SFU's passive TCP
    candidate: every datagram framed with its 2-byte length (RFC 4571)."""

    def __init__(self, context: DtlsContext, role: DtlsRole = DtlsRole.CLIENT) -> None:
        super().__init__(context, role)
        self.stream: _Framed | None = None

    @classmethod
    async def open(cls, context: DtlsContext, host: str = "127.0.0.1", role: DtlsRole = DtlsRole.CLIENT) -> SoftPeer:
        return cls(context, role)

    async def dial(self, server: Address) -> None:
        loop = asyncio.get_running_loop()
        _, self.stream = await loop.create_connection(lambda: _Framed(self), server[0], server[1])

    @property
    def address(self) -> Address:
        assert self.stream is not None and self.stream.transport is not None
        host, port = self.stream.transport.get_extra_info("sockname")[:2]
        return host, port

    def send_raw(self, data: bytes) -> None:
        self.write(frame(data))

    def write(self, data: bytes) -> None:
        """Bytes as they are, unframed (tests build odd framings with this)."""
        assert self.stream is not None and self.stream.transport is not None
        self.stream.transport.write(data)

    async def connect(self, transport: WebRtcTransport, timeout: float = 5.0, candidate: int = 0) -> None:
        """As SoftPeer.connect, over a TCP connection to the SFU's `candidate`-th TCP candidate."""
        params = transport.local_params()
        if self.stream is None:
            await self.dial(params.tcp_candidates[candidate])
        await super().connect(transport, timeout, 0)

    def close(self) -> None:
        super().close()
        if self.stream is not None and self.stream.transport is not None:
            self.stream.transport.close()
