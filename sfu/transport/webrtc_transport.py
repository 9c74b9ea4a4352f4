"""One WebRTC transport (one peer connection of a participant): ICE-lite, DTLS, SRTP.

A participant has two: publish (the client offers, the SFU answers) and subscribe (the
SFU offers, the client answers). Transports are created by `MediaEndpoint.create_transport`
and live on its UDP socket; the endpoint routes STUN by ufrag and everything else by the
transport's selected remote address.

Per received SRTP packet the work is: one unprotect, one counter update, one handler
call. Decrypted packets go to `handler.on_rtp(buf)` / `handler.on_rtcp(buf)` (plain
methods; bound once when the handler is set). State changes go to
`on_state(transport, state, reason)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

from sfu.sdp.model import Fingerprint
from sfu.sdp.params import DTLS_CLIENT, DTLS_SERVER, LocalTransportParams, RemoteTransportParams
from sfu.transport.dtls import DtlsEndpoint, DtlsRole, DtlsState
from sfu.transport.ice_lite import IceLite, is_valid_pwd, is_valid_ufrag
from sfu.transport.srtp import DEFAULT_WINDOW_SIZE, SrtpContext, SrtpError
from sfu.transport.stun import Address

if TYPE_CHECKING:
    from sfu.transport.udp import MediaEndpoint

__all__ = [
    "STATE_CLOSED",
    "STATE_CONNECTED",
    "STATE_CONNECTING",
    "STATE_FAILED",
    "STATE_NEW",
    "StateCallback",
    "TransportHandler",
    "WebRtcTransport",
]

log = logging.getLogger(__name__)

STATE_NEW: Final = "new"
STATE_CONNECTING: Final = "connecting"
STATE_CONNECTED: Final = "connected"
STATE_FAILED: Final = "failed"
STATE_CLOSED: Final = "closed"

# Reasons given with FAILED/CLOSED (DTLS failures pass the DtlsEndpoint's reason through).
REASON_LOCAL_CLOSE: Final = "closed"
REASON_ENDPOINT_CLOSED: Final = "endpoint_closed"
REASON_CONSENT_EXPIRED: Final = "ice_consent_expired"
REASON_ICE_TIMEOUT: Final = "ice_connect_timeout"
REASON_DTLS_ROLE_CONFLICT: Final = "dtls_role_conflict"
REASON_SRTP_SETUP: Final = "srtp_setup_failed"


class TransportHandler(Protocol):
    """Receiver of decrypted packets; called synchronously from datagram_received."""

    def on_rtp(self, buf: bytes) -> None: ...

    def on_rtcp(self, buf: bytes) -> None: ...


StateCallback = Callable[["WebRtcTransport", str, "str | None"], None]


class _NullHandler:
    __slots__ = ()

    def on_rtp(self, buf: bytes) -> None:
        pass

    def on_rtcp(self, buf: bytes) -> None:
        pass


_NULL_HANDLER: Final = _NullHandler()


def _dtls_role(value: str | DtlsRole) -> DtlsRole:
    """The SFU's DTLS role from sfu.sdp's 'server'/'client' (or a DtlsRole)."""
    if isinstance(value, DtlsRole):
        return value
    if value == DTLS_SERVER:
        return DtlsRole.SERVER
    if value == DTLS_CLIENT:
        return DtlsRole.CLIENT
    raise ValueError(f"DTLS role must be {DTLS_SERVER!r} or {DTLS_CLIENT!r}, not {value!r}")


def _fingerprint_pairs(fingerprints: Iterable[Fingerprint | tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for f in fingerprints:
        if isinstance(f, Fingerprint):
            out.append((f.algorithm, f.value))
        else:
            algorithm, value = f
            out.append((algorithm, value))
    return out


class WebRtcTransport:
    """ICE-lite + DTLS-SRTP state of one peer connection, on a MediaEndpoint's socket.

    States: new -> connecting (first nominated check, or DTLS started) -> connected
    (DTLS done, SRTP keyed) -> failed | closed, each with a reason. Failed and closed
    are final: the transport is unregistered from the endpoint and sends nothing.
    """

    __slots__ = (
        "ice",
        "state",
        "reason",
        "detail",
        "remote_address",
        "rtp_packets_in",
        "rtp_bytes_in",
        "rtcp_packets_in",
        "rtcp_bytes_in",
        "rtp_packets_out",
        "rtp_bytes_out",
        "rtcp_packets_out",
        "rtcp_bytes_out",
        "srtp_before_connected",
        "send_not_connected",
        "send_protect_failed",
        "dtls_datagrams_in",
        "_endpoint",
        "_sock",
        "_dtls",
        "_srtp",
        "_srtp_window",
        "_handler",
        "_on_rtp",
        "_on_rtcp",
        "_on_state",
        "_dtls_timer",
        "_dtls_timer_at",
        "_finishing",
        "_srtp_counters",
        "_dtls_counters",
    )

    def __init__(
        self,
        endpoint: MediaEndpoint,
        ice: IceLite,
        handler: TransportHandler | None = None,
        on_state: StateCallback | None = None,
        *,
        srtp_window: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        """Use MediaEndpoint.create_transport, which also registers the transport."""
        self.ice = ice
        self.state: str = STATE_NEW
        self.reason: str | None = None
        self.detail: str | None = None
        self.remote_address: Address | None = None
        self.rtp_packets_in = 0
        self.rtp_bytes_in = 0
        self.rtcp_packets_in = 0
        self.rtcp_bytes_in = 0
        self.rtp_packets_out = 0
        self.rtp_bytes_out = 0
        self.rtcp_packets_out = 0
        self.rtcp_bytes_out = 0
        self.srtp_before_connected = 0
        self.send_not_connected = 0
        self.send_protect_failed = 0
        self.dtls_datagrams_in = 0
        self._endpoint = endpoint
        self._sock: Any = None  # the endpoint socket the selected check came in on
        self._dtls: DtlsEndpoint | None = None
        self._srtp: SrtpContext | None = None
        self._srtp_window = srtp_window
        self._handler: TransportHandler = _NULL_HANDLER
        self._on_rtp: Callable[[bytes], None] = _NULL_HANDLER.on_rtp
        self._on_rtcp: Callable[[bytes], None] = _NULL_HANDLER.on_rtcp
        self._on_state = on_state
        self._dtls_timer: asyncio.TimerHandle | None = None
        self._dtls_timer_at: float | None = None
        self._finishing = False
        self._srtp_counters: dict[str, int] = {}
        self._dtls_counters: dict[str, int] = {}
        if handler is not None:
            self.handler = handler

    # -- owner API -----------------------------------------------------------------

    @property
    def handler(self) -> TransportHandler:
        return self._handler

    @handler.setter
    def handler(self, handler: TransportHandler | None) -> None:
        """Set the receiver of decrypted packets (None: discard them, still counted)."""
        if handler is None:
            handler = _NULL_HANDLER
        self._handler = handler
        self._on_rtp = handler.on_rtp
        self._on_rtcp = handler.on_rtcp

    @property
    def on_state(self) -> StateCallback | None:
        return self._on_state

    @on_state.setter
    def on_state(self, callback: StateCallback | None) -> None:
        self._on_state = callback

    @property
    def dtls(self) -> DtlsEndpoint | None:
        return self._dtls

    @property
    def srtp(self) -> SrtpContext | None:
        """The SRTP context once connected (None before and after)."""
        return self._srtp

    @property
    def connected(self) -> bool:
        return self._srtp is not None

    @property
    def closed(self) -> bool:
        return self.state == STATE_FAILED or self.state == STATE_CLOSED

    def local_params(self, session_id: int = 0) -> LocalTransportParams:
        """ICE credentials, DTLS fingerprint and host candidates for sfu.sdp."""
        endpoint = self._endpoint
        return LocalTransportParams(
            ice_ufrag=self.ice.local_ufrag,
            ice_pwd=self.ice.local_pwd,
            fingerprint=Fingerprint("sha-256", endpoint.fingerprint),
            candidates=endpoint.candidates,
            session_id=session_id,
            tcp_candidates=endpoint.tcp_candidates,
        )

    def set_remote(
        self,
        ice_ufrag: str,
        ice_pwd: str,
        fingerprints: Iterable[Fingerprint | tuple[str, str]],
        dtls_role: str | DtlsRole,
    ) -> None:
        """Apply the peer's ICE credentials and DTLS fingerprints, and the SFU's DTLS role
        ('server' or 'client', as sfu.sdp's RemoteTransportParams.dtls_role gives it).

        As client the SFU starts the handshake once ICE has selected an address. May be
        called again on renegotiation with new fingerprints, but not with another role.
        Raises ValueError for malformed arguments or a closed transport; nothing is
        changed then.
        """
        if self.closed:
            raise ValueError(f"transport is {self.state}")
        role = _dtls_role(dtls_role)
        pairs = _fingerprint_pairs(fingerprints)
        if not is_valid_ufrag(ice_ufrag) or not is_valid_pwd(ice_pwd):
            raise ValueError("remote ICE ufrag/pwd are not valid ice-chars of the right length")
        dtls = self._dtls
        if dtls is None:
            endpoint = self._endpoint
            dtls = DtlsEndpoint(
                endpoint.dtls_context,
                role,
                self._send_dtls,
                pairs,
                clock=endpoint.clock,
                handshake_timeout=endpoint.dtls_handshake_timeout,
                on_state=self._on_dtls_state,
            )
            self.ice.set_remote_credentials(ice_ufrag, ice_pwd)
            self._dtls = dtls
        else:
            if dtls.role != role:
                self.ice.set_remote_credentials(ice_ufrag, ice_pwd)
                self._finish(
                    STATE_FAILED,
                    REASON_DTLS_ROLE_CONFLICT,
                    f"DTLS runs as {dtls.role.name.lower()}, the SDP now asks for {role.name.lower()}",
                )
                return
            dtls.set_remote_fingerprints(pairs)  # ValueError before any change
            self.ice.set_remote_credentials(ice_ufrag, ice_pwd)
        if role == DtlsRole.CLIENT and self.remote_address is not None:
            dtls.start()
        self._arm_dtls_timer()

    def set_remote_params(self, params: RemoteTransportParams) -> None:
        """set_remote from sfu.sdp's RemoteTransportParams."""
        self.set_remote(params.ice_ufrag, params.ice_pwd, params.fingerprints, params.dtls_role)

    def send_rtp(self, buf: bytes | bytearray) -> bool:
        """Protect and send one RTP packet to the selected address; False if dropped."""
        srtp = self._srtp
        if srtp is None:
            self.send_not_connected += 1
            return False
        try:
            data = srtp.protect_rtp(buf)  # type: ignore[arg-type]
        except SrtpError:
            self.send_protect_failed += 1
            return False
        self.rtp_packets_out += 1
        self.rtp_bytes_out += len(data)
        return self._endpoint.send_on(self._sock, data, self.remote_address)  # type: ignore[arg-type]

    def send_rtcp(self, buf: bytes | bytearray) -> bool:
        """Protect and send one RTCP compound packet; False if dropped."""
        srtp = self._srtp
        if srtp is None:
            self.send_not_connected += 1
            return False
        try:
            data = srtp.protect_rtcp(buf)  # type: ignore[arg-type]
        except SrtpError:
            self.send_protect_failed += 1
            return False
        self.rtcp_packets_out += 1
        self.rtcp_bytes_out += len(data)
        return self._endpoint.send_on(self._sock, data, self.remote_address)  # type: ignore[arg-type]

    def close(self, reason: str = REASON_LOCAL_CLOSE) -> None:
        """Send DTLS close_notify if connected, unregister, move to CLOSED. Idempotent."""
        self._finish(STATE_CLOSED, reason, None)

    def counters(self) -> dict[str, int]:
        """Packet/byte counts and drops by reason (SRTP and DTLS ones included)."""
        result = {
            "rtp_packets_in": self.rtp_packets_in,
            "rtp_bytes_in": self.rtp_bytes_in,
            "rtcp_packets_in": self.rtcp_packets_in,
            "rtcp_bytes_in": self.rtcp_bytes_in,
            "rtp_packets_out": self.rtp_packets_out,
            "rtp_bytes_out": self.rtp_bytes_out,
            "rtcp_packets_out": self.rtcp_packets_out,
            "rtcp_bytes_out": self.rtcp_bytes_out,
            "dtls_datagrams_in": self.dtls_datagrams_in,
            "srtp_before_connected": self.srtp_before_connected,
            "send_not_connected": self.send_not_connected,
            "send_protect_failed": self.send_protect_failed,
        }
        srtp = self._srtp
        result.update(srtp.counters() if srtp is not None else self._srtp_counters)
        dtls = self._dtls
        result.update(dtls.counters() if dtls is not None else self._dtls_counters)
        return result

    def __repr__(self) -> str:
        return f"WebRtcTransport(ufrag={self.ice.local_ufrag!r}, state={self.state})"

    # -- called by the endpoint ----------------------------------------------------

    def _receive_srtp(self, data: bytes) -> None:
        """An SRTP or SRTCP datagram from the selected address (RFC 5761 demux)."""
        srtp = self._srtp
        if srtp is None:
            self.srtp_before_connected += 1
            return
        if 191 < data[1] < 224:
            buf = srtp.unprotect_rtcp(data)
            if buf is not None:
                self.rtcp_packets_in += 1
                self.rtcp_bytes_in += len(data)
                self._on_rtcp(buf)
        else:
            buf = srtp.unprotect_rtp(data)
            if buf is not None:
                self.rtp_packets_in += 1
                self.rtp_bytes_in += len(data)
                self._on_rtp(buf)

    def _receive_dtls(self, data: bytes) -> None:
        """A DTLS datagram from the selected address."""
        self.dtls_datagrams_in += 1
        dtls = self._dtls
        if dtls is None:
            # A ClientHello before the SDP was applied (a subscribe answer still in
            # flight): the peer acts as client, so the SFU is the server. The handshake
            # completes once set_remote gives the fingerprints.
            endpoint = self._endpoint
            dtls = DtlsEndpoint(
                endpoint.dtls_context,
                DtlsRole.SERVER,
                self._send_dtls,
                clock=endpoint.clock,
                handshake_timeout=endpoint.dtls_handshake_timeout,
                on_state=self._on_dtls_state,
            )
            self._dtls = dtls
        dtls.handle_datagram(data)
        if not self._finishing:
            self._arm_dtls_timer()

    def _on_selected(self, addr: Address, sock: Any) -> None:
        """ICE selected `addr` (first nomination or a move), seen on endpoint socket `sock`."""
        self.remote_address = addr
        self._sock = sock
        if self.state == STATE_NEW:
            self._set_state(STATE_CONNECTING, None)
        dtls = self._dtls
        if dtls is not None and dtls.role == DtlsRole.CLIENT and dtls.state == DtlsState.NEW:
            dtls.start()
            if not self._finishing:
                self._arm_dtls_timer()

    def _expire(self, now: float) -> None:
        """Consent expired (or ICE never connected): fail."""
        if self.ice.selected_address is None:
            self._finish(
                STATE_FAILED,
                REASON_ICE_TIMEOUT,
                f"no valid ICE check within {self.ice.consent_timeout:g} s",
                notify=False,
            )
        else:
            self._finish(
                STATE_FAILED,
                REASON_CONSENT_EXPIRED,
                f"no valid ICE check for {now - self.ice.last_consent:.1f} s",
                notify=False,
            )

    # -- internals -----------------------------------------------------------------

    def _send_dtls(self, data: bytes) -> None:
        addr = self.remote_address
        if addr is None:
            return  # nothing to answer to yet; OpenSSL retransmits
        self._endpoint.send_on(self._sock, data, addr)

    def _on_dtls_state(self, dtls: DtlsEndpoint) -> None:
        if self._finishing:
            return
        state = dtls.state
        if state == DtlsState.CONNECTING:
            if self.state == STATE_NEW:
                self._set_state(STATE_CONNECTING, None)
        elif state == DtlsState.CONNECTED:
            keys = dtls.srtp_keys
            try:
                if keys is None:
                    raise ValueError("DTLS connected without SRTP keys")
                self._srtp = SrtpContext.from_keys(keys, self._srtp_window)
            except Exception as exc:  # never raise into the packet path
                self._finish(STATE_FAILED, REASON_SRTP_SETUP, str(exc))
                return
            self._cancel_dtls_timer()
            self._set_state(STATE_CONNECTED, None)
        elif state == DtlsState.FAILED:
            self._finish(STATE_FAILED, dtls.reason or "dtls_failed", dtls.detail)
        elif state == DtlsState.CLOSED:
            self._finish(STATE_CLOSED, dtls.reason or "dtls_closed", dtls.detail)

    def _set_state(self, state: str, reason: str | None) -> None:
        if self.state == state:
            return
        self.state = state
        self.reason = reason
        callback = self._on_state
        if callback is not None:
            try:
                callback(self, state, reason)
            except Exception:
                log.exception("transport %s: on_state callback failed", self.ice.local_ufrag)

    def _finish(self, state: str, reason: str, detail: str | None, notify: bool = True) -> None:
        """Final state: `notify` sends DTLS close_notify first (not after consent expiry:
        RFC 7675 forbids sending once consent is lost)."""
        if self._finishing:
            return
        self._finishing = True
        self._cancel_dtls_timer()
        dtls = self._dtls
        if dtls is not None:
            if notify and dtls.state != DtlsState.CLOSED and dtls.state != DtlsState.FAILED:
                dtls.close()  # close_notify to the peer while we still know its address
            self._dtls_counters = dtls.counters()
            self._dtls = None
        srtp = self._srtp
        if srtp is not None:
            self._srtp_counters = srtp.counters()
            self._srtp = None
        self._endpoint._release(self)
        self.detail = detail
        self._set_state(state, reason)

    def _arm_dtls_timer(self) -> None:
        dtls = self._dtls
        at = dtls.next_timeout() if dtls is not None else None
        if at == self._dtls_timer_at:
            return
        self._cancel_dtls_timer()
        loop = self._endpoint.loop
        if at is None or loop is None:
            return
        self._dtls_timer_at = at
        delay = at - self._endpoint.clock()
        self._dtls_timer = loop.call_later(delay if delay > 0.0 else 0.0, self._on_dtls_timer)

    def _cancel_dtls_timer(self) -> None:
        timer = self._dtls_timer
        if timer is not None:
            timer.cancel()
            self._dtls_timer = None
        self._dtls_timer_at = None

    def _on_dtls_timer(self) -> None:
        self._dtls_timer = None
        self._dtls_timer_at = None
        dtls = self._dtls
        if dtls is None or self._finishing:
            return
        try:
            dtls.handle_timeout(self._endpoint.clock())
        except Exception as exc:  # DtlsEndpoint does not raise; be safe in a timer
            self._finish(STATE_FAILED, "dtls_handshake_failed", repr(exc))
            return
        if not self._finishing:
            self._arm_dtls_timer()
