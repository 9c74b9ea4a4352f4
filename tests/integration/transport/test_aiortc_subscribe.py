"""The SFU sends to a real aiortc subscriber: subscribe offer from sfu.sdp, aiortc's
answer applied late (after its DTLS ClientHello, as over a real signaling channel),
SRTP to aiortc's receivers (a decoded VP8 frame and Opus audio), SRTCP both ways."""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSenderInfo, RtcpSrPacket, RtpPacket

from sfu.sdp import (
    NegotiatedCodec,
    OutTrack,
    SubscribeParams,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)
from sfu.transport.udp import MediaEndpoint
from sfu.transport.webrtc_transport import WebRtcTransport

from .conftest import Recorder, wait_until

pytestmark = pytest.mark.timeout(30)

AUDIO_SSRC = 1001
VIDEO_SSRC = 2001
OPUS_C = NegotiatedCodec("audio", "opus", 111, 48000, 2, (("minptime", "10"), ("useinbandfec", "1")))
VP8_C = NegotiatedCodec("video", "VP8", 96, 90000)
OPUS_SILENCE = b"\xf8\xff\xfe"  # one 20 ms Opus frame (CELT, fullband, silence)
WIDTH, HEIGHT = 320, 240


def vp8_keyframe() -> bytes:
    """One VP8 keyframe of a gradient picture, encoded by libvpx through PyAV."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.time_base = fractions.Fraction(1, 90000)
    picture = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    picture[:, :, 0] = np.arange(WIDTH, dtype=np.uint8)[None, :]
    picture[:, :, 1] = np.arange(HEIGHT, dtype=np.uint8)[:, None]
    frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
    frame.pts = 0
    packets = codec.encode(frame) + codec.encode(None)
    assert packets and packets[0].is_keyframe
    return bytes(packets[0])


def vp8_packets(frame: bytes, seq: int, timestamp: int, pt: int, chunk: int = 300) -> list[bytes]:
    """RFC 7741 packetization with a 1-byte descriptor (S bit on the first packet)."""
    pieces = [frame[i : i + chunk] for i in range(0, len(frame), chunk)]
    return [
        RtpPacket(
            payload_type=pt,
            marker=int(i == len(pieces) - 1),
            sequence_number=(seq + i) & 0xFFFF,
            timestamp=timestamp,
            ssrc=VIDEO_SSRC,
            payload=(b"\x10" if i == 0 else b"\x00") + piece,
        ).serialize()
        for i, piece in enumerate(pieces)
    ]


async def subscribe(pc: RTCPeerConnection, transport: WebRtcTransport) -> SubscribeParams:
    tracks = [
        OutTrack("audio", "alice", "alice-audio", AUDIO_SSRC, OPUS_C),
        OutTrack("video", "alice", "alice-video", VIDEO_SSRC, VP8_C),
    ]
    offer = build_subscribe_offer(transport.local_params(), tracks)
    await pc.setRemoteDescription(RTCSessionDescription(offer.to_text(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    # The answer travels back over signaling while aiortc already runs ICE and DTLS:
    # apply it only once its ClientHello has reached the transport.
    await wait_until(lambda: transport.dtls_datagrams_in > 0, what="aiortc ClientHello")
    assert transport.state == "connecting" and not transport.connected
    params = apply_subscribe_answer(offer, parse_sdp(pc.localDescription.sdp))
    transport.set_remote_params(params.transport)
    return params


async def test_sfu_sends_audio_and_video_to_aiortc(endpoint: MediaEndpoint, make_pc: Any) -> None:
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    pc = make_pc()
    params = await subscribe(pc, transport)
    assert params.transport.dtls_role == "server"
    await wait_until(lambda: transport.connected, what="DTLS connected after the late answer")
    await wait_until(lambda: pc.connectionState == "connected", what="aiortc connected")
    audio_pt = params.track("0").codec.payload_type  # type: ignore[union-attr]
    video_pt = params.track("1").codec.payload_type  # type: ignore[union-attr]
    receivers = {t.kind: t.receiver for t in pc.getTransceivers()}

    for n in range(30):
        rtp = RtpPacket(payload_type=audio_pt, sequence_number=500 + n, timestamp=960 * n,
                        ssrc=AUDIO_SSRC, payload=OPUS_SILENCE)
        assert transport.send_rtp(rtp.serialize())
    keyframe = vp8_keyframe()
    seq = 7000
    for n in range(3):  # a frame is released when the next one starts
        packets = vp8_packets(keyframe, seq, 3000 * n, video_pt)
        seq += len(packets)
        for p in packets:
            assert transport.send_rtp(p)

    video = await asyncio.wait_for(receivers["video"].track.recv(), 5)
    assert (video.width, video.height) == (WIDTH, HEIGHT)
    audio = await asyncio.wait_for(receivers["audio"].track.recv(), 5)
    assert audio.sample_rate == 48000

    # SRTCP out: aiortc reports our SR in its stats; SRTCP in: its receiver reports.
    sr = RtcpSrPacket(ssrc=VIDEO_SSRC, sender_info=RtcpSenderInfo(
        ntp_timestamp=0x1234567800000000, rtp_timestamp=6000, packet_count=seq - 7000, octet_count=12345))
    assert transport.send_rtcp(bytes(sr))
    await wait_until(lambda: any(
        isinstance(p, RtcpRrPacket) and {r.ssrc for r in p.reports} & {AUDIO_SSRC, VIDEO_SSRC}
        for buf in rec.rtcp for p in RtcpPacket.parse(buf)), what="aiortc receiver report")

    async def remote_outbound() -> list[Any]:
        stats = await receivers["video"].getStats()
        return [s for s in stats.values() if s.type == "remote-outbound-rtp"]

    for _ in range(100):
        if await remote_outbound():
            break
        await asyncio.sleep(0.02)
    (report,) = await remote_outbound()
    assert (report.ssrc, report.packetsSent, report.bytesSent) == (VIDEO_SSRC, seq - 7000, 12345)

    inbound = {s.ssrc: s.packetsReceived for r in receivers.values()
               for s in (await r.getStats()).values() if s.type == "inbound-rtp"}
    assert inbound == {AUDIO_SSRC: 30, VIDEO_SSRC: seq - 7000}
    assert transport.rtp_packets_out == 30 + seq - 7000 and transport.rtcp_packets_out == 1
    assert rec.states == [("connecting", None), ("connected", None)]
