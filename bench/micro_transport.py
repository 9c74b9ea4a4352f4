"""Micro-benchmark: CPU cost of one received SRTP packet through the media endpoint.

Sets up a MediaEndpoint and one WebRtcTransport in memory (no sockets: a test double
stands in for the UDP socket), completes ICE-lite and DTLS with a far side built from
sfu.transport (DtlsEndpoint client + SrtpContext), then times, with time.process_time
over a bounded loop, `endpoint.datagram_received(srtp_packet, addr)` up to the
handler's `on_rtp`, against a bare `SrtpContext.unprotect_rtp` of the same packets.
Packets are protected in chunks outside the timed part. Run:
`python -m bench.micro_transport [--iterations 100000] [--size 1200]`.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from typing import Any

from sfu.transport import stun
from sfu.transport.certificate import DtlsCertificate
from sfu.transport.dtls import DtlsContext, DtlsEndpoint, DtlsRole, DtlsState
from sfu.transport.ice_lite import random_ice_string
from sfu.transport.srtp import SRTP_PROFILES, SrtpContext, SrtpProfile
from sfu.transport.udp import MediaEndpoint
from sfu.transport.webrtc_transport import WebRtcTransport

_RTP_HEADER = struct.Struct("!BBHII")
_CHUNK = 10_000
PEER_ADDR = ("127.0.0.1", 50000)


class _Socket:
    """Stands in for the asyncio DatagramTransport: keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "sockname" else default

    def close(self) -> None:
        pass


class _Count:
    __slots__ = ("rtp", "rtcp")

    def __init__(self) -> None:
        self.rtp = 0
        self.rtcp = 0

    def on_rtp(self, buf: bytes) -> None:
        self.rtp += 1

    def on_rtcp(self, buf: bytes) -> None:
        self.rtcp += 1


def connect(profile: SrtpProfile) -> tuple[MediaEndpoint, WebRtcTransport, _Count, SrtpContext]:
    """An endpoint with one connected transport; returns the far side's SRTP context."""
    sfu_ctx = DtlsContext(DtlsCertificate.generate(), srtp_profiles=[profile])
    peer_ctx = DtlsContext(DtlsCertificate.generate(), srtp_profiles=[profile])
    endpoint = MediaEndpoint(["127.0.0.1"], 40000, dtls_context=sfu_ctx)
    sock = _Socket()
    endpoint.connection_made(sock)  # type: ignore[arg-type]
    handler = _Count()
    transport = endpoint.create_transport(handler)
    local = transport.local_params()
    ufrag, pwd = random_ice_string(16), random_ice_string(32)
    transport.set_remote(ufrag, pwd, [("sha-256", peer_ctx.fingerprint)], "server")
    to_sfu: list[bytes] = []
    peer = DtlsEndpoint(peer_ctx, DtlsRole.CLIENT, to_sfu.append,
                        [(local.fingerprint.algorithm, local.fingerprint.value)])
    check = stun.build_binding_request(os.urandom(12), f"{local.ice_ufrag}:{ufrag}", local.ice_pwd.encode(),
                                       priority=1, tie_breaker=1, use_candidate=True)
    endpoint.datagram_received(check, PEER_ADDR)
    peer.start()
    for _ in range(50):
        if transport.connected and peer.state == DtlsState.CONNECTED:
            break
        while to_sfu:
            endpoint.datagram_received(to_sfu.pop(0), PEER_ADDR)
        while sock.sent:
            data = sock.sent.pop(0)
            if 20 <= data[0] <= 63:
                peer.handle_datagram(data)
    if not transport.connected or peer.srtp_keys is None:
        raise RuntimeError(f"in-memory handshake did not complete: {transport!r} {peer!r}")
    return endpoint, transport, handler, SrtpContext.from_keys(peer.srtp_keys)


def bench_profile(profile: SrtpProfile, iterations: int, size: int) -> dict[str, float]:
    endpoint, transport, handler, far = connect(profile)
    keys = transport.dtls.srtp_keys if transport.dtls is not None else None
    assert keys is not None
    # Bare unprotect: a second receiving context keyed like the transport's.
    bare = SrtpContext(profile, keys.rx_key, keys.tx_key)
    template = bytearray(size)
    for i in range(12, size):
        template[i] = i & 0xFF
    feed = endpoint.datagram_received
    unprotect = bare.unprotect_rtp
    t_endpoint = t_bare = 0.0
    done = 0
    seq = 0
    while done < iterations:
        n = min(_CHUNK, iterations - done)
        packets = []
        for _ in range(n):
            _RTP_HEADER.pack_into(template, 0, 0x80, 96, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, 0x1234ABCD)
            packets.append(far.protect_rtp(bytes(template)))
            seq += 1
        start = time.process_time()
        for p in packets:
            feed(p, PEER_ADDR)
        t_endpoint += time.process_time() - start
        start = time.process_time()
        for p in packets:
            unprotect(p)
        t_bare += time.process_time() - start
        done += n
        print(f"\r  {profile.name:<26} {done * 100 // iterations:3d}%", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if handler.rtp != iterations or transport.counters()["srtp_auth_failed"] or bare.rtp_auth_failed:
        raise RuntimeError(f"packets lost in the benchmark: {transport.counters()}")
    endpoint.close()
    per = 1e6 / iterations
    return {
        "endpoint_us": t_endpoint * per,
        "bare_unprotect_us": t_bare * per,
        "demux_overhead_us": (t_endpoint - t_bare) * per,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iterations", type=int, default=100_000, help="packets per profile")
    parser.add_argument("--size", type=int, default=1200, help="RTP packet size in bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.iterations <= 0 or args.size < 12:
        print("--iterations must be positive and --size at least 12", file=sys.stderr)
        return 2
    results = {p.name: bench_profile(p, args.iterations, args.size) for p in SRTP_PROFILES.values()}
    if args.json:
        print(json.dumps({"iterations": args.iterations, "size": args.size, "profiles": results}, indent=2))
        return 0
    print(f"CPU per received {args.size}-byte SRTP packet, datagram_received -> on_rtp "
          f"({args.iterations} packets, time.process_time)")
    print(f"{'profile':<26}{'endpoint':>10}{'unprotect':>11}{'overhead':>10}  (us)")
    for name, r in results.items():
        print(f"{name:<26}{r['endpoint_us']:>10.2f}{r['bare_unprotect_us']:>11.2f}{r['demux_overhead_us']:>10.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro_transport", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
