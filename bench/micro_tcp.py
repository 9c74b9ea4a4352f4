"""Micro-benchmark: SFU CPU per forwarded packet over ICE-TCP against UDP.

A child process runs a MediaEndpoint (uvloop, real loopback sockets, UDP and ICE-TCP) with
two transports: what arrives on the first is sent on the second (one SRTP unprotect, one
protect, one send per packet: the per-packet path of a 1:1 forward without the routing
layer). The parent drives both with SoftPeer-like far sides (tests/integration/transport/
softpeer.py) over UDP or over TCP, sends `--packets` RTP packets of `--size` bytes paced at
`--rate` per second, and the child reports its own CPU time (getrusage, user+system) over
the sending window. Figure: child CPU / packets received by the SFU, per transport. Run:
`python -m bench.micro_tcp [--packets 30000] [--rate 10000] [--size 1100] [--json out.json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import struct
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

_RTP = struct.Struct("!BBHII")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the SFU side (child process) ------------------------------------------------------


class _Forward:
    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: Any = None

    def on_rtp(self, buf: bytes) -> None:
        self.out.send_rtp(buf)

    def on_rtcp(self, buf: bytes) -> None:
        pass


async def _sfu(conn: Connection) -> None:
    from sfu.transport.udp import MediaEndpoint

    loop = asyncio.get_running_loop()
    ep = MediaEndpoint(["127.0.0.1"], 0, tcp_port=0, clock=loop.time)
    await ep.start()
    fwd = _Forward()
    pub = ep.create_transport(fwd)
    sub = ep.create_transport()
    fwd.out = sub
    params = [t.local_params() for t in (pub, sub)]
    conn.send([(p.ice_ufrag, p.ice_pwd, p.fingerprint.value, p.candidates[0], p.tcp_candidates[0]) for p in params])
    recv = lambda: loop.run_in_executor(None, conn.recv)  # noqa: E731  control messages only
    remotes = await recv()
    for t, (ufrag, pwd, fp) in zip((pub, sub), remotes, strict=True):
        t.set_remote(ufrag, pwd, [("sha-256", fp)], "server")
    while True:
        msg = await recv()
        if msg == "start":
            start = _cpu()
            conn.send("started")
        elif msg == "stop":
            conn.send({"cpu_seconds": _cpu() - start, "in": pub.rtp_packets_in, "out": sub.rtp_packets_out,
                       "drops": {k: v for k, v in ep.totals().items() if v and ("drop" in k or "full" in k or
                                                                                 k.startswith("tcp_"))}})
        elif msg == "reset":
            pub.rtp_packets_in = sub.rtp_packets_out = 0
        elif msg == "quit":
            ep.close()
            return


def _child(conn: Connection) -> None:
    import uvloop

    uvloop.run(_sfu(conn))


# -- the far sides (parent) -------------------------------------------------------------


class _Remote:
    """What SoftPeer.connect needs of a WebRtcTransport, for one in the child."""

    def __init__(self, params: Any, sink: list[Any]) -> None:
        from sfu.sdp import Fingerprint, LocalTransportParams

        ufrag, pwd, fp, udp, tcp = params
        self.params = LocalTransportParams(ufrag, pwd, Fingerprint("sha-256", fp), (tuple(udp),),
                                           tcp_candidates=(tuple(tcp),))
        self.sink = sink
        self.connected = False

    def local_params(self) -> Any:
        return self.params

    def set_remote(self, ufrag: str, pwd: str, fingerprints: Any, role: str) -> None:
        self.sink.append((ufrag, pwd, fingerprints[0][1]))


async def _run(kind: str, packets: int, rate: int, size: int) -> dict[str, Any]:
    from sfu.transport.certificate import DtlsCertificate
    from sfu.transport.dtls import DtlsContext
    from tests.integration.transport.softpeer import SoftPeer, TcpSoftPeer

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child,), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    recv = lambda: loop.run_in_executor(None, parent.recv)  # noqa: E731
    try:
        sink: list[Any] = []
        remotes = [_Remote(p, sink) for p in await recv()]
        context = DtlsContext(DtlsCertificate.generate())
        cls = TcpSoftPeer if kind == "tcp" else SoftPeer
        peers = [await cls.open(context) for _ in remotes]
        # set_remote must reach the child before the peers' DTLS: collect, send, then connect.
        for peer, remote in zip(peers, remotes, strict=True):
            peer.remote = remote.params
            remote.set_remote(peer.ufrag, peer.pwd, [("sha-256", context.fingerprint)], "server")
        parent.send(sink[:])
        for peer, remote in zip(peers, remotes, strict=True):
            remote.connected = True  # SoftPeer waits for its own SRTP keys
            await peer.connect(remote)  # type: ignore[arg-type]
        pub, sub = peers
        payload = bytes(size - 12)
        # warm-up, then the measured window
        for seq in range(500):
            pub.send_raw(pub.protect_rtp(_RTP.pack(0x80, 96, seq, seq * 90, 0x1234) + payload))
            if seq % 50 == 0:
                await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)
        parent.send("reset")
        parent.send("start")
        assert await recv() == "started"
        batch = max(1, rate // 1000)
        t0 = time.monotonic()
        seq = 500
        for i in range(0, packets, batch):
            for _ in range(min(batch, packets - i)):
                seq += 1
                pub.send_raw(pub.protect_rtp(_RTP.pack(0x80, 96, seq & 0xFFFF, seq * 90, 0x1234) + payload))
            delay = t0 + (i + batch) / rate - time.monotonic()
            await asyncio.sleep(max(0.0, delay))
        await asyncio.sleep(0.3)
        parent.send("stop")
        result: dict[str, Any] = await recv()
        result["received_by_peer"] = len(sub.rtp) - 500
        result["us_per_packet"] = 1e6 * result["cpu_seconds"] / max(1, result["in"])
        parent.send("quit")
        for peer in peers:
            peer.close()
        return result
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.micro_tcp")
    p.add_argument("--packets", type=int, default=30000)
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--size", type=int, default=1100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out: dict[str, list[dict[str, Any]]] = {"udp": [], "tcp": []}
    for _ in range(args.rounds):
        for kind in ("udp", "tcp"):
            r = asyncio.run(_run(kind, args.packets, args.rate, args.size))
            out[kind].append(r)
            print(f"{kind}: {r['us_per_packet']:.2f} us/packet (in {r['in']}, out {r['out']}, "
                  f"peer got {r['received_by_peer']}, drops {r['drops']})", flush=True)
    med = {k: sorted(r["us_per_packet"] for r in v)[len(v) // 2] for k, v in out.items()}
    print(f"median: udp {med['udp']:.2f} us, tcp {med['tcp']:.2f} us, tcp/udp {med['tcp'] / med['udp']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": out, "median_us": med}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
