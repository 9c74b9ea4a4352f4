"""Participant: the two peer connections of one person in a room.

Publish side: the client offers, the SFU answers; incoming RTP is routed by SSRC to a
RecvStream (one dict lookup), incoming RTCP (SR) is kept for translation. Subscribe side:
the SFU offers one m-section per DownTrack and re-offers as tracks come and go; incoming
RTCP (RR, NACK, PLI, FIR, REMB, transport-cc) is routed to the DownTrack by SSRC.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sfu.errors import NoOfferPending, NotAllowed
from sfu.nack import DEFAULT_RESEND_POLICY, ResendBudget, ResendPolicy
from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.track import PublishedTrack
from sfu.rtp.rtcp.compound import CompoundReader
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.remb import Remb
from sfu.rtp.rtcp.rr import ReceiverReport
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.rtcp.twcc import TransportFeedback
from sfu.sdp import (
    URI_AUDIO_LEVEL,
    URI_MID,
    LocalTransportParams,
    MediaCapabilities,
    OutTrack,
    PublishParams,
    SessionDescription,
    answer_publish_offer,
    apply_subscribe_answer,
    build_subscribe_offer,
    check_publish_limits,
    check_publish_text,
    check_subscribe_answer_text,
    parse_sdp,
)

if TYPE_CHECKING:
    from sfu.routing.room import Room

log = logging.getLogger("telesfu.sfu.participant")
_U32 = struct.Struct("!I")


class MediaTransport(Protocol):
    """What routing needs of a WebRtcTransport (sfu.transport.webrtc_transport)."""

    def local_params(self) -> LocalTransportParams: ...
    def set_remote(self, ice_ufrag: str, ice_pwd: str, fingerprints: Any, dtls_role: str) -> None: ...
    def send_rtp(self, buf: bytes | bytearray) -> None: ...
    def send_rtcp(self, buf: bytes | bytearray) -> None: ...
    def close(self) -> None: ...


# make(handler, on_state, label) -> transport
TransportFactory = Callable[[Any, Callable[[str, str], None], str], MediaTransport]


def _random_ssrc(taken: set[int]) -> int:
    while True:
        s = secrets.randbits(32)
        if s and s not in taken:
            taken.add(s)
            return s


class SimulcastBinding:
    """A simulcast track announced by rid only: its SSRCs are learnt from the first packets.

    Until layer selection lands, one layer is forwarded: the last one the offer lists
    (browsers list them low to high). The others are recognised and not forwarded.
    """

    __slots__ = ("track", "forward_rid", "mid_id", "rid_id", "repaired_rid_id", "make_stream", "stream")

    def __init__(self, track: PublishedTrack, forward_rid: str, mid_id: int, rid_id: int, repaired_rid_id: int,
                 make_stream: Callable[[int], RecvStream]) -> None:
        self.track = track
        self.forward_rid = forward_rid
        self.mid_id = mid_id
        self.rid_id = rid_id
        self.repaired_rid_id = repaired_rid_id
        self.make_stream = make_stream
        self.stream: RecvStream | None = None


class PublishSide:
    """Handler of the publish transport: the packet path's entry for everything a participant sends."""

    __slots__ = ("participant", "streams", "counters", "clock", "simulcast", "ignored")

    def __init__(self, participant: Participant, counters: WorkerCounters, clock: Callable[[], float]) -> None:
        self.participant = participant
        self.streams: dict[int, RecvStream] = {}  # media and RTX SSRC -> stream
        self.counters = counters
        self.clock = clock
        self.simulcast: dict[str, SimulcastBinding] = {}  # publisher mid -> binding
        self.ignored: set[int] = set()  # SSRCs of simulcast layers not forwarded

    def _bind(self, ssrc: int, data: bytes) -> RecvStream | None:
        """First packet of an SSRC the SDP did not name: a simulcast layer, found by mid and rid."""
        if not self.simulcast or ssrc in self.ignored or len(self.ignored) > 64:
            return None
        from sfu.rtp.ext import read_sdes_id
        from sfu.rtp.packet import parse_rtp

        hdr = parse_rtp(data)
        if hdr is None or not hdr.extension:
            return None
        for mid, b in self.simulcast.items():
            loc = hdr.find_extension(b.mid_id) if b.mid_id else None
            if loc is not None and read_sdes_id(data, loc[0], loc[1]) != mid:
                continue
            rid_loc = hdr.find_extension(b.rid_id) if b.rid_id else None
            rrid_loc = hdr.find_extension(b.repaired_rid_id) if b.repaired_rid_id else None
            if rid_loc is not None:
                rid = read_sdes_id(data, rid_loc[0], rid_loc[1])
                if rid != b.forward_rid:
                    self.ignored.add(ssrc)
                    return None
                if b.stream is None:
                    b.stream = b.make_stream(ssrc)
                    b.track.set_source(b.stream, self.clock())
                self.streams[ssrc] = b.stream
                return b.stream
            if rrid_loc is not None:
                rid = read_sdes_id(data, rrid_loc[0], rrid_loc[1])
                if rid != b.forward_rid or b.stream is None:
                    self.ignored.add(ssrc)
                    return None
                b.stream.rtx_ssrc = ssrc
                self.streams[ssrc] = b.stream
                return b.stream
        return None

    def on_rtp(self, data: bytes) -> None:
        c = self.counters
        c.rtp_in += 1
        c.rtp_in_bytes += len(data)
        if len(data) < 12:
            c.drops["rtp_malformed"] += 1
            return
        ssrc = _U32.unpack_from(data, 8)[0]
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self._bind(ssrc, data)
            if stream is None:
                c.drops["simulcast_layer_not_forwarded" if ssrc in self.ignored else "rtp_unknown_ssrc"] += 1
                return
        if stream.is_video:
            c.video_in += 1
        else:
            c.audio_in += 1
        stream.receive(data, self.clock())

    def on_rtcp(self, data: bytes) -> None:
        self.counters.rtcp_in += 1
        now = self.clock()
        reader = CompoundReader(data)
        for p in reader:
            if isinstance(p, SenderReport):
                stream = self.streams.get(p.ssrc)
                if stream is not None:
                    stream.on_sender_report(p.ntp_timestamp, p.rtp_timestamp, now)
                    stream.stats.on_sender_report(p, now)
        if reader.error is not None:
            self.counters.drops[f"rtcp_{reader.error}"] += 1


