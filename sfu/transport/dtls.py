"""DTLS-SRTP handshake for one WebRTC transport, on pyOpenSSL with memory BIOs.

Sans-I/O: the owner feeds received datagrams with `handle_datagram`, gets datagrams to
send through the `send` callback given at construction, and runs the retransmission
timer itself: after any call it reads `next_timeout()` (a time on the injected clock,
or None) and calls `handle_timeout(now)` when that time comes (`loop.call_later`).

Retransmission is OpenSSL's own (1 s doubling to 60 s, failure after 12 timeouts):
only OpenSSL can resend a flight with fresh record sequence numbers, which the peer
needs when our previous copy reached it and its answer was lost. OpenSSL runs that
timer on its own wall clock, which pyOpenSSL does not let us replace; `next_timeout()`
mirrors it on the injected clock (which is `loop.time` in the worker, advancing with
it), and a `handle_timeout` that comes early re-arms for the remainder. The overall
handshake deadline (`handshake_timeout`) is ours and runs on the injected clock only.

The peer certificate is authenticated by the fingerprints from the remote SDP, not by
a CA. They may be given after the handshake has started (the subscribe answer can
arrive after the browser's ClientHello): the endpoint then becomes CONNECTED only when
they are set and match.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import Final

from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from sfu.transport.certificate import FINGERPRINT_ALGORITHMS, DtlsCertificate, parse_fingerprint
from sfu.transport.srtp import SRTP_PROFILES, SrtpKeys, SrtpProfile, srtp_profile_by_name

__all__ = [
    "DtlsContext",
    "DtlsEndpoint",
    "DtlsRole",
    "DtlsState",
    "is_dtls",
]


class DtlsRole(IntEnum):
    """CLIENT when our SDP says a=setup:active, SERVER when a=setup:passive."""

    CLIENT = 1
    SERVER = 2


class DtlsState(IntEnum):
    NEW = 0
    CONNECTING = 1
    CONNECTED = 2
    CLOSED = 3
    FAILED = 4


# Drop and failure reasons (counter names).
REASON_BAD_RECORD: Final = "dtls_bad_record"
REASON_OUT_OF_STATE: Final = "dtls_out_of_state"
REASON_APP_DATA: Final = "dtls_app_data_ignored"
REASON_HANDSHAKE_FAILED: Final = "dtls_handshake_failed"
REASON_HANDSHAKE_TIMEOUT: Final = "dtls_handshake_timeout"
REASON_FINGERPRINT_MISMATCH: Final = "dtls_fingerprint_mismatch"
REASON_NO_SRTP_PROFILE: Final = "dtls_no_srtp_profile"
REASON_ALERT: Final = "dtls_alert"
REASON_PEER_CLOSED: Final = "dtls_peer_closed"
REASON_LOCAL_CLOSE: Final = "dtls_local_close"

SRTP_EXPORTER_LABEL: Final = b"EXTRACTOR-dtls_srtp"

DEFAULT_MTU: Final = 1200
DEFAULT_HANDSHAKE_TIMEOUT: Final = 30.0

_DTLS1_2_VERSION: Final = 0xFEFD
_CIPHERS: Final = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)

# DTLS record header: type(1) version(2) epoch(2) sequence(6) length(2).
RECORD_HEADER_LENGTH: Final = 13
_TYPE_VERSION = struct.Struct("!BH")
_LENGTH = struct.Struct("!H")
CONTENT_CHANGE_CIPHER_SPEC: Final = 20
CONTENT_ALERT: Final = 21
CONTENT_HANDSHAKE: Final = 22
CONTENT_APPLICATION_DATA: Final = 23
_DTLS_1_0: Final = 0xFEFF
_DTLS_1_2: Final = 0xFEFD
_ONLY_APP_DATA: Final = 1 << (CONTENT_APPLICATION_DATA - CONTENT_CHANGE_CIPHER_SPEC)

_BIO_READ_SIZE: Final = 65536
_RECV_SIZE: Final = 16384
_MAX_RECV_LOOPS: Final = 64


def is_dtls(first_byte: int) -> bool:
    """RFC 7983 demultiplexing: 20..63 is DTLS."""
    return 20 <= first_byte <= 63


def scan_records(data: bytes) -> int:
    """Check that a datagram is a sequence of whole DTLS 1.0/1.2 records.

    Returns a bit mask of the content types seen (bit = type - 20), or -1 when the
    datagram is empty, truncated, of another version, or has an unknown content type.
    """
    n = len(data)
    if n < RECORD_HEADER_LENGTH:
        return -1
    mask = 0
    off = 0
    while off < n:
        if n - off < RECORD_HEADER_LENGTH:
            return -1
        content_type, version = _TYPE_VERSION.unpack_from(data, off)
        if content_type < CONTENT_CHANGE_CIPHER_SPEC or content_type > CONTENT_APPLICATION_DATA:
            return -1
        if version != _DTLS_1_2 and version != _DTLS_1_0:
            return -1
        off += RECORD_HEADER_LENGTH + _LENGTH.unpack_from(data, off + 11)[0]
        if off > n:
            return -1
        mask |= 1 << (content_type - CONTENT_CHANGE_CIPHER_SPEC)
    return mask


def split_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Pack the records OpenSSL wrote into datagrams of at most `mtu` bytes.

    A memory BIO is a byte stream, so one read may hold several datagrams' worth of
    records. A single record larger than `mtu` goes alone.
    """
    n = len(data)
    if n <= mtu:
        return [data]
    out: list[bytes] = []
    start = 0
    off = 0
    while off < n:
        if n - off < RECORD_HEADER_LENGTH:
            break
        end = off + RECORD_HEADER_LENGTH + _LENGTH.unpack_from(data, off + 11)[0]
        if end - start > mtu and off > start:
            out.append(data[start:off])
            start = off
        off = end
    out.append(data[start:])
    return out


