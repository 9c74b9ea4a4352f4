"""A subscriber's NACK through the real path (Subscriber.on_rtcp -> DownTrack.on_nack ->
the publisher stream's RetransmissionBuffer): duplicates resent once, a packet at most once per
RTT-ish interval and a few times in all, within the subscriber's byte budget; every refusal
counted by reason (issue 8: 465 x (pid, 0xFFFF) in one NACK gave 7,905 retransmissions)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import nack as nack_policy
from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.ports import RoomHooks
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.subscriber import Subscriber
from sfu.routing.track import PublishedTrack
from sfu.rtp.packet import build_rtp
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.vp8 import build_vp8_descriptor
from sfu.sdp import DEFAULT_CAPABILITIES, URI_MID, NegotiatedCodec


class Recorder:
    """The transport end of a DownTrack: what it was asked to send."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_rtp(self, buf: Any) -> bool:
        self.sent.append(bytes(buf))
        return True


class Call:
    """One publisher video stream, one subscriber DownTrack (RTX negotiated), 100 packets forwarded."""

    def __init__(self, policy: Any = None, payload: int = 1000) -> None:
        self.counters = WorkerCounters()
        self.now = 0.0
        codec = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
        self.track = PublishedTrack("pub:video:0", "pub", "video", codec, lambda s: None, None)
        self.stream = RecvStream(self.track, 0x1234, None, 96, 97, 90000, "VP8", build_ext_map({URI_MID: 2}, {}),
                                 0, True, self.counters, build_ext_lengths({}))
        self.track.set_source(self.stream, 0.0)
        self.transport = Recorder()
        if policy is None:  # the defaults: the DownTrack makes its own budget
            self.side = Subscriber("sub", True, self.no_transport, self.counters, lambda: self.now,
                                   DEFAULT_CAPABILITIES, RoomHooks())
            self.dt = DownTrack(self.track, "sub", self.transport, 1000, 2000, "cname", self.counters)
        else:
            self.side = Subscriber("sub", True, self.no_transport, self.counters, lambda: self.now,
                                   DEFAULT_CAPABILITIES, RoomHooks(), policy)
            self.dt = DownTrack(self.track, "sub", self.transport, 1000, 2000, "cname", self.counters,
                                self.side.resend_budget)
        self.dt.bind("0", 96, 97, True)
        self.track.add_downtrack(self.dt)
        self.side.by_ssrc[self.dt.ssrc] = self.dt
        for i in range(100):
            self.now += 0.001  # 100 packets in 0.1 s: all within the buffer's 1 s age
            key = i == 0
            vp8 = (b"\x10\x02\x00\x9d\x01\x2a" if key else b"\x11\x02\x00") + bytes(payload)
            self.stream.receive(build_rtp(96, 5000 + i, i * 3000, 0x1234, build_vp8_descriptor(start=True) + vp8),
                                self.now)
        self.forwarded = len(self.transport.sent)
        assert self.forwarded == 100

    @staticmethod
    def no_transport(*_args: Any) -> Any:
        raise AssertionError("the DownTrack is made here, with its own transport")

    def last_out(self) -> int:
        return self.dt.forwarder.seq.last_out

    def nack(self, pairs: list[tuple[int, int]], after: float = 0.0) -> list[bytes]:
        self.now += after
        before = len(self.transport.sent)
        self.side.on_rtcp(Nack(1, self.dt.ssrc, pairs).to_bytes())
        return self.transport.sent[before:]

    def refused(self) -> dict[str, int]:
        snap = self.counters.snapshot()["resends_refused"]
        assert isinstance(snap, dict)
        return {k: v for k, v in snap.items() if v}


def osn(rtx: bytes) -> int:
    """The original sequence number an RTX packet carries (RFC 4588), header without CSRCs/extension."""
    off = 12
    if rtx[0] & 0x10:
        off += 4 + 4 * int.from_bytes(rtx[14:16], "big")
    return int.from_bytes(rtx[off:off + 2], "big")


def test_the_nack_bomb_gives_each_packet_once() -> None:
    call = Call()
    pid = (call.last_out() - 30) & 0xFFFF
    wire = Nack(1, call.dt.ssrc, [(pid, 0xFFFF)] * 465).to_bytes()
    assert len(wire) == 1872  # 1,886 bytes as SRTCP
    sent = call.nack([(pid, 0xFFFF)] * 465)
    assert len(sent) == 17
    assert sorted(osn(p) for p in sent) == sorted((pid + k) & 0xFFFF for k in range(17))
    assert call.refused() == {"duplicate": 465 * 17 - 17}
    assert call.counters.retransmits == 17


