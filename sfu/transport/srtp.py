"""SRTP/SRTCP protection for one DTLS-SRTP association, over pylibsrtp (libsrtp 2).

One `SrtpContext` per WebRtcTransport: an inbound libsrtp session keyed with the
remote master key (any SSRC) and an outbound session keyed with ours (any SSRC).
Unprotect never raises: it returns None and counts the reason. Protect raises
`SrtpError` (a ValueError) since its input is ours.

The outbound policy sets `allow_repeat_tx`: an SFU answering a NACK without RTX sends
the same SSRC/sequence number again, which libsrtp otherwise refuses as a replay.
Repeating an index reuses its keystream, which is harmless only because the payload
is the same packet; callers must not protect different payloads under one index.
"""

from __future__ import annotations

from typing import Final

from pylibsrtp import Error as _LibSrtpError
from pylibsrtp import Policy, Session

try:  # libsrtp through pylibsrtp's own cffi binding, with our preallocated buffers
    from pylibsrtp._binding import ffi as _ffi
    from pylibsrtp._binding import lib as _lib

    _srtp_protect = _lib.srtp_protect
    _srtp_unprotect = _lib.srtp_unprotect
    _srtp_protect_rtcp = _lib.srtp_protect_rtcp
    _srtp_unprotect_rtcp = _lib.srtp_unprotect_rtcp
except (ImportError, AttributeError):  # pragma: no cover - another pylibsrtp layout: use its public API
    _ffi = None

__all__ = [
    "SRTP_AES128_CM_SHA1_80",
    "SRTP_AEAD_AES_128_GCM",
    "SRTP_PROFILES",
    "SrtpContext",
    "SrtpError",
    "SrtpKeys",
    "SrtpProfile",
    "srtp_profile_by_name",
]

# DTLS-SRTP protection profile ids (IANA registry, RFC 5764 / RFC 7714).
SRTP_AES128_CM_SHA1_80: Final = 0x0001
SRTP_AEAD_AES_128_GCM: Final = 0x0007

# Drop reasons, also the keys of SrtpContext.counters().
REASON_AUTH: Final = "srtp_auth_failed"
REASON_REPLAY: Final = "srtp_replay"
REASON_BAD_PACKET: Final = "srtp_bad_packet"

DEFAULT_WINDOW_SIZE: Final = 4096
# libsrtp status codes (srtp_err_status_t)
_ERR_AUTH: Final = 7
_ERR_REPLAY: Final = frozenset((9, 10))
_BUFFER_SIZE: Final = 2048
_MAX_TRAILER: Final = 4 + 16 + 128  # SRTCP index + tag + MKI, the most protect can add
MAX_PACKET: Final = _BUFFER_SIZE - _MAX_TRAILER
# libsrtp accepts replay windows in [64, 0x8000).
MIN_WINDOW_SIZE: Final = 64
MAX_WINDOW_SIZE: Final = 0x7FFF

_REPLAY_MESSAGES: Final = frozenset(
    ("replay check failed (bad index)", "replay check failed (index too old)")
)
_AUTH_MESSAGE: Final = "authentication failure"


class SrtpError(ValueError):
    """Protecting a packet failed (bad header, too long, index too old)."""


class SrtpProfile:
    """One DTLS-SRTP protection profile: id, OpenSSL name, key and salt lengths."""

    __slots__ = ("id", "name", "key_length", "salt_length", "libsrtp_profile", "rtp_overhead", "rtcp_overhead")

    def __init__(
        self,
        id: int,
        name: str,
        key_length: int,
        salt_length: int,
        libsrtp_profile: int,
        rtp_overhead: int,
        rtcp_overhead: int,
    ) -> None:
        self.id = id
        self.name = name
        self.key_length = key_length
        self.salt_length = salt_length
        self.libsrtp_profile = libsrtp_profile
        self.rtp_overhead = rtp_overhead
        self.rtcp_overhead = rtcp_overhead

    @property
    def master_length(self) -> int:
        """Master key + master salt, the key length libsrtp expects."""
        return self.key_length + self.salt_length

    @property
    def export_length(self) -> int:
        """Bytes of EXTRACTOR-dtls_srtp keying material (RFC 5764 sec 4.2)."""
        return 2 * (self.key_length + self.salt_length)

    def __repr__(self) -> str:
        return f"SrtpProfile({self.name})"


