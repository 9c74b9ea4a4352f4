"""The subscribe connection: the SFU offers one sendonly m-section per outgoing track.

Re-offers (JSEP subsequent offers) keep every earlier m-section where it was, with its
mid, kind and payload types. A track that is gone leaves its section stopped: port 0,
`a=inactive`, out of the BUNDLE group. A stopped section of the previous (answered) offer
may be recycled for a new track, with a new mid, as RFC 9429 section 5.2.2 allows.
Payload types are unique per codec configuration across the whole offer, because
Chromium refuses a BUNDLE group where one payload type means two codecs.
"""

from __future__ import annotations

from collections.abc import Iterable

from sfu.sdp.capabilities import CODEC_RTX, MediaCapabilities, is_rtx
from sfu.sdp.capabilities import DEFAULT_CAPABILITIES as _DEFAULT
from sfu.sdp.errors import (
    ANSWER_MISMATCH,
    BUNDLE_REQUIRED,
    NO_COMMON_CODEC,
    RTCP_MUX_REQUIRED,
    SDP_TOO_LARGE,
    SdpError,
)
from sfu.sdp.model import (
    INACTIVE,
    KIND_AUDIO,
    PROTO_WEBRTC,
    RECVONLY,
    SEMANTICS_BUNDLE,
    SEMANTICS_FID,
    SENDONLY,
    SENDRECV,
    SETUP_ACTPASS,
    Codec,
    Extmap,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    SessionDescription,
    SsrcGroup,
    SsrcLine,
)
from sfu.sdp.params import (
    ExtensionIds,
    LocalTransportParams,
    NegotiatedCodec,
    OutTrack,
    SubscribeParams,
    SubscribeTrack,
)
from sfu.sdp.transport import remote_transport, write_local_transport

DYNAMIC_PAYLOAD_TYPES = tuple(range(96, 128)) + tuple(range(35, 64))
REJECT_BY_PEER = "rejected_by_peer"
REJECT_INACTIVE = "inactive"

CodecKey = tuple[str, int, int, tuple[tuple[str, str | None], ...]]


def _key(
    name: str, clock_rate: int | None, channels: int | None, fmtp: Iterable[tuple[str, str | None]] | None
) -> CodecKey:
    """Identity of a codec configuration: two keys differ exactly when Chromium sees two codecs."""
    params = tuple(sorted(((k.lower(), v) for k, v in (fmtp or ())), key=lambda kv: (kv[0], kv[1] or "")))
    return name.lower(), clock_rate or 0, channels or 1, params


def _rtx_key(clock_rate: int, apt: int) -> CodecKey:
    return CODEC_RTX, clock_rate, 1, (("apt", str(apt)),)


class _PayloadTypes:
    """Payload type per codec configuration, unique across the offer's BUNDLE group."""

    __slots__ = ("by_key", "owner")

    def __init__(self) -> None:
        self.by_key: dict[CodecKey, int] = {}
        self.owner: dict[int, CodecKey] = {}

    def seed(self, section: MediaSection) -> None:
        for c in section.codecs:
            if c.name is None:
                continue
            key = _key(c.name, c.clock_rate, c.channels, c.fmtp)
            if c.payload_type not in self.owner:
                self.owner[c.payload_type] = key
                self.by_key.setdefault(key, c.payload_type)

    def get(self, key: CodecKey, preferred: int | None) -> int:
        pt = self.by_key.get(key)
        if pt is not None:
            return pt
        candidates = ((preferred,) if preferred is not None else ()) + DYNAMIC_PAYLOAD_TYPES
        for pt in candidates:
            if pt not in self.owner:
                self.owner[pt] = key
                self.by_key[key] = pt
                return pt
        raise ValueError("no free dynamic payload type left in the subscribe offer")


class _Mids:
    """New mids: decimal numbers above every mid seen, skipping the taken ones."""

    __slots__ = ("taken", "next")

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.next = max((int(m) for m in taken if m.isascii() and m.isdigit()), default=-1) + 1

    def allocate(self) -> str:
        while str(self.next) in self.taken:
            self.next += 1
        mid = str(self.next)
        self.taken.add(mid)
        return mid


def _check_tracks(tracks: list[OutTrack]) -> None:
    track_ids: set[str] = set()
    ssrcs: set[int] = set()
    mids: set[str] = set()
    for t in tracks:
        t.validate()
        if t.track_id in track_ids:
            raise ValueError(f"track id {t.track_id!r} appears twice")
        track_ids.add(t.track_id)
        for s in (t.ssrc, t.rtx_ssrc):
            if s is not None:
                if s in ssrcs:
                    raise ValueError(f"SSRC {s} appears twice")
                ssrcs.add(s)
        if t.mid is not None:
            if t.mid in mids or not t.mid or any(c.isspace() for c in t.mid):
                raise ValueError(f"mid {t.mid!r} repeated or not a token")
            mids.add(t.mid)


