"""Subscriber: the subscribe side of a participant, the SFU's peer connection towards it.

The SFU offers one m-section per DownTrack and re-offers as tracks come and go
(`next_subscribe_offer`, `apply_subscribe_answer`). As the subscribe transport's handler it
takes the subscriber's feedback: RTCP (RR, NACK, PLI, FIR, REMB, transport-cc) routed to the
DownTrack by SSRC, one dict lookup a report block or feedback message.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sfu.errors import NoOfferPending
from sfu.nack import DEFAULT_RESEND_POLICY, ResendBudget, ResendPolicy
from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.ports import MediaTransport, RoomHooks, TransportFactory
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
    MediaCapabilities,
    OutTrack,
    SessionDescription,
    apply_subscribe_answer,
    build_subscribe_offer,
    check_subscribe_answer_text,
    parse_sdp,
)


def _random_ssrc(taken: set[int]) -> int:
    while True:
        s = secrets.randbits(32)
        if s and s not in taken:
            taken.add(s)
            return s


class Subscriber:
    """One participant's subscribe peer connection: its DownTracks, their offer, its transport."""

    __slots__ = ("participant_id", "can_subscribe", "make_transport", "counters", "clock", "caps", "hooks",
                 "cname", "resend_budget", "transport", "state", "downtracks", "by_ssrc", "_ssrcs", "_offer",
                 "pending", "dirty", "mids", "remb_bitrate", "last_twcc")

    def __init__(self, participant_id: str, can_subscribe: bool, make_transport: TransportFactory,
                 counters: WorkerCounters, clock: Callable[[], float], caps: MediaCapabilities, hooks: RoomHooks,
                 resend: ResendPolicy = DEFAULT_RESEND_POLICY) -> None:
        self.participant_id = participant_id
        self.can_subscribe = can_subscribe
        self.make_transport = make_transport
        self.counters = counters
        self.clock = clock
        self.caps = caps
        self.hooks = hooks
        self.cname = f"telesfu-{secrets.token_hex(4)}"
        self.resend_budget = ResendBudget(resend)  # retransmission bytes for all of this subscriber's DownTracks
        self.transport: MediaTransport | None = None
        self.state = "new"
        self.downtracks: dict[str, DownTrack] = {}  # published track id -> DownTrack
        self.by_ssrc: dict[int, DownTrack] = {}  # outgoing media SSRC -> DownTrack
        self._ssrcs: set[int] = set()
        self._offer: SessionDescription | None = None
        self.pending = False  # an offer is out, waiting for the answer
        self.dirty = False  # the set of tracks changed since the last offer
        self.mids: dict[str, str] = {}  # track id -> mid
        self.remb_bitrate = 0
        self.last_twcc: TransportFeedback | None = None

    # -- negotiation ------------------------------------------------------------------------------

    def _on_state(self, state: str, reason: str) -> None:
        self.state = state
        if state == "connected":  # video DownTracks waited for this: ask for keyframes now
            now = self.clock()
            for dt in self.downtracks.values():
                if dt.is_video and dt.waiting_keyframe:
                    dt.track.request_keyframe(now)
        self.hooks.on_transport_state(self.participant_id, "subscribe", state, reason)

    def add_downtrack(self, track: PublishedTrack) -> DownTrack | None:
        if not self.can_subscribe or track.track_id in self.downtracks or track.publisher_id == self.participant_id:
            return None
        if self.transport is None:
            self.transport = self.make_transport(self, self._on_state, f"{self.participant_id}/subscribe")
        dt = DownTrack(track, self.participant_id, self.transport, _random_ssrc(self._ssrcs),
                       _random_ssrc(self._ssrcs), self.cname, self.counters, self.resend_budget)
        dt.muted = track.muted
        self.downtracks[track.track_id] = dt
        self.by_ssrc[dt.ssrc] = dt
        track.add_downtrack(dt)
        self.dirty = True
        return dt

    def remove_downtrack(self, track: PublishedTrack) -> None:
        dt = self.downtracks.pop(track.track_id, None)
        if dt is None:
            return
        track.remove_downtrack(dt)
        self.by_ssrc.pop(dt.ssrc, None)
        # Its mid dies with it: the next offer stops that section, and a track published again
        # under the same id (a rejoin, the same person on a new page) must not be offered on it.
        # Before the next offer it is found again by its msid in the still-active section.
        self.mids.pop(track.track_id, None)
        self.dirty = True

    def remove_all(self) -> None:
        for dt in list(self.downtracks.values()):
            dt.track.remove_downtrack(dt)
        self.downtracks.clear()
        self.by_ssrc.clear()

    def next_subscribe_offer(self) -> tuple[str, list[dict[str, object]]] | None:
        """The next subscribe offer to send, when the tracks changed and no offer is out."""
        if self.pending or not self.dirty or self.transport is None:
            return None
        if not self.downtracks and self._offer is not None:
            # Nothing left to receive: an offer whose every section is stopped has no BUNDLE
            # group, which max-bundle browsers refuse. The idle transceivers are harmless; the
            # next offer (when someone publishes again) stops them properly.
            self.dirty = False
            return None
        out = []
        for track_id, dt in self.downtracks.items():
            t = dt.track
            out.append(OutTrack(kind=t.kind, stream_id=t.stream_id, track_id=track_id.replace(":", "-"),
                                ssrc=dt.ssrc, codec=t.codec,
                                rtx_ssrc=dt.rtx_ssrc if t.codec.rtx_payload_type else None,
                                mid=self.mids.get(track_id), cname=self.cname))
        offer = build_subscribe_offer(self.transport.local_params(), out, self._offer, self.caps)
        self._offer = offer
        self.pending = True
        self.dirty = False
        # learn the mids the offer gave the tracks
        msid_to_track = {tid.replace(":", "-"): tid for tid in self.downtracks}
        tracks_info: list[dict[str, object]] = []
        for section in offer.media:
            if section.port == 0 or not section.msids:
                continue
            tid = msid_to_track.get(section.msids[0].track_id or "")
            if tid is None:
                continue
            self.mids[tid] = section.mid or ""
            dt = self.downtracks[tid]
            tracks_info.append({"mid": section.mid, "track_id": tid, "participant_id": dt.track.publisher_id,
                                "kind": dt.track.kind, "muted": dt.track.muted})
        return offer.to_text(), tracks_info

    def apply_subscribe_answer(self, sdp_text: str) -> None:
        if self._offer is None or not self.pending:
            raise NoOfferPending("no subscribe offer is waiting for an answer")
        check_subscribe_answer_text(sdp_text, self._offer)  # bounded before parsing
        answer = parse_sdp(sdp_text)
        params = apply_subscribe_answer(self._offer, answer)
        self.pending = False
        rt = params.transport
        assert self.transport is not None
        self.transport.set_remote(rt.ice_ufrag, rt.ice_pwd, rt.fingerprints, rt.dtls_role)
        by_mid = {mid: tid for tid, mid in self.mids.items()}
        for st in params.tracks:
            tid = by_mid.get(st.mid)
            dt = self.downtracks.get(tid) if tid else None
            if dt is None or st.direction == "inactive":
                continue
            first = not dt.bound
            dt.bind(st.mid, st.codec.payload_type, st.codec.rtx_payload_type, st.codec.nack)
            # A keyframe for a new video DownTrack, once its subscriber can receive it: now if the
            # transport is up (renegotiation), else when it connects (see _on_state).
            if first and dt.is_video and self.state == "connected":
                dt.track.request_keyframe(self.clock())

    def reset(self) -> None:
        """A new page: the subscribe connection is gone with every DownTrack; offer afresh."""
        self.close()
        self.remove_all()
        self._offer = None
        self.pending = False
        self.mids.clear()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.transport = None

    def rtt(self) -> float:
        """Round-trip time to this participant (s; -1 unknown), the best of its DownTracks'."""
        best = -1.0
        for dt in self.downtracks.values():
            r = dt.stats.rtt
            if r >= 0 and (best < 0 or r < best):
                best = r
        return best

    # -- feedback (transport handler) -------------------------------------------------------------

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
