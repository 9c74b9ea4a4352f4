"""DtlsEndpoint against independent peers: the `openssl` command line (s_client against
our server role, s_server against our client role) over real UDP on 127.0.0.1, driven
by an asyncio DatagramProtocol with loop.call_at timers, as the worker does.

The keying material the openssl tool prints must equal the one our keys came from."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from sfu.transport.certificate import DtlsCertificate
from sfu.transport.dtls import DtlsContext, DtlsEndpoint, DtlsRole, DtlsState
from sfu.transport.srtp import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
    SrtpKeys,
)

OPENSSL: str = shutil.which("openssl") or "openssl"
pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command is not installed"
)

CM80 = SRTP_PROFILES[SRTP_AES128_CM_SHA1_80]
GCM = SRTP_PROFILES[SRTP_AEAD_AES_128_GCM]
OURS = DtlsCertificate.generate()
PEER = DtlsCertificate.generate()
OTHER = DtlsCertificate.generate()
CONTEXT = DtlsContext(OURS)

KEYING_MATERIAL = re.compile(rb"Keying material: ([0-9A-F]+)")
SRTP_PROFILE = re.compile(rb"SRTP Extension negotiated, profile=(\S+)")


class DtlsOverUdp(asyncio.DatagramProtocol):
    """One UDP socket, one DtlsEndpoint, timers from next_timeout() via loop.call_at."""

    def __init__(self, role: DtlsRole, fingerprints: Iterable[tuple[str, str]], remote: tuple[str, int] | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.remote = remote
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.settled = asyncio.Event()
        self.endpoint = DtlsEndpoint(
            CONTEXT, role, self._send, fingerprints, clock=self.loop.time, on_state=self._on_state
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.remote is None:
            self.remote = addr
        if addr != self.remote:
            return
        self.endpoint.handle_datagram(data)
        self._schedule()

    def start(self) -> None:
        self.endpoint.start()
        self._schedule()

    def _send(self, data: bytes) -> None:
        assert self.transport is not None and self.remote is not None
        self.transport.sendto(data, self.remote)

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        due = self.endpoint.next_timeout()
        if due is not None:
            self.timer = self.loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.endpoint.handle_timeout()
        self._schedule()

    def _on_state(self, endpoint: DtlsEndpoint) -> None:
        if endpoint.state >= DtlsState.CONNECTED:
            self.settled.set()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.close()


def keying_material(keys: SrtpKeys, is_client: bool) -> bytes:
    """Rebuild RFC 5764 client key | server key | client salt | server salt from our split."""
    k = keys.profile.key_length
    client, server = (keys.tx_key, keys.rx_key) if is_client else (keys.rx_key, keys.tx_key)
    return client[:k] + server[:k] + client[k:] + server[k:]


@pytest.fixture(scope="module")
def peer_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("openssl-peer")
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(PEER.certificate_pem())
    key.write_bytes(PEER.private_key_pem())
    return cert, key


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def finish(process: asyncio.subprocess.Process, timeout: float = 5.0) -> bytes:
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
    return out


@pytest.mark.parametrize(
    ("offer", "expected"),
    [("SRTP_AES128_CM_SHA1_80", CM80), ("SRTP_AES128_CM_SHA1_80:SRTP_AEAD_AES_128_GCM", GCM)],
    ids=["cm80", "gcm-preferred"],
)
async def test_openssl_s_client_against_our_server(
    peer_files: tuple[Path, Path], offer: str, expected: object
) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: DtlsOverUdp(DtlsRole.SERVER, [("sha-256", PEER.fingerprint())], None),
        local_addr=("127.0.0.1", 0),
    )
    port = transport.get_extra_info("sockname")[1]
    cert, key = peer_files
    length = expected.export_length  # type: ignore[attr-defined]
    process = await asyncio.create_subprocess_exec(
        OPENSSL, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}",
        "-use_srtp", offer, "-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", str(length),
        "-cert", str(cert), "-key", str(key),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(proto.settled.wait(), 10)
        out = await finish(process)  # stdin EOF: s_client sends close_notify and exits
        await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        proto.close()
    endpoint = proto.endpoint
    keys = endpoint.srtp_keys
    assert keys is not None, (endpoint.reason, endpoint.detail)
    assert keys.profile is expected
    match = KEYING_MATERIAL.search(out)
    assert match is not None, out[-2000:]
    assert keying_material(keys, is_client=False) == bytes.fromhex(match.group(1).decode())
    profile = SRTP_PROFILE.search(out)
    assert profile is not None and profile.group(1).decode() == expected.name  # type: ignore[attr-defined]
    assert endpoint.state == DtlsState.CLOSED and endpoint.reason == "dtls_peer_closed"


async def test_our_server_refuses_openssl_client_with_wrong_fingerprint(peer_files: tuple[Path, Path]) -> None:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: DtlsOverUdp(DtlsRole.SERVER, [("sha-256", OTHER.fingerprint())], None),
        local_addr=("127.0.0.1", 0),
    )
    port = transport.get_extra_info("sockname")[1]
    cert, key = peer_files
    process = await asyncio.create_subprocess_exec(
        OPENSSL, "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}",
        "-use_srtp", "SRTP_AES128_CM_SHA1_80", "-cert", str(cert), "-key", str(key),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(proto.settled.wait(), 10)
        out = await finish(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        proto.close()
    assert proto.endpoint.state == DtlsState.FAILED
    assert proto.endpoint.reason == "dtls_fingerprint_mismatch"
    assert proto.endpoint.srtp_keys is None
    assert KEYING_MATERIAL.search(out) is None


@pytest.mark.parametrize(
    ("server_profiles", "expected"),
    [("SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80", GCM), ("SRTP_AES128_CM_SHA1_80", CM80)],
    ids=["gcm", "cm80"],
)
async def test_our_client_against_openssl_s_server(
    peer_files: tuple[Path, Path], server_profiles: str, expected: object
) -> None:
    loop = asyncio.get_running_loop()
    port = free_udp_port()
    cert, key = peer_files
    length = expected.export_length  # type: ignore[attr-defined]
    process = await asyncio.create_subprocess_exec(
        OPENSSL, "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
        "-use_srtp", server_profiles, "-keymatexport", "EXTRACTOR-dtls_srtp",
        "-keymatexportlen", str(length), "-cert", str(cert), "-key", str(key), "-verify", "1",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = b""
    proto: DtlsOverUdp | None = None
    try:
        while b"ACCEPT" not in output:
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            assert line, output
            output += line
        _, proto = await loop.create_datagram_endpoint(
            lambda: DtlsOverUdp(DtlsRole.CLIENT, [("sha-256", PEER.fingerprint())], ("127.0.0.1", port)),
            local_addr=("127.0.0.1", 0),
        )
        proto.start()
        await asyncio.wait_for(proto.settled.wait(), 10)
        while KEYING_MATERIAL.search(output) is None:
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            assert line, output
            output += line
        proto.endpoint.close()  # close_notify ends s_server's only connection
        output += await finish(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if proto is not None:
            proto.close()
    assert proto is not None
    endpoint = proto.endpoint
    keys = endpoint.srtp_keys
    assert keys is not None, (endpoint.reason, endpoint.detail)
    assert keys.profile is expected
    match = KEYING_MATERIAL.search(output)
    assert match is not None
    assert keying_material(keys, is_client=True) == bytes.fromhex(match.group(1).decode())
    profile = SRTP_PROFILE.search(output)
    assert profile is not None and profile.group(1).decode() == expected.name  # type: ignore[attr-defined]
    assert endpoint.peer_certificate_der == PEER.der
