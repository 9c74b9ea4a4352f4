"""Answering a publisher's offer: the client sends, the SFU receives (recvonly).

Each audio/video m-section is accepted with one codec (the first capability the offer
supports, in capability order) plus its RTX, or rejected with port 0 when there is none;
the whole offer is refused only when nothing is left, a transport rule is broken, or it
publishes more than one participant may (``check_publish_limits``).

Limits: a participant publishes one microphone, one camera and one screen. The SDP does
not say which source a video track is (signaling carries no source either), so the cap is
by kind: at most ``MAX_PUBLISHED_AUDIO`` (1) audio and ``MAX_PUBLISHED_VIDEO`` (2: camera and
screen) sending m-sections, and at most ``MAX_PUBLISH_SECTIONS`` m-sections in all (stopped
ones included: a browser keeps a few after stopping a screen share). The text is refused
before parsing when it is over ``MAX_PUBLISH_SDP_SIZE`` or has more m= lines than that.

Firefox (firefox-esr 153; golden SDPs tests/fixtures/sdp/firefox-*.sdp) differs from Chromium
in ways this module and the subscribe side take as they are, none needing a special case:
- BUNDLE: every m-section after the first is ``m=video 0 ... a=bundle-only`` (port 0 yet
  active: ``MediaSection.active``); the answer gives each the SFU's port, never bundle-only.
- a=fingerprint, and a=ice-options:trickle, at session level only; ufrag 8 and pwd 32 hex
  digits (Chromium: 4 and 24 base64 characters).
- a=ssrc lines carry only cname; track and stream ids, in braces, come from a=msid; RTX from
  a=ssrc-group:FID. a=extmap may carry a direction (``a=extmap:2/recvonly``); extension ids
  differ from Chromium's (mid 3, audio level 1, abs-send-time 4, transport-cc 7).
- a=msid-semantic:WMS * without the space (either is valid); a=rtcp:<port> naming a .local.
- Candidates: a page without a camera/microphone permission offers mDNS ``<uuid>.local`` host
  names and ``tcptype active`` port 9; with one, raw addresses. The SFU is ICE-lite and never
  dials them: it learns the address from Firefox's checks. On loopback Firefox needs the
  permission to gather 127.0.0.1 at all (see tests/e2e/firefox_driver.mjs): that, not the
  SDP, was the "Reconnecting..." loop of Firefox through the SFU.
- DTLS: ``a=setup:actpass`` in its offers (answered passive, as for Chromium) and
  ``a=setup:active`` in its subscribe answers; our DTLS server takes its ClientHello, and
  TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 with SRTP_AEAD_AES_128_GCM is what getStats shows.
- Its subscribe answer drops extensions it does not take for the kind (abs-send-time offered
  on audio), so the SFU writes only what the answer keeps (``apply_subscribe_answer``).
"""

from __future__ import annotations

from sfu.sdp.capabilities import DEFAULT_CAPABILITIES as _DEFAULT
from sfu.sdp.capabilities import URI_RID, MediaCapabilities, codec_rank, is_rtx
from sfu.sdp.errors import (
    BUNDLE_REQUIRED,
    MISSING_MID,
    NO_COMMON_CODEC,
    NO_MEDIA,
    RTCP_MUX_REQUIRED,
    SDP_TOO_LARGE,
    TOO_MANY_TRACKS,
    UNSUPPORTED_PROTOCOL,
    SdpError,
)
from sfu.sdp.model import (
    INACTIVE,
    KIND_AUDIO,
    KIND_VIDEO,
    PROTO_WEBRTC,
    RECVONLY,
    RID_RECV,
    RID_SEND,
    SEMANTICS_BUNDLE,
    SEMANTICS_FID,
    SEMANTICS_SIM,
    SENDONLY,
    SENDRECV,
    Codec,
    Extmap,
    Group,
    MediaSection,
    MsidSemantic,
    Origin,
    Rid,
    SessionDescription,
    Simulcast,
    SimulcastRid,
)
from sfu.sdp.params import (
    Encoding,
    ExtensionIds,
    LocalTransportParams,
    NegotiatedCodec,
    PublishParams,
    PublishTrack,
)
from sfu.sdp.transport import (
    DISCARD_CONNECTION,
    local_setup_for,
    remote_transport,
    write_local_transport,
)