class SubscribeSide:
    """Handler of the subscribe transport: feedback from the subscriber about what it receives."""

    __slots__ = ("participant", "by_ssrc", "counters", "clock", "remb_bitrate", "last_twcc", "resend_budget")

    def __init__(self, participant: Participant, counters: WorkerCounters, clock: Callable[[], float],
                 resend: ResendPolicy = DEFAULT_RESEND_POLICY) -> None:
        self.participant = participant
        self.resend_budget = ResendBudget(resend)  # retransmission bytes for all of this subscriber's DownTracks
        self.by_ssrc: dict[int, DownTrack] = {}  # outgoing media SSRC -> DownTrack
        self.counters = counters
        self.clock = clock
        self.remb_bitrate = 0
        self.last_twcc: TransportFeedback | None = None

    def on_rtp(self, data: bytes) -> None:
        self.counters.drops["rtp_on_subscribe_transport"] += 1

    def on_rtcp(self, data: bytes) -> None:
        c = self.counters
        c.rtcp_in += 1
        now = self.clock()
        by_ssrc = self.by_ssrc
        reader = CompoundReader(data)
        for p in reader:
            if isinstance(p, ReceiverReport | SenderReport):
                for block in p.reports:
                    dt = by_ssrc.get(block.ssrc)
                    if dt is not None:
                        dt.stats.on_receiver_report(block, now)
            elif isinstance(p, Nack):
                c.nacks_in += 1
                dt = by_ssrc.get(p.media_ssrc)
                if dt is not None:
                    dt.on_nack(p.pairs, now)
            elif isinstance(p, Pli):
                c.plis_in += 1
                dt = by_ssrc.get(p.media_ssrc)
                if dt is not None:
                    dt.on_pli(now)
            elif isinstance(p, Fir):
                c.plis_in += 1
                for ssrc, _ in p.entries:
                    dt = by_ssrc.get(ssrc)
                    if dt is not None:
                        dt.on_pli(now)
            elif isinstance(p, Remb):
                self.remb_bitrate = p.bitrate
            elif isinstance(p, TransportFeedback):
                # Kept for the allocator to come: the header and counts, its own bytes, no records.
                c.twcc_in += 1
                self.last_twcc = p
        if reader.error is not None:
            c.drops[f"rtcp_{reader.error}"] += 1


