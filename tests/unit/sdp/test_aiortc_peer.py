"""A real aiortc peer on both connections: it must accept what the SFU writes, and the SFU
must read back what it answers. No media flows; ICE checks only reach a local socket."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Iterator

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sfu.sdp import (
    DEFAULT_CAPABILITIES,
    H264,
    OPUS,
    VP8,
    LocalTransportParams,
    NegotiatedCodec,
    OutTrack,
    SessionDescription,
    SubscribeParams,
    answer_publish_offer,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)
from sfu.sdp.capabilities import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID

from .conftest import LOCAL

OPUS_C = NegotiatedCodec("audio", "opus", 111, 48000, 2, (("minptime", "10"), ("useinbandfec", "1")))
VP8_C = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
H264_C = NegotiatedCodec(
    "video", "H264", 96, 90000,
    fmtp=(("level-asymmetry-allowed", "1"), ("packetization-mode", "1"), ("profile-level-id", "42e01f")),
    rtx_payload_type=97,
)


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that the SFU candidates point at, so aiortc's checks stay here."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


@pytest.fixture
def sfu(sink: socket.socket, monkeypatch: pytest.MonkeyPatch) -> LocalTransportParams:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    return dataclasses.replace(LOCAL, candidates=(("127.0.0.1", sink.getsockname()[1]),))


@pytest.fixture
async def pc() -> AsyncIterator[RTCPeerConnection]:
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    yield peer
    await peer.close()


async def publish_offer(pc: RTCPeerConnection) -> SessionDescription:
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return parse_sdp(pc.localDescription.sdp)


def negotiated(pc: RTCPeerConnection) -> list[list[tuple[str, int | None]]]:
    """aiortc's negotiated codecs per transceiver (its own private field: no public getter)."""
    return [[(c.mimeType, c.payloadType) for c in t._codecs] for t in pc.getTransceivers()]


async def test_publish_answer_accepted_by_aiortc(pc: RTCPeerConnection, sfu: LocalTransportParams) -> None:
    offer = await publish_offer(pc)
    answer, params = answer_publish_offer(offer, sfu)
    await pc.setRemoteDescription(RTCSessionDescription(answer.to_text(), "answer"))
    assert pc.signalingState == "stable"
    audio, video = params.tracks
    assert negotiated(pc) == [
        [("audio/opus", audio.codec.payload_type)],
        [("video/VP8", video.codec.payload_type), ("video/rtx", video.codec.rtx_payload_type)],
    ]
    # the transport parameters read from the offer are aiortc's own
    dtls = pc.getTransceivers()[0].sender.transport
    ice = dtls.transport.iceGatherer.getLocalParameters()
    assert (params.transport.ice_ufrag, params.transport.ice_pwd) == (ice.usernameFragment, ice.password)
    ours = {(f.algorithm, f.value.upper()) for f in params.transport.fingerprints}
    assert {(f.algorithm, f.value.upper()) for f in dtls.getLocalParameters().fingerprints} == ours
    assert params.transport.dtls_role == "server" and dtls._role == "client"
    # aiortc signals its SSRCs: media + RTX (FID) on video
    assert video.encodings[0].ssrc == pc.getTransceivers()[1].sender._ssrc
    assert video.encodings[0].rtx_ssrc == pc.getTransceivers()[1].sender._rtx_ssrc
    assert audio.header_extensions == {URI_MID: 1, URI_AUDIO_LEVEL: 2}
    assert video.header_extensions == {URI_MID: 1, URI_ABS_SEND_TIME: 3}


async def test_publish_h264_chosen_for_aiortc(pc: RTCPeerConnection, sfu: LocalTransportParams) -> None:
    offer = await publish_offer(pc)
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, codecs=(OPUS, H264))
    answer, params = answer_publish_offer(offer, sfu, caps)
    await pc.setRemoteDescription(RTCSessionDescription(answer.to_text(), "answer"))
    video = params.tracks[1].codec
    # aiortc offers 42001f and 42e01f; the SFU takes 42e01f
    offered = offer.media[1].codec(video.payload_type)
    assert offered is not None and offered.fmtp_value("profile-level-id") == "42e01f"
    assert negotiated(pc)[1] == [("video/H264", video.payload_type), ("video/rtx", video.rtx_payload_type)]
    assert pc.getTransceivers()[1]._codecs[0].parameters["profile-level-id"] == "42e01f"


