"""A subscriber's PLI/FIR through the real path (Subscriber.on_rtcp -> DownTrack.on_pli ->
PublishedTrack -> the stream's KeyframeRequester): a publisher that answers every request with a
keyframe lifts the requester's minimum interval each time (a keyframe arrived since the last
request), so one subscriber sending PLI after PLI made the publisher send ~20 keyframes a second
on a live node (7,428 PLI/FIR in, 103 requests out in 5.2 s). One subscriber's requests for one
DownTrack are honoured at most once per KEYFRAME_REQUEST_INTERVAL; the rest are counted."""

from __future__ import annotations

from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import KEYFRAME_REQUEST_INTERVAL, DownTrack
from sfu.routing.ports import RoomHooks
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.subscriber import Subscriber
from sfu.routing.track import PublishedTrack
from sfu.rtp.packet import build_rtp
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.vp8 import build_vp8_descriptor
from sfu.sdp import DEFAULT_CAPABILITIES, URI_MID, NegotiatedCodec

KEY = b"\x10\x02\x00\x9d\x01\x2a" + bytes(100)
DELTA = b"\x11\x02\x00" + bytes(100)


class Recorder:
    connected = True

    def send_rtp(self, buf: object) -> bool:
        return True


class Room:
    """One publisher video stream that answers every keyframe request 30 ms later, and
    `subscribers` DownTracks of it."""

    def __init__(self, subscribers: int = 1) -> None:
        self.counters = WorkerCounters()
        self.now = 0.0
        self.requests: list[float] = []
        self.seq = 0
        codec = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
        self.track = PublishedTrack("pub:video:0", "pub", "video", codec, lambda s: self.requests.append(self.now),
                                    None)
        self.stream = RecvStream(self.track, 0x1234, None, 96, 97, 90000, "VP8", build_ext_map({URI_MID: 2}, {}),
                                 0, True, self.counters, build_ext_lengths({}))
        self.track.set_source(self.stream, 0.0)
        self.sides = []
        for i in range(subscribers):
            side = Subscriber(f"sub{i}", True, lambda *_: None, self.counters,  # type: ignore[arg-type,return-value]
                              lambda: self.now, DEFAULT_CAPABILITIES, RoomHooks())
            dt = DownTrack(self.track, f"sub{i}", Recorder(), 1000 + i, 2000 + i, "cname", self.counters)
            dt.bind("0", 96, 97, True)
            self.track.add_downtrack(dt)
            side.by_ssrc[dt.ssrc] = dt
            self.sides.append((side, dt))
        self.frame(KEY)

    def frame(self, payload: bytes) -> None:
        self.stream.receive(build_rtp(96, 5000 + self.seq, self.seq * 3000, 0x1234,
                                      build_vp8_descriptor(start=True) + payload), self.now)
        self.seq += 1

    def run(self, seconds: float, rtcp_of: list[int], fir: bool = False) -> None:
        """Every 10 ms each subscriber in `rtcp_of` sends a PLI (or FIR); the publisher sends a
        frame every 33 ms, a keyframe when a request came in since its last frame."""
        answered = len(self.requests)
        next_frame = self.now + 0.033
        end = self.now + seconds
        n = 0
        while self.now < end:
            self.now = round(self.now + 0.01, 6)
            n += 1
            for i in rtcp_of:
                side, dt = self.sides[i]
                pkt = Fir(1, [(dt.ssrc, n & 0xFF)]) if fir else Pli(1, dt.ssrc)
                side.on_rtcp(pkt.to_bytes())
            if self.now >= next_frame:
                next_frame += 0.033
                self.frame(KEY if len(self.requests) > answered else DELTA)
                answered = len(self.requests)


def test_one_subscribers_pli_flood_cannot_make_the_publisher_send_keyframe_after_keyframe() -> None:
    room = Room()
    room.run(5.0, [0])
    # 500 PLIs in 5 s: at most one request per interval reaches the publisher
    assert len(room.requests) <= 5.0 / KEYFRAME_REQUEST_INTERVAL + 1, len(room.requests)
    assert len(room.requests) >= 5.0 / KEYFRAME_REQUEST_INTERVAL - 1  # and the flooder still gets keyframes
    assert room.counters.drops["pli_rate_limited"] >= 400


def test_fir_flood_is_bounded_the_same_way() -> None:
    room = Room()
    room.run(5.0, [0], fir=True)
    assert len(room.requests) <= 5.0 / KEYFRAME_REQUEST_INTERVAL + 1, len(room.requests)


def test_a_second_subscribers_request_still_goes_out_at_once() -> None:
    """The requester's own rule stays: another subscriber's need right after a keyframe is
    served at once, while the first subscriber's repeat inside the interval is refused."""
    room = Room(subscribers=2)
    (side0, dt0), (side1, dt1) = room.sides
    room.now = 1.0
    side0.on_rtcp(Pli(1, dt0.ssrc).to_bytes())
    assert room.requests == [0.0, 1.0]  # (0.0: the DownTracks waited for a first keyframe)
    room.now = 1.03
    room.frame(KEY)
    room.now = 1.04
    side0.on_rtcp(Pli(1, dt0.ssrc).to_bytes())
    assert room.requests == [0.0, 1.0] and room.counters.drops["pli_rate_limited"] == 1
    side1.on_rtcp(Pli(2, dt1.ssrc).to_bytes())
    assert room.requests == [0.0, 1.0, 1.04]
