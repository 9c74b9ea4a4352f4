"""Forwarder: drop or forward, and the rewritten seq/timestamp/PT/PictureID/TL0PICIDX, for one
packet and one DownTrack; and the DownTrack that writes them into the shared packet."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.routing.counters import WorkerCounters
from sfu.routing.downtrack import DownTrack
from sfu.routing.forwarder import Forwarder
from sfu.routing.stream import RecvStream, build_ext_lengths, build_ext_map
from sfu.routing.track import PublishedTrack
from sfu.rtp.packet import RtpHeader, build_rtp, parse_rtp
from sfu.rtp.vp8 import Vp8Descriptor, build_vp8_descriptor, parse_vp8
from sfu.sdp import NegotiatedCodec

KEY = b"\x10\x02\x00\x9d\x01\x2a" + bytes(20)
DELTA = b"\x11\x02\x00" + bytes(20)


class Receiver:
    """The subscriber's transport as the Forwarder and DownTrack see it."""

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[bytes] = []

    def send_rtp(self, buf: Any) -> bool:
        self.sent.append(bytes(buf))
        return True


def vp8_packet(seq: int, ts: int, pic: int = -1, tl0: int = -1, key: bool = False, ssrc: int = 0x1234,
               bits: int = 15) -> bytes:
    desc = build_vp8_descriptor(start=True, picture_id=pic, picture_id_bits=bits, tl0picidx=tl0,
                                tid=0 if tl0 >= 0 else -1)
    return build_rtp(96, seq, ts, ssrc, desc + (KEY if key else DELTA))


class Feed:
    """Packets through one Forwarder, as RecvStream hands them over (header and descriptor reused)."""

    def __init__(self, connected: bool = True) -> None:
        self.counters = WorkerCounters()
        self.receiver = Receiver(connected)
        self.fw = Forwarder(True, 90000, 100, self.receiver, self.counters)
        self.hdr = RtpHeader()
        self.desc = Vp8Descriptor()
        self.now = 0.0
        self.last = (-1, -1)

    def send(self, data: bytes, dt: float = 0.01) -> tuple[int, int, int, int, int] | None:
        self.now += dt
        assert self.hdr.load(data)
        off = self.hdr.payload_offset
        vp8 = self.desc if self.desc.load(data, off, off + self.hdr.payload_length) else None
        if vp8 is not None:  # as RecvStream keeps them for a switch
            self.last = (vp8.picture_id, vp8.tl0picidx)
        return self.fw.translate(self.hdr, bool(vp8 and vp8.keyframe), vp8, self.now)

    def switch(self) -> None:
        self.fw.switch_source(*self.last)


def test_a_continuous_stream_is_forwarded_unchanged_but_for_the_payload_type() -> None:
    f = Feed()
    out = [f.send(vp8_packet(1000 + i, 3000 * i, pic=500 + i, tl0=7 + i, key=i == 0)) for i in range(5)]
    assert out == [(1000 + i, 3000 * i, 100, -1, -1) for i in range(5)]  # -1: the packet's own PictureID/TL0


def test_video_waits_for_a_keyframe_and_for_the_subscriber_to_be_connected() -> None:
    f = Feed(connected=False)
    assert f.send(vp8_packet(10, 0, key=True)) is None  # not connected: lost if sent
    f.receiver.connected = True
    assert f.send(vp8_packet(11, 3000)) is None  # a delta cannot start a decoder
    assert f.send(vp8_packet(12, 6000, key=True)) == (12, 6000, 100, -1, -1)
    assert f.send(vp8_packet(13, 9000)) == (13, 9000, 100, -1, -1)
    assert f.counters.keyframe_waits == 2


