"""answer_publish_offer on the Chromium offers and on mutations of them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import pytest

from sfu.sdp import (
    DEFAULT_CAPABILITIES,
    H264,
    OPUS,
    VP8,
    Encoding,
    ExtensionIds,
    Fingerprint,
    LocalTransportParams,
    MediaCapabilities,
    PublishParams,
    PublishTrack,
    RtcpFb,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
    answer_publish_offer,
    h264_profile,
    parse_sdp,
)
from sfu.sdp.capabilities import (
    H264_BASELINE,
    H264_CONSTRAINED_BASELINE,
    H264_HIGH,
    H264_MAIN,
    H264_OTHER,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
)
from sfu.sdp.errors import (
    BUNDLE_REQUIRED,
    INVALID_SETUP,
    MISSING_FINGERPRINT,
    MISSING_ICE_CREDENTIALS,
    MISSING_MID,
    NO_COMMON_CODEC,
    NO_MEDIA,
    RTCP_MUX_REQUIRED,
    TRANSPORT_MISMATCH,
    UNSUPPORTED_PROTOCOL,
)

from .conftest import LOCAL, SFU_FINGERPRINT

VIDEO_FB = [RtcpFb("goog-remb"), RtcpFb("transport-cc"), RtcpFb("ccm", "fir"), RtcpFb("nack"), RtcpFb("nack", "pli")]


def answer(
    text: str, capabilities: MediaCapabilities = DEFAULT_CAPABILITIES, previous_answer: SessionDescription | None = None
) -> tuple[SessionDescription, PublishParams]:
    return answer_publish_offer(parse_sdp(text), LOCAL, capabilities, previous_answer)


def video_track(params: PublishParams) -> PublishTrack:
    track = params.track("1")
    assert track is not None
    return track


def sub(text: str, pattern: str, repl: str, count: int = 0) -> str:
    """re.sub over lines (the text is normalised to LF first); the pattern must match."""
    out, n = re.subn(pattern, repl, text.replace("\r\n", "\n"), count=count, flags=re.M)
    assert n, f"pattern {pattern!r} did not match"
    return out


def test_fixtures_have_crlf(sendonly_text: str) -> None:
    assert sendonly_text.startswith("v=0\r\no=")


def test_sendonly_answer_session(sendonly_text: str) -> None:
    ans, _ = answer(sendonly_text)
    assert ans.ice_lite
    assert ans.origin is not None and (ans.origin.session_id, ans.origin.session_version) == (4242, 1)
    assert ans.bundle_mids() == ["0", "1"]
    assert ans.extmap_allow_mixed
    assert ans.fingerprints == [] and ans.ice_ufrag is None  # all transport attributes are per section
    assert parse_sdp(ans.to_text()) == ans


@pytest.mark.parametrize("index", [0, 1])
def test_sendonly_answer_transport_attributes(sendonly_text: str, index: int) -> None:
    m = answer(sendonly_text)[0].media[index]
    assert (m.port, m.protocol, m.connection) == (40000, "UDP/TLS/RTP/SAVPF", "IN IP4 127.0.0.1")
    assert (m.ice_ufrag, m.ice_pwd) == (LOCAL.ice_ufrag, LOCAL.ice_pwd)
    assert m.fingerprints == [SFU_FINGERPRINT]
    assert m.setup == "passive"
    assert [(c.address, c.port, c.transport, c.type, c.component) for c in m.candidates] == [
        ("127.0.0.1", 40000, "udp", "host", 1),
        ("::1", 40000, "udp", "host", 1),
    ]
    assert m.candidates[0].priority == (126 << 24) | (65535 << 8) | 255
    assert m.candidates[0].priority > m.candidates[1].priority
    assert m.end_of_candidates
    assert m.rtcp_mux and m.rtcp_rsize
    assert m.direction == "recvonly"
    assert m.msids == [] and m.ssrcs == []


def test_sendonly_answer_codecs_and_extensions(sendonly_text: str) -> None:
    audio, video = answer(sendonly_text)[0].media
    assert audio.formats == ["111"]
    assert [(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp, c.rtcp_fb) for c in audio.codecs] == [
        (111, "opus", 48000, 2, [("minptime", "10"), ("useinbandfec", "1")], [RtcpFb("transport-cc")])
    ]
    assert [(e.id, e.uri) for e in audio.extmaps] == [
        (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        (2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        (3, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        (4, URI_MID),
    ]
    assert video.formats == ["96", "97"]
    assert [(c.payload_type, c.name, c.fmtp) for c in video.codecs] == [(96, "VP8", None), (97, "rtx", [("apt", "96")])]
    assert video.codecs[0].rtcp_fb == VIDEO_FB
    # toffset, video-orientation, playout-delay, ... are dropped; ids are the offer's
    assert {e.uri: e.id for e in video.extmaps} == {
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 2,
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": 3,
        URI_MID: 4,
        URI_RID: 10,
        URI_REPAIRED_RID: 11,
    }
    assert video.rids == [] and video.simulcast is None


def test_sendonly_publish_params(sendonly_text: str) -> None:
    _, params = answer(sendonly_text)
    t = params.transport
    assert (t.ice_ufrag, t.ice_pwd, t.setup, t.dtls_role, t.ice_lite) == (
        "TcSJ", "oPPMHTWHor6lzwP5vELDpMOc", "actpass", "server", False,
    )
    assert [f.algorithm for f in t.fingerprints] == ["sha-256"]
    assert t.fingerprints[0].value.startswith("78:9D:60")
    assert [c.port for c in t.candidates] == [42782, 9]
    assert params.bundle_mids == ("0", "1")
    assert params.rejected == ()
    assert params.extmap_allow_mixed
    audio = params.track("0")
    video = params.track("1")
    assert audio is not None and video is not None and params.track("9") is None
    assert (audio.kind, audio.codec.name, audio.codec.payload_type, audio.codec.clock_rate, audio.codec.channels) == (
        "audio", "opus", 111, 48000, 2,
    )
    assert audio.codec.rtx_payload_type is None and audio.codec.transport_cc and not audio.codec.nack
    assert audio.codec.mime_type == "audio/opus" and audio.codec.fmtp_value("useinbandfec") == "1"
    assert audio.encodings == (Encoding(ssrc=3996039562),)
    assert (audio.stream_id, audio.track_id, audio.cname) == ("-", "d4a04c2a-d3d5-42e7-b992-a1c912fa8f1a", "t4I2dQdIiJ4z/UEu")
    assert audio.extension_ids == ExtensionIds(mid=4, abs_send_time=2, transport_cc=3, audio_level=1)
    assert (video.codec.name, video.codec.payload_type, video.codec.rtx_payload_type) == ("VP8", 96, 97)
    assert video.codec.nack and video.codec.pli and video.codec.fir and video.codec.remb and video.codec.transport_cc
    assert video.encodings == (Encoding(ssrc=2509165653, rtx_ssrc=885520741),)
    assert not video.simulcast and video.rtcp_rsize
    assert video.extension_ids == ExtensionIds(mid=4, rid=10, repaired_rid=11, abs_send_time=2, transport_cc=3)
    assert video.header_extensions[URI_RID] == 10


def test_simulcast_answer(simulcast_text: str) -> None:
    ans, params = answer(simulcast_text)
    video = ans.media[1]
    assert [(r.id, r.direction, r.params) for r in video.rids] == [("q", "recv", None), ("h", "recv", None), ("f", "recv", None)]
    assert video.simulcast == Simulcast(recv=[[SimulcastRid("q")], [SimulcastRid("h")], [SimulcastRid("f")]])
    assert "a=simulcast:recv q;h;f\r\n" in ans.to_text()
    track = params.track("1")
    assert track is not None and track.simulcast
    assert track.encodings == (Encoding(rid="q"), Encoding(rid="h"), Encoding(rid="f"))
    assert track.stream_id == "-" and track.track_id == "618af9f3-6c25-46c7-9f63-0cc89e05f703"
    assert track.extension_ids.rid == 10 and track.extension_ids.repaired_rid == 11


def test_simulcast_paused_and_limited(simulcast_text: str) -> None:
    text = sub(simulcast_text, r"^a=simulcast:send q;h;f$", "a=simulcast:send ~q;h;f;x")
    text = sub(text, r"^a=rid:f send$", "a=rid:f send\r\na=rid:x send")
    ans, params = answer(text)
    assert ans.media[1].simulcast == Simulcast(recv=[[SimulcastRid("q", True)], [SimulcastRid("h")], [SimulcastRid("f")]])
    track = params.track("1")
    assert track is not None and track.encodings[0] == Encoding(rid="q", paused=True) and len(track.encodings) == 3


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: sub(t, r"^a=extmap:10 .*\r?\n", ""),  # no rid header extension
        lambda t: sub(t, r"^a=rid:.*\r?\n", ""),  # simulcast names undeclared rids
    ],
)
def test_simulcast_not_answered_without_rid_support(simulcast_text: str, mutate: Callable[[str], str]) -> None:
    ans, params = answer(mutate(simulcast_text))
    assert ans.media[1].simulcast is None and ans.media[1].rids == []
    track = params.track("1")
    assert track is not None and not track.simulcast and track.encodings == (Encoding(),)


def test_simulcast_disabled_by_capabilities(simulcast_text: str) -> None:
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, simulcast=False)
    ans, params = answer(simulcast_text, capabilities=caps)
    assert ans.media[1].simulcast is None
    assert params.tracks[1].encodings == (Encoding(),)


def test_legacy_sim_group(sendonly_text: str) -> None:
    text = sub(
        sendonly_text,
        r"^a=ssrc-group:FID 2509165653 885520741$",
        "a=ssrc-group:SIM 1 2 3\r\na=ssrc-group:FID 1 11\r\na=ssrc-group:FID 2 12\r\na=ssrc-group:FID 3 13",
    )
    track = video_track(answer(text)[1])
    assert track.encodings == (Encoding(1, 11), Encoding(2, 12), Encoding(3, 13))


def test_recvonly_offer_is_answered_inactive(recvonly_text: str) -> None:
    ans, params = answer(recvonly_text)
    assert [m.direction for m in ans.media] == ["inactive", "inactive"]
    assert [m.port for m in ans.media] == [40000, 40000]
    assert params.tracks == ()


@pytest.mark.parametrize(
    "keep, chosen_pt, rtx_pt, plid",
    [
        (None, 108, 109, "42e01f"),  # the preferred profile-level-id wins over offer order
        ({102, 103, 116, 117}, 102, 103, "42001f"),  # 0x42 baseline when it is the only one
        ({104, 107, 108}, 108, None, "42e01f"),  # no RTX for 108 in the offer
        ({116, 117, 114, 115, 104}, None, None, None),  # main profile, or packetization-mode 0: no match
    ],
)
def test_h264_choice(sendonly_text: str, keep: set[int] | None, chosen_pt: int | None, rtx_pt: int | None, plid: str | None) -> None:
    offer = parse_sdp(sendonly_text)
    if keep is not None:
        video = offer.media[1]
        video.formats = [f for f in video.formats if int(f) in keep]
        video.codecs = [c for c in video.codecs if c.payload_type in keep]
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, codecs=(OPUS, H264))
    ans, params = answer_publish_offer(offer, LOCAL, caps)
    if chosen_pt is None:
        assert ans.media[1].port == 0 and params.rejected == (("1", NO_COMMON_CODEC),)
        return
    track = params.track("1")
    assert track is not None
    assert (track.codec.name, track.codec.payload_type, track.codec.rtx_payload_type) == ("H264", chosen_pt, rtx_pt)
    assert track.codec.fmtp_value("profile-level-id") == plid
    assert track.codec.fmtp_value("packetization-mode") == "1"
    codec = ans.media[1].codecs[0]
    assert codec.payload_type == chosen_pt and codec.fmtp_value("profile-level-id") == plid
    assert ans.media[1].formats == [str(chosen_pt)] + ([str(rtx_pt)] if rtx_pt else [])


@pytest.mark.parametrize(
    "plid, profile",
    [
        ("42e01f", H264_CONSTRAINED_BASELINE),
        ("42c01f", H264_CONSTRAINED_BASELINE),
        ("42401f", H264_CONSTRAINED_BASELINE),
        ("4d801f", H264_CONSTRAINED_BASELINE),
        ("58c01f", H264_CONSTRAINED_BASELINE),
        ("42001f", H264_BASELINE),
        ("4d001f", H264_MAIN),
        ("640c1f", H264_HIGH),
        ("f4001f", H264_OTHER),
        ("42e11f", H264_OTHER),  # reserved bits set
        ("42e0", H264_OTHER),
        ("zze01f", H264_OTHER),
    ],
)
def test_h264_profile_table(plid: str, profile: int) -> None:
    assert h264_profile(plid) == profile


def test_vp8_preferred_over_h264(sendonly_text: str) -> None:
    assert video_track(answer(sendonly_text)[1]).codec.name == "VP8"
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, codecs=(OPUS, H264, VP8))
    _, params = answer_publish_offer(parse_sdp(sendonly_text), LOCAL, caps)
    assert video_track(params).codec.name == "H264"


def test_rtx_and_feedback_follow_capabilities(sendonly_text: str) -> None:
    vp8_plain = dataclasses.replace(VP8, rtx=False, rtcp_fb=(RtcpFb("nack"), RtcpFb("nack", "pli")))
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, codecs=(OPUS, vp8_plain))
    ans, params = answer_publish_offer(parse_sdp(sendonly_text), LOCAL, caps)
    assert ans.media[1].formats == ["96"]
    track = params.track("1")
    assert track is not None and track.codec.rtx_payload_type is None
    assert track.codec.rtcp_fb == (RtcpFb("nack"), RtcpFb("nack", "pli"))
    assert track.encodings == (Encoding(ssrc=2509165653),)  # the RTX SSRC is not used without RTX


def test_feedback_is_intersection_with_offer(sendonly_text: str) -> None:
    text = sub(sendonly_text, r"^a=rtcp-fb:96 (goog-remb|transport-cc)\r?\n", "")
    track = video_track(answer(text)[1])
    assert track.codec.rtcp_fb == (RtcpFb("ccm", "fir"), RtcpFb("nack"), RtcpFb("nack", "pli"))


def test_wildcard_feedback_counts(sendonly_text: str) -> None:
    text = sub(sendonly_text, r"^a=rtcp-fb:96 .*\r?\n", "")
    text = sub(text, r"^a=rtpmap:96 VP8/90000$", "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:* nack")
    track = video_track(answer(text)[1])
    assert track.codec.rtcp_fb == (RtcpFb("nack"),)


def test_unsupported_audio_rejected_video_kept(sendonly_text: str) -> None:
    text = sub(sendonly_text, r"opus/48000/2", "speex/48000/2")
    ans, params = answer(text)
    audio, video = ans.media
    assert (audio.port, audio.direction, audio.mid, audio.formats) == (0, "inactive", "0", ["111"])
    assert audio.candidates == [] and audio.connection == "IN IP4 0.0.0.0"
    assert audio.rtcp_mux and audio.ice_ufrag == LOCAL.ice_ufrag  # strict parsers (aiortc) still need these
    assert video.port == 40000
    assert ans.bundle_mids() == ["1"]
    assert params.bundle_mids == ("1",)
    assert params.rejected == (("0", NO_COMMON_CODEC),)
    assert [t.mid for t in params.tracks] == ["1"]
    assert parse_sdp(ans.to_text()) == ans


def test_section_outside_bundle_is_rejected(sendonly_text: str) -> None:
    ans, params = answer(sub(sendonly_text, r"^a=group:BUNDLE 0 1$", "a=group:BUNDLE 1"))
    assert ans.media[0].port == 0 and ans.bundle_mids() == ["1"]
    assert params.rejected == (("0", "not_bundled"),)


def test_bundle_tag_follows_offer_group_order(sendonly_text: str) -> None:
    ans, params = answer(sub(sendonly_text, r"^a=group:BUNDLE 0 1$", "a=group:BUNDLE 1 0"))
    assert ans.bundle_mids() == ["1", "0"] and params.bundle_mids == ("1", "0")
    assert [m.mid for m in ans.media] == ["0", "1"]


def test_stopped_and_data_sections_answered_with_port_zero(sendonly_text: str) -> None:
    text = sub(sendonly_text, r"^m=audio 42782 ", "m=audio 0 ")
    text += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n"
    text = sub(text, r"^a=group:BUNDLE 0 1$", "a=group:BUNDLE 1 2")
    ans, params = answer(text)
    assert [m.port for m in ans.media] == [0, 40000, 0]
    assert ans.media[2].formats == ["webrtc-datachannel"] and ans.media[2].mid == "2"
    assert ans.bundle_mids() == ["1"]
    assert params.rejected == (("0", "stopped"), ("2", "unsupported_kind"))


def test_offer_setup_passive_makes_us_active(sendonly_text: str) -> None:
    ans, params = answer(sendonly_text.replace("a=setup:actpass", "a=setup:passive"))
    assert {m.setup for m in ans.media} == {"active"}
    assert params.transport.dtls_role == "client" and params.transport.setup == "passive"


def test_offer_setup_active_keeps_us_passive(sendonly_text: str) -> None:
    ans, params = answer(sendonly_text.replace("a=setup:actpass", "a=setup:active"))
    assert {m.setup for m in ans.media} == {"passive"}
    assert params.transport.dtls_role == "server"


def test_session_level_transport_attributes(sendonly_text: str) -> None:
    """Firefox-style: credentials and fingerprint once, at session level."""
    lines = sendonly_text.replace("\r\n", "\n").split("\n")
    moved = [x for x in lines if x.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"))][:4]
    rest = [x for x in lines if not x.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"))]
    text = "\n".join(rest[:4] + moved + rest[4:])
    _, params = answer(text)
    assert params.transport.ice_ufrag == "TcSJ" and params.transport.setup == "actpass"


def test_single_section_without_bundle_group(sendonly_text: str) -> None:
    offer = parse_sdp(sendonly_text)
    offer.groups = []
    offer.media = offer.media[1:]
    ans, params = answer_publish_offer(offer, LOCAL)
    assert ans.groups == [] and params.bundle_mids == ()
    assert [t.mid for t in params.tracks] == ["1"]


def test_previous_answer_bumps_version(sendonly_text: str) -> None:
    first, _ = answer(sendonly_text)
    second, _ = answer(sendonly_text, previous_answer=first)
    assert second.origin is not None and first.origin is not None
    assert second.origin.session_id == first.origin.session_id
    assert second.origin.session_version == first.origin.session_version + 1


def test_extmap_allow_mixed_only_echoed(sendonly_text: str) -> None:
    ans, params = answer(sub(sendonly_text, r"^a=extmap-allow-mixed\r?\n", ""))
    assert not ans.extmap_allow_mixed and not params.extmap_allow_mixed
    assert "extmap-allow-mixed" not in ans.to_text()


def test_rtcp_rsize_only_echoed(sendonly_text: str) -> None:
    ans, params = answer(sub(sendonly_text, r"^a=rtcp-rsize\r?\n", ""))
    assert not any(m.rtcp_rsize for m in ans.media) and not params.tracks[0].rtcp_rsize


def test_derived_session_id_is_stable(sendonly_text: str) -> None:
    local = dataclasses.replace(LOCAL, session_id=0)
    a, _ = answer_publish_offer(parse_sdp(sendonly_text), local)
    b, _ = answer_publish_offer(parse_sdp(sendonly_text), local)
    assert a.origin == b.origin and a.origin is not None and a.origin.session_id > 0


@pytest.mark.parametrize(
    "mutate, code, where",
    [
        (lambda t: sub(t, r"^a=rtcp-mux\r?\n", "", count=1), RTCP_MUX_REQUIRED, "mid '0'"),
        (lambda t: sub(t, r"^a=ice-ufrag:.*\r?\n", ""), MISSING_ICE_CREDENTIALS, "mid '0'"),
        (lambda t: sub(t, r"^a=ice-pwd:.*\r?\n", ""), MISSING_ICE_CREDENTIALS, "mid '0'"),
        (lambda t: sub(t, r"^a=fingerprint:.*\r?\n", ""), MISSING_FINGERPRINT, "mid '0'"),
        (lambda t: sub(t, r"^a=fingerprint:sha-256", "a=fingerprint:md5"), MISSING_FINGERPRINT, "known hash"),
        (lambda t: sub(t, r"UDP/TLS/RTP/SAVPF", "RTP/AVP"), UNSUPPORTED_PROTOCOL, "RTP/AVP"),
        (lambda t: sub(t, r"^a=group:BUNDLE 0 1\r?\n", ""), BUNDLE_REQUIRED, "BUNDLE"),
        (lambda t: sub(t, r"^a=mid:.*\r?\n", ""), MISSING_MID, "m-section 0"),
        (lambda t: sub(sub(t, r"opus/", "speex/"), r"VP8/|H264/", "XYZ/"), NO_COMMON_CODEC, "codec"),
        (lambda t: t.split("m=audio")[0], NO_MEDIA, "no m-section"),
        (lambda t: sub(t, r"^m=(audio|video) \d+", "m=\\1 0"), NO_MEDIA, "no active"),
        (lambda t: sub(t, r"a=setup:actpass", "a=setup:holdconn"), INVALID_SETUP, "holdconn"),
        (lambda t: sub(t, r"^a=ice-ufrag:TcSJ$", "a=ice-ufrag:Other", count=1), TRANSPORT_MISMATCH, "mid '1'"),
        (lambda t: sub(t, r"^a=setup:actpass$", "a=setup:active", count=1), INVALID_SETUP, "mid '1'"),
    ],
)
def test_refusals(sendonly_text: str, mutate: Callable[[str], str], code: str, where: str) -> None:
    with pytest.raises(SdpError) as info:
        answer(mutate(sendonly_text))
    assert info.value.code == code
    assert where in info.value.message


@pytest.mark.parametrize(
    "change",
    [
        {"ice_ufrag": "ab"},
        {"ice_ufrag": "has space"},
        {"ice_pwd": "short"},
        {"candidates": ()},
        {"candidates": (("not-an-ip", 40000),)},
        {"candidates": (("127.0.0.1", 0),)},
        {"fingerprint": Fingerprint("sha-256", "")},
    ],
)
def test_bad_local_params_raise_value_error(sendonly_text: str, change: dict[str, object]) -> None:
    local: LocalTransportParams = dataclasses.replace(LOCAL, **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        answer_publish_offer(parse_sdp(sendonly_text), local)


def test_golden_aiortc_offer() -> None:
    """A publish offer captured from aiortc 1.16 (the other independent implementation)."""
    from .conftest import fixture_text

    text = fixture_text("aiortc-sendonly-offer.sdp")
    ans, params = answer(text)
    kinds = {t.kind: t for t in params.tracks}
    assert kinds["audio"].codec.name == "opus" and kinds["audio"].codec.clock_rate == 48000
    assert kinds["video"].codec.name == "VP8" and kinds["video"].codec.rtx_payload_type == 98
    assert kinds["video"].encodings[0].ssrc and kinds["video"].encodings[0].rtx_ssrc
    assert params.transport.dtls_role == "server"  # aiortc offers actpass; the SFU is passive
    assert parse_sdp(ans.to_text()) == ans
