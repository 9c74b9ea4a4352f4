"""parse_sdp and to_text: the Chromium fixtures field by field, tolerance, refusals, round trips."""

from __future__ import annotations

import pytest

from sfu.sdp import (
    Attribute,
    Candidate,
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    Rid,
    RtcpFb,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
    SsrcGroup,
    SsrcLine,
    parse_sdp,
)
from sfu.sdp.errors import SDP_MALFORMED, SDP_TOO_LARGE
from sfu.sdp.parser import MAX_SDP_SIZE

from .conftest import FIXTURE_NAMES, fixture_text


def test_sendonly_fixture_session_fields(sendonly_text: str) -> None:
    d = parse_sdp(sendonly_text)
    assert d.version == 0
    assert d.origin == Origin("-", 3475964188780106158, 2, "IN", "IP4", "127.0.0.1")
    assert d.session_name == "-"
    assert d.timing == "0 0"
    assert d.groups == [Group("BUNDLE", ["0", "1"])]
    assert d.bundle_mids() == ["0", "1"]
    assert d.extmap_allow_mixed is True
    assert d.msid_semantic == MsidSemantic("WMS", [])
    assert d.ice_lite is False
    assert d.ice_ufrag is None and d.fingerprints == []
    assert [m.kind for m in d.media] == ["audio", "video"]