def test_a_new_source_continues_seq_picture_id_and_tl0picidx_and_moves_time_on() -> None:
    f = Feed()
    for i in range(3):
        f.send(vp8_packet((65534 + i) & 0xFFFF, (0xFFFFF000 + 3000 * i) & 0xFFFFFFFF, pic=(0x7FFE + i) & 0x7FFF, tl0=(254 + i) & 0xFF, key=i == 0))
    # last out: seq 0 (wrapped), ts 0xFFFFF000 + 6000 (wrapped), pic 0 (wrapped), tl0 0 (wrapped)
    f.switch()
    assert f.send(vp8_packet(7, 123456, pic=40, tl0=9, ssrc=0x9999)) is None  # waits for its keyframe
    out = f.send(vp8_packet(8, 126456, pic=41, tl0=10, key=True, ssrc=0x9999), dt=0.5)
    assert out is not None
    seq, ts, _, pic, tl0 = out
    assert (seq, pic, tl0) == (1, 1, 1)
    last_ts = (0xFFFFF000 + 6000) & 0xFFFFFFFF
    assert (ts - last_ts) & 0xFFFFFFFF == round(0.51 * 90000)  # the time since the last packet sent
    assert f.send(vp8_packet(9, 129456, pic=42, tl0=10, ssrc=0x9999)) == (2, (ts + 3000) & 0xFFFFFFFF, 100, 2, 1)


def test_seven_bit_picture_ids_wrap_at_their_width() -> None:
    f = Feed()
    f.send(vp8_packet(0, 0, pic=3, bits=7, key=True))
    f.switch()
    out = [f.send(vp8_packet(50 + i, 3000 * i, pic=(126 + i) & 0x7F, bits=7, key=i == 0, ssrc=9)) for i in range(4)]
    assert [o[3] for o in out if o] == [4, 5, 6, 7]
    f.switch()
    out = [f.send(vp8_packet(90 + i, 9000 * i, pic=(60 + i) & 0x7F, bits=7, key=i == 0, ssrc=8)) for i in range(125)]
    assert [o[3] for o in out if o][118:123] == [126, 127, 0, 1, 2]


def test_packets_of_one_picture_share_its_rewritten_id() -> None:
    f = Feed()
    f.send(vp8_packet(1, 0, pic=10, key=True))
    f.switch()
    outs = [f.send(vp8_packet(900 + i, 5000, pic=300, key=True, ssrc=7)) for i in range(3)]
    assert [o[3] for o in outs if o] == [11, 11, 11]


def test_reordered_packets_keep_their_place() -> None:
    f = Feed()
    f.send(vp8_packet(100, 0, pic=1, key=True))
    f.switch()
    f.send(vp8_packet(200, 90000, pic=50, key=True, ssrc=9))
    f.send(vp8_packet(202, 96000, pic=52, ssrc=9))
    out = f.send(vp8_packet(201, 93000, pic=51, ssrc=9))
    assert out is not None and (out[0], out[3]) == (102, 3)


# -- through the DownTrack: the shared packet ----------------------------------------------------


class Call:
    """One VP8 publisher stream, two subscribers' DownTracks."""

    def __init__(self) -> None:
        self.counters = WorkerCounters()
        codec = NegotiatedCodec("video", "VP8", 96, 90000, rtx_payload_type=97)
        self.track = PublishedTrack("pub:video:0", "pub", "video", codec, lambda s: None, None)
        self.now = 0.0
        self.stream = self.source(0x1234)
        self.a, self.b = Receiver(), Receiver()
        self.dta = DownTrack(self.track, "a", self.a, 1000, 2000, "c", self.counters)
        self.dtb = DownTrack(self.track, "b", self.b, 1001, 2001, "c", self.counters)
        self.dta.bind("0", 100, None, True)
        self.dtb.bind("0", 101, 102, True)
        self.track.add_downtrack(self.dta)
        self.track.add_downtrack(self.dtb)

    def source(self, ssrc: int) -> RecvStream:
        s = RecvStream(self.track, ssrc, None, 96, 97, 90000, "VP8", build_ext_map({}, {}), 0, True,
                       self.counters, build_ext_lengths({}))
        self.track.set_source(s, self.now)
        return s

    def send(self, data: bytes) -> None:
        self.now += 0.01
        self.stream.receive(data, self.now)


def fields(data: bytes) -> tuple[int, int, int, int, int, int]:
    h = parse_rtp(data)
    assert h is not None
    d = parse_vp8(data, h.payload_offset)
    assert d is not None
    return h.ssrc, h.payload_type, h.seq, h.timestamp, d.picture_id, d.tl0picidx


