"""SrtpContext over pylibsrtp: round trips, tamper/replay drops, NACK repeats, golden
output checked against an independent RFC 3711 / RFC 7714 implementation written here
with the `cryptography` package."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.transport.srtp import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
    SrtpContext,
    SrtpError,
    SrtpKeys,
    SrtpProfile,
    srtp_profile_by_name,
)

CM80 = SRTP_PROFILES[SRTP_AES128_CM_SHA1_80]
GCM = SRTP_PROFILES[SRTP_AEAD_AES_128_GCM]
PROFILES = [CM80, GCM]
PROFILE_IDS = ["cm80", "gcm"]

RTP_HEADER = struct.Struct("!BBHII")
RTCP_RR_HEADER = struct.Struct("!BBHI")


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\xab" * 100, *, ts: int | None = None,
        extension: bytes | None = None) -> bytes:
    """RTP packet, payload type 96, optional one-byte header extension block."""
    first = 0x80
    ext = b""
    if extension is not None:
        first |= 0x10
        padded = extension + b"\0" * (-len(extension) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(padded) // 4) + padded
    return RTP_HEADER.pack(first, 96, seq, seq * 3000 if ts is None else ts, ssrc) + ext + payload


def rtcp_rr(ssrc: int = 0x55667788) -> bytes:
    """RTCP receiver report with one report block."""
    block = struct.pack("!IIIIII", 0x11223344, 0x01000010, 1234, 5, 0, 0)
    return RTCP_RR_HEADER.pack(0x81, 201, 7, ssrc) + block


def key_for(profile: SrtpProfile, seed: int) -> bytes:
    return hashlib.sha256(bytes([seed])).digest()[: profile.master_length]


def pair(profile: SrtpProfile, window_size: int = 4096) -> tuple[SrtpContext, SrtpContext]:
    """Two contexts wired crosswise, like the two ends of one DTLS association."""
    k1 = key_for(profile, 1)
    k2 = key_for(profile, 2)
    return SrtpContext(profile, k1, k2, window_size), SrtpContext(profile, k2, k1, window_size)


# --- independent reference: RFC 3711 (AES-CM + HMAC-SHA1-80) and RFC 7714 (AES-GCM) --


def ref_kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 sec 4.3.1 with key_derivation_rate 0: AES-CM PRF over (label || 0^48) XOR salt.
    A 96-bit (GCM) salt is right-padded with zeros to 112 bits (RFC 7714 sec 11)."""
    salt = master_salt.ljust(14, b"\0")
    x = int.from_bytes(salt, "big") ^ (label << 48)
    iv = (x << 16).to_bytes(16, "big")
    return Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor().update(b"\0" * length)


def ref_rtp_header_length(packet: bytes) -> int:
    n = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        n += 4 + 4 * struct.unpack_from("!H", packet, n + 2)[0]
    return n