def _ssl_error_text(exc: BaseException) -> str:
    """Readable reason from an OpenSSL error (its list of (lib, func, reason))."""
    args = exc.args
    if args and isinstance(args[0], list):
        reasons = [str(e[2]) for e in args[0] if isinstance(e, tuple) and len(e) == 3 and e[2]]
        if reasons:
            return "; ".join(reasons)
    text = str(exc)
    return text or type(exc).__name__


def _parse_fingerprints(fingerprints: Iterable[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """(sdp hash name, 'AB:CD..') pairs to (hashlib name, digest); unknown hash names skipped."""
    parsed: list[tuple[str, bytes]] = []
    for algorithm, value in fingerprints:
        entry = FINGERPRINT_ALGORITHMS.get(algorithm.strip().lower())
        if entry is None:
            continue
        digest = parse_fingerprint(value)
        if digest is None or len(digest) != entry[1]:
            raise ValueError(f"malformed {algorithm} fingerprint {value!r}")
        parsed.append((entry[0], digest))
    if not parsed:
        raise ValueError(
            "no usable remote fingerprint (supported: " + ", ".join(FINGERPRINT_ALGORITHMS) + ")"
        )
    return parsed


def _fingerprint_matches(der: bytes, fingerprints: list[tuple[str, bytes]]) -> bool:
    for hash_name, digest in fingerprints:
        if hmac.compare_digest(hashlib.new(hash_name, der).digest(), digest):
            return True
    return False


def _verify_callback(conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int) -> bool:
    # OpenSSL calls this per chain certificate and error; only the leaf matters and
    # it is judged by fingerprint, so chain errors (self-signed) are ignored.
    ref = conn.get_app_data()
    endpoint = ref() if isinstance(ref, weakref.ref) else None
    if not isinstance(endpoint, DtlsEndpoint):
        return False
    if depth != 0:
        return True
    try:
        der = cert.to_cryptography().public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]
    except Exception:
        return False
    return endpoint._check_peer_certificate(der)


class DtlsContext:
    """OpenSSL settings shared by the endpoints of one worker: certificate, SRTP profiles,
    ciphers, MTU. Create once per process, next to the worker certificate."""

    __slots__ = ("certificate", "mtu", "srtp_profiles", "_ctx")

    def __init__(
        self,
        certificate: DtlsCertificate,
        mtu: int = DEFAULT_MTU,
        srtp_profiles: Iterable[SrtpProfile] | None = None,
    ) -> None:
        if not 256 <= mtu <= 65507:
            raise ValueError("mtu must be in [256, 65507]")
        profiles = list(SRTP_PROFILES.values()) if srtp_profiles is None else list(srtp_profiles)
        if not profiles:
            raise ValueError("at least one SRTP profile is required")
        self.certificate = certificate
        self.mtu = mtu
        self.srtp_profiles = profiles
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(_DTLS1_2_VERSION)
        ctx.set_options(
            SSL.OP_NO_QUERY_MTU
            | SSL.OP_NO_TICKET
            | SSL.OP_NO_RENEGOTIATION
            | SSL.OP_CIPHER_SERVER_PREFERENCE
            | SSL.OP_SINGLE_ECDH_USE
        )
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_cipher_list(_CIPHERS)
        ctx.use_certificate(certificate.certificate)
        ctx.use_privatekey(certificate.private_key)
        ctx.check_privatekey()
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_callback)
        # As server OpenSSL picks the first of our profiles the client offers.
        ctx.set_tlsext_use_srtp(":".join(p.name for p in profiles).encode())
        self._ctx = ctx

    @property
    def fingerprint(self) -> str:
        """Our sha-256 fingerprint for SDP."""
        return self.certificate.fingerprint("sha-256")