def _plan(
    tracks: list[OutTrack], previous: list[MediaSection], recycle: bool
) -> list[tuple[MediaSection | None, OutTrack | None, str]]:
    """(previous section or None, track or None, mid) per m-line of the new offer."""
    by_slot: dict[int, OutTrack] = {}
    new: list[OutTrack] = []
    mid_index = {m.mid: i for i, m in enumerate(previous) if m.mid is not None}
    for t in tracks:
        if t.mid is not None and t.mid in mid_index:
            i = mid_index[t.mid]
            if not previous[i].active:
                raise ValueError(f"mid {t.mid!r} belongs to a stopped m-section; a new track needs a new mid")
            if previous[i].kind != t.kind:
                raise ValueError(f"mid {t.mid!r} is a {previous[i].kind} m-section, track {t.track_id!r} is {t.kind}")
            by_slot[i] = t
    for t in tracks:
        if t.mid is not None:
            if t.mid not in mid_index:
                new.append(t)
            continue
        for i, m in enumerate(previous):
            if (i not in by_slot and m.active and m.kind == t.kind
                    and any(x.track_id == t.track_id for x in m.msids)):
                by_slot[i] = t
                break
        else:
            new.append(t)
    taken = set(mid_index) | {t.mid for t in tracks if t.mid is not None}
    mids = _Mids(taken)
    plan: list[tuple[MediaSection | None, OutTrack | None, str]] = []
    pending = list(new)
    for i, m in enumerate(previous):
        if i in by_slot:
            plan.append((m, by_slot[i], m.mid or ""))
        elif not m.active and recycle and pending:
            t = pending.pop(0)
            plan.append((None, t, t.mid if t.mid is not None else mids.allocate()))
        else:
            plan.append((m, None, m.mid or mids.allocate()))
    for t in pending:
        plan.append((None, t, t.mid if t.mid is not None else mids.allocate()))
    return plan


def _stopped(prev: MediaSection, mid: str, local: LocalTransportParams) -> MediaSection:
    """A section whose track is gone: port 0, inactive, no msid/SSRCs; codecs and mid kept."""
    out = MediaSection(
        kind=prev.kind,
        port=0,
        protocol=prev.protocol,
        formats=list(prev.formats),
        mid=mid,
        direction=INACTIVE,
        rtcp_mux=True,
        rtcp_rsize=prev.rtcp_rsize,
        codecs=[Codec(c.payload_type, c.name, c.clock_rate, c.channels, None if c.fmtp is None else list(c.fmtp),
                      list(c.rtcp_fb)) for c in prev.codecs],
        extmaps=[Extmap(e.id, e.uri, e.direction, e.attributes) for e in prev.extmaps],
    )
    write_local_transport(out, local, SETUP_ACTPASS, active=False)
    return out


def _active(
    t: OutTrack, mid: str, prev: MediaSection | None, local: LocalTransportParams,
    pts: _PayloadTypes, capabilities: MediaCapabilities,
) -> MediaSection:
    codec = t.codec
    capability = capabilities.codec_named(t.kind, codec.name)
    pt = pts.get(_key(codec.name, codec.clock_rate, codec.channels, codec.fmtp), codec.payload_type)
    rtx_pt = None
    if t.rtx_ssrc is not None and (codec.rtx_payload_type is not None or (capability is not None and capability.rtx)):
        rtx_pt = pts.get(_rtx_key(codec.clock_rate, pt), codec.rtx_payload_type)
    feedback = list(capability.rtcp_fb if capability is not None else codec.rtcp_fb)
    codecs = [
        Codec(
            payload_type=pt,
            name=codec.name,
            clock_rate=codec.clock_rate,
            channels=codec.channels if t.kind == KIND_AUDIO and codec.channels > 1 else None,
            fmtp=list(codec.fmtp) or None,
            rtcp_fb=feedback,
        )
    ]
    formats = [str(pt)]
    cname = t.cname or t.stream_id
    msid_value = f"{t.stream_id} {t.track_id}"
    ssrcs = [SsrcLine(t.ssrc, "cname", cname), SsrcLine(t.ssrc, "msid", msid_value)]
    groups: list[SsrcGroup] = []
    if rtx_pt is not None and t.rtx_ssrc is not None:
        codecs.append(Codec(payload_type=rtx_pt, name=CODEC_RTX, clock_rate=codec.clock_rate, fmtp=[("apt", str(pt))]))
        formats.append(str(rtx_pt))
        groups.append(SsrcGroup(SEMANTICS_FID, [t.ssrc, t.rtx_ssrc]))
        ssrcs += [SsrcLine(t.rtx_ssrc, "cname", cname), SsrcLine(t.rtx_ssrc, "msid", msid_value)]
    if prev is not None and prev.extmaps:
        extmaps = [Extmap(e.id, e.uri, e.direction, e.attributes) for e in prev.extmaps]
    else:
        extmaps = [Extmap(e.id, e.uri) for e in capabilities.extensions_for(t.kind) if e.downstream]
    out = MediaSection(
        kind=t.kind,
        port=0,
        protocol=PROTO_WEBRTC,
        formats=formats,
        mid=mid,
        direction=SENDONLY,
        rtcp_mux=True,
        rtcp_rsize=capabilities.rtcp_rsize,
        codecs=codecs,
        extmaps=extmaps,
        msids=[Msid(t.stream_id, t.track_id)],
        ssrcs=ssrcs,
        ssrc_groups=groups,
    )
    write_local_transport(out, local, SETUP_ACTPASS, active=True)
    return out


