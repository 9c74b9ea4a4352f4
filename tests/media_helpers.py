"""Real aiortc peers for media-plane tests: a participant with a publish and a subscribe
peer connection, sending video whose colour names the sender and a frame counter drawn as
a bar, and decoding what it receives so tests can check the content.

aioice only gathers non-loopback host addresses: `loopback_only` (a fixture in the test
modules) patches that, and every RTCPeerConnection gets iceServers=[] so nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from av import VideoFrame

WIDTH, HEIGHT = 320, 240
COLOURS = {  # RGB; far apart after YUV 4:2:0 and VP8
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 30),
    "magenta": (210, 40, 200),
    "cyan": (40, 210, 210),
}
BAR_SLOTS = 16  # the frame counter mod 16 as the position of a white bar


def nearest_colour(rgb: np.ndarray) -> str:
    return min(COLOURS, key=lambda c: float(np.sum((np.array(COLOURS[c]) - rgb) ** 2)))


def decode_counter(img: np.ndarray) -> int:
    """The white bar's slot in the top band of the frame."""
    band = img[: HEIGHT // 8].mean(axis=(0, 2))  # brightness per column
    slot_w = WIDTH // BAR_SLOTS
    scores = [band[i * slot_w:(i + 1) * slot_w].mean() for i in range(BAR_SLOTS)]
    return int(np.argmax(scores))


class ColourTrack(VideoStreamTrack):
    """Solid colour frames with a white bar whose position is the frame counter mod 16."""

    def __init__(self, colour: str, fps: int = 30) -> None:
        super().__init__()
        self.colour = colour
        self.fps = fps
        self.sent = 0
        self._base = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        self._base[:, :] = COLOURS[colour]
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self.sent / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        img = self._base.copy()
        slot_w = WIDTH // BAR_SLOTS
        slot = self.sent % BAR_SLOTS
        img[: HEIGHT // 8, slot * slot_w:(slot + 1) * slot_w] = 255
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.sent * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


@dataclass
class Received:
    """What one subscriber decoded from one remote track."""

    kind: str
    frames: int = 0
    colours: dict[str, int] = field(default_factory=dict)
    counters: list[int] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None

    @property
    def main_colour(self) -> str | None:
        return max(self.colours, key=lambda c: self.colours[c]) if self.colours else None


PublishOffer = Callable[[str, str], Awaitable[str]]  # (participant id, offer sdp) -> answer sdp
SubscribeAnswer = Callable[[str, str], Awaitable[None]]


def rtc_config() -> RTCConfiguration:
    # max-bundle: with aiortc's default (balanced) policy, same-kind transceivers created from
    # one offer are pre-assigned to a secondary transport that BUNDLE then discards, so only
    # the first video of a multi-video subscribe offer would ever receive.
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class AiortcParticipant:
    def __init__(self, participant_id: str, colour: str | None, *, audio: bool = True, fps: int = 30) -> None:
        self.id = participant_id
        self.colour = colour
        self.pub: RTCPeerConnection | None = None
        self.sub = RTCPeerConnection(rtc_config())
        self.video = ColourTrack(colour, fps) if colour else None
        self.audio = AudioStreamTrack() if audio else None
        self.received: dict[str, Received] = {}  # subscribe mid -> what arrived on it
        self.track_info: dict[str, dict[str, Any]] = {}  # mid -> the SFU's description (participant, kind)
        self._tasks: list[asyncio.Task[None]] = []
        self.offers = 0

        @self.sub.on("track")
        def on_track(track: Any) -> None:
            mid = self._mid_of(track)
            rec = self.received.setdefault(mid, Received(track.kind))
            self._tasks.append(asyncio.ensure_future(self._consume(track, rec)))

    def _mid_of(self, track: Any) -> str:
        for t in self.sub.getTransceivers():
            if t.receiver.track is track:
                return str(t.mid)
        return f"?{id(track)}"

    async def _consume(self, track: Any, rec: Received) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                rec.frames += 1
                rec.first_at = rec.first_at or now
                rec.last_at = now
                if rec.kind == "video":
                    img = frame.to_ndarray(format="rgb24")
                    if img.shape[0] >= HEIGHT // 2:
                        body = img[HEIGHT // 4:, :].reshape(-1, 3).mean(axis=0)
                        c = nearest_colour(body)
                        rec.colours[c] = rec.colours.get(c, 0) + 1
                        rec.counters.append(decode_counter(img))
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def publish(self, publish_offer: PublishOffer, *, new_connection: bool = True) -> None:
        if new_connection or self.pub is None:
            if self.pub is not None:
                await self.pub.close()
            self.pub = RTCPeerConnection(rtc_config())
            if self.audio is not None:
                self.pub.addTransceiver(self.audio, direction="sendonly")
            if self.video is not None:
                self.pub.addTransceiver(self.video, direction="sendonly")
        offer = await self.pub.createOffer()
        await self.pub.setLocalDescription(offer)
        answer = await publish_offer(self.id, self.pub.localDescription.sdp)
        await self.pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def answer_subscribe_offer(self, sdp: str, tracks: list[dict[str, Any]]) -> str:
        self.offers += 1
        for t in tracks:
            self.track_info[str(t["mid"])] = t
        await self.sub.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        answer = await self.sub.createAnswer()
        await self.sub.setLocalDescription(answer)
        return str(self.sub.localDescription.sdp)

    def video_from(self, publisher_id: str) -> Received | None:
        for mid, info in self.track_info.items():
            if info.get("participant_id") == publisher_id and info.get("kind") == "video":
                return self.received.get(mid)
        return None

    def audio_from(self, publisher_id: str) -> Received | None:
        for mid, info in self.track_info.items():
            if info.get("participant_id") == publisher_id and info.get("kind") == "audio":
                return self.received.get(mid)
        return None

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()


class Signaling:
    """A minimal signaling loop for tests: worker events -> peers -> worker commands."""

    def __init__(self, subscribe_answer: SubscribeAnswer) -> None:
        self.peers: dict[str, AiortcParticipant] = {}
        self.subscribe_answer = subscribe_answer
        self.events: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        if event.get("type") == "subscribe_offer":
            peer = self.peers.get(event["participant_id"])
            if peer is not None:
                task = asyncio.ensure_future(self._answer(peer, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, peer: AiortcParticipant, event: dict[str, Any]) -> None:
        lock = self._locks.setdefault(peer.id, asyncio.Lock())
        async with lock:
            if peer.sub.signalingState == "closed":
                return  # the peer left while the offer was on its way
            sdp = await peer.answer_subscribe_offer(event["sdp"], event["tracks"])
            await self.subscribe_answer(peer.id, sdp)

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == t]


async def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class LossyUdpProxy:
    """A UDP relay between one client and the SFU that drops a share of SFU->client RTP.

    The client talks to `port`; the relay talks to the SFU from its own upstream socket, so
    the SFU sees the relay as the peer. Only RTP media (not STUN, DTLS or RTCP) is dropped,
    with a seeded generator: the loss is the same on every run.
    """

    def __init__(self, sfu_addr: tuple[str, int], loss: float, seed: int = 7) -> None:
        import random

        self.sfu_addr = sfu_addr
        self.loss = loss
        self.rng = random.Random(seed)
        self.client_addr: tuple[str, int] | None = None
        self.port = 0
        self.dropped = 0
        self.forwarded = 0
        self._down: asyncio.DatagramTransport | None = None
        self._up: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        proxy = self

        class Down(asyncio.DatagramProtocol):  # faces the client
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                proxy.client_addr = addr
                if proxy._up is not None:
                    proxy._up.sendto(data, proxy.sfu_addr)

        class Up(asyncio.DatagramProtocol):  # faces the SFU
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if proxy.client_addr is None or proxy._down is None:
                    return
                is_rtp = 128 <= data[0] <= 191 and len(data) > 1 and not 192 <= data[1] <= 223
                if is_rtp and proxy.rng.random() < proxy.loss:
                    proxy.dropped += 1
                    return
                proxy.forwarded += 1
                proxy._down.sendto(data, proxy.client_addr)

        self._down, _ = await loop.create_datagram_endpoint(Down, local_addr=("127.0.0.1", 0))
        self._up, _ = await loop.create_datagram_endpoint(Up, local_addr=("127.0.0.1", 0))
        self.port = self._down.get_extra_info("sockname")[1]

    def rewrite_candidates(self, sdp: str) -> str:
        """Point the SFU's host candidates (and m= ports) at the relay."""
        port = str(self.sfu_addr[1])
        out = []
        for line in sdp.split("\r\n"):
            if line.startswith("a=candidate:") and f" {port} " in line:
                line = line.replace(f" {port} ", f" {self.port} ")
            elif line.startswith("m=") and f" {port} " in line:
                line = line.replace(f" {port} ", f" {self.port} ", 1)
            out.append(line)
        return "\r\n".join(out)

    def close(self) -> None:
        for t in (self._down, self._up):
            if t is not None:
                t.close()