class DtlsEndpoint:
    """One DTLS-SRTP association, either role, driven by datagrams and timeouts.

    Never raises from `handle_datagram`/`handle_timeout`: problems become a counted
    drop or a FAILED state with `reason` (a counter name) and `detail`.
    """

    __slots__ = (
        "__weakref__",
        "role",
        "state",
        "reason",
        "detail",
        "srtp_keys",
        "peer_certificate_der",
        "bad_records",
        "out_of_state",
        "app_data_ignored",
        "retransmissions",
        "_conn",
        "_send",
        "_clock",
        "_on_state",
        "_mtu",
        "_fingerprints",
        "_handshake_timeout",
        "_handshake_deadline",
        "_retransmit_at",
        "_awaiting_fingerprint",
        "_mismatch_detail",
    )

    def __init__(
        self,
        context: DtlsContext,
        role: DtlsRole,
        send: Callable[[bytes], None],
        remote_fingerprints: Iterable[tuple[str, str]] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        on_state: Callable[[DtlsEndpoint], None] | None = None,
    ) -> None:
        """`remote_fingerprints`: (hash name, value) pairs from the remote SDP, e.g.
        [("sha-256", "AB:CD:...")]; may be empty and set later. Raises ValueError if a
        supported-hash value is malformed or, when some are given, none is usable."""
        fingerprints = list(remote_fingerprints)
        self._fingerprints: list[tuple[str, bytes]] | None = (
            _parse_fingerprints(fingerprints) if fingerprints else None
        )
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        self.role = DtlsRole(role)
        self.state = DtlsState.NEW
        self.reason: str | None = None
        self.detail: str | None = None
        self.srtp_keys: SrtpKeys | None = None
        self.peer_certificate_der: bytes | None = None
        self.bad_records = 0
        self.out_of_state = 0
        self.app_data_ignored = 0
        self.retransmissions = 0
        self._send = send
        self._clock = clock
        self._on_state = on_state
        self._mtu = context.mtu
        self._handshake_timeout = handshake_timeout
        self._handshake_deadline: float | None = None
        self._retransmit_at: float | None = None
        self._awaiting_fingerprint = False
        self._mismatch_detail: str | None = None
        conn = SSL.Connection(context._ctx, None)
        conn.set_app_data(weakref.ref(self))
        conn.set_ciphertext_mtu(context.mtu)
        if self.role == DtlsRole.CLIENT:
            conn.set_connect_state()
        else:
            conn.set_accept_state()
        self._conn = conn

    # -- owner API -----------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self.role == DtlsRole.CLIENT

    def start(self) -> None:
        """Begin the handshake: the client sends its ClientHello, the server waits.

        A server also starts by itself on the first datagram. No-op once started.
        """
        if self.state != DtlsState.NEW:
            return
        self._handshake_deadline = self._clock() + self._handshake_timeout
        self._set_state(DtlsState.CONNECTING)
        if self.role == DtlsRole.CLIENT and self.state == DtlsState.CONNECTING:
            self._drive_handshake()

    def set_remote_fingerprints(self, fingerprints: Iterable[tuple[str, str]]) -> None:
        """Give (or replace) the remote SDP fingerprints; completes a handshake that
        finished while they were unknown. Raises ValueError if none is usable.

        A CONNECTED endpoint only stores them: a changed remote certificate needs a new
        DTLS association (a new endpoint)."""
        self._fingerprints = _parse_fingerprints(list(fingerprints))
        if self._awaiting_fingerprint and self.state == DtlsState.CONNECTING:
            self._awaiting_fingerprint = False
            self._handshake_done()

    def handle_datagram(self, data: bytes) -> None:
        """Process one received datagram whose first byte is in 20..63."""
        state = self.state
        if state == DtlsState.NEW:
            if self.role != DtlsRole.SERVER:
                self.out_of_state += 1
                return
            self.start()
            state = self.state
        if state != DtlsState.CONNECTING and state != DtlsState.CONNECTED:
            self.out_of_state += 1
            return
        mask = scan_records(data)
        if mask < 0:
            self.bad_records += 1
            return
        if mask == _ONLY_APP_DATA:
            # Application data would be SCTP (data channels), which telesfu does not use.
            self.app_data_ignored += 1
            return
        self._feed(data)
        if state == DtlsState.CONNECTING and not self._awaiting_fingerprint:
            self._drive_handshake()
        else:
            # Done on the OpenSSL side: retransmitted flights, alerts, close_notify.
            self._read_records()

    def next_timeout(self) -> float | None:
        """When `handle_timeout` is next due, on the injected clock; None for no timer."""
        if self.state != DtlsState.CONNECTING:
            return None
        deadline = self._handshake_deadline
        retransmit_at = self._retransmit_at
        if retransmit_at is not None and (deadline is None or retransmit_at < deadline):
            return retransmit_at
        return deadline

    def handle_timeout(self, now: float | None = None) -> None:
        """Run due timers: fail after `handshake_timeout`, else let OpenSSL retransmit."""
        if self.state != DtlsState.CONNECTING:
            return
        if now is None:
            now = self._clock()
        deadline = self._handshake_deadline
        if deadline is not None and now >= deadline:
            self._fail(
                REASON_HANDSHAKE_TIMEOUT,
                f"DTLS handshake not complete after {self._handshake_timeout:g} s",
            )
            return
        retransmit_at = self._retransmit_at
        if retransmit_at is None or now < retransmit_at or self._awaiting_fingerprint:
            return
        try:
            if self._conn.DTLSv1_handle_timeout():
                self.retransmissions += 1
        except SSL.Error as exc:
            self._flush()
            self._fail(REASON_HANDSHAKE_TIMEOUT, _ssl_error_text(exc))
            return
        except Exception as exc:  # defensive: never raise into the event loop
            self._fail(REASON_HANDSHAKE_FAILED, f"DTLS timeout handling error: {exc!r}")
            return
        self._flush()
        self._arm_retransmit(now)

    def close(self) -> None:
        """Send close_notify if connected and move to CLOSED. Idempotent."""
        if self.state == DtlsState.CLOSED or self.state == DtlsState.FAILED:
            return
        if self.state != DtlsState.NEW:
            self._shutdown()
        self._finish(DtlsState.CLOSED, REASON_LOCAL_CLOSE, "closed locally")

    def counters(self) -> dict[str, int]:
        """Drop counts by reason, plus the failure reason of this endpoint as 1."""
        result = {
            REASON_BAD_RECORD: self.bad_records,
            REASON_OUT_OF_STATE: self.out_of_state,
            REASON_APP_DATA: self.app_data_ignored,
            "dtls_retransmissions": self.retransmissions,
        }
        if self.reason is not None and self.state == DtlsState.FAILED:
            result[self.reason] = 1
        return result

    # -- internals -----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            self._conn.bio_write(data)
        except Exception:
            self.bad_records += 1

    def _flush(self) -> None:
        conn = self._conn
        send = self._send
        mtu = self._mtu
        while True:
            try:
                data = conn.bio_read(_BIO_READ_SIZE)
            except SSL.WantReadError:
                return
            except Exception:
                return
            if not data:
                return
            if len(data) <= mtu:
                send(data)
            else:
                for datagram in split_datagrams(data, mtu):
                    send(datagram)

    def _arm_retransmit(self, now: float | None = None) -> None:
        remaining = self._conn.DTLSv1_get_timeout()
        if remaining is None:
            self._retransmit_at = None
        else:
            self._retransmit_at = (self._clock() if now is None else now) + remaining

    def _drive_handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm_retransmit()
            return
        except SSL.Error as exc:
            self._flush()  # the alert OpenSSL wrote, if any
            if self._mismatch_detail is not None:
                self._fail(REASON_FINGERPRINT_MISMATCH, self._mismatch_detail)
            else:
                self._fail(REASON_HANDSHAKE_FAILED, _ssl_error_text(exc))
            return
        except Exception as exc:  # defensive: never raise into the event loop
            self._fail(REASON_HANDSHAKE_FAILED, f"DTLS handshake error: {exc!r}")
            return
        self._flush()
        self._retransmit_at = None
        self._handshake_done()

    def _handshake_done(self) -> None:
        conn = self._conn
        if self._fingerprints is None:
            self._awaiting_fingerprint = True
            return
        der = self.peer_certificate_der
        if der is None:
            peer = conn.get_peer_certificate(as_cryptography=True)
            if peer is None:
                self._shutdown()
                self._fail(REASON_HANDSHAKE_FAILED, "peer sent no certificate")
                return
            der = peer.public_bytes(serialization.Encoding.DER)
            self.peer_certificate_der = der
        if not _fingerprint_matches(der, self._fingerprints):
            self._shutdown()
            self._fail(REASON_FINGERPRINT_MISMATCH, self._mismatch_text(der))
            return
        profile = srtp_profile_by_name(conn.get_selected_srtp_profile().decode("ascii", "replace"))
        if profile is None:
            self._shutdown()
            self._fail(REASON_NO_SRTP_PROFILE, "peer negotiated no supported SRTP profile")
            return
        try:
            material = conn.export_keying_material(SRTP_EXPORTER_LABEL, profile.export_length)
        except SSL.Error as exc:
            self._fail(REASON_HANDSHAKE_FAILED, "keying material export failed: " + _ssl_error_text(exc))
            return
        self.srtp_keys = SrtpKeys.from_keying_material(profile, material, self.role == DtlsRole.CLIENT)
        self._set_state(DtlsState.CONNECTED)
        if self.state == DtlsState.CONNECTED:
            self._read_records()

    def _check_peer_certificate(self, der: bytes) -> bool:
        """Leaf certificate check from the verify callback."""
        self.peer_certificate_der = der
        fingerprints = self._fingerprints
        if fingerprints is None:
            return True  # judged when the fingerprints arrive
        if _fingerprint_matches(der, fingerprints):
            return True
        self._mismatch_detail = self._mismatch_text(der)
        return False

    @staticmethod
    def _mismatch_text(der: bytes) -> str:
        actual = hashlib.sha256(der).digest().hex(":").upper()
        return f"peer certificate (sha-256 {actual}) matches no remote SDP fingerprint"

    def _read_records(self) -> None:
        """Process records after the handshake: retransmitted Finished, alerts, close_notify."""
        conn = self._conn
        for _ in range(_MAX_RECV_LOOPS):
            try:
                data = conn.recv(_RECV_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._shutdown()
                self._finish(DtlsState.CLOSED, REASON_PEER_CLOSED, "peer sent close_notify")
                return
            except SSL.Error as exc:
                self._flush()
                self._fail(REASON_ALERT, _ssl_error_text(exc))
                return
            except Exception as exc:  # defensive: never raise into the event loop
                self._fail(REASON_ALERT, f"DTLS read error: {exc!r}")
                return
            if not data:
                break
            self.app_data_ignored += 1
        self._flush()

    def _shutdown(self) -> None:
        try:
            self._conn.shutdown()
        except Exception:
            pass
        self._flush()

    def _fail(self, reason: str, detail: str) -> None:
        self._finish(DtlsState.FAILED, reason, detail)

    def _finish(self, state: DtlsState, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        self._retransmit_at = None
        self._handshake_deadline = None
        self._set_state(state)

    def _set_state(self, state: DtlsState) -> None:
        if self.state == state:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(self)

    def __repr__(self) -> str:
        return f"DtlsEndpoint({self.role.name}, {self.state.name})"
