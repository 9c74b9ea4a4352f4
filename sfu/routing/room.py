"""Room: who is in it, what they publish, who receives what; and its periodic feedback.

Every admitted participant receives every other participant's tracks. The SFU knows
nothing of appointments or tokens: only rooms, participants and their permission to
publish and subscribe. Changes are reported through `emit` (an event dict for the node).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sfu.errors import ParticipantNotFound
from sfu.nack import DEFAULT_RESEND_POLICY, ResendPolicy
from sfu.routing.counters import WorkerCounters
from sfu.routing.participant import Participant
from sfu.routing.ports import RoomHooks, TransportFactory
from sfu.routing.track import PublishedTrack
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.remb import Remb
from sfu.rtp.rtcp.rr import ReceiverReport
from sfu.rtpstats import quality_score
from sfu.sdp import MediaCapabilities
from sfu.speaker import SpeakerDetector

log = logging.getLogger("telesfu.sfu.room")

Emit = Callable[[dict[str, Any]], None]

# What the SFU tells publishers they may send (REMB), until congestion control lands.
PUBLISHER_REMB_BPS = 2_500_000
_MAX_NACKS_PER_PACKET = 64


class Room:
    def __init__(self, room_id: str, make_transport: TransportFactory, counters: WorkerCounters,
                 clock: Callable[[], float], wallclock: Callable[[], float], emit: Emit,
                 publish_caps: MediaCapabilities, subscribe_caps: MediaCapabilities,
                 resend: ResendPolicy = DEFAULT_RESEND_POLICY, arm_nack: Callable[[], None] | None = None) -> None:
        self.id = room_id
        self.resend = resend
        self.make_transport = make_transport
        self.counters = counters
        self.clock = clock
        self.wallclock = wallclock
        self.emit = emit
        self.publish_caps = publish_caps
        self.subscribe_caps = subscribe_caps
        self.participants: dict[str, Participant] = {}
        self.speakers = SpeakerDetector()
        self.closed = False
        # What every participant is given of the room when it is made (arm_nack: the worker's NACK tick).
        self.hooks = RoomHooks(on_transport_state=self._on_transport_state, on_audio_level=self.speakers.on_audio_level,
                               arm_nack=arm_nack or _no_op)

    # -- membership -----------------------------------------------------------------------------

    def add_participant(self, participant_id: str, can_publish: bool = True, can_subscribe: bool = True) -> Participant:
        existing = self.participants.get(participant_id)
        if existing is not None:
            existing.set_permissions(can_publish, can_subscribe)
            return existing
        p = Participant(participant_id, can_publish, can_subscribe, self.make_transport, self.counters,
                        self.clock, self.publish_caps, self.subscribe_caps, self.hooks, self.resend)
        self.participants[participant_id] = p
        for other in self.participants.values():
            if other is not p:
                for track in other.tracks.values():
                    p.subscribe.add_downtrack(track)
        self.negotiate()
        return p

    def remove_participant(self, participant_id: str) -> bool:
        p = self.participants.pop(participant_id, None)
        if p is None:
            return False
        for track in list(p.tracks.values()):
            self._unpublish(track)
        p.subscribe.remove_all()
        p.close()
        self.speakers.remove(participant_id)
        self.negotiate()
        return True

    def close(self) -> None:
        for pid in list(self.participants):
            self.remove_participant(pid)
        self.closed = True

    # -- negotiation ----------------------------------------------------------------------------

    def publish_offer(self, participant_id: str, sdp: str) -> str:
        p = self._get(participant_id)
        answer, published, stopped = p.publish.apply_publish_offer(sdp)
        for track in stopped:
            self._unpublish(track)
        for track in published:
            for other in self.participants.values():
                if other is not p:
                    other.subscribe.add_downtrack(track)
            self.emit({"type": "track_published", "room_id": self.id, "track": track.info()})
        self.negotiate()
        return answer

    def subscribe_answer(self, participant_id: str, sdp: str) -> None:
        self._get(participant_id).subscribe.apply_subscribe_answer(sdp)
        self.negotiate()

    def negotiate(self) -> None:
        """Send a subscribe offer to everyone whose set of tracks changed and has none outstanding."""
        for p in list(self.participants.values()):
            try:
                offer = p.subscribe.next_subscribe_offer()
            except ValueError:
                # One subscriber's offer that cannot be built (a broken invariant of ours, never
                # the client's input) must not fail the command that changed the room (someone
                # else's publish offer or answer) nor stop the offers of the others: that
                # subscriber misses this change until the next one.
                log.exception("room %s: subscribe offer for participant %s not built", self.id, p.id)
                self.counters.subscribe_offer_failures += 1
                p.subscribe.dirty = False
                continue
            if offer is not None:
                sdp, tracks = offer
                self.emit({"type": "subscribe_offer", "room_id": self.id, "participant_id": p.id, "sdp": sdp,
                           "tracks": tracks})

    def _unpublish(self, track: PublishedTrack) -> None:
        for p in self.participants.values():
            p.subscribe.remove_downtrack(track)
        self.emit({"type": "track_unpublished", "room_id": self.id, "track": track.info()})

    def set_muted(self, participant_id: str, kind: str, muted: bool, by: str = "") -> list[dict[str, object]]:
        p = self._get(participant_id)
        changed = []
        for track in p.tracks.values():
            if (not kind or track.kind == kind) and track.muted != muted:
                track.set_muted(muted)
                changed.append(track.info())
                self.emit({"type": "track_muted", "room_id": self.id, "track": track.info(), "by": by or p.id})
        return changed

    def reset_participant(self, participant_id: str) -> None:
        p = self._get(participant_id)
        p.reset_transports()
        for other in self.participants.values():
            if other is not p:
                for track in other.tracks.values():
                    p.subscribe.add_downtrack(track)
        self.negotiate()

    def tick_first_media(self) -> None:
        for p in self.participants.values():
            if p.first_media():
                self.emit({"type": "first_media", "room_id": self.id, "participant_id": p.id})

    def _get(self, participant_id: str) -> Participant:
        p = self.participants.get(participant_id)
        if p is None:
            raise ParticipantNotFound(f"participant {participant_id} is not in room {self.id}")
        return p

    # -- hooks given to participants ----------------------------------------------------------------

    def _on_transport_state(self, participant_id: str, which: str, state: str, reason: str) -> None:
        self.emit({"type": "transport_state", "room_id": self.id, "participant_id": participant_id,
                   "transport": which, "state": state, "reason": reason})

    # -- tickers (never per packet) ----------------------------------------------------------------

    def tick_keyframes(self, now: float) -> None:
        """Deferred and repeated keyframe requests, and those NACK gave up into."""
        for p in self.participants.values():
            if p.publish.transport is None:
                continue
            for stream in p.publish.unique_streams():
                if stream.is_video and (stream.keyframe_requester.tick(now) or (
                        stream.nack.take_keyframe_request() and stream.request_keyframe(now))):
                    p.publish.send_keyframe_request(stream)

    def tick_nack(self, now: float) -> bool:
        """Ask publishers for what the SFU lost (RFC 4585 generic NACK). True while any
        stream still has packets missing (the caller ticks again soon)."""
        pending = False
        for p in self.participants.values():
            transport = p.publish.transport
            if transport is None:
                continue
            rtt = p.rtt()
            for stream in p.publish.unique_streams():
                if not stream.nack_enabled or not stream.nack.missing_count:
                    continue
                seqs = stream.nack.tick(now, rtt)
                pending = pending or bool(stream.nack.missing_count)
                if seqs:
                    for i in range(0, len(seqs), _MAX_NACKS_PER_PACKET):
                        transport.send_rtcp(Nack.from_seqs(p.rtcp_ssrc, stream.ssrc,
                                                           seqs[i:i + _MAX_NACKS_PER_PACKET]).to_bytes())
                        self.counters.nacks_out += 1
                        self.counters.rtcp_out += 1
        return pending

    def tick_reports(self, now: float) -> None:
        """Receiver Reports (+REMB) to publishers, translated Sender Reports to subscribers."""
        for p in self.participants.values():
            transport = p.publish.transport
            streams = p.publish.unique_streams()
            if transport is not None and streams:
                blocks = [s.report_block(now) for s in streams]
                rr = ReceiverReport(ssrc=p.rtcp_ssrc, reports=blocks[:31]).to_bytes()
                remb = Remb(sender_ssrc=p.rtcp_ssrc, media_ssrc=0, bitrate=PUBLISHER_REMB_BPS,
                            ssrcs=[s.ssrc for s in streams]).to_bytes()
                transport.send_rtcp(rr + remb)
                self.counters.rtcp_out += 1
            sub = p.subscribe.transport
            if sub is not None:
                for dt in p.subscribe.downtracks.values():
                    report = dt.sender_report(dt.track.source, now)
                    if report is not None:
                        sub.send_rtcp(report)
                        self.counters.rtcp_out += 1

    def tick_speakers(self, now: float) -> None:
        speakers = self.speakers.tick(now)
        if speakers is not None:
            self.emit({"type": "active_speakers", "room_id": self.id, "participant_ids": speakers})

    def connection_quality(self) -> dict[str, dict[str, object]]:
        """Per participant: the worst of what it sends us and what it receives from us."""
        out: dict[str, dict[str, object]] = {}
        for p in self.participants.values():
            worst: tuple[str, int] | None = None
            sources = [s.quality_inputs() for s in p.publish.unique_streams()]
            for snap in sources + [dt.quality_inputs() for dt in p.subscribe.downtracks.values() if dt.packets]:
                q = quality_score(snap["fraction_lost"], snap["jitter_ms"], snap["rtt_ms"])
                worst = q if worst is None or q[1] < worst[1] else worst
            if worst is not None:
                out[p.id] = {"quality": worst[0], "score": worst[1]}
        return out

    def stats(self) -> dict[str, object]:
        return {"room_id": self.id, "participants": [p.stats() for p in self.participants.values()]}


def _no_op() -> None:
    pass
