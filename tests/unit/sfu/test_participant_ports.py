"""A participant's two sides talk to the room only through the hooks it was made with
(sfu.routing.ports.RoomHooks) and send only through the transports its factory made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sfu.routing.counters import WorkerCounters
from sfu.routing.participant import Participant
from sfu.routing.ports import RoomHooks
from sfu.rtp.packet import build_rtp
from sfu.rtp.rtcp.compound import parse_compound
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.vp8 import build_vp8_descriptor
from sfu.sdp import DEFAULT_CAPABILITIES, Fingerprint, LocalTransportParams

OFFER = (Path(__file__).parents[2] / "fixtures" / "sdp" / "chromium-publish-offer.sdp").read_text()
VIDEO_SSRC = 236751045


class FakeTransport:
    def __init__(self, handler: Any, on_state: Any, label: str) -> None:
        self.handler, self.on_state, self.label = handler, on_state, label
        self.rtcp: list[bytes] = []
        self.closed = False
        self.connected = True

    def local_params(self) -> LocalTransportParams:
        return LocalTransportParams("sfuu", "s" * 24, Fingerprint("sha-256", ":".join(["AB"] * 32)),
                                    (("127.0.0.1", 40000),))

    def set_remote(self, *_args: Any) -> None:
        pass

    def send_rtp(self, buf: Any) -> None:
        pass

    def send_rtcp(self, buf: Any) -> None:
        self.rtcp.append(bytes(buf))

    def close(self) -> None:
        self.closed = True


class Room:
    """What a room gives a participant, recorded."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str, str, str]] = []
        self.levels: list[tuple[str, int]] = []
        self.armed = 0
        self.transports: list[FakeTransport] = []
        self.hooks = RoomHooks(on_transport_state=lambda *a: self.states.append(a),
                               on_audio_level=lambda pid, level, voice, now: self.levels.append((pid, level)),
                               arm_nack=self.arm)

    def arm(self) -> None:
        self.armed += 1

    def make(self, handler: Any, on_state: Any, label: str) -> FakeTransport:
        t = FakeTransport(handler, on_state, label)
        self.transports.append(t)
        return t


def publisher(room: Room) -> Participant:
    p = Participant("alice", True, True, room.make, WorkerCounters(), lambda: 1.0, DEFAULT_CAPABILITIES,
                    DEFAULT_CAPABILITIES, room.hooks)
    p.publish.apply_publish_offer(OFFER)
    return p


def vp8(seq: int) -> bytes:
    return build_rtp(96, seq, seq * 3000, VIDEO_SSRC, build_vp8_descriptor(start=True) + b"\x11\x02\x00" + bytes(50))


def test_the_publish_transport_is_made_with_the_publisher_as_handler_and_its_state_reaches_the_room() -> None:
    room = Room()
    p = publisher(room)
    (t,) = room.transports
    assert t.handler is p.publish and t.label == "alice/publish" and p.publish_transport is t
    t.on_state("connected", "")
    assert room.states == [("alice", "publish", "connected", "")] and p.publish.state == "connected"


def test_a_gap_arms_the_nack_tick_through_the_hook() -> None:
    room = Room()
    p = publisher(room)
    p.publish.on_rtp(vp8(100))
    p.publish.on_rtp(vp8(101))
    assert room.armed == 0
    p.publish.on_rtp(vp8(104))
    assert room.armed == 1


def test_a_keyframe_request_goes_out_on_the_publishers_own_transport() -> None:
    room = Room()
    p = publisher(room)
    room.transports[0].rtcp.clear()
    p.tracks["video:0"].request_keyframe(5.0)
    (sent,) = room.transports[0].rtcp
    packets, error = parse_compound(sent)
    (pli,) = packets
    assert isinstance(pli, Pli) and error is None
    assert pli.media_ssrc == VIDEO_SSRC and pli.sender_ssrc == p.rtcp_ssrc


def test_reset_closes_both_connections_and_keeps_the_slots() -> None:
    room = Room()
    p = publisher(room)
    slots = dict(p.tracks)
    p.reset_transports()
    assert room.transports[0].closed and p.publish_transport is None and p.tracks == slots
    assert all(t.source is None for t in p.tracks.values())
