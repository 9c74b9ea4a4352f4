"""Self-signed ECDSA P-256 certificate for DTLS-SRTP, one per worker process.

The certificate is never validated by a CA: WebRTC peers authenticate it by the
fingerprint carried in SDP (`a=fingerprint:sha-256 AB:CD:...`, RFC 8122).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "DtlsCertificate",
    "FINGERPRINT_ALGORITHMS",
    "certificate_fingerprint",
    "format_fingerprint",
    "parse_fingerprint",
    "worker_certificate",
]

#: SDP hash function names (RFC 8122 / IANA "Hash Function Textual Names") we verify,
#: mapped to hashlib names and digest sizes.
FINGERPRINT_ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha-1": ("sha1", 20),
    "sha-256": ("sha256", 32),
    "sha-384": ("sha384", 48),
    "sha-512": ("sha512", 64),
}

DEFAULT_VALIDITY_DAYS = 30
# Start of validity is back-dated so a peer with a slightly slow clock accepts it.
_NOT_BEFORE_SLACK = datetime.timedelta(days=1)
# A cached worker certificate is replaced when it has less than this left.
_RENEW_MARGIN = datetime.timedelta(days=2)


def format_fingerprint(digest: bytes) -> str:
    """Digest bytes as SDP writes them: upper-case hex pairs joined by ':'."""
    return digest.hex(":").upper()


def parse_fingerprint(value: str) -> bytes | None:
    """SDP fingerprint value ('AB:cd:01') to bytes; None when malformed."""
    parts = value.strip().split(":")
    if not parts or any(len(p) != 2 for p in parts):
        return None
    try:
        return bytes.fromhex("".join(parts))
    except ValueError:
        return None


def certificate_fingerprint(der: bytes, algorithm: str = "sha-256") -> str:
    """Fingerprint of a DER certificate for an SDP hash name ('sha-256', ...).

    Raises ValueError for an unsupported algorithm name.
    """
    entry = FINGERPRINT_ALGORITHMS.get(algorithm.lower())
    if entry is None:
        raise ValueError(f"unsupported fingerprint algorithm {algorithm!r}")
    return format_fingerprint(hashlib.new(entry[0], der).digest())


class DtlsCertificate:
    """A certificate and its private key, plus the DER form and fingerprints."""

    __slots__ = ("certificate", "private_key", "der", "_fingerprints")

    def __init__(self, certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self.der: bytes = certificate.public_bytes(serialization.Encoding.DER)
        self._fingerprints: dict[str, str] = {}

    @classmethod
    def generate(
        cls,
        validity_days: int = DEFAULT_VALIDITY_DAYS,
        now: datetime.datetime | None = None,
    ) -> DtlsCertificate:
        """New P-256 key and self-signed certificate with a random CN and serial."""
        if validity_days <= 0:
            raise ValueError("validity_days must be positive")
        if now is None:
            now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _NOT_BEFORE_SLACK)
            .not_valid_after(now + datetime.timedelta(days=validity_days))
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """Our fingerprint for the SDP `a=fingerprint` line (cached)."""
        algorithm = algorithm.lower()
        value = self._fingerprints.get(algorithm)
        if value is None:
            value = certificate_fingerprint(self.der, algorithm)
            self._fingerprints[algorithm] = value
        return value

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def private_key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


_worker_pid: int = 0
_worker_cert: DtlsCertificate | None = None


def worker_certificate(
    now: Callable[[], datetime.datetime] | None = None,
) -> DtlsCertificate:
    """The certificate shared by all transports of this process.

    Created on first use; a forked child gets its own; replaced when close to expiry
    (transports already created keep the one they were given).
    """
    global _worker_pid, _worker_cert
    current = now() if now is not None else datetime.datetime.now(datetime.UTC)
    pid = os.getpid()
    cert = _worker_cert
    if cert is None or _worker_pid != pid or cert.not_valid_after - current < _RENEW_MARGIN:
        cert = DtlsCertificate.generate(now=current)
        _worker_cert = cert
        _worker_pid = pid
    return cert