MAX_PUBLISHED_AUDIO = 1  # the microphone
MAX_PUBLISHED_VIDEO = 2  # the camera and the screen
MAX_PUBLISH_SECTIONS = 16  # m-sections of any kind and state
MAX_PUBLISH_SDP_SIZE = 64 * 1024  # characters; a browser's offer of all three is ~10-20 KB

REJECT_STOPPED = "stopped"
REJECT_KIND = "unsupported_kind"
REJECT_NOT_BUNDLED = "not_bundled"


class _Accepted:
    """Negotiation result of one m-section, before the answer is written."""

    __slots__ = ("index", "section", "offered", "codec", "rtx", "extmaps", "rids", "direction", "rtcp_rsize")

    def __init__(self, index: int, section: MediaSection, offered: Codec, codec: NegotiatedCodec,
                 rtx: Codec | None, extmaps: list[Extmap], rids: list[SimulcastRid] | None,
                 direction: str, rtcp_rsize: bool) -> None:
        self.index = index
        self.section = section
        self.offered = offered
        self.codec = codec
        self.rtx = rtx
        self.extmaps = extmaps
        self.rids = rids
        self.direction = direction
        self.rtcp_rsize = rtcp_rsize


def choose_codec(
    section: MediaSection, capabilities: MediaCapabilities
) -> tuple[NegotiatedCodec, Codec, Codec | None] | None:
    """The codec the SFU takes from an offered section: negotiated, as offered, and its offered RTX."""
    offered = [c for pt in section.payload_types if (c := section.codec(pt)) is not None]
    for capability in capabilities.codecs_for(section.kind):
        best: Codec | None = None
        best_rank = 0
        for codec in offered:
            rank = codec_rank(codec, section.kind, capability)
            if rank is not None and (best is None or rank < best_rank):
                best, best_rank = codec, rank
        if best is None:
            continue
        rtx = None
        if capability.rtx:
            for codec in offered:
                if is_rtx(codec) and codec.clock_rate == best.clock_rate and codec.fmtp_value("apt") == str(best.payload_type):
                    rtx = codec
                    break
        wanted = {fb for fb in capability.rtcp_fb}
        feedback = tuple(fb for fb in section.feedback(best) if fb in wanted)
        fmtp = capability.fmtp
        if capability.fmtp_value("profile-level-id") is not None:
            offered_plid = best.fmtp_value("profile-level-id")
            fmtp = tuple((k, offered_plid if k == "profile-level-id" and offered_plid else v) for k, v in fmtp)
        negotiated = NegotiatedCodec(
            kind=section.kind,
            name=capability.name,
            payload_type=best.payload_type,
            clock_rate=capability.clock_rate,
            channels=capability.channels,
            fmtp=fmtp,
            rtcp_fb=feedback,
            rtx_payload_type=rtx.payload_type if rtx is not None else None,
        )
        return negotiated, best, rtx
    return None


def _extmaps(section: MediaSection, session: SessionDescription, capabilities: MediaCapabilities) -> list[Extmap]:
    wanted = {e.uri for e in capabilities.extensions_for(section.kind)}
    out: list[Extmap] = []
    seen: set[str] = set()
    for e in section.extmaps or session.extmaps:
        if e.uri in wanted and e.uri not in seen and e.direction not in (RECVONLY, INACTIVE):
            out.append(Extmap(id=e.id, uri=e.uri))
            seen.add(e.uri)
    return out


