"""build_subscribe_offer (offers and JSEP re-offers) and apply_subscribe_answer."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.sdp import (
    DEFAULT_CAPABILITIES,
    Fingerprint,
    MediaSection,
    Msid,
    NegotiatedCodec,
    OutTrack,
    RtcpFb,
    SdpError,
    SessionDescription,
    SsrcGroup,
    SsrcLine,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)
from sfu.sdp.capabilities import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, URI_TRANSPORT_CC
from sfu.sdp.errors import (
    ANSWER_MISMATCH,
    BUNDLE_REQUIRED,
    INVALID_SETUP,
    MISSING_ICE_CREDENTIALS,
    NO_COMMON_CODEC,
    RTCP_MUX_REQUIRED,
)

from .conftest import LOCAL, SFU_FINGERPRINT

OPUS = NegotiatedCodec("audio", "opus", 111, 48000, 2, (("minptime", "10"), ("useinbandfec", "1")))
VP8 = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
H264_CB = NegotiatedCodec(
    "video", "H264", 96, 90000,
    fmtp=(("level-asymmetry-allowed", "1"), ("packetization-mode", "1"), ("profile-level-id", "42e01f")),
    rtx_payload_type=97,
)
H264_B = dataclasses.replace(H264_CB, payload_type=102, rtx_payload_type=103,
                             fmtp=(("level-asymmetry-allowed", "1"), ("packetization-mode", "1"), ("profile-level-id", "42001f")))
VIDEO_FB = [RtcpFb("goog-remb"), RtcpFb("transport-cc"), RtcpFb("ccm", "fir"), RtcpFb("nack"), RtcpFb("nack", "pli")]


def audio(n: int, stream: str = "alice") -> OutTrack:
    return OutTrack("audio", stream, f"a{n}", 1000 + n, OPUS)


def video(n: int, stream: str = "alice", codec: NegotiatedCodec = VP8, rtx: bool = True) -> OutTrack:
    return OutTrack("video", stream, f"v{n}", 2000 + n, codec, rtx_ssrc=3000 + n if rtx else None)


def pt_configs(offer: SessionDescription) -> dict[int, set[tuple[object, ...]]]:
    """Every payload type of the BUNDLE group with the codec configurations it is used for."""
    out: dict[int, set[tuple[object, ...]]] = {}
    bundled = set(offer.bundle_mids())
    for m in offer.media:
        if m.mid not in bundled:
            continue
        for c in m.codecs:
            out.setdefault(c.payload_type, set()).add((c.name, c.clock_rate, c.channels, tuple(c.fmtp or ())))
    return out


def test_first_offer_session_fields() -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    assert offer.ice_lite and offer.extmap_allow_mixed
    assert offer.origin is not None and (offer.origin.session_id, offer.origin.session_version) == (4242, 1)
    assert offer.bundle_mids() == ["0", "1"]
    assert offer.msid_semantic is not None and offer.msid_semantic.ids == ["*"]
    assert parse_sdp(offer.to_text()) == offer
    text = offer.to_text()
    assert "a=msid:alice a1\r\n" in text and "a=ssrc:1001 cname:alice\r\n" in text


def test_first_offer_sections() -> None:
    a, v = build_subscribe_offer(LOCAL, [audio(1), video(1)]).media
    for m in (a, v):
        assert (m.port, m.connection, m.protocol) == (40000, "IN IP4 127.0.0.1", "UDP/TLS/RTP/SAVPF")
        assert (m.direction, m.setup, m.rtcp_mux, m.rtcp_rsize, m.end_of_candidates) == ("sendonly", "actpass", True, True, True)
        assert (m.ice_ufrag, m.ice_pwd, m.fingerprints) == (LOCAL.ice_ufrag, LOCAL.ice_pwd, [SFU_FINGERPRINT])
        assert [c.address for c in m.candidates] == ["127.0.0.1", "::1"]
    assert (a.mid, a.formats, a.msids) == ("0", ["111"], [Msid("alice", "a1")])
    assert [(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp, c.rtcp_fb) for c in a.codecs] == [
        (111, "opus", 48000, 2, [("minptime", "10"), ("useinbandfec", "1")], [RtcpFb("transport-cc")])
    ]
    assert a.ssrcs == [SsrcLine(1001, "cname", "alice"), SsrcLine(1001, "msid", "alice a1")]
    assert a.ssrc_groups == []
    assert {e.uri: e.id for e in a.extmaps} == {URI_AUDIO_LEVEL: 1, URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3, URI_MID: 4}
    assert (v.mid, v.formats) == ("1", ["96", "97"])
    assert v.codecs[0].rtcp_fb == VIDEO_FB
    assert (v.codecs[1].name, v.codecs[1].fmtp) == ("rtx", [("apt", "96")])
    assert v.ssrc_groups == [SsrcGroup("FID", [2001, 3001])]
    assert [s.ssrc for s in v.ssrcs] == [2001, 2001, 3001, 3001]
    # rid/repaired-rid are never offered downstream: the SFU sends one layer per subscriber
    assert {e.uri: e.id for e in v.extmaps} == {URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3, URI_MID: 4}


def test_cname_and_no_rtx() -> None:
    t = dataclasses.replace(video(1, rtx=False), cname="cn")
    m = build_subscribe_offer(LOCAL, [t]).media[0]
    assert m.formats == ["96"] and m.ssrc_groups == []
    assert m.ssrcs[0] == SsrcLine(2001, "cname", "cn")


def test_payload_type_collisions_are_resolved() -> None:
    offer = build_subscribe_offer(LOCAL, [video(1, codec=VP8), video(2, "bob", codec=H264_CB), video(3, "carol", codec=H264_B)])
    v1, v2, v3 = offer.media
    assert v1.formats == ["96", "97"]  # first come keeps the publisher's payload types
    assert v2.codecs[0].name == "H264" and v2.codecs[0].payload_type not in (96, 97)
    assert v3.formats == ["102", "103"]
    assert all(len(configs) == 1 for configs in pt_configs(offer).values())
    for m in offer.media:
        rtx = m.codecs[1]
        assert rtx.fmtp == [("apt", str(m.codecs[0].payload_type))]


def test_same_codec_shares_payload_type() -> None:
    offer = build_subscribe_offer(LOCAL, [video(1), video(2, "bob"), audio(1), audio(2, "bob")])
    assert [m.formats for m in offer.media] == [["96", "97"], ["96", "97"], ["111"], ["111"]]


def test_reoffer_adds_a_section_and_keeps_the_others() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    second = build_subscribe_offer(LOCAL, [audio(1), video(1), video(2, "bob", codec=H264_CB)], first)
    assert [m.mid for m in second.media] == ["0", "1", "2"]
    assert second.media[:2] == first.media
    assert second.bundle_mids() == ["0", "1", "2"]
    assert second.origin is not None and first.origin is not None
    assert (second.origin.session_id, second.origin.session_version) == (first.origin.session_id, 2)
    assert second.media[2].formats == ["98", "99"]


def test_reoffer_order_of_tracks_does_not_move_sections() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    second = build_subscribe_offer(LOCAL, [video(1), audio(1)], first)
    assert second.media == first.media


def test_removed_track_stops_its_section() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1), video(2, "bob")])
    second = build_subscribe_offer(LOCAL, [audio(1), video(2, "bob")], first)
    stopped = second.media[1]
    assert (stopped.mid, stopped.port, stopped.direction, stopped.connection) == ("1", 0, "inactive", "IN IP4 0.0.0.0")
    assert stopped.msids == [] and stopped.ssrcs == [] and stopped.ssrc_groups == [] and stopped.candidates == []
    assert stopped.codecs == first.media[1].codecs and stopped.extmaps == first.media[1].extmaps
    assert stopped.rtcp_mux and stopped.ice_ufrag == LOCAL.ice_ufrag  # aiortc checks these on every section
    assert not stopped.end_of_candidates
    assert second.bundle_mids() == ["0", "2"]
    assert second.media[0] == first.media[0] and second.media[2] == first.media[2]
    third = build_subscribe_offer(LOCAL, [audio(1), video(2, "bob")], second)
    assert third.media == second.media  # a stopped section stays as it is


def test_removing_the_bundle_tag() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    second = build_subscribe_offer(LOCAL, [video(1)], first)
    assert second.bundle_mids() == ["1"] and second.media[0].port == 0


def test_all_tracks_removed_keeps_stopped_sections() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1)])
    second = build_subscribe_offer(LOCAL, [], first)
    assert [m.port for m in second.media] == [0] and second.groups == []


def test_new_track_after_removal_is_appended_by_default() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    second = build_subscribe_offer(LOCAL, [audio(1)], first)
    third = build_subscribe_offer(LOCAL, [audio(1), video(2, "bob")], second)
    assert [(m.mid, m.port) for m in third.media] == [("0", 40000), ("1", 0), ("2", 40000)]


def test_recycling_takes_the_slot_with_a_new_mid() -> None:
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, recycle_stopped_sections=True)
    first = build_subscribe_offer(LOCAL, [audio(1), video(1), video(2, "bob")], capabilities=caps)
    second = build_subscribe_offer(LOCAL, [audio(1), video(2, "bob")], first, caps)
    # a section stopped in this very offer is not recycled before the peer saw it stopped
    third = build_subscribe_offer(LOCAL, [audio(1), video(2, "bob"), audio(3, "carol")], second, caps)
    assert [(m.mid, m.kind, m.port) for m in third.media] == [("0", "audio", 40000), ("3", "audio", 40000), ("2", "video", 40000)]
    assert third.bundle_mids() == ["0", "3", "2"]
    fourth = build_subscribe_offer(LOCAL, [audio(3, "carol"), video(2, "bob")], third, caps)
    fifth = build_subscribe_offer(LOCAL, [audio(3, "carol"), video(2, "bob"), video(4, "dan")], fourth, caps)
    assert [m.mid for m in fifth.media] == ["4", "3", "2"]


def test_track_found_by_explicit_mid() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    replaced = dataclasses.replace(video(7, "zoe"), mid="1")
    second = build_subscribe_offer(LOCAL, [audio(1), replaced], first)
    assert second.media[1].mid == "1" and second.media[1].msids == [Msid("zoe", "v7")]


def test_new_track_with_explicit_mid() -> None:
    offer = build_subscribe_offer(LOCAL, [dataclasses.replace(audio(1), mid="audio-1"), video(1)])
    assert [m.mid for m in offer.media] == ["audio-1", "0"]


def test_changed_codec_on_kept_section() -> None:
    first = build_subscribe_offer(LOCAL, [video(1)])
    second = build_subscribe_offer(LOCAL, [dataclasses.replace(video(1), codec=H264_CB)], first)
    assert second.media[0].mid == "0" and second.media[0].codecs[0].name == "H264"
    assert all(len(c) == 1 for c in pt_configs(second).values())


@pytest.mark.parametrize(
    "tracks, previous_tracks, message",
    [
        ([audio(1), dataclasses.replace(audio(2), track_id="a1")], None, "appears twice"),
        ([audio(1), dataclasses.replace(audio(2), ssrc=1001)], None, "SSRC 1001 appears twice"),
        ([dataclasses.replace(audio(1), mid="x"), dataclasses.replace(audio(2), mid="x")], None, "repeated"),
        ([dataclasses.replace(video(1), mid="0")], [audio(1)], "is a audio m-section"),
        ([dataclasses.replace(audio(1), kind="text")], None, "kind"),
        ([dataclasses.replace(audio(1), stream_id="has space")], None, "tokens"),
        ([dataclasses.replace(audio(1), ssrc=0)], None, "out of range"),
        ([], None, "at least one track"),
    ],
)
def test_bad_tracks_raise_value_error(tracks: list[OutTrack], previous_tracks: list[OutTrack] | None, message: str) -> None:
    previous = build_subscribe_offer(LOCAL, previous_tracks) if previous_tracks else None
    with pytest.raises(ValueError, match=message):
        build_subscribe_offer(LOCAL, tracks, previous)


def test_mid_of_stopped_section_is_refused() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    second = build_subscribe_offer(LOCAL, [audio(1)], first)
    with pytest.raises(ValueError, match="stopped"):
        build_subscribe_offer(LOCAL, [audio(1), dataclasses.replace(video(2), mid="1")], second)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9), st.sampled_from(["add", "remove"])), min_size=1, max_size=12),
       st.booleans())
def test_reoffer_sequences_keep_jsep_rules(steps: list[tuple[bool, int, str]], recycle: bool) -> None:
    """Any add/remove sequence: m-lines only grow, live mids never move, mids are never reused,
    one payload type means one codec, the BUNDLE group is exactly the live sections."""
    caps = dataclasses.replace(DEFAULT_CAPABILITIES, recycle_stopped_sections=recycle)
    codecs = [VP8, H264_CB, H264_B]
    live: dict[str, OutTrack] = {}
    previous: SessionDescription | None = None
    mid_owner: dict[str, str] = {}
    for is_video, n, action in steps:
        tid = f"{'v' if is_video else 'a'}{n}"
        if action == "add" and tid not in live:
            live[tid] = (video(n, f"s{n}", codecs[n % 3]) if is_video else audio(n, f"s{n}"))
        elif action == "remove":
            live.pop(tid, None)
        if previous is None and not live:
            continue
        offer = build_subscribe_offer(LOCAL, list(live.values()), previous, caps)
        assert parse_sdp(offer.to_text()) == offer
        if previous is not None:
            assert len(offer.media) >= len(previous.media)
            for old, new in zip(previous.media, offer.media, strict=False):
                if old.active and new.active:
                    assert old.mid == new.mid
        active_tracks = {m.msids[0].track_id or "": m.mid or "" for m in offer.media if m.active}
        assert set(active_tracks) == set(live)
        for track_id, mid in active_tracks.items():
            assert mid_owner.setdefault(mid, track_id) == track_id
        assert offer.bundle_mids() == [m.mid for m in offer.media if m.active]
        assert all(len(c) == 1 for c in pt_configs(offer).values())
        previous = offer


# ---- apply_subscribe_answer ----

CLIENT_FP = Fingerprint("sha-256", ":".join(["C1"] * 32))


def make_answer(offer: SessionDescription, setup: str = "active") -> SessionDescription:
    """A Chromium-shaped answer: every section mirrored recvonly, codecs and extensions echoed."""
    ans = SessionDescription(extmap_allow_mixed=offer.extmap_allow_mixed)
    for m in offer.media:
        a = MediaSection(
            kind=m.kind, port=9 if m.active else 0, protocol=m.protocol, formats=list(m.formats), mid=m.mid,
            direction="recvonly" if m.active else "inactive", ice_ufrag="cli1", ice_pwd="clientpasswordclientpw",
            fingerprints=[CLIENT_FP], setup=setup, rtcp_mux=True, rtcp_rsize=True,
            codecs=copy.deepcopy(m.codecs), extmaps=copy.deepcopy(m.extmaps),
        )
        ans.media.append(a)
    ans.groups = copy.deepcopy(offer.groups)
    return ans


def test_apply_answer_tracks() -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    params = apply_subscribe_answer(offer, parse_sdp(make_answer(offer).to_text()))
    t = params.transport
    assert (t.ice_ufrag, t.ice_pwd, t.setup, t.dtls_role, t.fingerprints) == (
        "cli1", "clientpasswordclientpw", "active", "server", (CLIENT_FP,),
    )
    a, v = params.tracks
    assert (a.mid, a.kind, a.codec.payload_type, a.codec.rtx_payload_type, a.ssrc, a.rtx_ssrc) == ("0", "audio", 111, None, 1001, None)
    assert (a.stream_id, a.track_id, a.direction) == ("alice", "a1", "recvonly")
    assert a.extension_ids.audio_level == 1 and a.extension_ids.mid == 4
    assert (v.codec.name, v.codec.payload_type, v.codec.rtx_payload_type, v.ssrc, v.rtx_ssrc) == ("VP8", 96, 97, 2001, 3001)
    assert v.codec.rtcp_fb == tuple(VIDEO_FB) and v.rtcp_rsize
    assert v.header_extensions == {URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 3, URI_MID: 4}
    assert params.rejected == () and params.stopped_mids == () and params.extmap_allow_mixed


def test_apply_answer_subsets() -> None:
    offer = build_subscribe_offer(LOCAL, [video(1)])
    ans = make_answer(offer)
    m = ans.media[0]
    m.formats = ["96"]
    m.codecs = [c for c in m.codecs if c.payload_type == 96]
    m.codecs[0].rtcp_fb = [RtcpFb("nack"), RtcpFb("nack", "pli"), RtcpFb("x-unknown")]
    m.extmaps = [e for e in m.extmaps if e.uri == URI_MID]
    ans.extmap_allow_mixed = False
    params = apply_subscribe_answer(offer, ans)
    v = params.tracks[0]
    assert v.codec.rtx_payload_type is None and v.rtx_ssrc is None
    assert v.codec.rtcp_fb == (RtcpFb("nack"), RtcpFb("nack", "pli"))
    assert v.header_extensions == {URI_MID: 4} and v.extension_ids.transport_cc == 0
    assert not params.extmap_allow_mixed


def test_apply_answer_passive_makes_us_client() -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1)])
    assert apply_subscribe_answer(offer, make_answer(offer, setup="passive")).transport.dtls_role == "client"


def test_apply_answer_rejections_and_stopped() -> None:
    first = build_subscribe_offer(LOCAL, [audio(1), video(1), video(2, "bob"), video(3, "carol")])
    offer = build_subscribe_offer(LOCAL, [video(1), video(2, "bob"), video(3, "carol")], first)
    ans = make_answer(offer)
    ans.media[2].port = 0
    ans.groups[0].mids = ["1", "3"]
    ans.media[3].direction = "inactive"
    params = apply_subscribe_answer(offer, ans)
    assert [t.mid for t in params.tracks] == ["1"]
    assert params.rejected == (("2", "rejected_by_peer"), ("3", "inactive"))
    assert params.stopped_mids == ("0",)


def test_apply_answer_unknown_payload_type() -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    ans = make_answer(offer)
    ans.media[1].formats = ["120"]
    params = apply_subscribe_answer(offer, ans)
    assert [t.mid for t in params.tracks] == ["0"]
    assert params.rejected == (("1", NO_COMMON_CODEC),)


def _drop_transport(a: SessionDescription) -> None:
    for m in a.media:
        m.ice_ufrag = None


def _mismatch_mid(a: SessionDescription) -> None:
    a.media[1].mid = "9"


def _mismatch_kind(a: SessionDescription) -> None:
    a.media[1].kind = "audio"


def _drop_section(a: SessionDescription) -> None:
    a.media.pop()


def _no_bundle(a: SessionDescription) -> None:
    a.groups = []


def _no_mux(a: SessionDescription) -> None:
    a.media[1].rtcp_mux = False


def _actpass(a: SessionDescription) -> None:
    for m in a.media:
        m.setup = "actpass"


@pytest.mark.parametrize(
    "mutate, code",
    [
        (_drop_transport, MISSING_ICE_CREDENTIALS),
        (_mismatch_mid, ANSWER_MISMATCH),
        (_mismatch_kind, ANSWER_MISMATCH),
        (_drop_section, ANSWER_MISMATCH),
        (_no_bundle, BUNDLE_REQUIRED),
        (_no_mux, RTCP_MUX_REQUIRED),
        (_actpass, INVALID_SETUP),
    ],
)
def test_apply_answer_refusals(mutate: object, code: str) -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1), video(1)])
    ans = make_answer(offer)
    mutate(ans)  # type: ignore[operator]
    with pytest.raises(SdpError) as info:
        apply_subscribe_answer(offer, ans)
    assert info.value.code == code


def test_apply_answer_everything_rejected_still_reads_transport() -> None:
    offer = build_subscribe_offer(LOCAL, [audio(1)])
    ans = make_answer(offer)
    ans.media[0].port = 0
    ans.groups = []
    params = apply_subscribe_answer(offer, ans)
    assert params.tracks == () and params.transport.ice_ufrag == "cli1"
