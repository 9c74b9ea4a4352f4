"""Passive ICE-TCP (RFC 6544) on one TCP port per worker, RFC 4571 framing.

`TcpMediaListener` accepts the browser's active TCP connections on the worker's TCP port
(one listening socket per listen ip) beside the UDP `MediaEndpoint`, and feeds every frame
into the same demux the UDP datagrams take:

- the first frame of a connection must be a STUN Binding request whose USERNAME names a
  local ufrag and that passes MESSAGE-INTEGRITY (`MediaEndpoint._receive_stun`, the UDP
  path's own routing, limiter and answer). It binds the connection to that transport; a
  first frame that is anything else closes the connection (counted `tcp_closed_garbage`),
  and so does silence for `first_frame_timeout` seconds (`tcp_closed_idle`);
- after that, per frame: a size check, one table lookup on the first byte (RFC 7983) and a
  direct call of the bound transport (SRTP unprotect, DTLS), or the STUN path again for
  consent checks (which must name the same ufrag);
- the connection object is the transport's "socket" when ICE selects the TCP path: it has
  the `sendto`/`get_write_buffer_size` that `MediaEndpoint.send_on` uses, so the transport's
  sends leave framed on this connection, and a full write buffer drops (counted
  `send_buffer_full`) instead of queueing without bound.

The transport's selected address is the connection's remote (host, port), as for UDP. A UDP
datagram from that same host and port number would be routed to that transport too; it
then meets SRTP authentication or the DTLS fingerprint like any datagram.

Connections are capped in total and per source host (refusals counted); bytes held per
connection are at most one unfinished frame (tcp_framing). Per chunk read: the decoder;
per frame: the demux. No task, coroutine or timer per connection or packet: one
`call_later` tick closes silent and orphaned connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from sfu.transport import stun
from sfu.transport.stun import Address
from sfu.transport.tcp_framing import FrameDecoder
from sfu.transport.udp import _KIND, KIND_DTLS, KIND_RTP, KIND_STUN, MIN_DATAGRAM

if TYPE_CHECKING:
    from sfu.transport.udp import MediaEndpoint
    from sfu.transport.webrtc_transport import WebRtcTransport

__all__ = [
    "DEFAULT_FIRST_FRAME_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_SOURCE",
    "TCP_DROP_NAMES",
    "TcpConnection",
    "TcpMediaListener",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS: Final = 1024
# A browser opens one connection per local interface and peer connection (two a participant);
# clinics put many people behind one NAT address.
DEFAULT_MAX_CONNECTIONS_PER_SOURCE: Final = 32
DEFAULT_FIRST_FRAME_TIMEOUT: Final = 5.0

# Listener drops/closures by reason: indexes into TcpMediaListener.drops.
TCP_REFUSED_TOTAL: Final = 0
TCP_REFUSED_SOURCE: Final = 1
TCP_REFUSED_NOT_ALLOWED: Final = 2
TCP_CLOSED_GARBAGE: Final = 3
TCP_CLOSED_IDLE: Final = 4
TCP_FRAME_TOO_SHORT: Final = 5
TCP_FRAME_TOO_LONG: Final = 6
TCP_UNKNOWN_FIRST_BYTE: Final = 7
TCP_STUN_OTHER_UFRAG: Final = 8
TCP_INTERNAL_ERROR: Final = 9
TCP_DROP_NAMES: Final[tuple[str, ...]] = (
    "tcp_refused_connection_cap",
    "tcp_refused_source_cap",
    "tcp_refused_source_not_allowed",
    "tcp_closed_garbage",
    "tcp_closed_idle",
    "tcp_frame_too_short",
    "tcp_frame_too_long",
    "tcp_unknown_first_byte",
    "tcp_stun_other_ufrag",
    "tcp_internal_error",
)

_LOG_EVERY: Final = 1000
_MIN_STUN: Final = 20  # a STUN header


class TcpConnection(asyncio.Protocol):
    """One accepted ICE-TCP connection; bound to a WebRtcTransport by its first frame."""

    __slots__ = ("listener", "peer", "bound", "deadline", "closed", "_tr", "_decoder", "_seen", "_quiet_since")

    def __init__(self, listener: TcpMediaListener) -> None:
        self.listener = listener
        self.peer: Address = ("", 0)
        self.bound: WebRtcTransport | None = None
        self.deadline = 0.0  # unbound: closed at this time
        self.closed = False
        self._tr: asyncio.Transport | None = None
        self._decoder = FrameDecoder(self._on_frame)
        self._seen = 0  # decoder.frames at the last tick
        self._quiet_since = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tr = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0].partition("%")[0], peer[1]) if peer else ("", 0)
        if not self.listener._admit(self):
            self.closed = True
            transport.abort()  # type: ignore[attr-defined]
            return
        raw = transport.get_extra_info("socket")
        if raw is not None:
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except Exception:  # OSError; a loop's pseudo-socket may not offer it
                pass

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self._decoder.feed(data)
        except Exception:
            self.listener._internal_error()
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._tr = None
        self.listener._forget(self)

    # -- the transport's socket (MediaEndpoint.send_on) -----------------------------

    def sendto(self, data: bytes, addr: Any = None) -> None:
        """Write one datagram, framed. Raises ConnectionError once closed (send_on counts it)."""
        tr = self._tr
        if tr is None or self.closed:
            raise ConnectionError("ICE-TCP connection closed")
        tr.write(len(data).to_bytes(2, "big") + data)

    def get_write_buffer_size(self) -> int:
        tr = self._tr
        return 0 if tr is None else tr.get_write_buffer_size()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tr = self._tr
        return default if tr is None else tr.get_extra_info(name, default)

    def close(self) -> None:
        """Close now (unsent data is discarded: a media path has no use for it late)."""
        if not self.closed:
            self.closed = True
            tr = self._tr
            if tr is not None:
                tr.abort()

    # -- frames --------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        if self.closed:
            return
        listener = self.listener
        n = len(frame)
        transport = self.bound
        if transport is None:
            self._bind(frame)
            return
        if n < MIN_DATAGRAM:
            listener.drops[TCP_FRAME_TOO_SHORT] += 1
            return
        if n > listener.max_datagram:
            listener.drops[TCP_FRAME_TOO_LONG] += 1
            return
        kind = _KIND[frame[0]]
        try:
            if kind == KIND_RTP:
                transport._receive_srtp(frame)
            elif kind == KIND_STUN:
                ufrag = stun.username_ufrag(frame)
                if ufrag is not None and ufrag != transport.ice.local_ufrag:
                    listener.drops[TCP_STUN_OTHER_UFRAG] += 1
                    return
                listener.endpoint._receive_stun(frame, self.peer, self)
            elif kind == KIND_DTLS:
                transport._receive_dtls(frame)
            else:
                listener.drops[TCP_UNKNOWN_FIRST_BYTE] += 1
        except Exception:
            listener._internal_error()

    def _bind(self, frame: bytes) -> None:
        """The first frame: a valid Binding request for a known ufrag, or the connection closes."""
        listener = self.listener
        transport = None
        if _MIN_STUN <= len(frame) <= listener.max_datagram and _KIND[frame[0]] == KIND_STUN:
            try:
                transport = listener.endpoint._receive_stun(frame, self.peer, self)
            except Exception:
                listener._internal_error()
        if transport is None or transport.closed:
            listener.drops[TCP_CLOSED_GARBAGE] += 1
            self.close()
            return
        self.bound = transport


class TcpMediaListener:
    """The worker's ICE-TCP listening sockets (same listen ips as `endpoint`) and connections.

    `port` 0 picks a free port (the first listen ip's, reused for the others). The endpoint's
    source filter, STUN failure limiter, clock and tick interval apply here too.
    """

    def __init__(
        self,
        endpoint: MediaEndpoint,
        port: int = 0,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connections_per_source: int = DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        first_frame_timeout: float = DEFAULT_FIRST_FRAME_TIMEOUT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        if max_connections < 1 or max_connections_per_source < 1:
            raise ValueError("connection caps must be at least 1")
        if first_frame_timeout <= 0:
            raise ValueError("first_frame_timeout must be positive")
        self.endpoint = endpoint
        self.port = port
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.first_frame_timeout = first_frame_timeout
        self.clock = clock if clock is not None else endpoint.clock
        self.max_datagram: int = endpoint._max_datagram
        self.drops: list[int] = [0] * len(TCP_DROP_NAMES)
        self.accepted = 0
        self.connections: set[TcpConnection] = set()
        self._per_source: dict[str, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tick_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self) -> None:
        """Listen on every listen ip of the endpoint. Raises OSError if a bind fails."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        port = self.port
        try:
            for ip in self.endpoint.listen_ips:
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                server = await loop.create_server(
                    lambda: TcpConnection(self), host=ip, port=port, family=family,
                    reuse_address=True, backlog=128,
                )
                self._servers.append(server)
                if port == 0:
                    port = server.sockets[0].getsockname()[1]
        except BaseException:
            self.close()
            raise
        self.port = port
        self._tick_handle = loop.call_later(self.endpoint.tick_interval, self._tick)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for server in self._servers:
            server.close()
        self._servers.clear()
        for conn in list(self.connections):
            conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- connections ---------------------------------------------------------------

    def _admit(self, conn: TcpConnection) -> bool:
        host = conn.peer[0]
        source_filter = self.endpoint.source_filter
        if self._closed:
            return False
        if source_filter is not None and not source_filter.allowed(host):
            self.drops[TCP_REFUSED_NOT_ALLOWED] += 1
            return False
        if len(self.connections) >= self.max_connections:
            self.drops[TCP_REFUSED_TOTAL] += 1
            return False
        count = self._per_source.get(host, 0)
        if count >= self.max_connections_per_source:
            self.drops[TCP_REFUSED_SOURCE] += 1
            return False
        self._per_source[host] = count + 1
        self.connections.add(conn)
        self.accepted += 1
        conn.deadline = self.clock() + self.first_frame_timeout
        return True

    def _forget(self, conn: TcpConnection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        host = conn.peer[0]
        count = self._per_source.get(host, 0) - 1
        if count > 0:
            self._per_source[host] = count
        else:
            self._per_source.pop(host, None)

    def _internal_error(self) -> None:
        drops = self.drops
        count = drops[TCP_INTERNAL_ERROR]
        drops[TCP_INTERNAL_ERROR] = count + 1
        if count % _LOG_EVERY == 0:
            log.exception("ICE-TCP: error handling a frame (%d so far)", count + 1)

    # -- housekeeping --------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Close connections that sent no first frame in time, whose transport is gone, or
        that were silent for the transport's consent timeout; returns how many."""
        if now is None:
            now = self.clock()
        closing: list[tuple[TcpConnection, bool]] = []
        for conn in self.connections:
            transport = conn.bound
            if transport is None:
                if now >= conn.deadline:
                    closing.append((conn, True))
                continue
            if transport.closed:
                closing.append((conn, False))
                continue
            frames = conn._decoder.frames
            if frames != conn._seen:
                conn._seen = frames
                conn._quiet_since = now
            elif now - conn._quiet_since >= transport.ice.consent_timeout:
                closing.append((conn, False))
        for conn, idle in closing:
            if idle:
                self.drops[TCP_CLOSED_IDLE] += 1
            conn.close()
            self._forget(conn)  # connection_lost follows later; forget it now (idempotent)
        return len(closing)

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self.tick()
        except Exception:
            log.exception("ICE-TCP: housekeeping failed")
        if not self._closed and self._loop is not None:
            self._tick_handle = self._loop.call_later(self.endpoint.tick_interval, self._tick)

    def counters(self) -> dict[str, int]:
        result = dict(zip(TCP_DROP_NAMES, self.drops, strict=True))
        result["tcp_connections_accepted"] = self.accepted
        result["tcp_connections"] = len(self.connections)
        return result