#: Profiles we negotiate, most preferred first.
SRTP_PROFILES: Final[dict[int, SrtpProfile]] = {
    SRTP_AEAD_AES_128_GCM: SrtpProfile(
        SRTP_AEAD_AES_128_GCM, "SRTP_AEAD_AES_128_GCM", 16, 12,
        Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 16 + 4,
    ),
    SRTP_AES128_CM_SHA1_80: SrtpProfile(
        SRTP_AES128_CM_SHA1_80, "SRTP_AES128_CM_SHA1_80", 16, 14,
        Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10, 10 + 4,
    ),
}

_BY_NAME: Final[dict[str, SrtpProfile]] = {p.name: p for p in SRTP_PROFILES.values()}


def srtp_profile_by_name(name: str) -> SrtpProfile | None:
    """Profile for an OpenSSL profile name, None if we do not support it."""
    return _BY_NAME.get(name)


class SrtpKeys:
    """Keys from a DTLS-SRTP handshake: profile, remote (rx) and local (tx) master key+salt."""

    __slots__ = ("profile", "rx_key", "tx_key")

    def __init__(self, profile: SrtpProfile, rx_key: bytes, tx_key: bytes) -> None:
        n = profile.master_length
        if len(rx_key) != n or len(tx_key) != n:
            raise ValueError(f"{profile.name} keys must be {n} bytes (master key + salt)")
        self.profile = profile
        self.rx_key = rx_key
        self.tx_key = tx_key

    @classmethod
    def from_keying_material(cls, profile: SrtpProfile, material: bytes, is_client: bool) -> SrtpKeys:
        """Split RFC 5764 sec 4.2 keying material.

        Layout: client key | server key | client salt | server salt. The client
        sends with the client key; `is_client` picks our side.
        """
        k = profile.key_length
        s = profile.salt_length
        if len(material) != 2 * (k + s):
            raise ValueError(f"{profile.name} needs {2 * (k + s)} bytes of keying material")
        client = material[0:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        if is_client:
            return cls(profile, rx_key=server, tx_key=client)
        return cls(profile, rx_key=client, tx_key=server)

    def __repr__(self) -> str:
        return f"SrtpKeys({self.profile.name})"


def _policy(profile: SrtpProfile, key: bytes, ssrc_type: int, window_size: int, allow_repeat_tx: bool) -> Policy:
    policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile.libsrtp_profile)
    policy.window_size = window_size
    policy.allow_repeat_tx = allow_repeat_tx
    return policy


