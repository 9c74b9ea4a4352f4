"""A real aiortc peer publishes audio+video to a WebRtcTransport: ICE-lite, DTLS (both
roles), SRTP decrypt to the handler, routing of two peers, consent expiry."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from sfu.sdp import PublishParams, SessionDescription, answer_publish_offer, parse_sdp
from sfu.transport.udp import MediaEndpoint
from sfu.transport.webrtc_transport import WebRtcTransport

from .conftest import Recorder, SkewClock, wait_until

pytestmark = pytest.mark.timeout(30)

RTCP_SR = 200
RTCP_SDES = 202


class TapEndpoint(MediaEndpoint):
    """Keeps the first SRTP and SRTCP datagrams it receives, for replay."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.srtp: tuple[bytes, tuple[Any, ...]] | None = None
        self.srtcp: tuple[bytes, tuple[Any, ...]] | None = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...], sock: Any = None) -> None:
        if len(data) > 12 and 128 <= data[0] <= 191:
            if 192 <= data[1] <= 223:
                self.srtcp = self.srtcp or (data, addr)
            else:
                self.srtp = self.srtp or (data, addr)
        super().datagram_received(data, addr, sock)


async def publish(
    pc: RTCPeerConnection, transport: WebRtcTransport, *, sfu_setup: str | None = None
) -> PublishParams:
    """aiortc offers sendonly audio+video; the SFU answers with the transport's params."""
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer, params = answer_publish_offer(parse_sdp(pc.localDescription.sdp), transport.local_params())
    role = params.transport.dtls_role
    if sfu_setup is not None:
        answer = _with_setup(answer, sfu_setup)
        role = "client" if sfu_setup == "active" else "server"
    transport.set_remote(params.transport.ice_ufrag, params.transport.ice_pwd, params.transport.fingerprints, role)
    await pc.setRemoteDescription(RTCSessionDescription(answer.to_text(), "answer"))
    return params


def _with_setup(answer: SessionDescription, setup: str) -> SessionDescription:
    return dataclasses.replace(answer, media=[dataclasses.replace(m, setup=setup) for m in answer.media])


def announced_ssrcs(params: PublishParams) -> set[int]:
    return {e.ssrc for t in params.tracks for e in t.encodings if e.ssrc is not None}


async def test_aiortc_publishes_rtp_and_rtcp_through_the_transport(
    endpoint_factory: Any, make_pc: Any
) -> None:
    endpoint: TapEndpoint = await endpoint_factory(cls=TapEndpoint)
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    pc = make_pc()
    params = await publish(pc, transport)
    assert params.transport.dtls_role == "server"
    ssrcs = announced_ssrcs(params)
    assert len(ssrcs) == 2

    await wait_until(lambda: pc.connectionState == "connected", what="aiortc connected")
    await wait_until(lambda: rec.rtp_ssrcs() == ssrcs, what="RTP for both announced SSRCs")
    await wait_until(lambda: {RTCP_SR, RTCP_SDES} <= rec.rtcp_types(), what="aiortc SR+SDES")
    assert rec.states == [("connecting", None), ("connected", None)]
    assert transport.dtls is not None and transport.dtls.role.name == "SERVER"
    # decrypted packets are plain RTP with the negotiated payload types
    pts = {t.codec.payload_type for t in params.tracks}
    assert {p[0] >> 6 for p in rec.rtp} == {2} and {p[1] & 0x7F for p in rec.rtp} <= pts
    assert transport.rtp_packets_in == len(rec.rtp) and transport.rtcp_packets_in == len(rec.rtcp)
    counters = endpoint.counters()
    assert counters["stun_selected"] == 1 and counters["unknown_address"] == 0

    # Replayed and tampered copies of aiortc's own packets: counted, never delivered.
    assert endpoint.srtp is not None and endpoint.srtcp is not None
    rtp_before, rtcp_before = len(rec.rtp), len(rec.rtcp)
    srtp = transport.srtp
    assert srtp is not None
    for (data, addr), ssrc_end in ((endpoint.srtp, 12), (endpoint.srtcp, 8)):
        endpoint.datagram_received(data, addr)
        # Another SSRC (authenticated header) so libsrtp's replay check does not answer first.
        tampered = bytearray(data)
        tampered[ssrc_end - 1] ^= 0x01
        endpoint.datagram_received(bytes(tampered), addr)
    assert len(rec.rtp) == rtp_before and len(rec.rtcp) == rtcp_before  # synchronous: nothing delivered
    assert (srtp.rtp_replay, srtp.rtp_auth_failed) == (1, 1)
    assert (srtp.rtcp_replay, srtp.rtcp_auth_failed) == (1, 1)
    assert endpoint.drops[endpoint_internal_error()] == 0

    await pc.close()
    await wait_until(lambda: transport.closed, what="close_notify from aiortc")
    assert rec.states[-1] == ("closed", "dtls_peer_closed")
    assert transport not in endpoint.transports and endpoint.registry.by_address == {}
    totals = endpoint.totals()
    assert totals["srtp_replay"] == 2 and totals["rtp_packets_in"] >= rtp_before


