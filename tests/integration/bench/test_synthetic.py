"""Synthetic participants: their SDP against the SFU's own negotiation (and aiortc's parser),
the packets a publisher sends, and what a subscriber makes of the packets it receives."""

from __future__ import annotations

import argparse
import random
import time

import pytest

from bench.media import add_arguments as add_media_arguments
from bench.media import fanout, group, one_to_one, scenarios_from, waiting_room
from bench.media import run as run_media
from bench.media_source import EncodedMedia
from bench.synthetic import (
    ABS_SEND_TIME_UNITS,
    DELAY_BUCKETS,
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    OPUS_PT,
    RTX_PT,
    VP8_PT,
    GeneratorCounters,
    InboundStream,
    OfferedStream,
    Publisher,
    build_publish_offer,
    build_subscribe_answer,
    delay_bucket,
    histogram_summary,
    new_histogram,
    offered_streams,
    remote_transport,
)
from sfu.rtp.ext import encode_abs_send_time, read_abs_send_time, read_audio_level
from sfu.rtp.packet import build_rtp, parse_rtp
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.vp8 import build_vp8_descriptor, parse_vp8
from sfu.sdp import (
    OPUS,
    VP8,
    Fingerprint,
    LocalTransportParams,
    NegotiatedCodec,
    OutTrack,
    answer_publish_offer,
    apply_subscribe_answer,
    build_subscribe_offer,
    parse_sdp,
)
from sfu.sdp.capabilities import URI_ABS_SEND_TIME

FP = ":".join(["AB"] * 32)
SFU_FP = ":".join(["CD"] * 32)
SFU = LocalTransportParams(ice_ufrag="sfuUfrag1234", ice_pwd="sfuPasswordsfuPassword12",
                           fingerprint=Fingerprint("sha-256", SFU_FP), candidates=(("127.0.0.1", 40000),))


def _offer_text() -> str:
    return build_publish_offer(ufrag="pubUfrag", pwd="pubPasswordpubPassword12", fingerprint=FP, host="127.0.0.1",
                               port=50000, cname="cn", stream_id="alice", audio_ssrc=1111, video_ssrc=2222,
                               rtx_ssrc=3333, session_id=42).to_text()


def test_publish_offer_is_answered_by_the_sfu() -> None:
    answer, params = answer_publish_offer(parse_sdp(_offer_text()), SFU)
    assert params.transport.dtls_role == "server"  # we offered actpass: the SFU is DTLS server
    assert params.transport.ice_ufrag == "pubUfrag"
    assert [(t.kind, t.codec.name, t.codec.payload_type) for t in params.tracks] == [
        ("audio", "opus", OPUS_PT), ("video", "VP8", VP8_PT)]
    audio, video = params.tracks
    assert audio.encodings[0].ssrc == 1111
    assert (video.encodings[0].ssrc, video.encodings[0].rtx_ssrc) == (2222, 3333)
    assert video.codec.rtx_payload_type == RTX_PT and video.codec.nack and video.codec.pli
    assert audio.header_extensions[URI_ABS_SEND_TIME] == EXT_ABS_SEND_TIME
    assert audio.extension_ids.audio_level == EXT_AUDIO_LEVEL
    assert remote_transport(parse_sdp(answer.to_text())) == (
        "sfuUfrag1234", "sfuPasswordsfuPassword12", [("sha-256", SFU_FP)], ("127.0.0.1", 40000))


def test_publish_offer_parses_in_aiortc() -> None:
    from aiortc.sdp import SessionDescription as AiortcDescription

    d = AiortcDescription.parse(_offer_text())
    assert [m.kind for m in d.media] == ["audio", "video"]
    assert [m.direction for m in d.media] == ["sendonly", "sendonly"]
    assert d.media[1].ssrc_group[0].semantic == "FID" and d.media[1].ssrc_group[0].items == [2222, 3333]
    dtls = d.media[0].dtls
    assert dtls is not None and dtls.role == "auto" and dtls.fingerprints[0].value == FP
    assert d.group[0].items == ["0", "1"]