def _simulcast_rids(section: MediaSection, extmaps: list[Extmap], capabilities: MediaCapabilities) -> list[SimulcastRid] | None:
    """The rids the SFU will receive (first alternative of each offered stream), or None."""
    if not capabilities.simulcast or section.simulcast is None or not section.simulcast.send:
        return None
    if not any(e.uri == URI_RID for e in extmaps):
        return None
    declared = {r.id for r in section.rids if r.direction == RID_SEND}
    out: list[SimulcastRid] = []
    for alternatives in section.simulcast.send:
        usable = [r for r in alternatives if r.rid in declared and r.rid not in {x.rid for x in out}]
        if usable:
            out.append(usable[0])
        if len(out) == capabilities.max_simulcast_layers:
            break
    return out or None


def _encodings(section: MediaSection, rids: list[SimulcastRid] | None, rtx_negotiated: bool) -> tuple[Encoding, ...]:
    if rids is not None:
        return tuple(Encoding(rid=r.rid, paused=r.paused) for r in rids)
    fid: dict[int, int] = {}
    for g in section.ssrc_groups:
        if g.semantics == SEMANTICS_FID and len(g.ssrcs) == 2:
            fid[g.ssrcs[0]] = g.ssrcs[1]
    repair = set(fid.values())
    sim = next((g.ssrcs for g in section.ssrc_groups if g.semantics == SEMANTICS_SIM and g.ssrcs), None)
    if sim is not None:
        media_ssrcs = list(sim)
    else:
        media_ssrcs = [s for s in section.ssrc_order() if s not in repair][:1]
    if not media_ssrcs:
        return (Encoding(),)
    return tuple(Encoding(ssrc=s, rtx_ssrc=fid.get(s) if rtx_negotiated else None) for s in media_ssrcs)


def _msid(section: MediaSection, first_ssrc: int | None) -> tuple[str | None, str | None]:
    if section.msids:
        return section.msids[0].stream_id, section.msids[0].track_id
    if first_ssrc is not None:
        value = section.ssrc_value(first_ssrc, "msid")
        if value:
            parts = value.split()
            return parts[0], parts[1] if len(parts) > 1 else None
    return None, None


def _where(index: int, section: MediaSection) -> str:
    return f"m-section {index} ({section.kind}, mid {section.mid!r})"


def _rejected_section(offer: MediaSection, local: LocalTransportParams, setup: str) -> MediaSection:
    """Port 0, the offer's first format; transport attributes kept for strict parsers (aiortc)."""
    out = MediaSection(
        kind=offer.kind,
        port=0,
        protocol=offer.protocol,
        formats=offer.formats[:1] or ["0"],
        connection=DISCARD_CONNECTION,
        mid=offer.mid,
    )
    if offer.kind in (KIND_AUDIO, KIND_VIDEO):
        write_local_transport(out, local, setup, active=False)
        out.direction = INACTIVE
        out.rtcp_mux = offer.rtcp_mux
        pts = out.payload_types
        first = offer.codec(pts[0]) if pts else None
        if first is not None and first.name is not None:
            out.codecs = [Codec(payload_type=first.payload_type, name=first.name, clock_rate=first.clock_rate,
                                channels=first.channels)]
    return out


def _answer_direction(offered: str | None) -> str:
    if offered in (None, SENDRECV, SENDONLY):
        return RECVONLY
    return INACTIVE


def check_publish_text(text: str) -> None:
    """Refuse a publish offer before parsing: too long, or more m= lines than allowed."""
    if len(text) > MAX_PUBLISH_SDP_SIZE:
        raise SdpError(SDP_TOO_LARGE, f"the publish offer is {len(text)} characters; the limit is {MAX_PUBLISH_SDP_SIZE}")
    sections = text.count("\nm=") + text.startswith("m=")
    if sections > MAX_PUBLISH_SECTIONS:
        raise SdpError(TOO_MANY_TRACKS, f"the publish offer has {sections} m-sections; the limit is {MAX_PUBLISH_SECTIONS}")


