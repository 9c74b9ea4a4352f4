"""Micro-benchmark: CPU per forwarded packet through the routing path, without sockets.

One publisher stream fans out to K DownTracks; each DownTrack's "transport" protects the
packet with a real SRTP context (as the WebRtcTransport does) and drops it instead of
calling sendto, so the figure is routing + crypto. `--profile` prints the hotspots.

    python -m bench.micro_forward --fanout 5 --packets 100000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Any

from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.track import PublishedTrack
from sfu.rtp.ext import abs_send_time_from_seconds, encode_abs_send_time
from sfu.rtp.packet import build_rtp
from sfu.rtp.vp8 import build_vp8_descriptor
from sfu.sdp import URI_ABS_SEND_TIME, URI_MID, NegotiatedCodec
from sfu.transport.srtp import SRTP_PROFILES, SrtpContext


class ProtectOnly:
    """Stands in for WebRtcTransport.send_rtp minus the socket write."""

    __slots__ = ("srtp", "sent", "connected")

    def __init__(self) -> None:
        prof = SRTP_PROFILES[7]  # AEAD_AES_128_GCM
        self.srtp = SrtpContext(prof, os.urandom(prof.master_length), os.urandom(prof.master_length))
        self.sent = 0
        self.connected = True

    def send_rtp(self, buf: Any) -> bool:
        self.srtp.protect_rtp(buf)
        self.sent += 1
        return True


def build_packets(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        keyframe = i % 90 == 0
        desc = build_vp8_descriptor(start=True, picture_id=i & 0x7FFF)
        vp8 = (b"\x10\x02\x00\x9d\x01\x2a" if keyframe else b"\x11\x02\x00") + bytes(1050)
        exts = [(1, encode_abs_send_time(abs_send_time_from_seconds(i / 100))), (2, b"1")]
        out.append(build_rtp(96, i & 0xFFFF, (i // 3) * 3000, 0x1234, desc + vp8, extensions=exts))
    return out


def run(fanout: int, packets: int, profile: bool) -> dict[str, float]:
    counters = WorkerCounters()
    codec = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
    track = PublishedTrack("pub:video:0", "pub", "video", codec, lambda s: None, None)
    forwarded = {URI_ABS_SEND_TIME: 2}
    ext_map = build_ext_map({URI_ABS_SEND_TIME: 1, URI_MID: 2}, forwarded)
    stream = RecvStream(track, 0x1234, None, 96, 97, 90000, "VP8", ext_map, 0, True, counters,
                        build_ext_lengths(forwarded))
    track.set_source(stream, 0.0)
    transports = []
    for k in range(fanout):
        t = ProtectOnly()
        dt = DownTrack(track, f"sub{k}", t, 1000 + k, 2000 + k, "cname", counters)
        dt.bind(str(k), 96, 97, True)
        track.add_downtrack(dt)
        transports.append(t)
    pkts = build_packets(min(packets, 20000))
    t0 = time.process_time()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    now = 0.0
    for i in range(packets):
        now += 0.001
        stream.receive(pkts[i % len(pkts)] if i < len(pkts) else _renumber(pkts[i % len(pkts)], i), now)
    if prof:
        prof.disable()
    cpu = time.process_time() - t0
    sent = sum(t.sent for t in transports)
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(14)
    return {"fanout": fanout, "packets_in": packets, "packets_out": sent,
            "us_per_forwarded_packet": cpu / max(sent, 1) * 1e6, "us_per_incoming_packet": cpu / packets * 1e6}


def _renumber(pkt: bytes, i: int) -> bytes:
    b = bytearray(pkt)
    b[2:4] = (i & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fanout", type=int, default=5)
    ap.add_argument("--packets", type=int, default=60000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    r = run(a.fanout, a.packets, a.profile)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
