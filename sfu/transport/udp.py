"""The worker's UDP media endpoint: one port, every transport, demux by first byte.

`MediaEndpoint` is the asyncio DatagramProtocol of the worker (one socket per listen ip,
all on the same port). `datagram_received` is synchronous and does, per datagram: a size
check, one table lookup on the first byte (RFC 7983: 0-3 STUN, 20-63 DTLS, 128-191
RTP/RTCP, anything else dropped), then

- STUN: a source host that sent too many failed requests is dropped first (one dict
  lookup, ice_lite.FailureLimiter); the IceLiteRegistry drops an unknown ufrag before
  parsing, routes by the ufrag in USERNAME and answers (an unsigned error only when no
  bigger than the request); a nominated check (or one from a new address) points the
  transport at that address and socket;
- DTLS, RTP/RTCP: one dict lookup of the source address in the registry's by_address
  table, then the transport (DTLS endpoint, or one SRTP unprotect and a handler call).

Drops are counted in a list of ints indexed by reason (`DROP_NAMES`); `counters()` makes
the dict the worker exports periodically. Housekeeping (ICE consent expiry, RFC 7675) runs
on one `call_later` tick; DTLS retransmission timers are per transport and exist only
during a handshake. Nothing here runs per packet besides the demux itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from sfu.transport import ice_lite
from sfu.transport.certificate import worker_certificate
from sfu.transport.dtls import DEFAULT_HANDSHAKE_TIMEOUT, DtlsContext
from sfu.transport.ice_lite import CONSENT_TIMEOUT, FailureLimiter, IceLiteRegistry
from sfu.transport.srtp import DEFAULT_WINDOW_SIZE
from sfu.transport.stun import Address
from sfu.transport.webrtc_transport import (
    REASON_ENDPOINT_CLOSED,
    StateCallback,
    TransportHandler,
    WebRtcTransport,
)

__all__ = [
    "DROP_NAMES",
    "MediaEndpoint",
    "SourceFilter",
    "classify",
]

log = logging.getLogger(__name__)

# First-byte classes (RFC 7983).
KIND_OTHER: Final = 0
KIND_STUN: Final = 1
KIND_DTLS: Final = 2
KIND_RTP: Final = 3
_KIND: Final = bytes(
    KIND_STUN if b <= 3 else KIND_DTLS if 20 <= b <= 63 else KIND_RTP if 128 <= b <= 191 else KIND_OTHER
    for b in range(256)
)

# Endpoint drop reasons: indexes into MediaEndpoint.drops, names for export.
DROP_TOO_SHORT: Final = 0
DROP_TOO_LONG: Final = 1
DROP_UNKNOWN_FIRST_BYTE: Final = 2
DROP_SOURCE_NOT_ALLOWED: Final = 3
DROP_UNKNOWN_ADDRESS: Final = 4
DROP_SEND_BUFFER_FULL: Final = 5
DROP_SEND_ERROR: Final = 6
DROP_NO_SOCKET: Final = 7
DROP_INTERNAL_ERROR: Final = 8
DROP_STUN_RATE_LIMITED: Final = 9
DROP_NAMES: Final[tuple[str, ...]] = (
    "too_short",
    "too_long",
    "unknown_first_byte",
    "source_not_allowed",
    "unknown_address",
    "send_buffer_full",
    "send_error",
    "send_no_socket",
    "internal_error",
    "stun_rate_limited",
)

# STUN outcomes, named as exported (ice_lite.EVENT_NAMES; normal events get a stun_ prefix).
STUN_EVENT_NAMES: Final[tuple[str, ...]] = tuple(
    name if i >= ice_lite.DROP_FIRST else "stun_" + name
    for i, name in enumerate(ice_lite.EVENT_NAMES)
)

MIN_DATAGRAM: Final = 12  # an RTP header; STUN needs 20, DTLS 13, SRTCP more
MAX_DATAGRAM: Final = 8192  # WebRTC keeps datagrams under the path MTU
DEFAULT_TICK_INTERVAL: Final = 1.0
DEFAULT_SEND_BUFFER_LIMIT: Final = 1 << 20  # bytes queued in asyncio before we drop
DEFAULT_SOCKET_BUFFER: Final = 1 << 22  # SO_RCVBUF/SO_SNDBUF asked for (kernel caps it)
_SOURCE_CACHE_SIZE: Final = 4096
_LOG_EVERY: Final = 1000


def classify(first_byte: int) -> int:
    """KIND_* of a datagram by its first byte (RFC 7983)."""
    return _KIND[first_byte]


def _normalize_ip(host: str) -> str:
    return host.partition("%")[0]


class SourceFilter:
    """Allowed source networks, tested with a bounded host -> verdict cache.

    The cache makes the common case one dict lookup; `ipaddress` parsing happens once
    per new source host. IPv4-mapped IPv6 sources are judged by their IPv4 address.
    """

    __slots__ = ("networks", "_cache")

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        if not self.networks:
            raise ValueError("a source filter needs at least one network")
        self._cache: dict[str, bool] = {}

    def allowed(self, host: str) -> bool:
        verdict = self._cache.get(host)
        if verdict is None:
            verdict = self._judge(host)
            cache = self._cache
            if len(cache) >= _SOURCE_CACHE_SIZE:
                cache.clear()
            cache[host] = verdict
        return verdict

    def _judge(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(_normalize_ip(host))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == n.version and ip in n for n in self.networks)


class _ExtraSocket(asyncio.DatagramProtocol):
    """Protocol of the second and later listen sockets: hands datagrams to the endpoint
    with the socket they came in on (STUN answers and media leave by that socket)."""

    __slots__ = ("endpoint", "sock")

    def __init__(self, endpoint: MediaEndpoint) -> None:
        self.endpoint = endpoint
        self.sock: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.endpoint.datagram_received(data, addr, self.sock)

    def error_received(self, exc: Exception) -> None:
        self.endpoint.error_received(exc)


class MediaEndpoint(asyncio.DatagramProtocol):
    """The worker's media socket(s) and the table of its WebRTC transports.

    `listen_ips` are bound on one `port` (0: pick a free one for the first and reuse it).
    Candidates in SDP are `announced_ip` when set, else the listen ips (a wildcard listen
    ip needs an announced ip). `allowed_sources`, when given, is a list of networks
    ("127.0.0.0/8", "::1/128"): datagrams from other hosts are dropped unanswered.
    `clock` is the time source of ICE consent and DTLS timers (default time.monotonic,
    the clock of asyncio's loop). `stun_limiter` bounds the failed STUN requests one source
    host may make us handle (ice_lite.FailureLimiter; the defaults unless given).
    `tcp_port`, when not None, also listens for passive ICE-TCP on that TCP port (0: a free
    one) on the same ips (sfu.transport.tcp; `tcp_options` are TcpMediaListener's caps), and
    the SDP gets TCP candidates beside the UDP ones.
    """

    def __init__(
        self,
        listen_ips: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        *,
        announced_ip: str | None = None,
        allowed_sources: Iterable[str] | None = None,
        dtls_context: DtlsContext | None = None,
        consent_timeout: float = CONSENT_TIMEOUT,
        dtls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        srtp_window: int = DEFAULT_WINDOW_SIZE,
        tick_interval: float = DEFAULT_TICK_INTERVAL,
        max_datagram: int = MAX_DATAGRAM,
        send_buffer_limit: int = DEFAULT_SEND_BUFFER_LIMIT,
        socket_buffer: int | None = DEFAULT_SOCKET_BUFFER,
        clock: Callable[[], float] = time.monotonic,
        stun_limiter: FailureLimiter | None = None,
        tcp_port: int | None = None,
        tcp_options: dict[str, Any] | None = None,
    ) -> None:
        ips = [_normalize_ip(ip) for ip in listen_ips]
        if not ips:
            raise ValueError("at least one listen ip is needed")
        parsed = [ipaddress.ip_address(ip) for ip in ips]  # ValueError if not an IP
        if announced_ip:
            ipaddress.ip_address(announced_ip)
        elif any(ip.is_unspecified for ip in parsed):
            raise ValueError("listening on a wildcard address needs an announced_ip")
        if not 0 <= port <= 0xFFFF or (tcp_port is not None and not 0 <= tcp_port <= 0xFFFF):
            raise ValueError(f"port out of range: {port}, tcp {tcp_port}")
        if consent_timeout <= 0 or tick_interval <= 0 or dtls_handshake_timeout <= 0:
            raise ValueError("timeouts and the tick interval must be positive")
        if not MIN_DATAGRAM <= max_datagram <= 65535:
            raise ValueError(f"max_datagram must be in [{MIN_DATAGRAM}, 65535]")
        self.listen_ips: tuple[str, ...] = tuple(ips)
        self.announced_ip = announced_ip or None
        self.port = port
        self.consent_timeout = consent_timeout
        self.dtls_handshake_timeout = dtls_handshake_timeout
        self.srtp_window = srtp_window
        self.tick_interval = tick_interval
        self.clock = clock
        self.registry: IceLiteRegistry[WebRtcTransport] = IceLiteRegistry()
        self.source_filter = SourceFilter(allowed_sources) if allowed_sources is not None else None
        self.stun_limiter = stun_limiter if stun_limiter is not None else FailureLimiter()
        self.drops: list[int] = [0] * len(DROP_NAMES)
        self.stun_events: list[int] = [0] * len(STUN_EVENT_NAMES)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dtls_context = dtls_context
        self._by_address = self.registry.by_address
        self._max_datagram = max_datagram
        self._send_limit = send_buffer_limit
        self._socket_buffer = socket_buffer
        self._sock: Any = None  # primary socket (asyncio DatagramTransport or a test double)
        self._sockets: list[Any] = []
        self._transports: set[WebRtcTransport] = set()
        self._retired: dict[str, int] = {}
        self._tick_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._tcp_port = tcp_port
        self._tcp_options = tcp_options or {}
        self.tcp: Any = None  # sfu.transport.tcp.TcpMediaListener once started

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Bind the sockets and start housekeeping. Raises OSError if a bind fails."""
        loop = asyncio.get_running_loop()
        self.loop = loop
        port = self.port
        try:
            for index, ip in enumerate(self.listen_ips):
                family = socket.AF_INET6 if ":" in ip else socket.AF_INET
                protocol: asyncio.DatagramProtocol = self if index == 0 else _ExtraSocket(self)
                sock, _ = await loop.create_datagram_endpoint(
                    lambda p=protocol: p, local_addr=(ip, port), family=family  # type: ignore[misc]
                )
                if index > 0:
                    self._sockets.append(sock)
                if port == 0:
                    port = sock.get_extra_info("sockname")[1]
                self._tune(sock)
            self.port = port
            if self._tcp_port is not None:
                from sfu.transport.tcp import TcpMediaListener

                self.tcp = TcpMediaListener(self, self._tcp_port, **self._tcp_options)
                await self.tcp.start()
        except BaseException:
            self.close()
            raise
        self._tick_handle = loop.call_later(self.tick_interval, self._tick)

    def _tune(self, sock: asyncio.DatagramTransport) -> None:
        size = self._socket_buffer
        raw = sock.get_extra_info("socket")
        if size is None or raw is None:
            return
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                raw.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The primary socket (first listen ip); a test may pass a double with sendto()
        and get_write_buffer_size()."""
        self._sock = transport
        if transport not in self._sockets:
            self._sockets.insert(0, transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable from a peer that left): consent expiry handles it.
        pass

    def close(self) -> None:
        """Close every transport (reason endpoint_closed), stop timers, close sockets."""
        if self._closed:
            return
        self._closed = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for transport in list(self._transports):
            transport.close(REASON_ENDPOINT_CLOSED)
        if self.tcp is not None:
            self.tcp.close()
        for sock in self._sockets:
            try:
                sock.close()
            except Exception:
                pass
        self._sockets.clear()
        self._sock = None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- transports ----------------------------------------------------------------

    @property
    def dtls_context(self) -> DtlsContext:
        """The worker's DTLS context (certificate created on first use)."""
        ctx = self._dtls_context
        if ctx is None:
            ctx = self._dtls_context = DtlsContext(worker_certificate())
        return ctx

    @property
    def fingerprint(self) -> str:
        """sha-256 fingerprint of the worker certificate, for SDP."""
        return self.dtls_context.fingerprint

    @property
    def candidates(self) -> tuple[tuple[str, int], ...]:
        """(ip, port) host candidates for SDP."""
        port = self.port
        if self.announced_ip is not None:
            return ((self.announced_ip, port),)
        return tuple((ip, port) for ip in self.listen_ips)

    @property
    def tcp_candidates(self) -> tuple[tuple[str, int], ...]:
        """(ip, port) passive ICE-TCP candidates for SDP (none without a TCP listener)."""
        tcp = self.tcp
        if tcp is None or tcp.closed:
            return ()
        if self.announced_ip is not None:
            return ((self.announced_ip, tcp.port),)
        return tuple((ip, tcp.port) for ip in self.listen_ips)

    @property
    def transports(self) -> frozenset[WebRtcTransport]:
        return frozenset(self._transports)

    def create_transport(
        self,
        handler: TransportHandler | None = None,
        on_state: StateCallback | None = None,
        *,
        consent_timeout: float | None = None,
    ) -> WebRtcTransport:
        """A new transport with fresh ICE credentials, registered for routing."""
        if self._closed:
            raise ValueError("endpoint is closed")
        timeout = self.consent_timeout if consent_timeout is None else consent_timeout
        ice = self.registry.new_ice(self.clock(), timeout)
        transport = WebRtcTransport(self, ice, handler, on_state, srtp_window=self.srtp_window)
        self.registry.add(ice, transport)
        self._transports.add(transport)
        return transport

    def _release(self, transport: WebRtcTransport) -> None:
        """Called by a transport that fails or closes: forget it, keep its counts."""
        self.registry.remove(transport.ice)
        if transport in self._transports:
            self._transports.discard(transport)
            retired = self._retired
            for name, value in transport.counters().items():
                retired[name] = retired.get(name, 0) + value

    # -- packet path ---------------------------------------------------------------

    def datagram_received(  # type: ignore[override]
        self, data: bytes, addr: tuple[Any, ...], sock: Any = None
    ) -> None:
        """Demux one datagram. Never raises; every drop is counted by reason."""
        n = len(data)
        if n < MIN_DATAGRAM:
            self.drops[DROP_TOO_SHORT] += 1
            return
        if n > self._max_datagram:
            self.drops[DROP_TOO_LONG] += 1
            return
        if len(addr) != 2:
            addr = (addr[0], addr[1])  # IPv6: (host, port, flowinfo, scope_id)
        kind = _KIND[data[0]]
        try:
            if kind == KIND_RTP:
                transport = self._by_address.get(addr)  # type: ignore[arg-type]
                if transport is not None:
                    transport._receive_srtp(data)
                    return
            elif kind == KIND_STUN:
                self._receive_stun(data, addr, self._sock if sock is None else sock)  # type: ignore[arg-type]
                return
            elif kind == KIND_DTLS:
                transport = self._by_address.get(addr)  # type: ignore[arg-type]
                if transport is not None:
                    transport._receive_dtls(data)
                    return
            else:
                self.drops[DROP_UNKNOWN_FIRST_BYTE] += 1
                return
            source_filter = self.source_filter
            if source_filter is not None and not source_filter.allowed(addr[0]):
                self.drops[DROP_SOURCE_NOT_ALLOWED] += 1
            else:
                self.drops[DROP_UNKNOWN_ADDRESS] += 1
        except Exception:
            self._internal_error()

    def _receive_stun(self, data: bytes, addr: Address, sock: Any) -> WebRtcTransport | None:
        """Answer one STUN datagram (UDP, or a frame of an ICE-TCP connection `sock`);
        returns the transport when it was a valid check for it, else None."""
        source_filter = self.source_filter
        if source_filter is not None and not source_filter.allowed(addr[0]):
            self.drops[DROP_SOURCE_NOT_ALLOWED] += 1
            return None
        now = self.clock()
        limiter = self.stun_limiter
        host = addr[0]
        if limiter.limited(host, now):  # before any parsing or HMAC
            self.drops[DROP_STUN_RATE_LIMITED] += 1
            return None
        transport, response, event = self.registry.handle_stun(data, addr, now)
        self.stun_events[event] += 1
        if event >= ice_lite.DROP_FIRST and event != ice_lite.DROP_UNKNOWN_UFRAG:
            # it cost a parse (and maybe an HMAC); an unknown ufrag cost one lookup
            limiter.charge(host, now)
        if response is not None:
            self.send_on(sock, response, addr)
        if transport is not None and (
            event == ice_lite.EVENT_SELECTED or event == ice_lite.EVENT_ADDRESS_CHANGED
            or (event == ice_lite.EVENT_CHECK and transport.remote_address is None)  # provisional
        ):
            transport._on_selected(addr, sock)
        return transport if event <= ice_lite.EVENT_ADDRESS_CHANGED else None

    def send_on(self, sock: Any, data: bytes, addr: Address) -> bool:
        """Send on a given endpoint socket; counts and drops when its buffer is full."""
        if sock is None:
            self.drops[DROP_NO_SOCKET] += 1
            return False
        try:
            if sock.get_write_buffer_size() > self._send_limit:
                self.drops[DROP_SEND_BUFFER_FULL] += 1
                return False
            sock.sendto(data, addr)
        except Exception:
            self.drops[DROP_SEND_ERROR] += 1
            return False
        return True

    def sendto(self, data: bytes, addr: Address) -> bool:
        """Send from the first socket of the address family of `addr`."""
        v6 = ":" in addr[0]
        for sock in self._sockets:
            local = sock.get_extra_info("sockname") if hasattr(sock, "get_extra_info") else None
            if local is None or (":" in local[0]) == v6:
                return self.send_on(sock, data, addr)
        self.drops[DROP_NO_SOCKET] += 1
        return False

    def _internal_error(self) -> None:
        drops = self.drops
        count = drops[DROP_INTERNAL_ERROR]
        drops[DROP_INTERNAL_ERROR] = count + 1
        if count % _LOG_EVERY == 0:
            log.exception("media endpoint: error handling a datagram (%d so far)", count + 1)

    # -- housekeeping --------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Expire transports whose ICE consent lapsed; returns how many. Run by the
        endpoint's own timer every tick_interval; callable directly in tests."""
        if now is None:
            now = self.clock()
        expired = self.registry.expired(now)
        for transport in expired:
            transport._expire(now)
        return len(expired)

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self.tick()
        except Exception:
            log.exception("media endpoint: housekeeping failed")
        if not self._closed and self.loop is not None:
            self._tick_handle = self.loop.call_later(self.tick_interval, self._tick)

    # -- export --------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Endpoint drops by reason and STUN outcomes (not per transport)."""
        result = dict(zip(DROP_NAMES, self.drops, strict=True))
        result.update(zip(STUN_EVENT_NAMES, self.stun_events, strict=True))
        if self.tcp is not None:
            result.update(self.tcp.counters())
        return result

    def totals(self) -> dict[str, int]:
        """counters() plus the sum of every transport's counters, closed ones included."""
        result = self.counters()
        for name, value in self._retired.items():
            result[name] = result.get(name, 0) + value
        for transport in self._transports:
            for name, value in transport.counters().items():
                result[name] = result.get(name, 0) + value
        return result

    def __repr__(self) -> str:
        return (
            f"MediaEndpoint(ips={self.listen_ips}, port={self.port}, "
            f"transports={len(self._transports)})"
        )