def check_publish_limits(offer: SessionDescription) -> None:
    """Refuse an offer that publishes more than one microphone, camera and screen.

    Counts the m-sections the SFU would receive from (active audio/video, sending).
    Raises SdpError(TOO_MANY_TRACKS) naming the kind; changes nothing.
    """
    if len(offer.media) > MAX_PUBLISH_SECTIONS:
        raise SdpError(TOO_MANY_TRACKS, f"the publish offer has {len(offer.media)} m-sections; the limit is {MAX_PUBLISH_SECTIONS}")
    audio = video = 0
    for section in offer.media:
        if not section.active or (section.direction or offer.direction) not in (None, SENDRECV, SENDONLY):
            continue
        if section.kind == KIND_AUDIO:
            audio += 1
        elif section.kind == KIND_VIDEO:
            video += 1
    if audio > MAX_PUBLISHED_AUDIO:
        raise SdpError(TOO_MANY_TRACKS, f"the offer sends {audio} audio tracks; a participant publishes one microphone")
    if video > MAX_PUBLISHED_VIDEO:
        raise SdpError(TOO_MANY_TRACKS, f"the offer sends {video} video tracks; a participant publishes a camera and a screen at most")


def answer_publish_offer(
    offer: SessionDescription,
    local: LocalTransportParams,
    capabilities: MediaCapabilities = _DEFAULT,
    previous_answer: SessionDescription | None = None,
) -> tuple[SessionDescription, PublishParams]:
    """Answer a publish offer (recvonly, ICE-lite, BUNDLE); return the answer and what the SFU receives.

    `previous_answer` keeps the o= session id and bumps its version on renegotiation.
    Raises SdpError (see sfu.sdp.errors) when the offer cannot be answered at all.
    """
    local.validate()
    if not offer.media:
        raise SdpError(NO_MEDIA, "the offer has no m-section")
    check_publish_limits(offer)
    bundle = offer.bundle_mids()
    active_av = [m for m in offer.media if m.active and m.kind in (KIND_AUDIO, KIND_VIDEO)]
    lone = not offer.has_bundle_group() and len(active_av) == 1
    accepted: list[_Accepted] = []
    rejected: dict[int, str] = {}
    for index, section in enumerate(offer.media):
        if not section.active:
            rejected[index] = REJECT_STOPPED
            continue
        if section.kind not in (KIND_AUDIO, KIND_VIDEO):
            rejected[index] = REJECT_KIND
            continue
        if section.protocol != PROTO_WEBRTC:
            raise SdpError(UNSUPPORTED_PROTOCOL, f"{_where(index, section)} uses {section.protocol}; only {PROTO_WEBRTC} is supported")
        if section.mid is None:
            raise SdpError(MISSING_MID, f"{_where(index, section)} has no a=mid")
        if section.mid not in bundle and not lone:
            rejected[index] = REJECT_NOT_BUNDLED
            continue
        if not section.rtcp_mux:
            raise SdpError(RTCP_MUX_REQUIRED, f"{_where(index, section)} has no a=rtcp-mux; RTP and RTCP must share the port")
        chosen = choose_codec(section, capabilities)
        if chosen is None:
            rejected[index] = NO_COMMON_CODEC
            continue
        codec, offered, rtx = chosen
        extmaps = _extmaps(section, offer, capabilities)
        rids = _simulcast_rids(section, extmaps, capabilities)
        direction = _answer_direction(section.direction or offer.direction)
        rsize = section.rtcp_rsize and capabilities.rtcp_rsize
        accepted.append(_Accepted(index, section, offered, codec, rtx, extmaps, rids, direction, rsize))
    if not accepted:
        reasons = set(rejected.values())
        if NO_COMMON_CODEC in reasons:
            raise SdpError(NO_COMMON_CODEC, "no m-section offers a codec the SFU supports (opus, VP8, H.264 constrained baseline)")
        if REJECT_NOT_BUNDLED in reasons:
            raise SdpError(BUNDLE_REQUIRED, "no audio/video m-section is in an a=group:BUNDLE")
        raise SdpError(NO_MEDIA, "the offer has no active audio or video m-section")
    # the first mid of the answer's group (its BUNDLE tag) is the first accepted one of the offer's group
    tagged = sorted(accepted, key=lambda a: bundle.index(a.section.mid or "")) if not lone else accepted
    transport = remote_transport(offer, [a.index for a in tagged], answer=False)
    our_setup = local_setup_for(transport.setup)
    by_index = {a.index: a for a in accepted}
    bundle_mids = tuple(a.section.mid or "" for a in tagged) if offer.has_bundle_group() else ()

    answer = SessionDescription(
        origin=_origin(local, previous_answer),
        ice_lite=True,
        extmap_allow_mixed=offer.extmap_allow_mixed,
        msid_semantic=MsidSemantic("WMS"),
    )
    if bundle_mids:
        answer.groups.append(Group(SEMANTICS_BUNDLE, list(bundle_mids)))
    tracks: list[PublishTrack] = []
    for index, section in enumerate(offer.media):
        a = by_index.get(index)
        if a is None:
            answer.media.append(_rejected_section(section, local, our_setup))
            continue
        answer.media.append(_accepted_section(a, local, our_setup))
        if a.direction == RECVONLY:
            tracks.append(_publish_track(a))
    params = PublishParams(
        transport=transport,
        tracks=tuple(tracks),
        rejected=tuple((offer.media[i].mid, reason) for i, reason in sorted(rejected.items())),
        bundle_mids=bundle_mids,
        extmap_allow_mixed=offer.extmap_allow_mixed,
    )
    return answer, params


