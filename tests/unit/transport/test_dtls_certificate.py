"""Worker certificate: key type, validity, fingerprints in SDP form, per-process cache."""

from __future__ import annotations

import datetime
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from sfu.transport import certificate as certmod
from sfu.transport.certificate import (
    DtlsCertificate,
    certificate_fingerprint,
    format_fingerprint,
    parse_fingerprint,
    worker_certificate,
)

SDP_SHA256 = re.compile(r"^(?:[0-9A-F]{2}:){31}[0-9A-F]{2}$")
NOW = datetime.datetime(2030, 5, 1, 12, 0, tzinfo=datetime.UTC)


def test_generated_certificate_shape() -> None:
    cert = DtlsCertificate.generate(now=NOW)
    x = cert.certificate
    public_key = x.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert x.subject == x.issuer  # self-signed
    assert x.not_valid_after_utc == NOW + datetime.timedelta(days=30)
    assert x.not_valid_before_utc < NOW
    assert x.signature_hash_algorithm is not None and x.signature_hash_algorithm.name == "sha256"
    public_key.verify(x.signature, x.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_certificates_differ_in_key_serial_and_name() -> None:
    a, b = DtlsCertificate.generate(), DtlsCertificate.generate()
    assert a.certificate.serial_number != b.certificate.serial_number
    assert a.certificate.subject != b.certificate.subject
    assert a.fingerprint() != b.fingerprint()


def test_fingerprint_sdp_form() -> None:
    cert = DtlsCertificate.generate()
    value = cert.fingerprint()
    assert SDP_SHA256.match(value)
    assert value == cert.fingerprint("sha-256") == cert.fingerprint("SHA-256")
    assert bytes.fromhex(value.replace(":", "")) == cert.certificate.fingerprint(hashes.SHA256())
    assert bytes.fromhex(cert.fingerprint("sha-1").replace(":", "")) == hashlib.sha1(cert.der).digest()
    assert len(parse_fingerprint(cert.fingerprint("sha-512")) or b"") == 64
    with pytest.raises(ValueError):
        cert.fingerprint("md5")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_fingerprint_matches_openssl_x509(tmp_path: Path) -> None:
    cert = DtlsCertificate.generate()
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.certificate_pem())
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", str(pem)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert out.split("=", 1)[1] == cert.fingerprint()


def test_pem_round_trip() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    cert = DtlsCertificate.generate()
    assert x509.load_pem_x509_certificate(cert.certificate_pem()) == cert.certificate
    key = load_pem_private_key(cert.private_key_pem(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    public_key = cert.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == public_key.public_numbers()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AB:CD:01", b"\xab\xcd\x01"),
        ("ab:cd:01", b"\xab\xcd\x01"),
        (" AB:CD ", b"\xab\xcd"),
        ("ABCD", None),
        ("AB:C", None),
        ("AB::CD", None),
        ("ZZ:00", None),
        ("", None),
        ("AB:CD:", None),
    ],
)
def test_parse_fingerprint(text: str, expected: bytes | None) -> None:
    assert parse_fingerprint(text) == expected


@given(st.binary(min_size=1, max_size=64))
def test_format_parse_round_trip(digest: bytes) -> None:
    text = format_fingerprint(digest)
    assert text == text.upper()
    assert parse_fingerprint(text) == digest


def test_certificate_fingerprint_rejects_unknown_algorithm() -> None:
    with pytest.raises(ValueError):
        certificate_fingerprint(b"der", "sha-3")


def test_generate_rejects_bad_validity() -> None:
    with pytest.raises(ValueError):
        DtlsCertificate.generate(validity_days=0)


def test_worker_certificate_cached_per_process_and_renewed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(certmod, "_worker_cert", None)
    monkeypatch.setattr(certmod, "_worker_pid", 0)
    first = worker_certificate(lambda: NOW)
    assert worker_certificate(lambda: NOW + datetime.timedelta(days=20)) is first
    renewed = worker_certificate(lambda: NOW + datetime.timedelta(days=29))  # < 2 days left
    assert renewed is not first
    assert renewed.not_valid_after == NOW + datetime.timedelta(days=59)
    monkeypatch.setattr(certmod, "_worker_pid", -1)  # as seen from a forked child
    assert worker_certificate(lambda: NOW + datetime.timedelta(days=29)) is not renewed