class Participant:
    def __init__(self, room: Room, participant_id: str, can_publish: bool, can_subscribe: bool,
                 make_transport: TransportFactory, counters: WorkerCounters, clock: Callable[[], float],
                 publish_caps: MediaCapabilities, subscribe_caps: MediaCapabilities,
                 resend: ResendPolicy = DEFAULT_RESEND_POLICY) -> None:
        self.room = room
        self.id = participant_id
        self.can_publish = can_publish
        self.can_subscribe = can_subscribe
        self.make_transport = make_transport
        self.counters = counters
        self.clock = clock
        self.publish_caps = publish_caps
        self.subscribe_caps = subscribe_caps
        self.cname = f"telesfu-{secrets.token_hex(4)}"
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.publish = PublishSide(self, counters, clock)
        self.subscribe = SubscribeSide(self, counters, clock, resend)
        self.publish_transport: MediaTransport | None = None
        self.subscribe_transport: MediaTransport | None = None
        self.publish_state = "new"
        self.subscribe_state = "new"
        self._publish_answer: SessionDescription | None = None
        self._publish_ufrag = ""
        self.tracks: dict[str, PublishedTrack] = {}  # slot (kind:ordinal) -> track
        self.downtracks: dict[str, DownTrack] = {}  # published track id -> DownTrack
        self._ssrcs: set[int] = set()
        self._sub_offer: SessionDescription | None = None
        self.sub_pending = False  # an offer is out, waiting for the answer
        self.sub_dirty = False  # the set of tracks changed since the last offer
        self.sub_mids: dict[str, str] = {}  # track id -> mid
        self.first_media_reported = False

    # -- publish ----------------------------------------------------------------------------------

    def _state_cb(self, which: str) -> Callable[[str, str], None]:
        def cb(state: str, reason: str) -> None:
            if which == "publish":
                self.publish_state = state
            else:
                self.subscribe_state = state
                if state == "connected":  # video DownTracks waited for this: ask for keyframes now
                    now = self.clock()
                    for dt in self.downtracks.values():
                        if dt.is_video and dt.waiting_keyframe:
                            dt.track.request_keyframe(now)
            self.room.on_transport_state(self, which, state, reason)
        return cb

    def apply_publish_offer(self, sdp_text: str) -> tuple[str, list[PublishedTrack], list[PublishedTrack]]:
        """Answer a publish offer. Returns (answer, tracks published now, tracks stopped)."""
        if not self.can_publish:
            raise NotAllowed("this participant may not publish")
        # Limits first, before anything about the participant changes (a new ufrag below
        # replaces the publish transport): one microphone, camera and screen; a bounded text.
        check_publish_text(sdp_text)
        offer = parse_sdp(sdp_text)
        check_publish_limits(offer)
        remote_ufrag = _first_ufrag(offer)
        new_pc = self.publish_transport is None or (remote_ufrag and remote_ufrag != self._publish_ufrag)
        if new_pc:
            if self.publish_transport is not None:
                self.publish_transport.close()
            self.publish_transport = self.make_transport(self.publish, self._state_cb("publish"),
                                                         f"{self.id}/publish")
            self._publish_answer = None
            self.publish.streams = {}
            self.publish.simulcast = {}
        transport = self.publish_transport
        assert transport is not None
        answer, params = answer_publish_offer(offer, transport.local_params(), self.publish_caps,
                                              self._publish_answer)
        rt = params.transport
        transport.set_remote(rt.ice_ufrag, rt.ice_pwd, rt.fingerprints, rt.dtls_role)
        self._publish_answer = answer
        self._publish_ufrag = remote_ufrag
        published, stopped = self._bind_publish_tracks(params)
        return answer.to_text(), published, stopped

    def _bind_publish_tracks(self, params: PublishParams) -> tuple[list[PublishedTrack], list[PublishedTrack]]:
        now = self.clock()
        ordinals: dict[str, int] = {}
        streams: dict[int, RecvStream] = {}
        simulcast: dict[str, SimulcastBinding] = {}
        seen: set[str] = set()
        published: list[PublishedTrack] = []
        sfu_ids = {h.uri: h.id for h in self.subscribe_caps.header_extensions if h.downstream}
        forwarded = {uri: i for uri, i in sfu_ids.items() if uri != URI_MID}
        for pt in params.tracks:
            n = ordinals.get(pt.kind, 0)
            ordinals[pt.kind] = n + 1
            slot = f"{pt.kind}:{n}"
            seen.add(slot)
            track = self.tracks.get(slot)
            if track is None or track.codec.name != pt.codec.name:
                track = PublishedTrack(f"{self.id}:{slot}", self.id, pt.kind, pt.codec,
                                       self.room.send_keyframe_request_for(self),
                                       self.room.speakers.on_audio_level if pt.kind == "audio" else None)
                track.published_at = now
                self.tracks[slot] = track
                published.append(track)
            else:
                track.codec = pt.codec
            ext_map = build_ext_map(pt.header_extensions, forwarded)

            def make_stream(ssrc: int, rtx_ssrc: int | None = None, pt: Any = pt, track: PublishedTrack = track,
                            ext_map: bytes = ext_map) -> RecvStream:
                stream = RecvStream(track, ssrc, rtx_ssrc, pt.codec.payload_type, pt.codec.rtx_payload_type,
                                    pt.codec.clock_rate, pt.codec.name, ext_map,
                                    sfu_ids.get(URI_AUDIO_LEVEL, 0) if pt.kind == "audio" else 0, pt.codec.nack,
                                    self.counters, build_ext_lengths(forwarded))
                stream.arm_nack = self.room.arm_nack
                return stream

            encodings = [e for e in pt.encodings if e.ssrc is not None]
            if not encodings:
                rids = [e.rid for e in pt.encodings if e.rid and not e.paused]
                if rids:
                    ids = pt.extension_ids
                    simulcast[pt.mid] = SimulcastBinding(track, rids[-1], ids.mid, ids.rid, ids.repaired_rid,
                                                         make_stream)
                continue
            enc = encodings[-1]  # the highest layer when several are announced
            existing = self.publish.streams.get(enc.ssrc or 0)
            if existing is not None and existing.track is track:
                stream = existing
            else:
                stream = make_stream(enc.ssrc or 0, enc.rtx_ssrc)
            streams[stream.ssrc] = stream
            if stream.rtx_ssrc:
                streams[stream.rtx_ssrc] = stream
            if track.source is not stream:
                track.set_source(stream, now)
        self.publish.streams = streams
        for mid, b in simulcast.items():  # keep layers already bound on a renegotiation
            old = self.publish.simulcast.get(mid)
            if old is not None and old.track is b.track and old.forward_rid == b.forward_rid and old.stream:
                b.stream = old.stream
                streams[old.stream.ssrc] = old.stream
                if old.stream.rtx_ssrc:
                    streams[old.stream.rtx_ssrc] = old.stream
        self.publish.simulcast = simulcast
        self.publish.ignored = set()
        stopped = [t for slot, t in self.tracks.items() if slot not in seen]
        for slot in [s for s in self.tracks if s not in seen]:
            del self.tracks[slot]
        return published, stopped

    def send_keyframe_request(self, stream: RecvStream) -> None:
        transport = self.publish_transport
        if transport is None:
            return
        transport.send_rtcp(Pli(self.rtcp_ssrc, stream.ssrc).to_bytes())
        self.counters.plis_out += 1
        self.counters.rtcp_out += 1

    # -- subscribe --------------------------------------------------------------------------------

    def add_downtrack(self, track: PublishedTrack) -> DownTrack | None:
        if not self.can_subscribe or track.track_id in self.downtracks or track.publisher_id == self.id:
            return None
        if self.subscribe_transport is None:
            self.subscribe_transport = self.make_transport(self.subscribe, self._state_cb("subscribe"),
                                                           f"{self.id}/subscribe")
        dt = DownTrack(track, self.id, self.subscribe_transport, _random_ssrc(self._ssrcs),
                       _random_ssrc(self._ssrcs), self.cname, self.counters, self.subscribe.resend_budget)
        dt.muted = track.muted
        self.downtracks[track.track_id] = dt
        self.subscribe.by_ssrc[dt.ssrc] = dt
        track.add_downtrack(dt)
        self.sub_dirty = True
        return dt

    def remove_downtrack(self, track: PublishedTrack) -> None:
        dt = self.downtracks.pop(track.track_id, None)
        if dt is None:
            return
        track.remove_downtrack(dt)
        self.subscribe.by_ssrc.pop(dt.ssrc, None)
        # Its mid dies with it: the next offer stops that section, and a track published again
        # under the same id (a rejoin, the same person on a new page) must not be offered on it.
        # Before the next offer it is found again by its msid in the still-active section.
        self.sub_mids.pop(track.track_id, None)
        self.sub_dirty = True

    def next_subscribe_offer(self) -> tuple[str, list[dict[str, object]]] | None:
        """The next subscribe offer to send, when the tracks changed and no offer is out."""
        if self.sub_pending or not self.sub_dirty or self.subscribe_transport is None:
            return None
        if not self.downtracks and self._sub_offer is not None:
            # Nothing left to receive: an offer whose every section is stopped has no BUNDLE
            # group, which max-bundle browsers refuse. The idle transceivers are harmless; the
            # next offer (when someone publishes again) stops them properly.
            self.sub_dirty = False
            return None
        out = []
        for track_id, dt in self.downtracks.items():
            t = dt.track
            out.append(OutTrack(kind=t.kind, stream_id=t.stream_id, track_id=track_id.replace(":", "-"),
                                ssrc=dt.ssrc, codec=t.codec,
                                rtx_ssrc=dt.rtx_ssrc if t.codec.rtx_payload_type else None,
                                mid=self.sub_mids.get(track_id), cname=self.cname))
        offer = build_subscribe_offer(self.subscribe_transport.local_params(), out, self._sub_offer,
                                      self.subscribe_caps)
        self._sub_offer = offer
        self.sub_pending = True
        self.sub_dirty = False
        # learn the mids the offer gave the tracks
        msid_to_track = {tid.replace(":", "-"): tid for tid in self.downtracks}
        tracks_info = []
        for section in offer.media:
            if section.port == 0 or not section.msids:
                continue
            tid = msid_to_track.get(section.msids[0].track_id or "")
            if tid is None:
                continue
            self.sub_mids[tid] = section.mid or ""
            dt = self.downtracks[tid]
            tracks_info.append({"mid": section.mid, "track_id": tid, "participant_id": dt.track.publisher_id,
                                "kind": dt.track.kind, "muted": dt.track.muted})
        return offer.to_text(), tracks_info

    def apply_subscribe_answer(self, sdp_text: str) -> None:
        if self._sub_offer is None or not self.sub_pending:
            raise NoOfferPending("no subscribe offer is waiting for an answer")
        check_subscribe_answer_text(sdp_text, self._sub_offer)  # bounded before parsing
        answer = parse_sdp(sdp_text)
        params = apply_subscribe_answer(self._sub_offer, answer)
        self.sub_pending = False
        rt = params.transport
        assert self.subscribe_transport is not None
        self.subscribe_transport.set_remote(rt.ice_ufrag, rt.ice_pwd, rt.fingerprints, rt.dtls_role)
        by_mid = {mid: tid for tid, mid in self.sub_mids.items()}
        for st in params.tracks:
            tid = by_mid.get(st.mid)
            dt = self.downtracks.get(tid) if tid else None
            if dt is None or st.direction == "inactive":
                continue
            first = not dt.bound
            dt.bind(st.mid, st.codec.payload_type, st.codec.rtx_payload_type, st.codec.nack)
            # A keyframe for a new video DownTrack, once its subscriber can receive it: now if the
            # transport is up (renegotiation), else when it connects (see _state_cb).
            if first and dt.is_video and self.subscribe_state == "connected":
                dt.track.request_keyframe(self.clock())

    # -- lifecycle --------------------------------------------------------------------------------

    def reset_transports(self) -> None:
        """The participant reconnected from a new page: drop both peer connections and offer
        the subscriptions afresh on a new one. Published slots stay, so subscribers' streams
        resume seamlessly when the new publish connection brings new sources."""
        self.close()
        self.publish.streams = {}
        self.publish.simulcast = {}
        self._publish_answer = None
        self._publish_ufrag = ""
        for track in list(self.tracks.values()):
            track.source = None
        for tid in list(self.downtracks):
            dt = self.downtracks.pop(tid)
            dt.track.remove_downtrack(dt)
            self.subscribe.by_ssrc.pop(dt.ssrc, None)
        self._sub_offer = None
        self.sub_pending = False
        self.sub_mids.clear()
        self.first_media_reported = False

    def first_media(self) -> bool:
        """True once, when the participant first received media (checked on a ticker)."""
        if self.first_media_reported:
            return False
        if any(dt.packets for dt in self.downtracks.values()):
            self.first_media_reported = True
            return True
        return False

    def close(self) -> None:
        for t in (self.publish_transport, self.subscribe_transport):
            if t is not None:
                t.close()
        self.publish_transport = None
        self.subscribe_transport = None

    def rtt(self) -> float:
        """Round-trip time to this participant (s; -1 unknown), measured on the subscribe side.

        The SFU only receives on the publish connection, so it has no SR there to time; the
        subscribe connection reaches the same client over the same network.
        """
        best = -1.0
        for dt in self.downtracks.values():
            r = dt.stats.rtt
            if r >= 0 and (best < 0 or r < best):
                best = r
        return best

    def stats(self) -> dict[str, object]:
        return {
            "participant_id": self.id,
            "rtt_ms": round(self.rtt() * 1000, 3) if self.rtt() >= 0 else None,
            "publish_state": self.publish_state,
            "subscribe_state": self.subscribe_state,
            "published": [{**t.info(), **_recv_stats(t)} for t in self.tracks.values()],
            "subscribed": [{"track_id": tid, "packets": dt.packets, "bytes": dt.bytes,
                            "retransmits": dt.retransmits, **dt.quality_inputs()}
                           for tid, dt in self.downtracks.items()],
            "remb_bitrate": self.subscribe.remb_bitrate,
        }


def _recv_stats(track: PublishedTrack) -> dict[str, object]:
    s = track.source
    if s is None:
        return {"packets": 0, "bytes": 0}
    return {"packets": s.packets, "bytes": s.bytes, "keyframes": s.keyframes, "rtx_packets": s.rtx_packets,
            "lost": s.stats.lost, "nacks": s.nack.nacks_sent if hasattr(s.nack, "nacks_sent") else 0,
            **s.quality_inputs()}


def _first_ufrag(offer: SessionDescription) -> str:
    for section in offer.media:
        if section.ice_ufrag:
            return section.ice_ufrag
    return offer.ice_ufrag or ""