def _origin(local: LocalTransportParams, previous: SessionDescription | None) -> Origin:
    if previous is not None and previous.origin is not None:
        return Origin(session_id=previous.origin.session_id, session_version=previous.origin.session_version + 1)
    return Origin(session_id=local.origin_session_id(), session_version=1)


def _accepted_section(a: _Accepted, local: LocalTransportParams, setup: str) -> MediaSection:
    offer = a.section
    codec = a.codec
    formats = [str(codec.payload_type)]
    codecs = [
        Codec(
            payload_type=codec.payload_type,
            name=a.offered.name,
            clock_rate=codec.clock_rate,
            channels=a.offered.channels,
            fmtp=list(codec.fmtp) or None,
            rtcp_fb=list(codec.rtcp_fb),
        )
    ]
    if a.rtx is not None:
        formats.append(str(a.rtx.payload_type))
        codecs.append(
            Codec(
                payload_type=a.rtx.payload_type,
                name=a.rtx.name,
                clock_rate=a.rtx.clock_rate,
                fmtp=[("apt", str(codec.payload_type))],
            )
        )
    out = MediaSection(
        kind=offer.kind,
        port=0,
        protocol=offer.protocol,
        formats=formats,
        mid=offer.mid,
        direction=a.direction,
        rtcp_mux=True,
        rtcp_rsize=a.rtcp_rsize,
        extmap_allow_mixed=offer.extmap_allow_mixed,
        codecs=codecs,
        extmaps=list(a.extmaps),
    )
    write_local_transport(out, local, setup, active=True)
    if a.rids is not None:
        out.rids = [Rid(id=r.rid, direction=RID_RECV) for r in a.rids]
        out.simulcast = Simulcast(recv=[[SimulcastRid(r.rid, r.paused)] for r in a.rids])
    return out


def _publish_track(a: _Accepted) -> PublishTrack:
    section = a.section
    encodings = _encodings(section, a.rids, a.codec.rtx_payload_type is not None)
    first_ssrc = encodings[0].ssrc
    stream_id, track_id = _msid(section, first_ssrc)
    by_uri = {e.uri: e.id for e in a.extmaps}
    return PublishTrack(
        mid=section.mid or "",
        kind=section.kind,
        codec=a.codec,
        header_extensions=by_uri,
        extension_ids=ExtensionIds.from_map(by_uri),
        encodings=encodings,
        simulcast=a.rids is not None,
        stream_id=stream_id,
        track_id=track_id,
        cname=section.ssrc_value(first_ssrc, "cname") if first_ssrc is not None else None,
        rtcp_rsize=a.rtcp_rsize,
    )
