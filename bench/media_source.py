"""Pre-encoded media for synthetic publishers, and the one pacer that sends it in real time.

Video is VP8 (libvpx through PyAV) at about 1 Mbps, 640x360, 30 fps, a keyframe every 3 s,
encoded from a synthetic moving pattern (a drifting gradient over a scrolling texture, a
moving square and the frame number as 12 black/white blocks) so the encoder does real
work. Audio is Opus (libopus), 48 kHz stereo, 20 ms frames at 32 kbps, of a tone with a
slow tremolo. Both are encoded once and cached on disk (`cache_dir()`); publishers cycle
through the frames.

Each video frame is cut into RTP payloads of at most `MAX_PAYLOAD` bytes, each starting
with a 4-byte VP8 payload descriptor (RFC 7741: X=1, I=1, 15-bit PictureID, S=1 on the
first packet of the frame). The PictureID in the cached payloads is 0: a publisher writes
its own at `PICTURE_ID_OFFSET` when it copies the payload into a packet.

`Pacer` is the single timer of a load-generating process: every `tick` it asks each
publisher for the audio frames and video frames that are due, and lets each send at most
`burst` video packets per tick, so a frame's packets leave spread over a few ms.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import os
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from sfu.rtp.vp8 import build_vp8_descriptor

log = logging.getLogger("telesfu.bench.media")

VIDEO_WIDTH = 640
VIDEO_HEIGHT = 360
VIDEO_FPS = 30
VIDEO_BITRATE = 1_000_000
KEYFRAME_INTERVAL = 90  # frames: 3 s at 30 fps
MEDIA_SECONDS = 6
VIDEO_CLOCK_RATE = 90000
VIDEO_TS_STEP = VIDEO_CLOCK_RATE // VIDEO_FPS

AUDIO_SAMPLE_RATE = 48000
AUDIO_CHANNELS = 2
AUDIO_FRAME_SAMPLES = 960  # 20 ms
AUDIO_PTIME = AUDIO_FRAME_SAMPLES / AUDIO_SAMPLE_RATE
AUDIO_BITRATE = 32000
AUDIO_TS_STEP = AUDIO_FRAME_SAMPLES

MAX_PAYLOAD = 1200  # RTP payload bytes, VP8 descriptor included
VP8_DESCRIPTOR_SIZE = 4
PICTURE_ID_OFFSET = 2  # the 15-bit PictureID (with its M bit) inside each payload

FRAME_FILE_MAGIC = b"TSFF"
FRAME_FILE_VERSION = 1
FLAG_KEYFRAME = 0x01
_FILE_HEADER = struct.Struct("!4sBBHI")  # magic, version, kind, reserved, frame count
_FRAME_HEADER = struct.Struct("!BI")  # flags, size
KIND_VIDEO = 0
KIND_AUDIO = 1
MAX_FRAME_SIZE = 1 << 22

DEFAULT_TICK = 0.005
DEFAULT_BURST = 3  # video packets per publisher per tick: 600 packets/s while a frame drains
DEFAULT_MAX_LATE = 0.2  # s behind schedule before a sender skips frames instead of bursting


# -- encoded frames ------------------------------------------------------------------------------

class EncodedFrame:
    """One encoded video frame, its RTP payloads (PictureID 0), and those payloads without
    their descriptor (`bodies`: a sender writes its own descriptor in front)."""

    __slots__ = ("data", "keyframe", "payloads", "bodies")

    def __init__(self, data: bytes, keyframe: bool, max_payload: int = MAX_PAYLOAD) -> None:
        self.data = data
        self.keyframe = keyframe
        self.payloads = vp8_payloads(data, max_payload)
        self.bodies = tuple(p[VP8_DESCRIPTOR_SIZE:] for p in self.payloads)

    def __repr__(self) -> str:
        return f"EncodedFrame({len(self.data)} bytes, keyframe={self.keyframe}, packets={len(self.payloads)})"


class EncodedMedia:
    """What every synthetic publisher of a process sends: video frames and Opus frames."""

    __slots__ = ("video", "audio", "keyframes", "fps", "width", "height", "_next_keyframe")

    def __init__(self, video: Sequence[EncodedFrame], audio: Sequence[bytes], fps: int = VIDEO_FPS,
                 width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT) -> None:
        if not video or not video[0].keyframe:
            raise ValueError("the video must start with a keyframe")
        if not audio:
            raise ValueError("no audio frames")
        self.video = tuple(video)
        self.audio = tuple(audio)
        self.keyframes = tuple(i for i, f in enumerate(self.video) if f.keyframe)
        self.fps = fps
        self.width = width
        self.height = height
        n = len(self.video)
        nxt = [0] * n
        upcoming = 0  # the cycle wraps to frame 0, a keyframe
        for i in range(n - 1, -1, -1):
            if self.video[i].keyframe:
                upcoming = i
            nxt[i] = upcoming
        self._next_keyframe = nxt

    def next_keyframe(self, index: int) -> int:
        """Index of the first keyframe at or after `index`, cycling."""
        return self._next_keyframe[index % len(self.video)]

    def summary(self) -> dict[str, object]:
        """Sizes and rates of the media as sent (RTP payload bytes, no headers)."""
        seconds = len(self.video) / self.fps
        video_bytes = sum(len(f.data) for f in self.video)
        packets = sum(len(f.payloads) for f in self.video)
        audio_seconds = len(self.audio) * AUDIO_PTIME
        return {
            "video_codec": "VP8", "width": self.width, "height": self.height, "fps": self.fps,
            "video_frames": len(self.video), "video_seconds": seconds,
            "video_kbps": round(video_bytes * 8 / seconds / 1000, 1),
            "video_packets_per_second": round(packets / seconds, 1),
            "keyframes": list(self.keyframes),
            "keyframe_bytes": [len(self.video[i].data) for i in self.keyframes],
            "frame_bytes_median": sorted(len(f.data) for f in self.video)[len(self.video) // 2],
            "audio_codec": "opus", "audio_frames": len(self.audio), "audio_ptime_ms": AUDIO_PTIME * 1000,
            "audio_kbps": round(sum(len(a) for a in self.audio) * 8 / audio_seconds / 1000, 1),
            "max_payload": MAX_PAYLOAD,
        }


def vp8_payloads(frame: bytes, max_payload: int = MAX_PAYLOAD) -> tuple[bytes, ...]:
    """RTP payloads of one VP8 frame: near-equal chunks, each behind a 4-byte descriptor.

    The descriptor has a 15-bit PictureID of 0 (a sender patches it) and S=1 on the
    first packet only; the partition index is 0 (one partition per packet is not needed).
    """
    if max_payload <= VP8_DESCRIPTOR_SIZE:
        raise ValueError("max_payload must leave room for the VP8 descriptor")
    if not frame:
        raise ValueError("empty VP8 frame")
    room = max_payload - VP8_DESCRIPTOR_SIZE
    count = -(-len(frame) // room)
    base, extra = divmod(len(frame), count)  # the first `extra` chunks take one byte more
    first = build_vp8_descriptor(start=True, picture_id=0)
    rest = build_vp8_descriptor(start=False, picture_id=0)
    out = []
    pos = 0
    for i in range(count):
        end = pos + base + (1 if i < extra else 0)
        out.append((first if i == 0 else rest) + frame[pos:end])
        pos = end
    return tuple(out)


# -- the cache -------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """$TELESFU_MEDIA_CACHE, else $XDG_CACHE_HOME/telesfu/media, else ~/.cache/telesfu/media."""
    explicit = os.environ.get("TELESFU_MEDIA_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "telesfu" / "media"


def write_frames(path: Path, kind: int, frames: Iterable[tuple[bool, bytes]]) -> None:
    """Write a frame file atomically: header, then (flags, size, bytes) per frame."""
    items = list(frames)
    out = bytearray(_FILE_HEADER.pack(FRAME_FILE_MAGIC, FRAME_FILE_VERSION, kind, 0, len(items)))
    for keyframe, data in items:
        if len(data) > MAX_FRAME_SIZE:
            raise ValueError("frame too large for a frame file")
        out += _FRAME_HEADER.pack(FLAG_KEYFRAME if keyframe else 0, len(data))
        out += data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(out)
    os.replace(tmp, path)


def parse_frames(buf: bytes, kind: int) -> list[tuple[bool, bytes]] | None:
    """Frames of a frame file's bytes; None when truncated, of another kind or malformed."""
    if len(buf) < _FILE_HEADER.size:
        return None
    magic, version, file_kind, _, count = _FILE_HEADER.unpack_from(buf, 0)
    if magic != FRAME_FILE_MAGIC or version != FRAME_FILE_VERSION or file_kind != kind or count == 0:
        return None
    off = _FILE_HEADER.size
    frames: list[tuple[bool, bytes]] = []
    for _ in range(count):
        if off + _FRAME_HEADER.size > len(buf):
            return None
        flags, size = _FRAME_HEADER.unpack_from(buf, off)
        off += _FRAME_HEADER.size
        if size == 0 or size > MAX_FRAME_SIZE or off + size > len(buf):
            return None
        frames.append((bool(flags & FLAG_KEYFRAME), buf[off:off + size]))
        off += size
    return frames if off == len(buf) else None


