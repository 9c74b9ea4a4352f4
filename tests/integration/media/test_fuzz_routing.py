"""Fuzz the worker with mutated real packets: captured from a live aiortc session, bit-flipped,
truncated, extended and spliced, then fed (1) right behind SRTP into the routing handlers and
(2) as raw datagrams into the endpoint. Nothing raises, the worker keeps forwarding, and
every refused packet is counted by reason."""

from __future__ import annotations

import random

import pytest

from tests.media_helpers import AiortcParticipant, wait_until

pytestmark = pytest.mark.slow


def mutate(rng: random.Random, pkt: bytes, corpus: list[bytes]) -> bytes:
    b = bytearray(pkt)
    op = rng.randrange(7)
    if op == 0 and b:  # flip bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        b = b[: rng.randrange(len(b) + 1)]
    elif op == 2:  # extend with garbage
        b += rng.randbytes(rng.randint(1, 64))
    elif op == 3 and len(b) > 12:  # smash the header fields the SFU reads
        i = rng.choice([0, 1, 2, 3, 12, 13, 14, 15])
        if i < len(b):
            b[i] = rng.randrange(256)
    elif op == 4:  # splice two packets
        other = rng.choice(corpus)
        cut = rng.randrange(len(b) + 1)
        b = b[:cut] + other[rng.randrange(len(other) + 1):]
    elif op == 5:  # random bytes with an RTP/RTCP-looking first byte
        b = bytearray([rng.randrange(128, 192)]) + rng.randbytes(rng.randint(0, 1400))
    else:  # the header extension length word, padding bit, CSRC count
        if len(b) > 16:
            b[0] |= rng.choice([0x10, 0x20, 0x0F])
            b[14:16] = rng.randbytes(2)
    return bytes(b)


async def test_mutated_real_packets_never_break_the_worker(sfu):
    pub = AiortcParticipant("pub", "yellow")
    sub = AiortcParticipant("sub", None, audio=False)
    try:
        await sfu.join(pub)
        await sfu.join(sub, publish=False)
        room = sfu.worker.rooms["room-1"]
        p_pub, p_sub = room.participants["pub"], room.participants["sub"]
        rtp: list[bytes] = []
        rtcp: list[bytes] = []
        orig_rtp, orig_rtcp = p_pub.publish.on_rtp, p_pub.publish.on_rtcp

        def tap_rtp(data: bytes) -> None:
            if len(rtp) < 300:
                rtp.append(data)
            orig_rtp(data)

        def tap_rtcp(data: bytes) -> None:
            if len(rtcp) < 50:
                rtcp.append(data)
            orig_rtcp(data)

        p_pub.publish_transport.handler = type("Tap", (), {"on_rtp": staticmethod(tap_rtp),
                                                           "on_rtcp": staticmethod(tap_rtcp)})()
        await wait_until(lambda: len(rtp) >= 200 and len(rtcp) >= 3, 15, "captured packets")
        p_pub.publish_transport.handler = p_pub.publish
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames > 5, 10, "video flowing")

        rng = random.Random(20261127)
        corpus = rtp + rtcp
        drops_before = sum(sfu.stats()["counters"]["drops"].values())
        for _ in range(20_000):  # behind SRTP: the routing layer's parsers
            data = mutate(rng, rng.choice(corpus), corpus)
            target = rng.randrange(3)
            if target == 0:
                p_pub.publish.on_rtp(data)
            elif target == 1:
                p_pub.publish.on_rtcp(data)
            else:
                p_sub.subscribe.on_rtcp(data)
        endpoint = sfu.worker.endpoint
        addr = p_pub.publish_transport.remote_address
        endpoint_drops_before = sum(endpoint.counters().values())
        for _ in range(5_000):  # in front: raw datagrams from a known and an unknown address
            data = mutate(rng, rng.choice(corpus), corpus)
            endpoint.datagram_received(data, addr if rng.random() < 0.7 else ("127.0.0.1", 9))
        counters = sfu.stats()["counters"]
        assert sum(counters["drops"].values()) > drops_before  # refusals were counted by reason
        assert {"rtp_malformed", "rtp_unknown_ssrc"} & set(counters["drops"])
        assert sum(endpoint.counters().values()) > endpoint_drops_before
        # not stalled: the worker keeps forwarding the publisher's real packets and answering
        # commands. (Whether a subscriber's jitter buffer recovers from the forged sequence
        # numbers an authenticated publisher sent is up to the subscriber.)
        dt = room.participants["pub"].tracks["video:0"].downtracks[0]
        sent = p_sub.subscribe_transport.rtp_packets_out
        forwarded = dt.packets
        await wait_until(lambda: dt.packets > forwarded + 30 and p_sub.subscribe_transport.rtp_packets_out > sent + 30,
                         10, "the worker forwarding after the fuzzing")
        assert sfu.worker.handle("room_stats", {"room_id": "room-1"})["participants"]
        # (No loop-lag bound here: the gauge now reports the largest lag of its interval, and the
        # 25,000 inputs above are fed synchronously on this loop, so it measures this test.)
    finally:
        await pub.close()
        await sub.close()