def test_duplicates_interleaved_with_other_pairs_are_resent_once() -> None:
    call = Call()
    a, b = (call.last_out() - 40) & 0xFFFF, (call.last_out() - 10) & 0xFFFF
    sent = call.nack([(a, 0x0001), (b, 0), (a, 0x0001), (b, 0), (a, 0)])
    assert sorted(osn(p) for p in sent) == sorted([a, (a + 1) & 0xFFFF, b])
    assert call.refused() == {"duplicate": 4}


def test_a_repeat_within_the_interval_gives_nothing_then_a_few_times_in_all() -> None:
    call = Call(nack_policy.ResendPolicy(max_resends=3, default_interval=0.1))
    pid = (call.last_out() - 5) & 0xFFFF
    assert len(call.nack([(pid, 0x0003)])) == 3
    assert call.nack([(pid, 0x0003)], after=0.05) == []  # within 100 ms: already on its way
    assert call.refused() == {"too_soon": 3}
    assert len(call.nack([(pid, 0x0003)], after=0.06)) == 3  # 110 ms after the first resend
    assert len(call.nack([(pid, 0x0003)], after=0.11)) == 3
    assert call.nack([(pid, 0x0003)], after=0.5) == []  # resent three times: no more
    assert call.refused() == {"too_soon": 3, "too_many": 3}


def test_the_interval_is_the_subscribers_rtt_once_known() -> None:
    call = Call(nack_policy.ResendPolicy(default_interval=1.0))
    call.dt.stats.rtt = 0.04
    pid = (call.last_out() - 5) & 0xFFFF
    assert len(call.nack([(pid, 0)])) == 1
    assert call.nack([(pid, 0)], after=0.03) == []
    assert len(call.nack([(pid, 0)], after=0.02)) == 1


def test_the_byte_budget_caps_retransmissions_and_is_counted() -> None:
    # ~1,020-byte packets; 5,000 B/s with a 1 s burst: four resends now, then about five a second.
    call = Call(nack_policy.ResendPolicy(bytes_per_second=5000, burst_seconds=1.0))
    newest = call.last_out()
    pairs = [((newest - 90 + 17 * k) & 0xFFFF, 0xFFFF) for k in range(5)]
    sent = call.nack(pairs)
    assert len(sent) == 4
    assert sum(len(p) for p in sent) <= 5000
    assert call.refused() == {"budget": 85 - 4}
    # half a second later the budget has refilled by 2,500 bytes (plus what was left): two or three more
    later = call.nack(pairs, after=0.5)
    assert 2 <= len(later) <= 3
    assert call.refused() == {"budget": 85 - 4 + 85 - len(later)}


def test_what_is_not_buffered_is_counted_not_in_buffer() -> None:
    call = Call()
    gone = (call.last_out() - 600) & 0xFFFF  # older than the DownTrack's 512-packet history
    assert call.nack([(gone, 0x0001)]) == []
    assert call.refused() == {"not_in_buffer": 2}


@settings(max_examples=60, deadline=None)
@given(
    nacks=st.lists(
        st.tuples(st.floats(0.0, 0.15), st.lists(st.tuples(st.integers(0, 120), st.integers(0, 0xFFFF)), max_size=40)),
        min_size=1, max_size=12,
    ),
)
def test_any_nacks_resend_each_packet_once_per_nack_a_few_times_in_all_within_the_budget(
    nacks: list[tuple[float, list[tuple[int, int]]]],
) -> None:
    policy = nack_policy.ResendPolicy(max_resends=3, default_interval=0.05, bytes_per_second=20_000,
                                      burst_seconds=0.5)
    call = Call(policy)
    newest = call.last_out()
    start = call.now
    per_packet: dict[int, int] = {}
    sent_bytes = 0
    for after, pairs in nacks:
        wire = [((newest - back) & 0xFFFF, blp) for back, blp in pairs]
        sent = call.nack(wire, after=after)
        seqs = [osn(p) for p in sent]
        assert len(seqs) == len(set(seqs))  # once per NACK
        for s in seqs:
            per_packet[s] = per_packet.get(s, 0) + 1
        sent_bytes += sum(len(p) for p in sent)
    assert all(n <= 3 for n in per_packet.values())
    assert sent_bytes <= policy.burst_bytes + policy.bytes_per_second * (call.now - start) + 1
    named = sum(1 + blp.bit_count() for _, pairs in nacks for _, blp in pairs)
    refused = call.refused()
    assert sum(refused.values()) + call.counters.retransmits == named  # every named number accounted