def read_frames(path: Path, kind: int) -> list[tuple[bool, bytes]] | None:
    """Frames of a cached file; None when it is missing or unusable."""
    try:
        buf = path.read_bytes()
    except OSError:
        return None
    return parse_frames(buf, kind)


# -- encoding ----------------------------------------------------------------------------------------

def render_frame(index: int, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT,
                 texture: object = None) -> object:
    """One yuv420p picture (a numpy array of height*3/2 rows) of the moving pattern."""
    import numpy as np

    if texture is None:
        texture = _texture(width, height)
    tex = texture  # type: ignore[assignment]
    yy, xx = np.mgrid[0:height, 0:width]
    luma = ((xx * 255 // width + yy * 255 // height) // 2 + index * 4) % 256
    dx = (index * 3) % width
    dy = (index * 2) % height
    y = ((luma.astype(np.uint16) * 7 + tex[dy:dy + height, dx:dx + width]) // 8).astype(np.uint8)  # type: ignore[index]
    side = height // 6
    sx = int((width - side) * (0.5 + 0.5 * math.sin(index / 20)))
    sy = int((height - side) * (0.5 + 0.5 * math.cos(index / 27)))
    y[sy:sy + side, sx:sx + side] = 235
    block = max(4, width // 16)
    for bit in range(12):  # the frame number, least significant bit first
        x0 = 8 + bit * (block + 4)
        if x0 + block > width:
            break
        y[8:8 + block // 2, x0:x0 + block] = 235 if (index >> bit) & 1 else 16
    u = np.full((height // 2, width // 2), (96 + index) % 256, np.uint8)
    v = np.full((height // 2, width // 2), (160 - index) % 256, np.uint8)
    return np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])


def _texture(width: int, height: int) -> object:
    import numpy as np

    return np.random.default_rng(7).integers(0, 256, (height * 2, width * 2), dtype=np.uint16)


def encode_video(frames: int, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT, fps: int = VIDEO_FPS,
                 bitrate: int = VIDEO_BITRATE, keyframe_interval: int = KEYFRAME_INTERVAL) -> list[tuple[bool, bytes]]:
    """VP8 frames of the moving pattern, (keyframe, bytes) each; a keyframe every `keyframe_interval`."""
    import av
    from av.video.frame import PictureType

    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps)
    ctx.bit_rate = bitrate
    ctx.gop_size = keyframe_interval
    rate = str(bitrate)
    # Real-time CBR as a WebRTC sender runs it; keyframes capped at ~8 average frames.
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
                   "error-resilient": "1", "b": rate, "minrate": rate, "maxrate": rate,
                   "undershoot-pct": "95", "max-intra-rate": "800", "static-thresh": "0"}
    texture = _texture(width, height)
    out: list[tuple[bool, bytes]] = []
    for i in range(frames):
        img = render_frame(i, width, height, texture)
        frame = av.VideoFrame.from_ndarray(img, format="yuv420p")  # type: ignore[arg-type]
        frame.pts = i
        frame.time_base = ctx.time_base
        if i % keyframe_interval == 0:
            frame.pict_type = PictureType.I
        for packet in ctx.encode(frame):
            out.append((bool(packet.is_keyframe), bytes(packet)))
    for packet in ctx.encode(None):
        out.append((bool(packet.is_keyframe), bytes(packet)))
    if not out or not out[0][0]:
        raise RuntimeError("libvpx produced no leading keyframe")
    return out


def encode_audio(frames: int, bitrate: int = AUDIO_BITRATE) -> list[bytes]:
    """Opus frames (20 ms, 48 kHz stereo, CBR) of a 440 Hz tone with a slow tremolo."""
    import av
    import numpy as np

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_SAMPLE_RATE
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.time_base = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
    ctx.options = {"application": "voip", "frame_duration": "20", "vbr": "off"}
    n = AUDIO_FRAME_SAMPLES
    t = np.arange(frames * n) / AUDIO_SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    pcm = (wave * 32767).astype(np.int16)
    interleaved = np.repeat(pcm, AUDIO_CHANNELS).reshape(1, -1)
    out: list[bytes] = []
    for i in range(frames):
        chunk = np.ascontiguousarray(interleaved[:, i * n * AUDIO_CHANNELS:(i + 1) * n * AUDIO_CHANNELS])
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = i * n
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out[:frames] if len(out) >= frames else out


def load_media(directory: Path | None = None, *, seconds: int = MEDIA_SECONDS, bitrate: int = VIDEO_BITRATE,
               width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT, fps: int = VIDEO_FPS,
               keyframe_interval: int = KEYFRAME_INTERVAL, max_payload: int = MAX_PAYLOAD) -> EncodedMedia:
    """The pre-encoded media, from the cache or encoded now (about a second per 3 s of video)."""
    if seconds < 1:
        raise ValueError("seconds must be at least 1")
    directory = cache_dir() if directory is None else directory
    video_path = directory / (f"vp8-{width}x{height}-{fps}fps-{bitrate // 1000}k-gop{keyframe_interval}-"
                              f"{seconds}s-v{FRAME_FILE_VERSION}.frames")
    audio_path = directory / f"opus-{AUDIO_BITRATE // 1000}k-20ms-{seconds}s-v{FRAME_FILE_VERSION}.frames"
    video = read_frames(video_path, KIND_VIDEO)
    if video is None:
        t0 = time.perf_counter()
        video = encode_video(seconds * fps, width, height, fps, bitrate, keyframe_interval)
        _store(video_path, KIND_VIDEO, video)
        log.info("encoded %d VP8 frames in %.1f s -> %s", len(video), time.perf_counter() - t0, video_path)
    audio = read_frames(audio_path, KIND_AUDIO)
    if audio is None:
        audio = [(False, a) for a in encode_audio(int(seconds / AUDIO_PTIME))]
        _store(audio_path, KIND_AUDIO, audio)
    return EncodedMedia([EncodedFrame(data, key, max_payload) for key, data in video], [a for _, a in audio],
                        fps, width, height)


def _store(path: Path, kind: int, frames: list[tuple[bool, bytes]]) -> None:
    try:
        write_frames(path, kind, frames)
    except OSError as e:  # a read-only cache still lets the run go on
        log.warning("could not cache media in %s: %s", path, e)


# -- pacing --------------------------------------------------------------------------------------------

class PacedSender(Protocol):
    """What the pacer drives: a publisher that owns its packets and sequence state."""

    def send_audio_frame(self, now: float) -> None: ...

    def queue_video_frame(self, now: float) -> None: ...

    def send_video_packets(self, budget: int, now: float) -> int:
        """Send up to `budget` queued video packets; returns how many are still queued."""
        ...


class _Slot:
    __slots__ = ("sender", "audio_at", "video_at", "queued")

    def __init__(self, sender: PacedSender, audio_at: float, video_at: float) -> None:
        self.sender = sender
        self.audio_at = audio_at
        self.video_at = video_at
        self.queued = 0


class Pacer:
    """The one timer of a load-generating process: real-time audio and video for every publisher.

    Publishers start at a random phase within one video frame so their bursts interleave.
    A sender more than `max_late` behind (the process was starved) skips the frames it
    missed instead of sending them in a burst; those are counted in `skipped_*`.
    """

    __slots__ = ("fps", "frame_interval", "audio_ptime", "tick", "burst", "max_late", "clock", "_slots",
                 "_by_sender", "_handle", "_due", "_rng", "ticks", "late_sum", "late_max", "skipped_audio",
                 "skipped_video", "_loop")

    def __init__(self, fps: int = VIDEO_FPS, audio_ptime: float = AUDIO_PTIME, tick: float = DEFAULT_TICK,
                 burst: int = DEFAULT_BURST, max_late: float = DEFAULT_MAX_LATE,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None) -> None:
        if fps <= 0 or audio_ptime <= 0 or tick <= 0 or burst < 1 or max_late <= 0:
            raise ValueError("fps, ptime, tick, burst and max_late must be positive")
        self.fps = fps
        self.frame_interval = 1.0 / fps
        self.audio_ptime = audio_ptime
        self.tick = tick
        self.burst = burst
        self.max_late = max_late
        self.clock = clock
        self._slots: tuple[_Slot, ...] = ()
        self._by_sender: dict[int, _Slot] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._rng = random.Random(seed)
        self.ticks = 0
        self.late_sum = 0.0
        self.late_max = 0.0
        self.skipped_audio = 0
        self.skipped_video = 0

    def add(self, sender: PacedSender, phase: float | None = None) -> None:
        """Start pacing `sender`; its first frames are due `phase` s from now (random by default)."""
        if id(sender) in self._by_sender:
            return
        now = self.clock()
        if phase is None:
            phase = self._rng.random() * self.frame_interval
        slot = _Slot(sender, now + phase % self.audio_ptime, now + phase)
        self._by_sender[id(sender)] = slot
        self._slots = (*self._slots, slot)

    def remove(self, sender: PacedSender) -> None:
        slot = self._by_sender.pop(id(sender), None)
        if slot is not None:
            self._slots = tuple(s for s in self._slots if s is not slot)

    def __len__(self) -> int:
        return len(self._slots)

    def start(self) -> None:
        """Run on the current event loop until `stop`."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._due = self.clock() + self.tick
        self._handle = self._loop.call_later(self.tick, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _run(self) -> None:
        now = self.clock()
        late = now - self._due
        if late > 0:
            self.late_sum += late
            if late > self.late_max:
                self.late_max = late
        self.ticks += 1
        try:
            self.run_due(now)
        except Exception:
            log.exception("pacer: a sender failed")
        self._due += self.tick
        after = self.clock()
        if self._due < after:  # fell behind: do not try to catch up tick by tick
            self._due = after + self.tick
        assert self._loop is not None
        self._handle = self._loop.call_later(self._due - after, self._run)

    def run_due(self, now: float) -> None:
        """Send everything due at `now` (the timer's body; tests call it with their own clock)."""
        ptime = self.audio_ptime
        interval = self.frame_interval
        burst = self.burst
        floor = now - self.max_late
        for slot in self._slots:
            sender = slot.sender
            if slot.audio_at < floor:
                missed = int((now - slot.audio_at) / ptime)
                self.skipped_audio += missed
                slot.audio_at += missed * ptime
            while slot.audio_at <= now:
                sender.send_audio_frame(now)
                slot.audio_at += ptime
            if slot.video_at < floor:
                missed = int((now - slot.video_at) / interval)
                self.skipped_video += missed
                slot.video_at += missed * interval
            while slot.video_at <= now:
                sender.queue_video_frame(now)
                slot.video_at += interval
                slot.queued = 1
            if slot.queued:
                slot.queued = sender.send_video_packets(burst, now)

    def stats(self) -> dict[str, float]:
        return {"ticks": self.ticks, "late_mean_ms": self.late_sum / self.ticks * 1e3 if self.ticks else 0.0,
                "late_max_ms": self.late_max * 1e3, "skipped_audio_frames": self.skipped_audio,
                "skipped_video_frames": self.skipped_video}
