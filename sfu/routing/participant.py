"""Participant: one person in a room, as its two peer connections.

`Publisher` (sfu.routing.publisher) is the connection the client publishes on, `Subscriber`
(sfu.routing.subscriber) the one the SFU sends the others' tracks on. Both are given the
room's hooks (sfu.routing.ports.RoomHooks) when the participant is made. This object only
ties them together: permissions, a reconnect from a new page, and the stats of both.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from sfu.nack import DEFAULT_RESEND_POLICY, ResendPolicy
from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.ports import MediaTransport, RoomHooks, TransportFactory
from sfu.routing.publisher import Publisher
from sfu.routing.subscriber import Subscriber
from sfu.routing.track import PublishedTrack
from sfu.sdp import MediaCapabilities


class Participant:
    def __init__(self, participant_id: str, can_publish: bool, can_subscribe: bool,
                 make_transport: TransportFactory, counters: WorkerCounters, clock: Callable[[], float],
                 publish_caps: MediaCapabilities, subscribe_caps: MediaCapabilities, hooks: RoomHooks,
                 resend: ResendPolicy = DEFAULT_RESEND_POLICY) -> None:
        self.id = participant_id
        self.rtcp_ssrc = secrets.randbits(32) or 1
        self.publish = Publisher(participant_id, can_publish, make_transport, counters, clock, publish_caps,
                                 subscribe_caps, hooks, self.rtcp_ssrc)
        self.subscribe = Subscriber(participant_id, can_subscribe, make_transport, counters, clock,
                                    subscribe_caps, hooks, resend)
        self.first_media_reported = False

    # The two sides' state, read by the room and by tests.
    @property
    def can_publish(self) -> bool:
        return self.publish.can_publish

    @property
    def can_subscribe(self) -> bool:
        return self.subscribe.can_subscribe

    def set_permissions(self, can_publish: bool, can_subscribe: bool) -> None:
        self.publish.can_publish = can_publish
        self.subscribe.can_subscribe = can_subscribe

    @property
    def tracks(self) -> dict[str, PublishedTrack]:
        return self.publish.tracks

    @property
    def downtracks(self) -> dict[str, DownTrack]:
        return self.subscribe.downtracks

    @property
    def publish_transport(self) -> MediaTransport | None:
        return self.publish.transport

    @property
    def subscribe_transport(self) -> MediaTransport | None:
        return self.subscribe.transport

    # -- lifecycle --------------------------------------------------------------------------------

    def reset_transports(self) -> None:
        """The participant reconnected from a new page: drop both peer connections and offer
        the subscriptions afresh on a new one. Published slots stay, so subscribers' streams
        resume seamlessly when the new publish connection brings new sources."""
        self.publish.reset()
        self.subscribe.reset()
        self.first_media_reported = False

    def first_media(self) -> bool:
        """True once, when the participant first received media (checked on a ticker)."""
        if self.first_media_reported:
            return False
        if any(dt.packets for dt in self.subscribe.downtracks.values()):
            self.first_media_reported = True
            return True
        return False

    def close(self) -> None:
        self.publish.close()
        self.subscribe.close()

    def rtt(self) -> float:
        """Round-trip time to this participant (s; -1 unknown), measured on the subscribe side.

        The SFU only receives on the publish connection, so it has no SR there to time; the
        subscribe connection reaches the same client over the same network.
        """
        return self.subscribe.rtt()

    def stats(self) -> dict[str, object]:
        rtt = self.rtt()
        return {
            "participant_id": self.id,
            "rtt_ms": round(rtt * 1000, 3) if rtt >= 0 else None,
            "publish_state": self.publish.state,
            "subscribe_state": self.subscribe.state,
            "published": [{**t.info(), **_recv_stats(t)} for t in self.publish.tracks.values()],
            "subscribed": [{"track_id": tid, "packets": dt.packets, "bytes": dt.bytes,
                            "retransmits": dt.retransmits, **dt.quality_inputs()}
                           for tid, dt in self.subscribe.downtracks.items()],
            "remb_bitrate": self.subscribe.remb_bitrate,
        }


def _recv_stats(track: PublishedTrack) -> dict[str, object]:
    s = track.source
    if s is None:
        return {"packets": 0, "bytes": 0}
    return {"packets": s.packets, "bytes": s.bytes, "keyframes": s.keyframes, "rtx_packets": s.rtx_packets,
            "lost": s.stats.lost, "nacks": s.nack.nacks_sent if hasattr(s.nack, "nacks_sent") else 0,
            **s.quality_inputs()}