def _tracks() -> list[OutTrack]:
    opus = NegotiatedCodec("audio", "opus", 111, 48000, 2, OPUS.fmtp)
    vp8 = NegotiatedCodec("video", "VP8", 96, 90000, 1, (), VP8.rtcp_fb, rtx_payload_type=97)
    return [OutTrack("audio", "alice", "alice-audio", 10, opus),
            OutTrack("video", "alice", "alice-video", 20, vp8, rtx_ssrc=21)]


def test_subscribe_answer_is_accepted_by_the_sfu() -> None:
    offer = parse_sdp(build_subscribe_offer(SFU, _tracks()).to_text())
    answer = build_subscribe_answer(offer, ufrag="subUfrag", pwd="subPasswordsubPassword12", fingerprint=FP,
                                    host="127.0.0.1", port=50001, session_id=7, version=1)
    params = apply_subscribe_answer(offer, parse_sdp(answer.to_text()))
    assert params.transport.dtls_role == "server"  # we answered setup:active
    assert params.rejected == ()
    assert [(t.kind, t.direction, t.ssrc, t.rtx_ssrc) for t in params.tracks] == [
        ("audio", "recvonly", 10, None), ("video", "recvonly", 20, 21)]
    assert params.tracks[1].codec.rtx_payload_type is not None and params.tracks[1].codec.nack
    streams = offered_streams(offer, [{"mid": m.mid, "participant_id": "alice"} for m in offer.media])
    assert [(s.kind, s.ssrc, s.rtx_ssrc, s.clock_rate, s.publisher_id) for s in streams] == [
        ("audio", 10, 0, 48000, "alice"), ("video", 20, 21, 90000, "alice")]
    assert all(s.abs_send_time_id > 0 for s in streams)
    assert [(s.nack, s.pli) for s in streams] == [(False, False), (True, True)]  # Opus: no NACK, no PLI


def test_reoffer_with_a_stopped_section_is_answered() -> None:
    first = build_subscribe_offer(SFU, _tracks())
    reoffer = parse_sdp(build_subscribe_offer(SFU, _tracks()[1:], previous=first).to_text())
    answer = build_subscribe_answer(reoffer, ufrag="subUfrag", pwd="subPasswordsubPassword12", fingerprint=FP,
                                    host="127.0.0.1", port=50001, session_id=7, version=2)
    text = answer.to_text()
    params = apply_subscribe_answer(reoffer, parse_sdp(text))
    assert params.stopped_mids == ("0",)
    assert [t.kind for t in params.tracks] == ["video"]
    assert parse_sdp(text).bundle_mids() == ["1"]
    assert [s.kind for s in offered_streams(reoffer, [])] == ["video"]


def test_remote_transport_needs_a_live_section() -> None:
    offer = parse_sdp(build_subscribe_offer(SFU, _tracks()).to_text())
    for m in offer.media:
        m.port = 0
    with pytest.raises(ValueError):
        remote_transport(offer)