async def test_publish_with_rejected_audio_accepted_by_aiortc(pc: RTCPeerConnection, sfu: LocalTransportParams) -> None:
    offer = await publish_offer(pc)
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, codecs=(VP8,))
    answer, params = answer_publish_offer(offer, sfu, caps)
    assert answer.media[0].port == 0 and params.rejected == (("0", "no_common_codec"),)
    await pc.setRemoteDescription(RTCSessionDescription(answer.to_text(), "answer"))
    assert pc.signalingState == "stable"
    assert negotiated(pc)[1][0][0] == "video/VP8"


async def subscribe_round(pc: RTCPeerConnection, offer: SessionDescription) -> SubscribeParams:
    await pc.setRemoteDescription(RTCSessionDescription(offer.to_text(), "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    assert pc.signalingState == "stable"
    return apply_subscribe_answer(offer, parse_sdp(pc.localDescription.sdp))


def receiving(pc: RTCPeerConnection) -> dict[str | None, tuple[str, str | None]]:
    return {t.mid: (t.receiver.track.id, t.currentDirection) for t in pc.getTransceivers()}


async def test_subscribe_offers_and_reoffers_with_aiortc(pc: RTCPeerConnection, sfu: LocalTransportParams) -> None:
    tracks = [OutTrack("audio", "alice", "a1", 1001, OPUS_C), OutTrack("video", "alice", "v1", 2001, VP8_C, rtx_ssrc=3001)]
    offer = build_subscribe_offer(sfu, tracks)
    params = await subscribe_round(pc, offer)
    assert params.transport.setup == "active" and params.transport.dtls_role == "server"
    assert [(t.mid, t.codec.name, t.codec.payload_type, t.codec.rtx_payload_type) for t in params.tracks] == [
        ("0", "opus", 111, None), ("1", "VP8", 96, 97),
    ]
    # aiortc keeps only the extensions it knows, with the offered ids
    assert params.tracks[0].header_extensions == {URI_AUDIO_LEVEL: 1, URI_MID: 4}
    assert params.tracks[1].header_extensions == {URI_ABS_SEND_TIME: 2, URI_MID: 4}
    assert (params.tracks[1].ssrc, params.tracks[1].rtx_ssrc) == (2001, 3001)
    assert receiving(pc) == {"0": ("a1", "recvonly"), "1": ("v1", "recvonly")}

    tracks.append(OutTrack("video", "bob", "v2", 2002, H264_C, rtx_ssrc=3002))
    offer = build_subscribe_offer(sfu, tracks, offer)
    params = await subscribe_round(pc, offer)
    assert [(t.mid, t.codec.name) for t in params.tracks] == [("0", "opus"), ("1", "VP8"), ("2", "H264")]
    h264 = params.tracks[2].codec
    assert h264.payload_type not in (96, 97) and h264.rtx_payload_type is not None
    assert negotiated(pc)[2] == [("video/H264", h264.payload_type), ("video/rtx", h264.rtx_payload_type)]
    assert receiving(pc) == {"0": ("a1", "recvonly"), "1": ("v1", "recvonly"), "2": ("v2", "recvonly")}

    del tracks[1]
    offer = build_subscribe_offer(sfu, tracks, offer)
    params = await subscribe_round(pc, offer)
    assert [t.mid for t in params.tracks] == ["0", "2"] and params.stopped_mids == ("1",)
    assert receiving(pc)["1"][1] == "inactive"
    assert receiving(pc)["2"] == ("v2", "recvonly")


async def test_subscribe_churn_with_aiortc(pc: RTCPeerConnection, sfu: LocalTransportParams) -> None:
    """Several rounds of tracks coming and going: aiortc accepts every re-offer."""
    live = [OutTrack("audio", "s0", "a0", 100, OPUS_C)]
    offer = build_subscribe_offer(sfu, live)
    await subscribe_round(pc, offer)
    for n in range(1, 6):
        live.append(OutTrack("video", f"s{n}", f"v{n}", 200 + n, VP8_C if n % 2 else H264_C, rtx_ssrc=300 + n))
        if n % 2 == 0:
            live.pop(0)
        offer = build_subscribe_offer(sfu, live, offer)
        params = await subscribe_round(pc, offer)
        assert {t.track_id for t in params.tracks} == {t.track_id for t in live}
        by_mid = receiving(pc)
        for t in params.tracks:
            assert by_mid[t.mid] == (t.track_id, "recvonly")