def ref_protect_rtp(profile: SrtpProfile, master: bytes, packet: bytes, roc: int = 0) -> bytes:
    key, salt = master[: profile.key_length], master[profile.key_length :]
    seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
    n = ref_rtp_header_length(packet)
    header, payload = packet[:n], packet[n:]
    if profile is CM80:
        ke, ka, ks = ref_kdf(key, salt, 0, 16), ref_kdf(key, salt, 1, 20), ref_kdf(key, salt, 2, 14)
        index = (roc << 16) | seq
        iv = ((int.from_bytes(ks, "big") << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")
        encrypted = Cipher(algorithms.AES(ke), modes.CTR(iv)).encryptor().update(payload)
        tag = hmac.new(ka, header + encrypted + struct.pack("!I", roc), hashlib.sha1).digest()[:10]
        return header + encrypted + tag
    ke, ks = ref_kdf(key, salt, 0, 16), ref_kdf(key, salt, 2, 12)
    iv = bytes(a ^ b for a, b in zip(struct.pack("!HIIH", 0, ssrc, roc, seq), ks, strict=True))
    return header + AESGCM(ke).encrypt(iv, payload, header)


def ref_protect_rtcp(profile: SrtpProfile, master: bytes, packet: bytes, index: int) -> bytes:
    key, salt = master[: profile.key_length], master[profile.key_length :]
    ssrc = struct.unpack_from("!I", packet, 4)[0]
    header, body = packet[:8], packet[8:]
    e_index = struct.pack("!I", 0x80000000 | index)
    if profile is CM80:
        ke, ka, ks = ref_kdf(key, salt, 3, 16), ref_kdf(key, salt, 4, 20), ref_kdf(key, salt, 5, 14)
        iv = ((int.from_bytes(ks, "big") << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")
        encrypted = Cipher(algorithms.AES(ke), modes.CTR(iv)).encryptor().update(body)
        tag = hmac.new(ka, header + encrypted + e_index, hashlib.sha1).digest()[:10]
        return header + encrypted + e_index + tag
    ke, ks = ref_kdf(key, salt, 3, 16), ref_kdf(key, salt, 5, 12)
    iv = bytes(a ^ b for a, b in zip(struct.pack("!HIHI", 0, ssrc, 0, index), ks, strict=True))
    return header + AESGCM(ke).encrypt(iv, body, header + e_index) + e_index


def test_reference_kdf_matches_rfc3711_appendix_b3() -> None:
    master_key = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    master_salt = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert ref_kdf(master_key, master_salt, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert ref_kdf(master_key, master_salt, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert ref_kdf(master_key, master_salt, 1, 20).hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"


# --- profiles and keys -------------------------------------------------------------


def test_profile_table() -> None:
    assert (CM80.key_length, CM80.salt_length, CM80.export_length) == (16, 14, 60)
    assert (GCM.key_length, GCM.salt_length, GCM.export_length) == (16, 12, 56)
    assert list(SRTP_PROFILES) == [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80]  # preference
    assert srtp_profile_by_name("SRTP_AES128_CM_SHA1_80") is CM80
    assert srtp_profile_by_name("SRTP_AEAD_AES_128_GCM") is GCM
    assert srtp_profile_by_name("SRTP_AES128_CM_SHA1_32") is None
    assert srtp_profile_by_name("") is None


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_keying_material_split_rfc5764(profile: SrtpProfile) -> None:
    k, s = profile.key_length, profile.salt_length
    ck, sk, cs, ss = b"C" * k, b"S" * k, b"c" * s, b"s" * s
    material = ck + sk + cs + ss
    client = SrtpKeys.from_keying_material(profile, material, is_client=True)
    server = SrtpKeys.from_keying_material(profile, material, is_client=False)
    assert client.tx_key == ck + cs and client.rx_key == sk + ss
    assert server.tx_key == sk + ss and server.rx_key == ck + cs
    with pytest.raises(ValueError):
        SrtpKeys.from_keying_material(profile, material[:-1], is_client=True)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_bad_arguments_raise(profile: SrtpProfile) -> None:
    good = key_for(profile, 1)
    with pytest.raises(ValueError):
        SrtpContext(profile, good[:-1], good)
    with pytest.raises(ValueError):
        SrtpContext(profile, good, good + b"x")
    with pytest.raises(ValueError):
        SrtpContext(profile, good, good, window_size=63)
    with pytest.raises(ValueError):
        SrtpContext(profile, good, good, window_size=0x8000)
    with pytest.raises(ValueError):
        SrtpKeys(profile, good, good[:5])


# --- golden output against the reference -----------------------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@pytest.mark.parametrize("extension", [None, b"\x10\xff\x22\x01\x02"], ids=["plain", "ext"])
def test_protect_rtp_matches_reference(profile: SrtpProfile, extension: bytes | None) -> None:
    sender, receiver = pair(profile)
    tx_key = key_for(profile, 2)
    for seq in (1, 2, 40000):
        packet = rtp(seq, payload=bytes(range(200)), extension=extension)
        protected = sender.protect_rtp(packet)
        assert len(protected) == len(packet) + profile.rtp_overhead
        assert protected == ref_protect_rtp(profile, tx_key, packet)
        assert receiver.unprotect_rtp(protected) == packet


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_protect_rtcp_matches_reference(profile: SrtpProfile) -> None:
    sender, receiver = pair(profile)
    tx_key = key_for(profile, 2)
    packet = rtcp_rr()
    for _ in range(3):
        protected = sender.protect_rtcp(packet)
        assert len(protected) == len(packet) + profile.rtcp_overhead
        # E|index follows the ciphertext (CM) or the GCM tag.
        e_index = struct.unpack_from("!I", protected, len(packet) + (16 if profile is GCM else 0))[0]
        assert e_index & 0x80000000  # encrypted flag
        index = e_index & 0x7FFFFFFF
        assert protected == ref_protect_rtcp(profile, tx_key, packet, index)
        assert receiver.unprotect_rtcp(protected) == packet


def test_reference_output_is_accepted_by_libsrtp_after_rollover() -> None:
    """A packet protected by the reference with ROC 1 decrypts after the receiver saw
    sequence numbers wrap (libsrtp's ROC estimate agrees with RFC 3711 sec 3.3.1)."""
    sender, receiver = pair(CM80)
    for seq in (65533, 65534, 65535):
        assert receiver.unprotect_rtp(sender.protect_rtp(rtp(seq))) is not None
    wrapped = rtp(1, payload=b"after wrap")
    assert receiver.unprotect_rtp(ref_protect_rtp(CM80, key_for(CM80, 2), wrapped, roc=1)) == wrapped


# --- round trips, tamper, replay, repeats -------------------------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@settings(max_examples=60, deadline=None)
@given(
    seq=st.integers(0, 0xFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(min_size=0, max_size=1200),
)
def test_rtp_round_trip_property(profile: SrtpProfile, seq: int, ssrc: int, payload: bytes) -> None:
    a, b = pair(profile)
    packet = rtp(seq, ssrc=ssrc, payload=payload)
    assert b.unprotect_rtp(a.protect_rtp(packet)) == packet
    assert a.unprotect_rtp(b.protect_rtp(packet)) == packet


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_bit_flip_is_rejected(profile: SrtpProfile, data: st.DataObject) -> None:
    a, b = pair(profile)
    packet = rtp(7, payload=os.urandom(60))
    protected = bytearray(a.protect_rtp(packet))
    i = data.draw(st.integers(0, len(protected) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    protected[i] ^= 1 << bit
    assert b.unprotect_rtp(bytes(protected)) is None
    assert b.rtp_auth_failed + b.rtp_bad_packet == 1
    assert b.unprotect_rtp(a.protect_rtp(rtp(8))) == rtp(8)  # stream still usable


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_tampered_rtcp_is_rejected(profile: SrtpProfile) -> None:
    a, b = pair(profile)
    protected = bytearray(a.protect_rtcp(rtcp_rr()))
    protected[12] ^= 0x01
    assert b.unprotect_rtcp(bytes(protected)) is None
    assert b.rtcp_auth_failed == 1
    assert b.counters()["srtp_auth_failed"] == 1


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_inbound_replay_is_dropped_and_counted(profile: SrtpProfile) -> None:
    a, b = pair(profile)
    protected = a.protect_rtp(rtp(100))
    assert b.unprotect_rtp(protected) == rtp(100)
    assert b.unprotect_rtp(protected) is None
    assert b.rtp_replay == 1
    report = a.protect_rtcp(rtcp_rr())
    assert b.unprotect_rtcp(report) == rtcp_rr()
    assert b.unprotect_rtcp(report) is None
    assert b.rtcp_replay == 1
    assert b.counters() == {
        "srtp_auth_failed": 0, "srtp_replay": 2, "srtp_bad_packet": 0, "srtp_protect_failed": 0,
    }


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_outbound_repeat_for_nack_is_allowed(profile: SrtpProfile) -> None:
    """A retransmission without RTX protects the same SSRC/seq again: identical bytes."""
    a, b = pair(profile)
    packet = rtp(500)
    first = a.protect_rtp(packet)
    for seq in range(501, 520):
        b.unprotect_rtp(a.protect_rtp(rtp(seq)))
    again = a.protect_rtp(packet)
    assert again == first
    assert b.unprotect_rtp(again) == packet  # the receiver lost the first copy
    assert b.unprotect_rtp(a.protect_rtp(packet)) is None  # and refuses a third
    assert a.protect_failed == 0


def test_inbound_window_tolerates_reordering_up_to_its_size() -> None:
    a, b = pair(CM80, window_size=1024)
    packets = {seq: a.protect_rtp(rtp(seq)) for seq in range(0, 2101)}
    assert b.unprotect_rtp(packets[2100]) is not None
    assert b.unprotect_rtp(packets[2100 - 1000]) is not None  # late, inside the window
    assert b.unprotect_rtp(packets[2100 - 1100]) is None  # older than the window
    assert b.rtp_replay == 1
    wide_a, wide_b = pair(CM80, window_size=4096)
    late = {seq: wide_a.protect_rtp(rtp(seq)) for seq in (0, 3000)}
    assert wide_b.unprotect_rtp(late[3000]) is not None
    assert wide_b.unprotect_rtp(late[0]) is not None


def test_outbound_index_older_than_window_raises() -> None:
    a, _ = pair(CM80, window_size=64)
    for seq in range(0, 200):
        a.protect_rtp(rtp(seq))
    with pytest.raises(SrtpError):
        a.protect_rtp(rtp(10))
    assert a.protect_failed == 1


def test_protect_rejects_bad_input() -> None:
    a, _ = pair(GCM)
    with pytest.raises(SrtpError):
        a.protect_rtp(b"\x80\x60")
    with pytest.raises(SrtpError):
        a.protect_rtp(rtp(1, payload=b"x" * 2000))  # beyond the context's 2048-byte buffer
    with pytest.raises(SrtpError):
        a.protect_rtcp(b"\x80\xc9")
    assert a.protect_failed == 3
    assert isinstance(SrtpError("x"), ValueError)


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
def test_wrong_key_is_auth_failure(profile: SrtpProfile) -> None:
    a, _ = pair(profile)
    stranger = SrtpContext(profile, key_for(profile, 9), key_for(profile, 9))
    assert stranger.unprotect_rtp(a.protect_rtp(rtp(1))) is None
    assert stranger.unprotect_rtcp(a.protect_rtcp(rtcp_rr())) is None
    assert stranger.rtp_auth_failed == 1 and stranger.rtcp_auth_failed == 1


@pytest.mark.parametrize("profile", PROFILES, ids=PROFILE_IDS)
@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1600))
def test_unprotect_garbage_never_raises(profile: SrtpProfile, data: bytes) -> None:
    _, b = pair(profile)
    assert b.unprotect_rtp(data) is None
    assert b.unprotect_rtcp(data) is None
    assert sum(b.counters().values()) == 2


def test_unprotect_garbage_in_any_buffer_type_is_a_counted_drop() -> None:
    _, b = pair(CM80)
    assert b.unprotect_rtp(bytearray(40)) is None  # type: ignore[arg-type]
    assert b.unprotect_rtp(memoryview(bytes(3000))) is None  # type: ignore[arg-type]  # too long
    assert sum(b.counters().values()) == 2


def test_protect_takes_a_bytearray_without_changing_it() -> None:
    a, b = pair(GCM)
    packet = bytearray(rtp(7, payload=b"y" * 1300))
    before = bytes(packet)
    assert b.unprotect_rtp(a.protect_rtp(packet)) == before
    assert packet == before


def test_many_ssrcs_share_one_context() -> None:
    a, b = pair(GCM)
    for ssrc in range(1, 50):
        packet = rtp(1, ssrc=ssrc)
        assert b.unprotect_rtp(a.protect_rtp(packet)) == packet


def test_micro_benchmark_smoke() -> None:
    from bench.micro_srtp import bench_profile

    for profile in PROFILES:
        result = bench_profile(profile, iterations=200, size=1200)
        assert result["protect_unprotect_us"] > 0 and result["protect_us"] > 0