@pytest.mark.parametrize(("units", "bucket"), [
    (0, 0),
    (26, 0),  # 99.2 us
    (27, 1),  # 103 us
    (ABS_SEND_TIME_UNITS // 1000, 9),  # 262 units = 0.99945 ms
    (ABS_SEND_TIME_UNITS // 1000 + 1, 10),
    (ABS_SEND_TIME_UNITS, 10000),  # 1 s
    (ABS_SEND_TIME_UNITS * 3, DELAY_BUCKETS),  # past 2 s: the overflow bucket
])
def test_delay_bucket(units: int, bucket: int) -> None:
    assert delay_bucket(units) == bucket


def test_histogram_summary() -> None:
    h = new_histogram()
    assert histogram_summary(h)["count"] == 0
    h[5] = 90  # 0.5-0.6 ms
    h[20] = 9  # 2.0-2.1 ms
    h[DELAY_BUCKETS] = 1  # overflow
    s = histogram_summary(h)
    assert s["count"] == 100
    assert s["p50_ms"] == pytest.approx(0.55)
    assert s["p95_ms"] == pytest.approx(2.05)
    assert s["p99_ms"] == pytest.approx(2.05)
    assert s["max_ms"] == pytest.approx(2000.0)
    assert s["mean_ms"] == pytest.approx((90 * 0.55 + 9 * 2.05 + 2000.0) / 100, rel=1e-3)


# -- the receive path --------------------------------------------------------------------------------

def _stream(kind: str = "video") -> tuple[InboundStream, list[int], GeneratorCounters]:
    hist = new_histogram()
    counters = GeneratorCounters()
    offered = OfferedStream("1", kind, 20, 21, 96 if kind == "video" else 111, 90000 if kind == "video" else 48000,
                            EXT_ABS_SEND_TIME, "alice")
    return InboundStream(offered, hist, counters), hist, counters


def _packet(seq: int, sent: float, payload: bytes, ssrc: int = 20, pt: int = 96, ts: int = 0) -> bytes:
    abs_value = int(sent * ABS_SEND_TIME_UNITS) & 0xFFFFFF
    return build_rtp(pt, seq, ts, ssrc, payload, extensions=[(EXT_ABS_SEND_TIME, encode_abs_send_time(abs_value))])


def test_receive_records_delay_from_abs_send_time(media: EncodedMedia) -> None:
    stream, hist, counters = _stream()
    now = 1000.0
    assert not stream.on_media(_packet(1, now - 0.0012, media.video[0].payloads[0]), now)
    assert stream.have_keyframe and stream.keyframes == 1 and stream.frames == 1
    assert hist[12] == 1 and sum(hist) == 1  # 1.2 ms
    # audio-level first, abs-send-time second: found by the slow path
    audio, ahist, _ = _stream("audio")
    value = int((now - 0.003) * ABS_SEND_TIME_UNITS) & 0xFFFFFF
    pkt = build_rtp(111, 5, 0, 20, b"opus", extensions=[(EXT_AUDIO_LEVEL, b"\x9e"),
                                                       (EXT_ABS_SEND_TIME, encode_abs_send_time(value))])
    audio.on_media(pkt, now)
    assert ahist[30] == 1
    # a send time "after" the arrival is counted, not binned
    stream.on_media(_packet(2, now + 0.01, media.video[1].payloads[0]), now)
    assert counters.negative_delays == 1 and sum(hist) == 1


def test_gap_is_nacked_and_rtx_repairs_it(media: EncodedMedia) -> None:
    stream, _, counters = _stream()
    now = 50.0
    payload = media.video[1].payloads[0]  # not a keyframe: that would make older packets moot
    for seq in (100, 101, 103, 104):
        stream.on_media(_packet(seq, now, payload, ts=9000), now)
    assert stream.stats.lost == 1
    assert stream.nack.tick(now + 0.05) == [102]
    osn = (102).to_bytes(2, "big")
    stream.on_rtx(_packet(7, now, osn + payload, ssrc=21, pt=97, ts=9000), now + 0.06)
    assert stream.recovered == 1 and counters.recovered == 1 and counters.rtx_received == 1
    assert stream.stats.lost == 0
    stream.on_rtx(_packet(8, now, osn + payload, ssrc=21, pt=97, ts=9000), now + 0.07)  # a duplicate repair
    assert stream.recovered == 1 and stream.stats.lost == 0


def test_video_without_keyframe_asks_for_one_rate_limited(media: EncodedMedia) -> None:
    stream, _, _ = _stream()
    now = 10.0
    assert stream.on_media(_packet(1, now, media.video[5].payloads[0]), now)  # a delta frame first: PLI
    assert not stream.on_media(_packet(2, now, media.video[6].payloads[0]), now + 0.01)  # not again at once
    assert not stream.on_media(_packet(3, now, media.video[0].payloads[0]), now + 0.02)  # the keyframe
    assert stream.have_keyframe
    assert not stream.on_media(_packet(4, now, media.video[1].payloads[0]), now + 2.0)


# -- the send path -------------------------------------------------------------------------------------

class FakePc:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []

    def send_rtp(self, pkt: bytes) -> None:
        self.rtp.append(pkt)


def _publisher(media: EncodedMedia) -> tuple[Publisher, FakePc]:
    p = Publisher("alice", media, GeneratorCounters(), random.Random(3))
    pc = FakePc()
    p.pc = pc  # type: ignore[assignment]
    return p, pc


def test_publisher_sends_vp8_with_picture_ids_and_abs_send_time(media: EncodedMedia) -> None:
    p, pc = _publisher(media)
    now = time.monotonic()
    for _ in range(3):
        p.queue_video_frame(now)
        assert p.send_video_packets(1000, now) == 0
    after = time.monotonic()
    frames: dict[int, list[bytes]] = {}
    seqs = []
    for pkt in pc.rtp:
        h = parse_rtp(pkt)
        assert h is not None and h.payload_type == VP8_PT and h.ssrc == p.video_ssrc
        seqs.append(h.seq)
        loc = h.find_extension(EXT_ABS_SEND_TIME)
        assert loc is not None
        sent = (read_abs_send_time(pkt, *loc) - int(now * ABS_SEND_TIME_UNITS)) & 0xFFFFFF  # units after `now`
        assert 0 <= sent <= (after - now) * ABS_SEND_TIME_UNITS + 1
        frames.setdefault(h.timestamp, []).append(pkt)
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    assert len(frames) == 3
    pids = []
    for i, (_, pkts) in enumerate(sorted(frames.items())):
        assert len(pkts) == len(media.video[i].payloads)
        body = b""
        for j, pkt in enumerate(pkts):
            h = parse_rtp(pkt)
            assert h is not None
            desc = parse_vp8(pkt, h.payload_offset)
            assert desc is not None and desc.start == (j == 0) and h.marker == (j == len(pkts) - 1)
            pids.append(desc.picture_id)
            body += pkt[h.payload_offset + desc.size:]
        assert body == media.video[i].data
    assert len(set(pids)) == 3 and (max(pids) - min(pids)) == 2


def test_publisher_audio_has_level_and_abs_send_time(media: EncodedMedia) -> None:
    p, pc = _publisher(media)
    p.send_audio_frame(5.0)
    p.send_audio_frame(5.02)
    h0, h1 = parse_rtp(pc.rtp[0]), parse_rtp(pc.rtp[1])
    assert h0 is not None and h1 is not None
    assert h0.payload_type == OPUS_PT and h1.seq == (h0.seq + 1) & 0xFFFF
    assert (h1.timestamp - h0.timestamp) & 0xFFFFFFFF == 960
    loc = h0.find_extension(EXT_AUDIO_LEVEL)
    assert loc is not None and read_audio_level(pc.rtp[0], *loc) == (True, 30)
    assert bytes(h0.payload()) == media.audio[0]


def test_publisher_answers_nack_with_rtx_and_pli_with_a_keyframe(media: EncodedMedia) -> None:
    p, pc = _publisher(media)
    for _ in range(3):
        p.queue_video_frame(1.0)
        p.send_video_packets(1000, 1.0)
    original = pc.rtp[-2]
    h = parse_rtp(original)
    assert h is not None
    sent = len(pc.rtp)
    p.on_rtcp(Nack.from_seqs(1, p.video_ssrc, [h.seq, (h.seq + 5000) & 0xFFFF]).to_bytes())
    assert len(pc.rtp) == sent + 1 and p.counters.nack_misses == 1
    r = parse_rtp(pc.rtp[-1])
    assert r is not None and r.payload_type == RTX_PT and r.ssrc == p.rtx_ssrc and r.timestamp == h.timestamp
    assert bytes(r.payload()) == h.seq.to_bytes(2, "big") + bytes(h.payload())
    # PLI: the next frame is the keyframe (frame 0 of the cycle), not frame 3
    p.on_rtcp(Pli(1, p.video_ssrc).to_bytes())
    pc.rtp.clear()
    p.queue_video_frame(2.0)
    p.send_video_packets(1000, 2.0)
    first = parse_rtp(pc.rtp[0])
    assert first is not None
    desc = parse_vp8(pc.rtp[0], first.payload_offset)
    assert desc is not None and desc.keyframe
    assert p.counters.plis_received == 1 and p.counters.keyframes_sent == 2


def test_vp8_descriptor_written_by_the_publisher_matches_the_builder(media: EncodedMedia) -> None:
    p, pc = _publisher(media)
    p.queue_video_frame(0.0)
    p.send_video_packets(1, 0.0)
    h = parse_rtp(pc.rtp[0])
    assert h is not None
    pid = parse_vp8(pc.rtp[0], h.payload_offset)
    assert pid is not None
    assert pc.rtp[0][h.payload_offset:h.payload_offset + 4] == build_vp8_descriptor(start=True,
                                                                                     picture_id=pid.picture_id)


# -- scenarios -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("scenario", "participants", "streams", "sessions"), [
    (one_to_one(1), 2, 4, 1),
    (one_to_one(5), 10, 20, 5),
    (group(6), 6, 60, 0),
    (group(3, rooms=2), 6, 24, 0),
    (fanout(20), 21, 40, 0),
])
def test_scenario_sizes(scenario: object, participants: int, streams: int, sessions: int) -> None:
    assert scenario.participants == participants  # type: ignore[attr-defined]
    assert scenario.forwarded_streams == streams  # type: ignore[attr-defined]
    assert scenario.sessions == sessions  # type: ignore[attr-defined]