def test_each_downtrack_sends_its_own_rewrite_of_the_shared_packet() -> None:
    c = Call()
    c.send(vp8_packet(500, 9000, pic=20, tl0=3, key=True))
    # b alone switches (its subscriber reconnected to this track, say): a must still get the publisher's values
    c.dtb.switch_source()
    c.send(vp8_packet(501, 12000, pic=21, tl0=4))  # b waits for a keyframe
    c.stream = c.source(0x5678)  # a new source for both
    c.send(vp8_packet(70, 555000, pic=9000, tl0=200, key=True, ssrc=0x5678))
    assert [fields(p) for p in c.a.sent] == [(1000, 100, 500, 9000, 20, 3), (1000, 100, 501, 12000, 21, 4),
                                              (1000, 100, 502, fields(c.a.sent[2])[3], 22, 5)]
    assert [fields(p)[:3] + fields(p)[4:] for p in c.b.sent] == [(1001, 101, 500, 20, 3), (1001, 101, 501, 21, 4)]


def test_a_retransmission_carries_the_rewritten_picture_id() -> None:
    c = Call()
    c.send(vp8_packet(500, 9000, pic=20, tl0=3, key=True))
    c.stream = c.source(0x5678)
    c.send(vp8_packet(70, 555000, pic=9000, tl0=200, key=True, ssrc=0x5678))
    c.send(vp8_packet(71, 558000, pic=9001, tl0=201, ssrc=0x5678))
    before = len(c.a.sent)
    c.dta.on_nack([(502, 0)], c.now)  # a asks for what it got as seq 502 (the new source's 71)
    (resent,) = c.a.sent[before:]
    assert fields(resent)[2:] == fields(c.a.sent[before - 1])[2:]
    assert fields(resent)[4:] == (22, 5)


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(base=st.integers(0, 0xFFFF), ts0=st.integers(0, 0xFFFFFFFF), n=st.integers(2, 60), data=st.data())
def test_any_packet_order_gives_unique_seqs_and_timestamps_that_go_back_only_with_the_input(
        base: int, ts0: int, n: int, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(range(n))))
    order = [0] + [i for i in order if i != 0]  # the stream starts at its keyframe
    f = Feed()
    seqs: set[int] = set()
    last: tuple[int, int] | None = None  # (input ts, output ts) of the previous packet forwarded
    for i in order:
        in_ts = (ts0 + 3000 * i) & 0xFFFFFFFF
        out = f.send(vp8_packet((base + i) & 0xFFFF, in_ts, key=i == 0))
        if out is None:
            continue
        seq, ts = out[0], out[1]
        assert seq not in seqs
        seqs.add(seq)
        assert seq == (base + i) & 0xFFFF  # one source: the same numbering, wrap-around included
        if last is not None:
            back_out = (last[1] - ts) & 0xFFFFFFFF
            back_in = (last[0] - in_ts) & 0xFFFFFFFF
            if 0 < back_out < 0x80000000:  # went backwards: only as the input did
                assert back_in == back_out
        last = (in_ts, ts)


def test_a_publisher_back_from_a_new_page_continues_the_picture_ids() -> None:
    c = Call()
    c.send(vp8_packet(500, 9000, pic=20, tl0=3, key=True))
    c.track.end_source()  # the publish connection is gone (Publisher.reset)
    c.stream = c.source(0x5678)
    c.send(vp8_packet(70, 555000, pic=9000, tl0=200, key=True, ssrc=0x5678))
    assert [fields(p)[2:3] + fields(p)[4:] for p in c.a.sent] == [(500, 20, 3), (501, 21, 4)]


def test_a_rewritten_picture_id_is_put_back_for_the_next_downtrack() -> None:
    c = Call()
    c.send(vp8_packet(500, 9000, pic=20, tl0=3, key=True))
    c.dta.switch_source()  # a alone resumes (same source): it will continue from pic 20
    c.send(vp8_packet(501, 12000, pic=21, tl0=4))  # a waits for a keyframe
    c.send(vp8_packet(502, 15000, pic=22, tl0=5, key=True))
    assert [fields(p)[2:3] + fields(p)[4:] for p in c.a.sent] == [(500, 20, 3), (501, 21, 4)]
    assert [fields(p)[2:3] + fields(p)[4:] for p in c.b.sent] == [(500, 20, 3), (501, 21, 4), (502, 22, 5)]