def test_sendonly_fixture_audio_section(sendonly_text: str) -> None:
    audio = parse_sdp(sendonly_text).media[0]
    assert (audio.kind, audio.port, audio.protocol) == ("audio", 42782, "UDP/TLS/RTP/SAVPF")
    assert audio.payload_types == [111, 63, 9, 0, 8, 13, 110, 126]
    assert audio.connection == "IN IP4 127.0.0.1"
    assert audio.rtcp == "9 IN IP4 0.0.0.0"
    assert audio.mid == "0"
    assert audio.direction == "sendonly"
    assert (audio.ice_ufrag, audio.ice_pwd, audio.ice_options) == ("TcSJ", "oPPMHTWHor6lzwP5vELDpMOc", "trickle")
    assert audio.fingerprints == [
        Fingerprint(
            "sha-256",
            "78:9D:60:27:59:E4:7D:2F:08:57:68:E2:91:E2:AD:20:5E:58:9D:05:90:C2:A2:96:B6:66:ED:19:8A:0F:F2:B6",
        )
    ]
    assert audio.setup == "actpass"
    assert audio.rtcp_mux and audio.rtcp_rsize and not audio.bundle_only
    assert audio.candidates[0] == Candidate(
        "2623356497", 1, "udp", 2122260223, "127.0.0.1", 42782, "host",
        extensions=[("generation", "0"), ("network-id", "1"), ("network-cost", "50")],
    )
    assert audio.candidates[1].transport == "tcp"
    assert ("tcptype", "active") in audio.candidates[1].extensions
    assert not audio.end_of_candidates
    assert [(e.id, e.uri) for e in audio.extmaps] == [
        (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        (2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
        (3, "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
        (4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ]
    assert audio.codec(111) == Codec(
        111, "opus", 48000, 2, [("minptime", "10"), ("useinbandfec", "1")], [RtcpFb("transport-cc")]
    )
    assert audio.codec(63) == Codec(63, "red", 48000, 2, [("111/111", None)])
    assert audio.codec(0) == Codec(0, "PCMU", 8000)
    assert audio.msids == [Msid("-", "d4a04c2a-d3d5-42e7-b992-a1c912fa8f1a")]
    assert audio.ssrcs == [
        SsrcLine(3996039562, "cname", "t4I2dQdIiJ4z/UEu"),
        SsrcLine(3996039562, "msid", "- d4a04c2a-d3d5-42e7-b992-a1c912fa8f1a"),
    ]
    assert audio.attributes == [Attribute("rtcp-xr", "rcvr-rtt=all")]


def test_sendonly_fixture_video_section(sendonly_text: str) -> None:
    video = parse_sdp(sendonly_text).media[1]
    assert video.mid == "1"
    assert len(video.codecs) == len(video.payload_types) == 23
    vp8 = video.codec(96)
    assert vp8 is not None and (vp8.name, vp8.clock_rate, vp8.channels, vp8.fmtp) == ("VP8", 90000, None, None)
    assert vp8.rtcp_fb == [
        RtcpFb("goog-remb"), RtcpFb("transport-cc"), RtcpFb("ccm", "fir"), RtcpFb("nack"), RtcpFb("nack", "pli"),
    ]
    rtx = video.codec(97)
    assert rtx is not None and rtx.fmtp == [("apt", "96")] and rtx.fmtp_value("APT") == "96"
    h264 = video.codec(108)
    assert h264 is not None and h264.fmtp_value("profile-level-id") == "42e01f"
    assert h264.fmtp_value("packetization-mode") == "1"
    assert video.ssrc_groups == [SsrcGroup("FID", [2509165653, 885520741])]
    assert video.ssrc_order() == [2509165653, 885520741]
    assert video.ssrc_value(885520741, "cname") == "t4I2dQdIiJ4z/UEu"
    assert video.extmaps[0] == Extmap(14, "urn:ietf:params:rtp-hdrext:toffset")
    assert video.rids == [] and video.simulcast is None


def test_simulcast_fixture_rids(simulcast_text: str) -> None:
    video = parse_sdp(simulcast_text).media[1]
    assert video.rids == [Rid("q", "send"), Rid("h", "send"), Rid("f", "send")]
    assert video.simulcast == Simulcast(send=[[SimulcastRid("q")], [SimulcastRid("h")], [SimulcastRid("f")]])
    assert video.ssrcs == [] and video.ssrc_groups == []
    assert video.msids == [Msid("-", "618af9f3-6c25-46c7-9f63-0cc89e05f703")]


def test_recvonly_fixture_has_no_ssrc(recvonly_text: str) -> None:
    d = parse_sdp(recvonly_text)
    assert [m.direction for m in d.media] == ["recvonly", "recvonly"]
    assert all(m.ssrcs == [] and m.msids == [] for m in d.media)
    assert d.media[1].codec(49) == Codec(
        49, "flexfec-03", 90000, None, [("repair-window", "10000000")], [RtcpFb("goog-remb"), RtcpFb("transport-cc")]
    )


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_round_trip(name: str) -> None:
    text = fixture_text(name)
    d = parse_sdp(text)
    out = d.to_text()
    assert out.endswith("\r\n") and "\n" not in out.replace("\r\n", "")
    assert parse_sdp(out) == d
    # nothing lost: every original line is in the output (order of attributes may differ).
    # Firefox writes "a=msid-semantic:WMS *" (no space, RFC 8830's grammar allows either);
    # the model keeps the semantic and its ids and writes them back with the space.
    expected = text.replace("\r\n", "\n").replace("a=msid-semantic:WMS", "a=msid-semantic: WMS")
    assert sorted(expected.strip().split("\n")) == sorted(out.strip().split("\r\n"))


def test_built_model_round_trip() -> None:
    d = SessionDescription(
        origin=Origin("-", 1, 2),
        ice_lite=True,
        ice_ufrag="uf",
        ice_pwd="pw",
        fingerprints=[Fingerprint("sha-256", "AA:BB")],
        setup="actpass",
        direction="sendrecv",
        groups=[Group("BUNDLE", ["a", "b"])],
        extmap_allow_mixed=True,
        msid_semantic=MsidSemantic("WMS", ["*"]),
        extmaps=[Extmap(5, "urn:x", "sendonly", "attr1 attr2")],
        attributes=[Attribute("x-flag"), Attribute("x-empty", "")],
        lines=[("i", "info"), ("z", "zone")],
        bandwidths=["AS:100"],
        connection="IN IP4 0.0.0.0",
        media=[
            MediaSection(
                kind="video", port=9, protocol="UDP/TLS/RTP/SAVPF", formats=["96", "97"],
                connection="IN IP6 ::1", bandwidths=["TIAS:1000"], rtcp="9", mid="a", direction="recvonly",
                ice_ufrag="u2", ice_pwd="p2", ice_options="trickle", fingerprints=[Fingerprint("sha-1", "01")],
                setup="active", rtcp_mux=True, rtcp_rsize=True, bundle_only=True, extmap_allow_mixed=True,
                candidates=[Candidate("f", 1, "udp", 5, "10.0.0.1", 9, "srflx", "192.0.2.1", 7, [("generation", "0")])],
                end_of_candidates=True,
                codecs=[Codec(96, "VP8", 90000, rtcp_fb=[RtcpFb("nack")]), Codec(97, fmtp=[("apt", "96")])],
                rtcp_fb_all=[RtcpFb("ccm", "fir")],
                extmaps=[Extmap(1, "urn:y")],
                msids=[Msid("s"), Msid("s", "t")],
                ssrcs=[SsrcLine(1, "cname", "c"), SsrcLine(1, "x")],
                ssrc_groups=[SsrcGroup("SIM", [1, 2, 3])],
                rids=[Rid("r1", "recv", "pt=96;max-width=640")],
                simulcast=Simulcast(send=[[SimulcastRid("a", True), SimulcastRid("b")]], recv=[[SimulcastRid("c")]]),
                attributes=[Attribute("sctp-port", "5000")],
                lines=[("k", "prompt")],
            ),
            MediaSection(kind="application", port=0, protocol="UDP/DTLS/SCTP", formats=["webrtc-datachannel"], mid="b"),
        ],
    )
    text = d.to_text()
    assert parse_sdp(text) == d
    assert "a=simulcast:send ~a,b recv c\r\n" in text
    assert "a=extmap:5/sendonly urn:x attr1 attr2\r\n" in text
    assert "a=candidate:f 1 udp 5 10.0.0.1 9 typ srflx raddr 192.0.2.1 rport 7 generation 0\r\n" in text
    assert "a=msid-semantic: WMS *\r\n" in text


def test_tolerates_lf_blank_lines_and_trailing_space(sendonly_text: str) -> None:
    crlf = parse_sdp(sendonly_text)
    messy = "\n\n".join(line + "  " for line in sendonly_text.replace("\r\n", "\n").split("\n"))
    assert parse_sdp(messy) == crlf


@pytest.mark.parametrize(
    "extra, check",
    [
        ("a=x-google-flag:conference", lambda m: m.attributes[-1] == Attribute("x-google-flag", "conference")),
        ("a=rtcp-fb:* nack", lambda m: m.rtcp_fb_all == [RtcpFb("nack")]),
        ("a=fmtp:96 x-google-start-bitrate=800 ; max-fr=30", lambda m: m.codec(96).fmtp == [("x-google-start-bitrate", "800"), ("max-fr", "30")]),
        ("a=simulcast: send rid=q;~h", lambda m: m.simulcast == Simulcast(send=[[SimulcastRid("q")], [SimulcastRid("h", True)]])),
        ("a=ssrc-group:SIM 1 2 3", lambda m: m.ssrc_groups == [SsrcGroup("SIM", [1, 2, 3])]),
        ("a=bundle-only", lambda m: m.bundle_only and m.active),
        ("a=extmap:15/recvonly urn:z", lambda m: m.extmaps[-1] == Extmap(15, "urn:z", "recvonly")),
        ("i=section info", lambda m: m.lines == [("i", "section info")]),
        ("b=AS:512", lambda m: m.bandwidths == ["AS:512"]),
        ("a=end-of-candidates", lambda m: m.end_of_candidates),
    ],
)
def test_tolerated_lines(extra: str, check: object) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n" + extra + "\r\n"
    d = parse_sdp(text)
    assert check(d.media[0])  # type: ignore[operator]
    assert parse_sdp(d.to_text()) == d


HEAD = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
MEDIA = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("", None, "empty SDP"),
        ("o=- 1 1 IN IP4 0.0.0.0\r\n", 1, "first line must be v="),
        ("v=x\r\n", 1, "version is not a number"),
        (HEAD + "garbage\r\n", 5, "expected '<type>=<value>'"),
        (HEAD + "ab=1\r\n", 5, "expected '<type>=<value>'"),
        ("v=0\r\no=- x 1 IN IP4 0.0.0.0\r\n", 2, "session id is not a number"),
        ("v=0\r\no=- 1 1 IN IP4\r\n", 2, "o= needs 6 fields"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\n", 3, "duplicate o= line"),
        (HEAD + "m=video\r\n", 5, "m= needs"),
        (HEAD + "m=video 9/2 RTP/AVP 0\r\n", 5, "port is not a number"),
        (HEAD + "m=video 70000 RTP/AVP 0\r\n", 5, "outside 0..65535"),
        (HEAD + MEDIA + "a=rtpmap:96\r\n", 6, "a=rtpmap needs two fields"),
        (HEAD + MEDIA + "a=rtpmap:300 VP8/90000\r\n", 6, "payload type 300 is outside 0..127"),
        (HEAD + MEDIA + "a=rtpmap:96 VP8\r\n", 6, "a=rtpmap needs"),
        (HEAD + MEDIA + "a=rtpmap:96 VP8/fast\r\n", 6, "clock rate is not a number"),
        (HEAD + MEDIA + "a=rtpmap:96 VP8/90000\r\na=rtpmap:96 VP9/90000\r\n", 7, "duplicate a=rtpmap"),
        (HEAD + MEDIA + "a=fmtp:96 a=1\r\na=fmtp:96 b=2\r\n", 7, "duplicate a=fmtp"),
        (HEAD + MEDIA + "a=fmtp:x apt=1\r\n", 6, "payload type is not a number"),
        (HEAD + MEDIA + "a=rtcp-fb:96\r\n", 6, "a=rtcp-fb needs two fields"),
        (HEAD + MEDIA + "a=mid\r\n", 6, "a=mid needs a value"),
        (HEAD + MEDIA + "a=mid:  \r\n", 6, "a=mid is empty"),
        (HEAD + MEDIA + "a=mid:0\r\na=mid:1\r\n", 7, "duplicate a=mid"),
        (HEAD + MEDIA + "a=mid:0\r\n" + MEDIA + "a=mid:0\r\n", 8, "used by two m-sections"),
        (HEAD + MEDIA + "a=sendonly\r\na=recvonly\r\n", 7, "duplicate a=<direction>"),
        (HEAD + MEDIA + "a=setup:sometimes\r\n", 6, "unknown a=setup value"),
        (HEAD + "a=setup:later\r\n", 5, "unknown a=setup value"),
        (HEAD + MEDIA + "a=fingerprint:sha-256\r\n", 6, "a=fingerprint needs two fields"),
        (HEAD + MEDIA + "a=extmap:0 urn:x\r\n", 6, "extmap id 0 is outside 1..255"),
        (HEAD + MEDIA + "a=extmap:1/up urn:x\r\n", 6, "unknown a=extmap direction"),
        (HEAD + MEDIA + "a=extmap:1\r\n", 6, "a=extmap needs an id and a URI"),
        (HEAD + MEDIA + "a=candidate:1 1 udp 5 1.2.3.4 9 host\r\n", 6, "a=candidate needs"),
        (HEAD + MEDIA + "a=candidate:1 1 udp 5 1.2.3.4 9 typ host generation\r\n", 6, "extension without a value"),
        (HEAD + MEDIA + "a=candidate:1 1 udp 5 1.2.3.4 port typ host\r\n", 6, "candidate port is not a number"),
        (HEAD + MEDIA + "a=ssrc:12345678901 cname:x\r\n", 6, "outside 0..4294967295"),
        (HEAD + MEDIA + "a=ssrc:1\r\n", 6, "a=ssrc needs two fields"),
        (HEAD + MEDIA + "a=ssrc-group:FID 1 x\r\n", 6, "ssrc is not a number"),
        (HEAD + MEDIA + "a=rid:q sideways\r\n", 6, "a=rid needs"),
        (HEAD + MEDIA + "a=simulcast:send\r\n", 6, "a=simulcast needs"),
        (HEAD + MEDIA + "a=simulcast:send q;;h\r\n", 6, "empty rid"),
        (HEAD + MEDIA + "a=simulcast:send q send h\r\n", 6, "unknown or repeated"),
        (HEAD + MEDIA + "a=msid-semantic:\r\n", None, None),  # media-level: kept verbatim, no error
        (HEAD + "a=msid-semantic:  \r\n", 5, "a=msid-semantic needs a semantic"),
        (HEAD + "a=group:\r\n", 5, "a=group needs semantics"),
        (HEAD + MEDIA + "a=rtpmap:٩٦ VP8/90000\r\n", 6, "payload type is not a number"),
    ],
)
def test_malformed_lines_name_the_line(text: str, line: int | None, reason: str | None) -> None:
    if reason is None:
        parse_sdp(text)
        return
    with pytest.raises(SdpError) as info:
        parse_sdp(text)
    err = info.value
    assert err.code == SDP_MALFORMED
    assert reason in err.message
    assert err.line == line
    if line is not None:
        assert err.message.startswith(f"line {line}: ")


def test_too_large_is_refused() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp("v=0\r\n" + "a=x\r\n" * (MAX_SDP_SIZE // 5 + 1))
    assert info.value.code == SDP_TOO_LARGE


def test_non_text_is_refused() -> None:
    with pytest.raises(SdpError):
        parse_sdp(b"v=0\r\n")  # type: ignore[arg-type]


def test_long_line_is_shortened_in_message() -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(HEAD + MEDIA + "a=rtpmap:x " + "y" * 500 + "\r\n")
    assert len(info.value.message) < 300 and info.value.message.endswith("...'")