def test_fanout_publisher_does_not_subscribe() -> None:
    members = fanout(3).members_of(0)
    assert members[0] == ("r0-p0", True, False)
    assert all(not pub and sub for _, pub, sub in members[1:])
    assert fanout(3).expected(0) == {f"r0-p{i}": {("r0-p0", "audio"), ("r0-p0", "video")} for i in (1, 2, 3)}


@pytest.mark.parametrize(("argv", "expected"), [
    (["one-to-one", "--rooms", "5"], [one_to_one(5)]),
    (["group", "--size", "4", "--rooms", "2", "--duration", "3"], [group(4, 2)]),
    (["fanout", "--subscribers", "7"], [fanout(7)]),
    (["suite"], [one_to_one(1), one_to_one(5), group(6), fanout(20)]),
    (["waiting-room", "--rooms", "3"], [waiting_room(3, 2)]),
    (["waiting-room", "--size", "4", "--ramp"], [waiting_room(1, 4)]),
])
def test_command_line_scenarios(argv: list[str], expected: list[object]) -> None:
    parser = argparse.ArgumentParser()
    add_media_arguments(parser)
    assert scenarios_from(parser.parse_args(argv)) == expected


def test_bad_scenarios_are_refused() -> None:
    with pytest.raises(ValueError):
        group(1)
    with pytest.raises(ValueError):
        one_to_one(0)


