"""DtlsEndpoint client vs DtlsEndpoint server in memory: handshake, SRTP keys and
profiles, fingerprint checks, retransmission through the timeout API, garbage input."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from sfu.transport.certificate import DtlsCertificate
from sfu.transport.dtls import (
    DtlsContext,
    DtlsEndpoint,
    DtlsRole,
    DtlsState,
    is_dtls,
    scan_records,
    split_datagrams,
)
from sfu.transport.srtp import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
    SrtpContext,
)

CM80 = SRTP_PROFILES[SRTP_AES128_CM_SHA1_80]
GCM = SRTP_PROFILES[SRTP_AEAD_AES_128_GCM]

CLIENT_CERT = DtlsCertificate.generate()
SERVER_CERT = DtlsCertificate.generate()
OTHER_CERT = DtlsCertificate.generate()
CLIENT_CTX = DtlsContext(CLIENT_CERT)
SERVER_CTX = DtlsContext(SERVER_CERT)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


DropRule = Callable[[bytes], bool]


def is_client_hello(d: bytes) -> bool:
    return d[0] == 22 and len(d) > 13 and d[13] == 1


def is_server_hello(d: bytes) -> bool:
    return d[0] == 22 and len(d) > 13 and d[13] == 2


def is_client_certificate_flight(d: bytes) -> bool:
    return d[0] == 22 and len(d) > 13 and d[13] == 11


def starts_with_change_cipher_spec(d: bytes) -> bool:
    return d[0] == 20


class Link:
    """Client and server endpoints joined by in-memory queues.

    `drop_*` rules drop the first datagram (in that direction) they match, once each.
    """

    def __init__(
        self,
        client_fps: Iterable[tuple[str, str]] | None = None,
        server_fps: Iterable[tuple[str, str]] | None = None,
        *,
        client_ctx: DtlsContext = CLIENT_CTX,
        server_ctx: DtlsContext = SERVER_CTX,
        clock: Callable[[], float] = time.monotonic,
        drop_c2s: Iterable[DropRule] = (),
        drop_s2c: Iterable[DropRule] = (),
    ) -> None:
        self.c2s: list[bytes] = []
        self.s2c: list[bytes] = []
        self.drop_c2s = list(drop_c2s)
        self.drop_s2c = list(drop_s2c)
        self.dropped = 0
        self.client_mtu = client_ctx.mtu
        self.server_mtu = server_ctx.mtu
        self.largest = 0
        self.client_states: list[DtlsState] = []
        self.server_states: list[DtlsState] = []
        if client_fps is None:
            client_fps = [("sha-256", server_ctx.fingerprint)]
        if server_fps is None:
            server_fps = [("sha-256", client_ctx.fingerprint)]
        self.client = DtlsEndpoint(
            client_ctx, DtlsRole.CLIENT, self._send_c2s, client_fps, clock=clock,
            on_state=lambda e: self.client_states.append(e.state),
        )
        self.server = DtlsEndpoint(
            server_ctx, DtlsRole.SERVER, self._send_s2c, server_fps, clock=clock,
            on_state=lambda e: self.server_states.append(e.state),
        )

    def _send_c2s(self, data: bytes) -> None:
        assert len(data) <= self.client_mtu
        self.largest = max(self.largest, len(data))
        for rule in self.drop_c2s:
            if rule(data):
                self.drop_c2s.remove(rule)
                self.dropped += 1
                return
        self.c2s.append(data)

    def _send_s2c(self, data: bytes) -> None:
        assert len(data) <= self.server_mtu
        self.largest = max(self.largest, len(data))
        for rule in self.drop_s2c:
            if rule(data):
                self.drop_s2c.remove(rule)
                self.dropped += 1
                return
        self.s2c.append(data)

    def pump(self) -> int:
        delivered = 0
        while self.c2s or self.s2c:
            while self.c2s:
                self.server.handle_datagram(self.c2s.pop(0))
                delivered += 1
            while self.s2c:
                self.client.handle_datagram(self.s2c.pop(0))
                delivered += 1
        return delivered

    def connect(self) -> None:
        self.server.start()
        self.client.start()
        self.pump()

    @property
    def settled(self) -> bool:
        return self.client.state >= DtlsState.CONNECTED and self.server.state >= DtlsState.CONNECTED


def connected_link(**kwargs: object) -> Link:
    link = Link(**kwargs)  # type: ignore[arg-type]
    link.connect()
    assert link.client.state == DtlsState.CONNECTED, (link.client.reason, link.client.detail)
    assert link.server.state == DtlsState.CONNECTED, (link.server.reason, link.server.detail)
    return link


def rtp(seq: int, ssrc: int = 0xCAFE, payload: bytes = b"\x01" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, seq * 960, ssrc) + payload


def rtcp_pli(sender: int = 1, media: int = 0xCAFE) -> bytes:
    return struct.pack("!BBHII", 0x81, 206, 2, sender, media)


# --- pure helpers ---------------------------------------------------------------


def record(content_type: int, body: bytes, version: int = 0xFEFD, epoch: int = 0, seq: int = 0) -> bytes:
    return struct.pack("!BHHHIH", content_type, version, epoch, seq >> 32, seq & 0xFFFFFFFF, len(body)) + body


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", -1),
        (b"\x16\xfe\xfd" + b"\0" * 9, -1),  # 12 bytes: short header
        (record(22, b"abc"), 1 << 2),
        (record(22, b"abc", version=0xFEFF), 1 << 2),  # DTLS 1.0 record version (ClientHello)
        (record(22, b"abc") + record(20, b"\x01"), (1 << 2) | 1),
        (record(23, b"x" * 30), 1 << 3),
        (record(21, b"\x02\x28"), 1 << 1),
        (record(22, b"abc")[:-1], -1),  # truncated body
        (record(22, b"abc") + b"\x16\xfe", -1),  # trailing partial header
        (record(22, b"abc", version=0x0303), -1),  # TLS version
        (record(24, b"hb"), -1),  # heartbeat: not accepted
        (record(19, b"x"), -1),
        (record(22, b""), 1 << 2),
    ],
)
def test_scan_records(data: bytes, expected: int) -> None:
    assert scan_records(data) == expected


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_scan_records_never_raises(data: bytes) -> None:
    assert scan_records(data) >= -1


@settings(max_examples=100)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=12), st.integers(420, 1500))
def test_split_datagrams_packs_whole_records(sizes: list[int], mtu: int) -> None:
    data = b"".join(record(22, bytes([i % 256]) * n, seq=i) for i, n in enumerate(sizes))
    parts = split_datagrams(data, mtu)
    assert b"".join(parts) == data
    assert all(len(p) <= mtu for p in parts)
    assert all(scan_records(p) == 1 << 2 for p in parts)
    # Greedy: no two neighbours would have fitted together.
    assert all(len(a) + len(b) > mtu for a, b in zip(parts, parts[1:], strict=False))


def test_is_dtls_range() -> None:
    assert [b for b in range(256) if is_dtls(b)] == list(range(20, 64))


# --- handshake, keys, SRTP -----------------------------------------------------------


@pytest.mark.parametrize(
    ("client_profiles", "server_profiles", "expected"),
    [
        (None, None, GCM),  # GCM preferred when both offer it
        ([CM80, GCM], None, GCM),  # server preference decides
        ([CM80], None, CM80),
        (None, [CM80], CM80),
        ([GCM], [GCM], GCM),
    ],
    ids=["default", "client-prefers-cm", "client-cm-only", "server-cm-only", "gcm-only"],
)
def test_handshake_negotiates_profile_and_crosswise_keys(
    client_profiles: list | None, server_profiles: list | None, expected: object
) -> None:
    client_ctx = CLIENT_CTX if client_profiles is None else DtlsContext(CLIENT_CERT, srtp_profiles=client_profiles)
    server_ctx = SERVER_CTX if server_profiles is None else DtlsContext(SERVER_CERT, srtp_profiles=server_profiles)
    link = connected_link(client_ctx=client_ctx, server_ctx=server_ctx)
    ck, sk = link.client.srtp_keys, link.server.srtp_keys
    assert ck is not None and sk is not None
    assert ck.profile is expected and sk.profile is expected
    assert ck.tx_key == sk.rx_key and ck.rx_key == sk.tx_key
    assert ck.tx_key != ck.rx_key
    assert len(ck.tx_key) == expected.master_length  # type: ignore[attr-defined]
    assert link.client_states == [DtlsState.CONNECTING, DtlsState.CONNECTED]
    assert link.server_states == [DtlsState.CONNECTING, DtlsState.CONNECTED]
    assert link.client.next_timeout() is None and link.server.next_timeout() is None
    assert link.client.peer_certificate_der == SERVER_CERT.der
    assert link.server.peer_certificate_der == CLIENT_CERT.der


@pytest.mark.parametrize("server_profiles", [None, [CM80]], ids=["gcm", "cm80"])
def test_srtp_round_trip_with_derived_keys(server_profiles: list | None) -> None:
    server_ctx = SERVER_CTX if server_profiles is None else DtlsContext(SERVER_CERT, srtp_profiles=server_profiles)
    link = connected_link(server_ctx=server_ctx)
    assert link.client.srtp_keys is not None and link.server.srtp_keys is not None
    client = SrtpContext.from_keys(link.client.srtp_keys)
    server = SrtpContext.from_keys(link.server.srtp_keys)
    for seq in range(10):
        assert server.unprotect_rtp(client.protect_rtp(rtp(seq))) == rtp(seq)
        assert client.unprotect_rtp(server.protect_rtp(rtp(seq, ssrc=7))) == rtp(seq, ssrc=7)
    assert server.unprotect_rtcp(client.protect_rtcp(rtcp_pli())) == rtcp_pli()
    assert client.unprotect_rtcp(server.protect_rtcp(rtcp_pli(2))) == rtcp_pli(2)
    tampered = bytearray(client.protect_rtp(rtp(99)))
    tampered[-1] ^= 0x80
    assert server.unprotect_rtp(bytes(tampered)) is None
    tampered = bytearray(server.protect_rtcp(rtcp_pli()))
    tampered[9] ^= 0x01
    assert client.unprotect_rtcp(bytes(tampered)) is None
    # A side does not accept its own outbound traffic (distinct directions' keys).
    assert client.unprotect_rtp(client.protect_rtp(rtp(50))) is None


def test_small_mtu_fragments_flights() -> None:
    """Flights larger than the MTU leave as several datagrams, none above it."""
    link = connected_link(client_ctx=DtlsContext(CLIENT_CERT, mtu=300), server_ctx=DtlsContext(SERVER_CERT, mtu=300))
    assert 250 < link.largest <= 300
    assert link.client.srtp_keys is not None and link.server.srtp_keys is not None
    assert link.client.srtp_keys.tx_key == link.server.srtp_keys.rx_key
    with pytest.raises(ValueError):
        DtlsContext(CLIENT_CERT, mtu=100)


@pytest.mark.parametrize(
    "fingerprints",
    [
        [("sha-1", CLIENT_CERT.fingerprint("sha-1"))],
        [("SHA-384", CLIENT_CERT.fingerprint("sha-384"))],
        [("sha-512", CLIENT_CERT.fingerprint("sha-512").lower())],
        [("sha-256", OTHER_CERT.fingerprint()), ("sha-256", CLIENT_CERT.fingerprint())],
        [("md5", "00:11"), ("sha-256", CLIENT_CERT.fingerprint())],  # unknown hash ignored
    ],
    ids=["sha1", "sha384-uppercase-name", "sha512-lowercase-hex", "second-of-two", "unknown-ignored"],
)
def test_accepted_fingerprint_forms(fingerprints: list[tuple[str, str]]) -> None:
    connected_link(server_fps=fingerprints)


@pytest.mark.parametrize(
    "fingerprints",
    [[("md5", "00:11")], [("sha-256", "AB:CD")], [("sha-256", "zz:" * 31 + "zz")]],
    ids=["only-unknown-hash", "wrong-length", "not-hex"],
)
def test_unusable_fingerprints_raise(fingerprints: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        DtlsEndpoint(SERVER_CTX, DtlsRole.SERVER, lambda d: None, fingerprints)


def test_server_rejects_client_certificate_by_fingerprint() -> None:
    link = Link(server_fps=[("sha-256", OTHER_CERT.fingerprint())])
    link.connect()
    assert link.server.state == DtlsState.FAILED
    assert link.server.reason == "dtls_fingerprint_mismatch"
    assert "matches no remote SDP fingerprint" in (link.server.detail or "")
    assert hashlib.sha256(CLIENT_CERT.der).hexdigest()[:2].upper() in (link.server.detail or "")
    # The server's alert reached the client, which failed during its handshake.
    assert link.client.state == DtlsState.FAILED
    assert link.client.reason == "dtls_handshake_failed"
    assert "alert" in (link.client.detail or "")  # OpenSSL sends unknown_ca for a refused leaf
    assert link.client.srtp_keys is None and link.server.srtp_keys is None
    assert link.server.counters()["dtls_fingerprint_mismatch"] == 1


def test_client_rejects_server_certificate_by_fingerprint() -> None:
    link = Link(client_fps=[("sha-384", OTHER_CERT.fingerprint("sha-384"))])
    link.connect()
    assert link.client.state == DtlsState.FAILED
    assert link.client.reason == "dtls_fingerprint_mismatch"
    assert link.server.state == DtlsState.FAILED
    assert link.server.srtp_keys is None


def test_fingerprints_given_after_handshake_complete_it() -> None:
    link = Link(server_fps=[])
    link.connect()
    assert link.client.state == DtlsState.CONNECTED
    assert link.server.state == DtlsState.CONNECTING  # OpenSSL done, peer not yet authenticated
    assert link.server.srtp_keys is None
    link.server.set_remote_fingerprints([("sha-256", CLIENT_CERT.fingerprint())])
    assert link.server.state == DtlsState.CONNECTED
    assert link.server.srtp_keys is not None and link.client.srtp_keys is not None
    assert link.server.srtp_keys.rx_key == link.client.srtp_keys.tx_key


def test_late_wrong_fingerprints_fail() -> None:
    link = Link(server_fps=[])
    link.connect()
    link.server.set_remote_fingerprints([("sha-256", OTHER_CERT.fingerprint())])
    assert link.server.state == DtlsState.FAILED
    assert link.server.reason == "dtls_fingerprint_mismatch"
    link.pump()  # our close_notify reaches the client
    assert link.client.state == DtlsState.CLOSED
    assert link.client.reason == "dtls_peer_closed"


def test_no_common_srtp_profile_fails() -> None:
    link = Link(
        client_ctx=DtlsContext(CLIENT_CERT, srtp_profiles=[CM80]),
        server_ctx=DtlsContext(SERVER_CERT, srtp_profiles=[GCM]),
    )
    link.connect()
    assert link.client.state == DtlsState.FAILED and link.client.reason == "dtls_no_srtp_profile"
    assert link.server.state == DtlsState.FAILED and link.server.reason == "dtls_no_srtp_profile"


def test_server_requires_a_client_certificate() -> None:
    """A raw pyOpenSSL client without a certificate is refused."""
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_NONE)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    sent: list[bytes] = []
    server = DtlsEndpoint(SERVER_CTX, DtlsRole.SERVER, sent.append, [("sha-256", CLIENT_CERT.fingerprint())])
    for _ in range(5):
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error:
            break
        while True:
            try:
                server.handle_datagram(conn.bio_read(65536))
            except SSL.WantReadError:
                break
        for d in sent:
            conn.bio_write(d)
        sent.clear()
    assert server.state == DtlsState.FAILED
    assert server.reason == "dtls_handshake_failed"
    assert "certificate" in (server.detail or "")


def test_close_notify_both_ways() -> None:
    link = connected_link()
    link.client.close()
    assert link.client.state == DtlsState.CLOSED and link.client.reason == "dtls_local_close"
    link.pump()
    assert link.server.state == DtlsState.CLOSED and link.server.reason == "dtls_peer_closed"
    link.client.close()  # idempotent
    assert link.client_states[-1] == DtlsState.CLOSED
    assert link.client_states.count(DtlsState.CLOSED) == 1


def test_closed_endpoint_counts_out_of_state() -> None:
    link = connected_link()
    link.server.close()
    link.server.handle_datagram(record(22, b"x" * 20))
    assert link.server.out_of_state == 1
    assert link.server.counters()["dtls_out_of_state"] == 1


def test_client_drops_datagrams_before_start() -> None:
    sent: list[bytes] = []
    client = DtlsEndpoint(CLIENT_CTX, DtlsRole.CLIENT, sent.append, [("sha-256", SERVER_CERT.fingerprint())])
    client.handle_datagram(record(22, b"\x02" + b"\0" * 40))
    assert client.state == DtlsState.NEW and client.out_of_state == 1 and not sent


def test_server_starts_on_first_client_hello() -> None:
    link = Link()
    link.client.start()  # server.start() never called
    link.pump()
    assert link.settled and link.server.state == DtlsState.CONNECTED


def test_application_data_is_ignored() -> None:
    link = connected_link()
    link.client._conn.write(b"sctp would be here")  # encrypted application data record
    link.client._flush()
    link.pump()
    assert link.server.state == DtlsState.CONNECTED
    assert link.server.app_data_ignored == 1


# --- timers -------------------------------------------------------------------------


def test_timeout_api_on_fake_clock() -> None:
    clock = FakeClock(500.0)
    link = Link(clock=clock)
    assert link.client.next_timeout() is None and link.server.next_timeout() is None
    link.server.start()
    assert link.server.next_timeout() == pytest.approx(530.0)  # only the handshake deadline
    link.client.start()
    first = link.client.next_timeout()
    assert first is not None and 500.9 < first <= 501.0  # OpenSSL's initial 1 s
    hello = list(link.c2s)
    link.c2s.clear()  # lose the ClientHello
    link.client.handle_timeout(500.5)  # not due
    assert not link.c2s and link.client.retransmissions == 0
    # Due on our clock but OpenSSL's own (wall) clock has not reached 1 s: re-armed, nothing sent.
    clock.now = first
    link.client.handle_timeout()
    assert not link.c2s
    again = link.client.next_timeout()
    assert again is not None and again > first + 0.5
    # Our handshake deadline runs on the injected clock alone.
    clock.now = 530.0
    link.client.handle_timeout()
    assert link.client.state == DtlsState.FAILED
    assert link.client.reason == "dtls_handshake_timeout"
    assert link.client.next_timeout() is None
    link.server.handle_timeout(529.9)
    assert link.server.state == DtlsState.CONNECTING
    link.server.handle_timeout(530.0)
    assert link.server.reason == "dtls_handshake_timeout"
    assert hello and all(is_dtls(d[0]) for d in hello)


def run_until_settled(link: Link, limit: float = 8.0) -> None:
    """Pump datagrams; when idle, wait for the earliest timer and fire both endpoints."""
    end = time.monotonic() + limit
    link.server.start()
    link.client.start()
    while time.monotonic() < end:
        link.pump()
        if link.settled:
            return
        due = [t for t in (link.client.next_timeout(), link.server.next_timeout()) if t is not None]
        assert due, "no timer armed while the handshake is incomplete"
        wait = min(due) - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.25))
        now = time.monotonic()
        link.client.handle_timeout(now)
        link.server.handle_timeout(now)
    raise AssertionError(f"not settled: {link.client!r} {link.server!r}")


@pytest.mark.parametrize(
    ("drop_c2s", "drop_s2c"),
    [
        ([is_client_hello], [starts_with_change_cipher_spec]),  # first and last flights
        ([is_client_certificate_flight], [is_server_hello]),  # the middle flights
    ],
    ids=["hello+finished", "server-hello+client-certificate"],
)
def test_handshake_survives_lost_flights(drop_c2s: list[DropRule], drop_s2c: list[DropRule]) -> None:
    """OpenSSL retransmits through handle_timeout; losing the server's last flight needs
    the client's retransmitted Finished to make the server repeat it."""
    link = Link(drop_c2s=drop_c2s, drop_s2c=drop_s2c)
    run_until_settled(link)
    assert link.dropped == 2
    assert link.client.state == DtlsState.CONNECTED and link.server.state == DtlsState.CONNECTED
    assert link.client.retransmissions >= 1
    assert link.client.srtp_keys is not None and link.server.srtp_keys is not None
    assert link.client.srtp_keys.tx_key == link.server.srtp_keys.rx_key
    assert link.client.next_timeout() is None and link.server.next_timeout() is None


