"""Firefox's SDP, golden: the publish offer and the subscribe answer firefox-esr 153 wrote through
the SFU (tests/e2e/pages/ over loopback; a separate offer with mDNS candidates, as a page without
a camera permission writes it). See sfu/sdp/publish.py for what differs from Chromium."""

from __future__ import annotations

from sfu.sdp import (
    ExtensionIds,
    RtcpFb,
    answer_publish_offer,
    apply_subscribe_answer,
    parse_sdp,
)
from sfu.sdp.capabilities import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, URI_TRANSPORT_CC

from .conftest import LOCAL, fixture_text


def test_publish_offer_is_answered() -> None:
    offer = parse_sdp(fixture_text("firefox-publish-offer.sdp"))
    # session-level fingerprint, and the video section is bundle-only on port 0
    assert offer.fingerprints and not offer.media[1].fingerprints
    assert offer.media[1].port == 0 and offer.media[1].bundle_only
    answer, params = answer_publish_offer(offer, LOCAL)

    assert params.bundle_mids == ("0", "1") and params.rejected == ()
    assert params.transport.setup == "actpass" and params.transport.dtls_role == "server"
    assert params.transport.ice_ufrag == offer.media[0].ice_ufrag
    audio, video = params.tracks
    assert (audio.mid, audio.codec.name, audio.codec.payload_type) == ("0", "opus", 109)
    assert audio.extension_ids == ExtensionIds(mid=3, transport_cc=7, audio_level=1)
    # a=extmap:2/recvonly csrc-audio-level (a direction after the id) is read and not taken
    assert 2 not in audio.header_extensions.values()
    assert (video.mid, video.codec.name, video.codec.payload_type, video.codec.rtx_payload_type) == ("1", "VP8", 120, 124)
    assert video.extension_ids == ExtensionIds(mid=3, abs_send_time=4, transport_cc=7)
    assert RtcpFb("nack", "pli") in video.codec.rtcp_fb
    # the RTX SSRC comes from a=ssrc-group:FID; Firefox's a=ssrc lines carry only cname,
    # its ids (in braces) come from a=msid
    (enc,) = video.encodings
    assert enc.ssrc is not None and enc.rtx_ssrc is not None and enc.rid is None
    assert video.stream_id == audio.stream_id and str(video.stream_id).startswith("{")
    assert video.cname == audio.cname and video.rtcp_rsize

    text = answer.to_text()
    answered = parse_sdp(text)
    # both sections answered on the SFU's port (never bundle-only in an answer), passive
    assert [(m.mid, m.port, m.bundle_only, m.setup) for m in answered.media] == [
        ("0", 40000, False, "passive"), ("1", 40000, False, "passive")]
    assert "a=ice-lite" in text and "a=rtcp-mux" in text


def test_publish_offer_with_mdns_candidates() -> None:
    offer = parse_sdp(fixture_text("firefox-publish-offer-mdns.sdp"))
    hosts = {c.address for m in offer.media for c in m.candidates}
    assert hosts and all(h.endswith(".local") for h in hosts)
    # ICE-lite never dials the offer's candidates: .local names and TCP "active" port 9 only
    # need to parse; the SFU learns the address from Firefox's checks
    _, params = answer_publish_offer(offer, LOCAL)
    assert [t.codec.name for t in params.tracks] == ["opus", "VP8"]
    assert {c.transport for c in params.transport.candidates} == {"UDP", "TCP"}


def test_subscribe_answer_is_applied() -> None:
    offer = parse_sdp(fixture_text("sfu-subscribe-offer-to-firefox.sdp"))
    answer = parse_sdp(fixture_text("firefox-subscribe-answer.sdp"))
    assert answer.fingerprints and all(not m.fingerprints for m in answer.media)
    params = apply_subscribe_answer(offer, answer)

    assert params.transport.setup == "active" and params.transport.dtls_role == "server"
    assert params.transport.fingerprints == tuple(answer.fingerprints)
    assert params.rejected == () and params.extmap_allow_mixed
    audio, video = params.tracks
    assert (audio.mid, audio.codec.name, audio.codec.payload_type, audio.direction) == ("0", "opus", 96, "recvonly")
    # Firefox keeps from the offer only the extensions it knows for the kind: abs-send-time
    # offered on audio is dropped from its answer, so the SFU does not write it there
    assert URI_ABS_SEND_TIME in {e.uri for e in offer.media[0].extmaps}
    assert set(audio.header_extensions) == {URI_AUDIO_LEVEL, URI_MID}
    assert (video.mid, video.codec.name, video.codec.payload_type, video.codec.rtx_payload_type) == ("1", "VP8", 97, 98)
    assert set(video.header_extensions) == {URI_ABS_SEND_TIME, URI_MID}
    assert URI_TRANSPORT_CC not in video.header_extensions
    assert video.ssrc is not None and video.rtx_ssrc is not None
