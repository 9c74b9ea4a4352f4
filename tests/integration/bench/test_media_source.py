"""Pre-encoded media: VP8 packetization, the frame-file cache, the encoded media, the pacer."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.media_source import (
    AUDIO_PTIME,
    KIND_AUDIO,
    KIND_VIDEO,
    MAX_PAYLOAD,
    PICTURE_ID_OFFSET,
    VIDEO_FPS,
    VP8_DESCRIPTOR_SIZE,
    EncodedFrame,
    EncodedMedia,
    Pacer,
    load_media,
    parse_frames,
    vp8_payloads,
    write_frames,
)
from sfu.rtp.vp8 import PICTURE_ID_BITS_LONG, is_vp8_keyframe, parse_vp8, vp8_keyframe_size


@pytest.mark.parametrize(("size", "max_payload", "packets"), [
    (1, 1200, 1),
    (1196, 1200, 1),  # exactly one payload of 1200
    (1197, 1200, 2),
    (4000, 1200, 4),
    (28306, 1200, 24),
    (10, 5, 10),  # one byte of frame per packet
])
def test_vp8_payload_count_and_size(size: int, max_payload: int, packets: int) -> None:
    frame = bytes(i & 0xFF for i in range(size))
    payloads = vp8_payloads(frame, max_payload)
    assert len(payloads) == packets
    assert all(len(p) <= max_payload for p in payloads)
    assert b"".join(p[VP8_DESCRIPTOR_SIZE:] for p in payloads) == frame
    # near-equal split: no chunk is more than one byte longer than another
    chunks = [len(p) - VP8_DESCRIPTOR_SIZE for p in payloads]
    assert max(chunks) - min(chunks) <= 1


@given(st.binary(min_size=1, max_size=9000), st.integers(min_value=VP8_DESCRIPTOR_SIZE + 1, max_value=1500))
def test_vp8_payloads_reassemble_and_parse(frame: bytes, max_payload: int) -> None:
    payloads = vp8_payloads(frame, max_payload)
    assert b"".join(p[VP8_DESCRIPTOR_SIZE:] for p in payloads) == frame
    for i, p in enumerate(payloads):
        desc = parse_vp8(p)
        assert desc is not None
        assert desc.size == VP8_DESCRIPTOR_SIZE
        assert desc.start == (i == 0)
        assert desc.partition_id == 0
        assert desc.picture_id == 0 and desc.picture_id_bits == PICTURE_ID_BITS_LONG
        assert desc.picture_id_offset == PICTURE_ID_OFFSET


def test_vp8_payloads_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError):
        vp8_payloads(b"", 1200)
    with pytest.raises(ValueError):
        vp8_payloads(b"x", VP8_DESCRIPTOR_SIZE)


def test_frame_file_round_trip(tmp_path: Path) -> None:
    frames = [(True, b"\x00" * 3000), (False, b"abc"), (False, bytes(range(256)))]
    path = tmp_path / "x.frames"
    write_frames(path, KIND_VIDEO, frames)
    assert parse_frames(path.read_bytes(), KIND_VIDEO) == frames
    assert parse_frames(path.read_bytes(), KIND_AUDIO) is None  # another kind
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=64)), min_size=1, max_size=8),
       st.data())
def test_frame_file_truncated_or_damaged_is_refused_never_raises(frames: list[tuple[bool, bytes]],
                                                                 data: st.DataObject) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.frames"
        write_frames(path, KIND_AUDIO, frames)
        buf = path.read_bytes()
    assert parse_frames(buf, KIND_AUDIO) == frames
    cut = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
    assert parse_frames(buf[:cut], KIND_AUDIO) is None
    assert parse_frames(buf + b"\x00", KIND_AUDIO) is None  # trailing garbage
    i = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
    damaged = buf[:i] + bytes([buf[i] ^ 0xFF]) + buf[i + 1:]
    result = parse_frames(damaged, KIND_AUDIO)  # never raises; any result is a list of frames or None
    assert result is None or isinstance(result, list)


def _media(keys: list[bool]) -> EncodedMedia:
    return EncodedMedia([EncodedFrame(bytes([i]) * 10, k) for i, k in enumerate(keys)], [b"a"])


@pytest.mark.parametrize(("index", "expected"), [(0, 0), (1, 3), (3, 3), (4, 0), (5, 0), (8, 3), (9, 0)])
def test_next_keyframe_cycles(index: int, expected: int) -> None:
    media = _media([True, False, False, True, False])
    assert media.next_keyframe(index) == expected


def test_media_must_start_with_a_keyframe() -> None:
    with pytest.raises(ValueError):
        _media([False, True])


def test_encoded_media_is_real_vp8_and_opus(media: EncodedMedia, media_dir: Path) -> None:
    assert len(media.video) == 3 * VIDEO_FPS
    assert media.keyframes == (0,)
    first = media.video[0].payloads[0]
    assert is_vp8_keyframe(first)
    assert vp8_keyframe_size(first, VP8_DESCRIPTOR_SIZE) == (640, 360)
    assert not is_vp8_keyframe(media.video[1].payloads[0])
    assert all(len(p) <= MAX_PAYLOAD for f in media.video for p in f.payloads)
    summary = media.summary()
    assert 600 <= summary["video_kbps"] <= 1400  # type: ignore[operator]
    assert 25 <= summary["audio_kbps"] <= 40  # type: ignore[operator]
    assert len(media.audio) == round(3 / AUDIO_PTIME)
    # the second load reads the cache: the same bytes, no encoding
    again = load_media(media_dir, seconds=3)
    assert [f.data for f in again.video] == [f.data for f in media.video]
    assert again.audio == media.audio


class FakeSender:
    def __init__(self, packets_per_frame: int) -> None:
        self.packets_per_frame = packets_per_frame
        self.audio: list[float] = []
        self.frames: list[float] = []
        self.packets: list[float] = []
        self.queued = 0

    def send_audio_frame(self, now: float) -> None:
        self.audio.append(now)

    def queue_video_frame(self, now: float) -> None:
        self.frames.append(now)
        self.queued += self.packets_per_frame

    def send_video_packets(self, budget: int, now: float) -> int:
        n = min(budget, self.queued)
        self.packets += [now] * n
        self.queued -= n
        return self.queued


def test_pacer_sends_in_real_time_with_a_burst_limit() -> None:
    clock = [100.0]
    pacer = Pacer(tick=0.005, burst=3, clock=lambda: clock[0])
    a, b = FakeSender(4), FakeSender(15)
    pacer.add(a, phase=0.0)
    pacer.add(b, phase=0.010)
    for _ in range(200):  # one second of 5 ms ticks
        clock[0] += 0.005
        pacer.run_due(clock[0])
    assert len(a.audio) == 50 and len(b.audio) == 50
    assert len(a.frames) == 30 and len(b.frames) == 30
    assert len(a.packets) == 30 * 4
    for s in (a, b):
        per_tick: dict[float, int] = {}
        for t in s.packets:
            per_tick[t] = per_tick.get(t, 0) + 1
        assert max(per_tick.values()) <= 3
    # a 15-packet frame drains over 5 ticks, within its 33 ms: never more than one frame waits
    assert b.queued <= 15
    assert len(b.packets) >= 29 * 15
    assert pacer.skipped_audio == 0 and pacer.skipped_video == 0


def test_pacer_skips_instead_of_bursting_after_a_stall() -> None:
    clock = [0.0]
    pacer = Pacer(tick=0.005, burst=3, max_late=0.2, clock=lambda: clock[0])
    s = FakeSender(1)
    pacer.add(s, phase=0.0)
    pacer.run_due(0.0)
    clock[0] = 2.0  # the process was starved for 2 s
    pacer.run_due(2.0)
    assert len(s.audio) <= 1 + round(0.2 / 0.02) + 1
    assert pacer.skipped_audio >= 80 and pacer.skipped_video >= 50


def test_pacer_remove_stops_sending() -> None:
    clock = [0.0]
    pacer = Pacer(clock=lambda: clock[0])
    s = FakeSender(1)
    pacer.add(s, phase=0.0)
    pacer.remove(s)
    assert len(pacer) == 0
    pacer.run_due(1.0)
    assert s.audio == [] and s.frames == []