def test_waiting_room_scenario() -> None:
    w = waiting_room(2, 3)
    assert w.waiting_room and w.kind == "group" and w.participants == 6 and w.forwarded_streams == 24
    assert w.name == "waiting room 3x2" and not one_to_one(1).waiting_room


def test_media_options() -> None:
    parser = argparse.ArgumentParser()
    add_media_arguments(parser)
    a = parser.parse_args(["group", "--ramp", "--step-seconds", "4", "--max-rooms", "9", "--target",
                           "http://n:8080", "--api-key", "k" * 8, "--client", "aiortc"])
    assert a.ramp and a.step_seconds == 4.0 and a.max_rooms == 9 and a.max_seconds == 600.0
    assert a.target == "http://n:8080" and a.api_key == "k" * 8 and a.client == "aiortc" and not a.direct
    d = parser.parse_args(["one-to-one"])
    assert not d.ramp and d.target is None and not d.direct and d.client == "synthetic"


@pytest.mark.parametrize("argv", [
    ["one-to-one", "--direct", "--target", "http://n:8080", "--api-key", "k" * 8],
    ["one-to-one", "--direct", "--client", "aiortc"],
    ["one-to-one", "--target", "http://n:8080"],
])
def test_contradictory_media_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_media_arguments(parser)
    assert run_media(parser.parse_args(argv)) == 2
    assert "telesfu bench media:" in capsys.readouterr().err