def endpoint_internal_error() -> int:
    from sfu.transport.udp import DROP_INTERNAL_ERROR

    return DROP_INTERNAL_ERROR


async def test_sfu_as_dtls_client(endpoint: MediaEndpoint, make_pc: Any) -> None:
    """The answer says a=setup:active: aiortc becomes the DTLS server, the SFU the client."""
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    pc = make_pc()
    params = await publish(pc, transport, sfu_setup="active")
    await wait_until(lambda: pc.connectionState == "connected", what="aiortc connected")
    await wait_until(lambda: rec.rtp_ssrcs() == announced_ssrcs(params), what="RTP from both tracks")
    assert transport.dtls is not None and transport.dtls.role.name == "CLIENT"
    assert pc.getTransceivers()[0].sender.transport._role == "server"
    assert rec.states == [("connecting", None), ("connected", None)]


async def test_two_aiortc_peers_on_one_endpoint_are_routed_apart(endpoint: MediaEndpoint, make_pc: Any) -> None:
    recs = [Recorder(), Recorder()]
    transports = [endpoint.create_transport(r) for r in recs]
    pcs = [make_pc(), make_pc()]
    params = [await publish(pc, t) for pc, t in zip(pcs, transports, strict=True)]
    ssrcs = [announced_ssrcs(p) for p in params]
    assert not ssrcs[0] & ssrcs[1]
    await wait_until(lambda: all(pc.connectionState == "connected" for pc in pcs), what="both connected")
    await wait_until(lambda: [r.rtp_ssrcs() for r in recs] == ssrcs, what="RTP of each peer")
    # each handler got exactly its own peer's SSRCs, on distinct remote addresses
    assert [r.rtp_ssrcs() for r in recs] == ssrcs
    assert transports[0].remote_address != transports[1].remote_address
    assert set(endpoint.registry.by_address.values()) == set(transports)
    assert endpoint.counters()["unknown_address"] == 0


async def test_aiortc_peer_expires_when_consent_lapses(
    endpoint_factory: Any, make_pc: Any, clock: SkewClock
) -> None:
    """No valid check for the consent timeout: failed, unregistered, its media dropped."""
    endpoint: MediaEndpoint = await endpoint_factory(tick_interval=0.02)
    rec = Recorder()
    transport = endpoint.create_transport(rec, rec.on_state)
    pc = make_pc()
    await publish(pc, transport)
    await wait_until(lambda: len(rec.rtp) > 5, what="media flowing")
    clock.skew += endpoint.consent_timeout + 1.0
    await wait_until(lambda: transport.closed, timeout=2.0, what="consent expiry")
    assert rec.states[-1] == ("failed", "ice_consent_expired")
    assert transport.reason == "ice_consent_expired" and transport.detail
    assert transport not in endpoint.transports
    received = len(rec.rtp)
    await wait_until(lambda: endpoint.counters()["unknown_address"] > 3, what="aiortc media now unrouted")
    assert len(rec.rtp) == received
