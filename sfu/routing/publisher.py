"""Publisher: the publish side of a participant, its peer connection towards the SFU.

The client offers, the SFU answers (`apply_publish_offer`); each published track is a slot
(`PublishedTrack`) fed by a RecvStream. As the publish transport's handler it is the packet
path's entry for everything a participant sends: RTP is routed by SSRC to its RecvStream
(one dict lookup; an SSRC the SDP did not name is bound once, by mid and rid, for simulcast),
RTCP (SR) is kept for translation. It sends the publisher's feedback: PLI here, NACK and
RR/REMB from the room's tickers through `transport`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

from sfu.errors import NotAllowed
from sfu.routing.counters import WorkerCounters
from sfu.routing.ports import MediaTransport, RoomHooks, TransportFactory
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.track import PublishedTrack
from sfu.rtp.rtcp.compound import CompoundReader
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.sr import SenderReport
from sfu.sdp import (
    URI_AUDIO_LEVEL,
    URI_MID,
    MediaCapabilities,
    PublishParams,
    SessionDescription,
    answer_publish_offer,
    check_publish_limits,
    check_publish_text,
    parse_sdp,
)

log = logging.getLogger("telesfu.sfu.publisher")
_U32 = struct.Struct("!I")


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


class Publisher:
    """One participant's publish peer connection: its tracks, their streams, its transport."""

    __slots__ = ("participant_id", "can_publish", "make_transport", "counters", "clock", "caps",
                 "subscribe_caps", "hooks", "rtcp_ssrc", "transport", "state", "_answer", "_ufrag", "tracks",
                 "streams", "simulcast", "ignored")

    def __init__(self, participant_id: str, can_publish: bool, make_transport: TransportFactory,
                 counters: WorkerCounters, clock: Callable[[], float], caps: MediaCapabilities,
                 subscribe_caps: MediaCapabilities, hooks: RoomHooks, rtcp_ssrc: int) -> None:
        self.participant_id = participant_id
        self.can_publish = can_publish
        self.make_transport = make_transport
        self.counters = counters
        self.clock = clock
        self.caps = caps
        self.subscribe_caps = subscribe_caps  # the extension ids forwarded streams are renumbered to
        self.hooks = hooks
        self.rtcp_ssrc = rtcp_ssrc
        self.transport: MediaTransport | None = None
        self.state = "new"
        self._answer: SessionDescription | None = None
        self._ufrag = ""
        self.tracks: dict[str, PublishedTrack] = {}  # slot (kind:ordinal) -> track
        self.streams: dict[int, RecvStream] = {}  # media and RTX SSRC -> stream
        self.simulcast: dict[str, SimulcastBinding] = {}  # publisher mid -> binding
        self.ignored: set[int] = set()  # SSRCs of simulcast layers not forwarded

    # -- negotiation ------------------------------------------------------------------------------

    def _on_state(self, state: str, reason: str) -> None:
        self.state = state
        self.hooks.on_transport_state(self.participant_id, "publish", state, reason)

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
        new_pc = self.transport is None or (remote_ufrag and remote_ufrag != self._ufrag)
        if new_pc:
            if self.transport is not None:
                self.transport.close()
            self.transport = self.make_transport(self, self._on_state, f"{self.participant_id}/publish")
            self._answer = None
            self.streams = {}
            self.simulcast = {}
        transport = self.transport
        assert transport is not None
        answer, params = answer_publish_offer(offer, transport.local_params(), self.caps, self._answer)
        rt = params.transport
        transport.set_remote(rt.ice_ufrag, rt.ice_pwd, rt.fingerprints, rt.dtls_role)
        self._answer = answer
        self._ufrag = remote_ufrag
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
        hooks = self.hooks
        for pt in params.tracks:
            n = ordinals.get(pt.kind, 0)
            ordinals[pt.kind] = n + 1
            slot = f"{pt.kind}:{n}"
            seen.add(slot)
            track = self.tracks.get(slot)
            if track is None or track.codec.name != pt.codec.name:
                track = PublishedTrack(f"{self.participant_id}:{slot}", self.participant_id, pt.kind, pt.codec,
                                       self.send_keyframe_request,
                                       hooks.on_audio_level if pt.kind == "audio" else None)
                track.published_at = now
                self.tracks[slot] = track
                published.append(track)
            else:
                track.codec = pt.codec
            ext_map = build_ext_map(pt.header_extensions, forwarded)

            def make_stream(ssrc: int, rtx_ssrc: int | None = None, pt: Any = pt, track: PublishedTrack = track,
                            ext_map: bytes = ext_map) -> RecvStream:
                return RecvStream(track, ssrc, rtx_ssrc, pt.codec.payload_type, pt.codec.rtx_payload_type,
                                  pt.codec.clock_rate, pt.codec.name, ext_map,
                                  sfu_ids.get(URI_AUDIO_LEVEL, 0) if pt.kind == "audio" else 0, pt.codec.nack,
                                  self.counters, build_ext_lengths(forwarded), arm_nack=hooks.arm_nack)

            encodings = [e for e in pt.encodings if e.ssrc is not None]
            if not encodings:
                rids = [e.rid for e in pt.encodings if e.rid and not e.paused]
                if rids:
                    ids = pt.extension_ids
                    simulcast[pt.mid] = SimulcastBinding(track, rids[-1], ids.mid, ids.rid, ids.repaired_rid,
                                                         make_stream)
                continue
            enc = encodings[-1]  # the highest layer when several are announced
            existing = self.streams.get(enc.ssrc or 0)
            if existing is not None and existing.track is track:
                stream = existing
            else:
                stream = make_stream(enc.ssrc or 0, enc.rtx_ssrc)
            streams[stream.ssrc] = stream
            if stream.rtx_ssrc:
                streams[stream.rtx_ssrc] = stream
            if track.source is not stream:
                track.set_source(stream, now)
        self.streams = streams
        for mid, b in simulcast.items():  # keep layers already bound on a renegotiation
            old = self.simulcast.get(mid)
            if old is not None and old.track is b.track and old.forward_rid == b.forward_rid and old.stream:
                b.stream = old.stream
                streams[old.stream.ssrc] = old.stream
                if old.stream.rtx_ssrc:
                    streams[old.stream.rtx_ssrc] = old.stream
        self.simulcast = simulcast
        self.ignored = set()
        stopped = [t for slot, t in self.tracks.items() if slot not in seen]
        for slot in [s for s in self.tracks if s not in seen]:
            del self.tracks[slot]
        return published, stopped

    def send_keyframe_request(self, stream: RecvStream) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.send_rtcp(Pli(self.rtcp_ssrc, stream.ssrc).to_bytes())
        self.counters.plis_out += 1
        self.counters.rtcp_out += 1

    def unique_streams(self) -> list[RecvStream]:
        """Each stream once (its RTX SSRC maps to it too)."""
        return list({id(s): s for s in self.streams.values()}.values())

    def reset(self) -> None:
        """A new page: the publish connection is gone. The slots stay; their sources end."""
        self.close()
        self.streams = {}
        self.simulcast = {}
        self._answer = None
        self._ufrag = ""
        for track in list(self.tracks.values()):
            track.end_source()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.transport = None

    # -- the packet path (transport handler) ------------------------------------------------------

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


def _first_ufrag(offer: SessionDescription) -> str:
    for section in offer.media:
        if section.ice_ufrag:
            return section.ice_ufrag
    return offer.ice_ufrag or ""