# --- garbage ------------------------------------------------------------------------

garbage = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda t, v, e, s, body: record(t, body, version=v, epoch=e, seq=s),
        st.sampled_from([20, 21, 22, 23]),
        st.sampled_from([0xFEFD, 0xFEFF]),
        st.integers(0, 3),
        st.integers(0, 2**48 - 1),
        st.binary(max_size=120),
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(garbage, min_size=1, max_size=5))
def test_garbage_never_breaks_a_connected_pair(datagrams: list[bytes]) -> None:
    link = connected_link()
    for d in datagrams:
        link.server.handle_datagram(d)
        link.client.handle_datagram(d)
    link.pump()
    assert link.server.state == DtlsState.CONNECTED
    assert link.client.state == DtlsState.CONNECTED
    server = SrtpContext.from_keys(link.server.srtp_keys)  # type: ignore[arg-type]
    client = SrtpContext.from_keys(link.client.srtp_keys)  # type: ignore[arg-type]
    assert server.unprotect_rtp(client.protect_rtp(rtp(1))) == rtp(1)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(garbage, min_size=1, max_size=5), st.sampled_from(["new", "connecting"]))
def test_garbage_during_handshake_never_raises(datagrams: list[bytes], phase: str) -> None:
    link = Link()
    if phase == "connecting":
        link.client.start()
        link.server.handle_datagram(link.c2s.pop(0))  # server has answered the ClientHello
    for d in datagrams:
        link.server.handle_datagram(d)
        link.client.handle_datagram(d)
    assert link.server.state in (DtlsState.CONNECTING, DtlsState.FAILED)
    assert link.client.state in (DtlsState.NEW, DtlsState.CONNECTING, DtlsState.FAILED)
    for endpoint in (link.client, link.server):
        if endpoint.state == DtlsState.FAILED:
            assert endpoint.reason == "dtls_handshake_failed" and endpoint.detail


def test_garbage_counts() -> None:
    link = connected_link()
    link.server.handle_datagram(b"\x16\xfe\xfd\x00")
    link.server.handle_datagram(record(22, b"abc", version=0x0303))
    link.server.handle_datagram(record(23, b"z" * 40, epoch=1))
    link.server.handle_datagram(record(22, b"q" * 40, epoch=1, seq=99))  # bad MAC: OpenSSL drops it
    assert link.server.bad_records == 2
    assert link.server.app_data_ignored == 1
    assert link.server.state == DtlsState.CONNECTED
    counters = link.server.counters()
    assert counters["dtls_bad_record"] == 2 and counters["dtls_app_data_ignored"] == 1