class SrtpContext:
    """Inbound + outbound SRTP sessions of one transport, with drop counters."""

    __slots__ = (
        "profile",
        "_rx",
        "_tx",
        "_fast",
        "_ptr_rx",
        "_ptr_tx",
        "_cdata",
        "_buf",
        "_len",
        "rtp_auth_failed",
        "rtp_replay",
        "rtp_bad_packet",
        "rtcp_auth_failed",
        "rtcp_replay",
        "rtcp_bad_packet",
        "protect_failed",
    )

    def __init__(
        self,
        profile: SrtpProfile,
        rx_key: bytes,
        tx_key: bytes,
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        if not MIN_WINDOW_SIZE <= window_size <= MAX_WINDOW_SIZE:
            raise ValueError(f"window_size must be in [{MIN_WINDOW_SIZE}, {MAX_WINDOW_SIZE}]")
        n = profile.master_length
        if len(rx_key) != n or len(tx_key) != n:
            raise ValueError(f"{profile.name} keys must be {n} bytes (master key + salt)")
        self.profile = profile
        self._rx = Session(_policy(profile, rx_key, Policy.SSRC_ANY_INBOUND, window_size, False))
        self._tx = Session(_policy(profile, tx_key, Policy.SSRC_ANY_OUTBOUND, window_size, True))
        # One buffer for both directions: every call copies its result out before returning.
        self._fast = _ffi is not None and hasattr(self._rx, "_srtp")
        if self._fast:
            self._ptr_rx = self._rx._srtp[0]  # type: ignore[attr-defined]
            self._ptr_tx = self._tx._srtp[0]  # type: ignore[attr-defined]
            self._cdata = _ffi.new("char[]", _BUFFER_SIZE)
            self._buf = _ffi.buffer(self._cdata)
            self._len = _ffi.new("int *")
        self.rtp_auth_failed = 0
        self.rtp_replay = 0
        self.rtp_bad_packet = 0
        self.rtcp_auth_failed = 0
        self.rtcp_replay = 0
        self.rtcp_bad_packet = 0
        self.protect_failed = 0

    @classmethod
    def from_keys(cls, keys: SrtpKeys, window_size: int = DEFAULT_WINDOW_SIZE) -> SrtpContext:
        return cls(keys.profile, keys.rx_key, keys.tx_key, window_size)

    def _run(self, func: object, ptr: object, buf: bytes | bytearray) -> int:
        """Run one libsrtp call on a copy of `buf` in our buffer; the status code."""
        n = len(buf)
        if n > MAX_PACKET:
            return -1
        self._buf[0:n] = buf
        self._len[0] = n
        return func(ptr, self._cdata, self._len)  # type: ignore[operator,no-any-return]

    def unprotect_rtp(self, buf: bytes) -> bytes | None:
        """Decrypted RTP packet, or None (auth failure, replay, malformed)."""
        if self._fast:
            rc = self._run(_srtp_unprotect, self._ptr_rx, buf)
            if rc == 0:
                return self._buf[0:self._len[0]]
            if rc == _ERR_AUTH:
                self.rtp_auth_failed += 1
            elif rc in _ERR_REPLAY:
                self.rtp_replay += 1
            else:
                self.rtp_bad_packet += 1
            return None
        try:
            return self._rx.unprotect(buf)
        except _LibSrtpError as exc:
            message = str(exc)
            if message == _AUTH_MESSAGE:
                self.rtp_auth_failed += 1
            elif message in _REPLAY_MESSAGES:
                self.rtp_replay += 1
            else:
                self.rtp_bad_packet += 1
        except (ValueError, TypeError):
            self.rtp_bad_packet += 1
        return None

    def unprotect_rtcp(self, buf: bytes) -> bytes | None:
        """Decrypted RTCP compound packet, or None (auth failure, replay, malformed)."""
        if self._fast:
            rc = self._run(_srtp_unprotect_rtcp, self._ptr_rx, buf)
            if rc == 0:
                return self._buf[0:self._len[0]]
            if rc == _ERR_AUTH:
                self.rtcp_auth_failed += 1
            elif rc in _ERR_REPLAY:
                self.rtcp_replay += 1
            else:
                self.rtcp_bad_packet += 1
            return None
        try:
            return self._rx.unprotect_rtcp(buf)
        except _LibSrtpError as exc:
            message = str(exc)
            if message == _AUTH_MESSAGE:
                self.rtcp_auth_failed += 1
            elif message in _REPLAY_MESSAGES:
                self.rtcp_replay += 1
            else:
                self.rtcp_bad_packet += 1
        except (ValueError, TypeError):
            self.rtcp_bad_packet += 1
        return None

    def protect_rtp(self, buf: bytes | bytearray) -> bytes:
        """SRTP packet for an RTP packet (bytes or a DownTrack's rewritten bytearray); raises
        SrtpError when libsrtp refuses it."""
        if self._fast:
            rc = self._run(_srtp_protect, self._ptr_tx, buf)
            if rc == 0:
                return self._buf[0:self._len[0]]
            self.protect_failed += 1
            raise SrtpError(f"SRTP protect failed (libsrtp status {rc})")
        try:
            return self._tx.protect(buf if type(buf) is bytes else bytes(buf))
        except (_LibSrtpError, ValueError, TypeError) as exc:
            self.protect_failed += 1
            raise SrtpError(f"SRTP protect failed: {exc}") from None

    def protect_rtcp(self, buf: bytes | bytearray) -> bytes:
        """SRTCP packet for an RTCP compound packet; raises SrtpError on failure."""
        if self._fast:
            rc = self._run(_srtp_protect_rtcp, self._ptr_tx, buf)
            if rc == 0:
                return self._buf[0:self._len[0]]
            self.protect_failed += 1
            raise SrtpError(f"SRTCP protect failed (libsrtp status {rc})")
        try:
            return self._tx.protect_rtcp(buf if type(buf) is bytes else bytes(buf))
        except (_LibSrtpError, ValueError, TypeError) as exc:
            self.protect_failed += 1
            raise SrtpError(f"SRTCP protect failed: {exc}") from None

    def counters(self) -> dict[str, int]:
        """Drop counts by reason, RTP and RTCP added together."""
        return {
            REASON_AUTH: self.rtp_auth_failed + self.rtcp_auth_failed,
            REASON_REPLAY: self.rtp_replay + self.rtcp_replay,
            REASON_BAD_PACKET: self.rtp_bad_packet + self.rtcp_bad_packet,
            "srtp_protect_failed": self.protect_failed,
        }