def build_subscribe_offer(
    local: LocalTransportParams,
    tracks: list[OutTrack],
    previous: SessionDescription | None = None,
    capabilities: MediaCapabilities = _DEFAULT,
) -> SessionDescription:
    """The SFU's (re-)offer for a subscriber: one sendonly m-section per track.

    `previous` is the last offer the subscriber answered (None for the first one).
    Raises ValueError for bad arguments (duplicate ids/SSRCs, a mid of another kind).
    """
    local.validate()
    _check_tracks(tracks)
    prev_sections = list(previous.media) if previous is not None else []
    plan = _plan(tracks, prev_sections, capabilities.recycle_stopped_sections)
    if not plan:
        raise ValueError("a subscribe offer needs at least one track")
    pts = _PayloadTypes()
    for prev, _, _ in plan:
        if prev is not None:
            pts.seed(prev)
    offer = SessionDescription(
        origin=_origin(local, previous),
        ice_lite=True,
        extmap_allow_mixed=capabilities.extmap_allow_mixed,
        msid_semantic=MsidSemantic("WMS", ["*"]),
    )
    for prev, track, mid in plan:
        if track is None:
            assert prev is not None
            offer.media.append(_stopped(prev, mid, local))
        else:
            offer.media.append(_active(track, mid, prev, local, pts, capabilities))
    bundle = [m.mid for m in offer.media if m.active and m.mid is not None]
    if bundle:
        offer.groups.append(Group(SEMANTICS_BUNDLE, bundle))
    return offer


def _origin(local: LocalTransportParams, previous: SessionDescription | None) -> Origin:
    if previous is not None and previous.origin is not None:
        return Origin(session_id=previous.origin.session_id, session_version=previous.origin.session_version + 1)
    return Origin(session_id=local.origin_session_id(), session_version=1)


def _where(index: int, section: MediaSection) -> str:
    return f"m-section {index} ({section.kind}, mid {section.mid!r})"


def _accepted_codec(offered: MediaSection, answered: MediaSection) -> NegotiatedCodec | None:
    """The first non-RTX payload type of the answer that the offer has, with its RTX."""
    for pt in answered.payload_types:
        ours = offered.codec(pt)
        theirs = answered.codec(pt)
        if ours is None or ours.name is None or is_rtx(ours) or pt not in offered.payload_types:
            continue
        if theirs is not None and theirs.name is not None and theirs.name.lower() != ours.name.lower():
            continue
        rtx_pt = None
        for other in answered.payload_types:
            rtx = offered.codec(other)
            if rtx is not None and is_rtx(rtx) and rtx.fmtp_value("apt") == str(pt):
                rtx_pt = other
                break
        their_fb = answered.feedback(theirs) if theirs is not None else []
        feedback = tuple(fb for fb in offered.feedback(ours) if fb in their_fb)
        return NegotiatedCodec(
            kind=offered.kind,
            name=ours.name,
            payload_type=pt,
            clock_rate=ours.clock_rate or 0,
            channels=ours.channels or 1,
            fmtp=tuple(ours.fmtp or ()),
            rtcp_fb=feedback,
            rtx_payload_type=rtx_pt,
        )
    return None


# A subscriber's answer is refused before parsing when longer than its offer can need: Chromium's
# answers take ~700 characters an m-section; parsing costs ~50 us a KB.
MAX_ANSWER_BASE_SIZE = 8 * 1024
MAX_ANSWER_SECTION_SIZE = 4 * 1024


def check_subscribe_answer_text(text: str, offer: SessionDescription) -> None:
    """Refuse an answer to `offer` before parsing it: over MAX_ANSWER_BASE_SIZE plus
    MAX_ANSWER_SECTION_SIZE per offered m-section (sdp_too_large), or not one m= line per
    offered m-section (answer_mismatch, which parsing would find too)."""
    sections = len(offer.media)
    limit = MAX_ANSWER_BASE_SIZE + MAX_ANSWER_SECTION_SIZE * sections
    if len(text) > limit:
        raise SdpError(SDP_TOO_LARGE, f"the answer is {len(text)} characters; the limit for {sections} m-sections "
                                      f"is {limit}")
    found = text.count("\nm=") + text.startswith("m=")
    if found != sections:
        raise SdpError(ANSWER_MISMATCH, f"the answer has {found} m-sections, the offer {sections}")


def apply_subscribe_answer(offer: SessionDescription, answer: SessionDescription) -> SubscribeParams:
    """What the subscriber accepted, per mid, and its transport parameters.

    Sections stopped in the offer are listed in `stopped_mids`; sections the answer
    rejects (port 0) or makes inactive are in `rejected`. Raises SdpError when the
    answer does not match the offer or breaks a transport rule.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(ANSWER_MISMATCH, f"the answer has {len(answer.media)} m-sections, the offer {len(offer.media)}")
    for index, (o, a) in enumerate(zip(offer.media, answer.media, strict=True)):
        if o.kind != a.kind or (a.mid is not None and a.mid != o.mid):
            raise SdpError(ANSWER_MISMATCH, f"{_where(index, a)} does not match the offer's {_where(index, o)}")
    bundle = answer.bundle_mids()
    accepted: list[int] = []
    rejected: list[tuple[str | None, str]] = []
    stopped: list[str] = []
    for index, (o, a) in enumerate(zip(offer.media, answer.media, strict=True)):
        if not o.active:
            if o.mid is not None:
                stopped.append(o.mid)
            continue
        if not a.active:
            rejected.append((o.mid, REJECT_BY_PEER))
            continue
        accepted.append(index)
    live = [i for i in accepted if offer.media[i].mid in bundle]
    if len(live) != len(accepted) and not (len(accepted) == 1 and not answer.has_bundle_group()):
        missing = [offer.media[i].mid for i in accepted if offer.media[i].mid not in bundle]
        raise SdpError(BUNDLE_REQUIRED, f"the answer leaves mids {missing} out of its BUNDLE group")
    for i in accepted:
        if not answer.media[i].rtcp_mux:
            raise SdpError(RTCP_MUX_REQUIRED, f"{_where(i, answer.media[i])} has no a=rtcp-mux")
    if accepted:
        ordered = sorted(accepted, key=lambda i: bundle.index(offer.media[i].mid or "") if offer.media[i].mid in bundle else 0)
        transport = remote_transport(answer, ordered, answer=True)
    else:
        carriers = [i for i, a in enumerate(answer.media) if (a.ice_ufrag or answer.ice_ufrag)][:1]
        transport = remote_transport(answer, carriers, answer=True)
    tracks: list[SubscribeTrack] = []
    for i in accepted:
        o, a = offer.media[i], answer.media[i]
        direction = a.direction or answer.direction or SENDRECV
        codec = _accepted_codec(o, a)
        if codec is None:
            rejected.append((o.mid, NO_COMMON_CODEC))
            continue
        if direction not in (RECVONLY, SENDRECV):
            rejected.append((o.mid, REJECT_INACTIVE))
            continue
        offered_uris = {e.uri: e.id for e in o.extmaps}
        by_uri = {e.uri: e.id for e in a.extmaps if e.uri in offered_uris}
        fid = next((g.ssrcs for g in o.ssrc_groups if g.semantics == SEMANTICS_FID and len(g.ssrcs) == 2), None)
        ssrc = fid[0] if fid else next(iter(o.ssrc_order()), None)
        msid = o.msids[0] if o.msids else None
        tracks.append(
            SubscribeTrack(
                mid=o.mid or "",
                kind=o.kind,
                codec=codec,
                header_extensions=by_uri,
                extension_ids=ExtensionIds.from_map(by_uri),
                ssrc=ssrc,
                rtx_ssrc=fid[1] if fid and codec.rtx_payload_type is not None else None,
                stream_id=msid.stream_id if msid else None,
                track_id=msid.track_id if msid else None,
                direction=direction,
                rtcp_rsize=o.rtcp_rsize and a.rtcp_rsize,
            )
        )
    return SubscribeParams(
        transport=transport,
        tracks=tuple(tracks),
        rejected=tuple(rejected),
        extmap_allow_mixed=offer.extmap_allow_mixed and answer.extmap_allow_mixed,
        stopped_mids=tuple(stopped),
    )
