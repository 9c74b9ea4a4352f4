"""`telesfu bench joins`: join latency and admitted joins per second of one node.

(1) aiortc and (2) Chromium (the reference web client, driven by Playwright) join a fresh
    appointment whose provider (an aiortc participant in this process) is already in the room
    publishing video. Measured: from `join` sent to the first remote video frame decoded, with
    (a) the waiting room off and (b) on, the provider admitting the client as soon as
    `participant_waiting` arrives. Each sample keeps its milestones (admission, subscribe offer,
    ICE, DTLS, first RTP, first frame) so the time can be split.
(3) Admitted joins per second: signaling-only clients (join, wait for `joined`, leave) across many
    appointments, `--joins-concurrency` at a time, for `--joins-seconds`, waiting room off.

The node is a `telesfu serve` subprocess on free loopback ports, owned by the bench, unless
`--target URL --api-key KEY` names a running one. aiortc's VP8 encoding and decoding, Chromium
and the node all share this machine's cores: on a small machine the figures include that
contention.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import bench_argv, machine_info, percentile

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds --headless itself; a --disable-features switch here would replace Playwright's own.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]

AIM_AFTER_ADMISSION_P50_MS = 500.0  # first remote frame after admission, loopback

PEER_AIORTC = "aiortc"
PEER_CHROMIUM = "chromium"
VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FPS = 640, 360, 30
BAR_POSITIONS = 16
PROVIDER_WARMUP_SECONDS = 1.2  # > the SFU's keyframe request interval (0.5 s) and retry (1 s)
START_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
METRICS_SETTLE_SECONDS = 2.2  # worker stats reach /metrics every 2 s
JOINS_ROSTER = 15  # clients per appointment in the joins/s loop (with the provider: the default capacity, 16)
MINT_CONCURRENCY = 32

# Milestones, in the order they normally happen. Keys are `msg_<type>` (received), `sent_<type>`
# (sent), `sub_*` (the subscribe peer connection), `video_*` (the first remote video) and
# `provider_*` (the provider's side, on the same clock): `provider_first_pli` is the first PLI
# after join, `provider_pli` the last one before the first video packet (the one answered).
# In Chromium every mark is taken when the page's main thread handles the event, which can be
# well after the frame or packet arrived.
MILESTONES = (
    "msg_waiting", "provider_participant_waiting", "provider_sent_admit", "msg_admitted", "msg_joined",
    "msg_subscribe_offer", "sent_subscribe_answer", "provider_first_pli", "sub_ice_connected", "sub_connected",
    "provider_pli", "video_rtp", "video_keyframe_rtp", "video_decoded",
)
# Consecutive segments of the join, for the breakdown: (name, from, to).
SEGMENTS = (
    ("admission", "sent_join", "admitted"),
    ("to subscribe offer", "admitted", "msg_subscribe_offer"),
    ("answer", "msg_subscribe_offer", "sent_subscribe_answer"),
    ("ICE", "sent_subscribe_answer", "sub_ice_connected"),
    ("DTLS", "sub_ice_connected", "sub_connected"),
    ("keyframe request", "sub_connected", "provider_pli"),
    ("keyframe delivery", "provider_pli", "video_rtp"),
    ("to first frame", "video_rtp", "video_decoded"),
)


# -- command line ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="URL", help="a running node's base URL (default: start one on free ports)")
    p.add_argument("--api-key", metavar="KEY", help="the control API key of --target")
    p.add_argument("--signing-key", metavar="KID=SECRET",
                   help="mint join tokens locally with this key instead of through the API (with --target)")
    p.add_argument("--workers", type=int, default=0,
                   help="media workers of the node the bench starts (default: 0, one per core)")
    p.add_argument("--aiortc-samples", type=int, default=10,
                   help="aiortc joins per waiting-room setting (default: 10; 0 skips)")
    p.add_argument("--chromium-samples", type=int, default=5,
                   help="Chromium joins per waiting-room setting (default: 5; 0 skips)")
    p.add_argument("--waiting-room", choices=("off", "on", "both"), default="both",
                   help="which waiting-room settings to measure (default: both)")
    p.add_argument("--sample-timeout", type=float, default=20.0,
                   help="seconds one join may take to its first frame before it counts as failed (default: 20)")
    p.add_argument("--latency-seconds", type=float, default=600.0,
                   help="time bound of all latency samples together (default: 600)")
    p.add_argument("--provider-warmup", type=float, default=PROVIDER_WARMUP_SECONDS,
                   help="seconds the provider publishes before the client joins (default: %(default)s; below "
                        "0.5 s the SFU's keyframe request rate limit delays the first frame)")
    p.add_argument("--no-client-video", action="store_true",
                   help="the measured aiortc client publishes no camera (default: it publishes, as the web client does)")
    p.add_argument("--metrics-settle", type=float, default=METRICS_SETTLE_SECONDS,
                   help="seconds to wait for the workers' counters to reach /metrics after each configuration "
                        "(default: %(default)s; 0 skips the server's keyframe counters)")
    p.add_argument("--poll-ms", type=float, default=20.0,
                   help="Chromium: getStats polling interval for the first decoded frame (default: 20)")
    p.add_argument("--joins-seconds", type=float, default=10.0,
                   help="time bound of the joins/s loop (default: 10; 0 skips)")
    p.add_argument("--joins-concurrency", type=int, default=20,
                   help="concurrent signaling clients in the joins/s loop (default: 20)")
    p.add_argument("--joins-max", type=int, default=40000,
                   help="count bound of the joins/s loop: tokens prepared in advance (default: 40000)")
    p.add_argument("--json", metavar="FILE", help="write every sample and figure as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write the latency distributions as a PNG")


def run(args: argparse.Namespace) -> int:
    if args.target and not args.api_key:
        print("telesfu bench joins: --target needs --api-key", file=sys.stderr)
        return 2
    if args.signing_key and "=" not in args.signing_key:
        print("telesfu bench joins: --signing-key is KID=SECRET", file=sys.stderr)
        return 2
    if (args.aiortc_samples < 0 or args.chromium_samples < 0 or args.joins_seconds < 0 or args.joins_concurrency < 1
            or args.joins_max < 1 or args.sample_timeout <= 0 or args.poll_ms <= 0 or args.provider_warmup < 0
            or args.metrics_settle < 0):
        print("telesfu bench joins: counts and times must not be negative, concurrency at least 1",
              file=sys.stderr)
        return 2
    import logging

    loggers = [logging.getLogger(name) for name in ("aioice", "aiortc", "telesfu")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # aioice's and aiortc's warnings would break the progress lines
        lg.setLevel(logging.ERROR)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telesfu bench joins",
                                     description="join latency to the first remote frame, and admitted joins per second")
    add_arguments(parser)
    return run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))


# -- small pure helpers ----------------------------------------------------------------------------------



def summary_ms(values_ms: Sequence[float]) -> dict[str, float]:
    """count, p50, p95, p99, min, max and mean of values already in milliseconds."""
    s = sorted(values_ms)
    if not s:
        return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "min_ms": 0.0, "max_ms": 0.0,
                "mean_ms": 0.0}
    return {"count": len(s), "p50_ms": round(percentile(s, 0.50), 2), "p95_ms": round(percentile(s, 0.95), 2),
            "p99_ms": round(percentile(s, 0.99), 2), "min_ms": round(s[0], 2), "max_ms": round(s[-1], 2),
            "mean_ms": round(sum(s) / len(s), 2)}


def vp8_keyframe_start(payload: bytes) -> bool:
    """True when an RTP payload (VP8 payload descriptor, RFC 7741) starts a keyframe."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:  # not the start of partition 0
        return False
    i = 1
    if b0 & 0x80:  # X: extension byte follows
        if n < 2:
            return False
        x = payload[1]
        i = 2
        if x & 0x80:  # I: picture id, 7 or 15 bits
            if n <= i:
                return False
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            i += 1
    return n > i and not payload[i] & 0x01  # P bit of the VP8 payload header: 0 is a keyframe


def relative_ms(marks: dict[str, float], origin: str) -> dict[str, float]:
    """Every mark in milliseconds after `origin` (which must be present)."""
    t0 = marks[origin]
    return {k: round((v - t0) * 1e3, 2) for k, v in sorted(marks.items(), key=lambda kv: kv[1])}


def segments(rel: dict[str, float], waiting_room: bool) -> dict[str, float]:
    """The join split into consecutive segments (ms); a missing milestone takes the previous one's time.

    Milestones can overlap (ICE may complete before the answer is sent): each segment is measured
    from the latest milestone so far, so the segments are never negative and add up to the total.
    """
    at = dict(rel)
    at["admitted"] = at.get("msg_admitted" if waiting_room else "msg_joined", at.get("msg_joined", 0.0))
    out: dict[str, float] = {}
    last = at.get("sent_join", 0.0)
    for name, _, end in SEGMENTS:
        t = at.get(end)
        if t is None:
            out[name] = 0.0
            continue
        out[name] = round(max(0.0, t - last), 2)
        last = max(last, t)
    return out


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the machine ---------------------------------------------------------------------------------------



def _clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def tree_cpu_seconds(root: int) -> tuple[float, float]:
    """User+system CPU seconds of a process, and of it with all its descendants, from /proc.

    The subtree figure adds each process's reaped children (cutime, cstime), so renderers and
    workers that exited inside the subtree still count.
    """
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    own: dict[int, float] = {}
    tick = _clock_ticks()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry)
        parent[pid] = int(fields[1])
        own[pid] = (int(fields[11]) + int(fields[12])) / tick
        cpu[pid] = own[pid] + (int(fields[13]) + int(fields[14])) / tick
    total = 0.0
    for pid, c in cpu.items():
        p, hops = pid, 0
        while p and p != root and hops < 64:
            p, hops = parent.get(p, 0), hops + 1
        if p == root:
            total += c
    return own.get(root, 0.0), total


def system_busy_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = _clock_ticks()
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / tick, (v[7] if len(v) > 7 else 0) / tick


class CpuWindow:
    """Cores used over a phase: the machine, the node's process tree, this process (aiortc included),
    the browser (this process's other descendants: Playwright's driver and Chromium) and the rest."""

    __slots__ = ("node_pid", "_t0", "_busy0", "_steal0", "_node0", "_own0", "_tree0")

    def __init__(self, node_pid: int) -> None:
        self.node_pid = node_pid
        self._t0 = time.perf_counter()
        self._busy0, self._steal0 = system_busy_seconds()
        self._node0 = tree_cpu_seconds(node_pid)[1] if node_pid else 0.0
        self._own0, self._tree0 = tree_cpu_seconds(os.getpid())

    def close(self) -> dict[str, float]:
        wall = max(1e-9, time.perf_counter() - self._t0)
        busy, steal = system_busy_seconds()
        node = (tree_cpu_seconds(self.node_pid)[1] - self._node0) if self.node_pid else 0.0
        own, tree = tree_cpu_seconds(os.getpid())
        own -= self._own0
        browser = max(0.0, (tree - self._tree0) - own - node)  # an owned node is this process's child too
        machine = busy - self._busy0
        return {"machine_busy_cores": round(machine / wall, 3), "steal_cores": round((steal - self._steal0) / wall, 3),
                "node_cores": round(node / wall, 3), "bench_process_cores": round(own / wall, 3),
                "browser_cores": round(browser / wall, 3),
                "other_cores": round(max(0.0, machine - node - own - browser) / wall, 3)}


# -- the node ----------------------------------------------------------------------------------------------

def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_range(count: int) -> int:
    """A base port such that base .. base+count-1 are free UDP ports on 127.0.0.1."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for i in range(count):
                t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(t)
                t.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError(f"no range of {count} free UDP ports")


def telesfu_executable() -> str:
    beside = Path(sys.executable).parent / "telesfu"
    if beside.exists():
        return str(beside)
    found = shutil.which("telesfu")
    if found is None:
        raise RuntimeError("the telesfu command is not installed in this environment (pip install -e .)")
    return found


class OwnedNode:
    """A `telesfu serve` subprocess on 127.0.0.1: in-memory store, its own API and signing keys."""

    def __init__(self, workers: int, extra_env: dict[str, str] | None = None) -> None:
        self.workers = workers or len(os.sched_getaffinity(0))
        self.extra_env = dict(extra_env or {})  # TELESFU_* settings of a test or bench of its own
        self.api_key = self.extra_env.get("TELESFU_AUTH_API_KEYS") or secrets.token_urlsafe(24)
        self.signing = ("bench", secrets.token_hex(24))
        self.http_port = free_tcp_port()
        self.udp_port = free_udp_range(self.workers)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.logdir = Path(tempfile.mkdtemp(prefix="telesfu-bench-joins-"))
        self.log_path = self.logdir / "telesfu-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELESFU_")}
        env.update({
            "TELESFU_HTTP_HOST": "127.0.0.1",
            "TELESFU_HTTP_PORT": str(self.http_port),
            "TELESFU_HTTP_PUBLIC_URL": self.url,
            "TELESFU_MEDIA_UDP_PORT": str(self.udp_port),
            "TELESFU_MEDIA_WORKERS": str(self.workers),
            "TELESFU_MEDIA_LISTEN_IPS": "127.0.0.1",
            "TELESFU_MEDIA_ALLOWED_SOURCE_NETWORKS": "127.0.0.0/8",
            "TELESFU_AUTH_API_KEYS": self.api_key,
            "TELESFU_TOKENS_KEYS": f"{self.signing[0]}={self.signing[1]}",
            "TELESFU_STORE_URL": "memory://",
            # every simulated participant connects from 127.0.0.1: no per-source caps
            "TELESFU_HTTP_MAX_CONNECTIONS_PER_SOURCE": "0",
            "TELESFU_SIGNALING_MAX_UNJOINED_PER_SOURCE": "1000",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    async def start(self, http: aiohttp.ClientSession) -> None:
        with self.log_path.open("wb") as log_file:
            self.proc = subprocess.Popen([telesfu_executable(), "serve"], env=self.env(), stdout=log_file,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"telesfu serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                async with http.get(self.url + "/readyz") as resp:
                    last = f"/readyz -> {resp.status}"
                    if resp.status == 200:
                        return
            except aiohttp.ClientError as e:
                last = repr(e)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"telesfu serve was not ready within {START_TIMEOUT:.0f} s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def cleanup(self) -> None:
        shutil.rmtree(self.logdir, ignore_errors=True)


class Control:
    """The control API of the node under test, and join tokens for it."""

    def __init__(self, url: str, api_key: str, http: aiohttp.ClientSession, signing: tuple[str, str] | None) -> None:
        self.url = url.rstrip("/")
        self.ws_url = self.url.replace("http", "ws", 1) + "/v1/rtc"
        self.http = http
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.tokens: Any = None
        if signing is not None:
            from control.tokens import TokenService

            self.tokens = TokenService({signing[0]: signing[1]})  # the default ttl: a node refuses longer

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body, headers=self.headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def _put(self, path: str, body: dict[str, Any]) -> None:
        status, out = await self.call("PUT", path, body)
        if status not in (200, 201):
            raise RuntimeError(f"PUT {path} -> {status} {out}")

    async def provider(self, pid: str, *, waiting_room: bool) -> None:
        await self._put(f"/v1/providers/{pid}", {"name": f"Dr. {pid}", "teletherapy_enabled": True,
                                                 "waiting_room_enabled": waiting_room})

    async def client(self, cid: str) -> None:
        await self._put(f"/v1/clients/{cid}", {"name": f"Client {cid}", "portal_account_active": True})

    async def appointment(self, apt: str, provider: str, clients: list[str]) -> None:
        start = datetime.now(UTC) - timedelta(minutes=1)
        await self._put(f"/v1/appointments/{apt}", {
            "provider_id": provider, "client_ids": clients, "telehealth": True, "starts_at": rfc3339(start),
            "ends_at": rfc3339(start + timedelta(minutes=50)), "status": "scheduled"})

    async def token(self, apt: str, pid: str, role: str) -> str:
        if self.tokens is not None:
            from control.domain.models import Role

            r = Role.PROVIDER if role == "provider" else Role.CLIENT
            name = f"Dr. {pid}" if role == "provider" else f"Client {pid}"
            return str(self.tokens.mint(pid, r, apt, name).token)
        status, out = await self.call("POST", f"/v1/appointments/{apt}/tokens", {"participant_id": pid})
        if status != 201:
            raise RuntimeError(f"minting a token for {pid} in {apt} -> {status} {out}")
        return str(out["token"])

    def join_url(self, token: str) -> str:
        return f"{self.url}/join#token={token}"

    async def end_room(self, apt: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await self.call("DELETE", f"/v1/rooms/{apt}")

    async def media_counters(self) -> dict[str, float]:
        """Keyframe requests, keyframe waits and the server's join-to-first-media histogram, from /metrics."""
        want = {"telesfu_media_keyframe_requests_total": "keyframe_requests",
                "telesfu_media_keyframe_waits_total": "keyframe_waits",
                "telesfu_join_to_first_media_seconds_sum": "join_to_first_media_sum_s",
                "telesfu_join_to_first_media_seconds_count": "join_to_first_media_count"}
        out: dict[str, float] = {}
        try:
            async with self.http.get(self.url + "/metrics") as resp:
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError):
            return out
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name, _, rest = line.partition("{") if "{" in line.split(" ")[0] else line.partition(" ")
            key = want.get(name.strip())
            if key is None:
                continue
            labels = rest.split("}", 1)[0] if "}" in rest else ""
            if key == "keyframe_requests":
                key = "keyframe_requests_out" if 'direction="out"' in labels else "keyframe_requests_in"
            with contextlib.suppress(ValueError, IndexError):
                out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


# -- timing marks --------------------------------------------------------------------------------------

class Marks:
    """First time (perf_counter) each named event happened."""

    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        if name not in self.t:
            self.t[name] = time.perf_counter() if at is None else at


# -- aiortc participants -------------------------------------------------------------------------------

def _rtc_config() -> Any:
    from aiortc import RTCBundlePolicy, RTCConfiguration

    # max-bundle: one transport for every m-line of a subscribe offer, as browsers do
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def _bar_frames(width: int, height: int) -> list[Any]:
    """YUV 4:2:0 frames of a grey picture with a white bar in one of BAR_POSITIONS places."""
    import numpy as np

    frames = []
    slot = width // BAR_POSITIONS
    for i in range(BAR_POSITIONS):
        yuv = np.full((height * 3 // 2, width), 128, np.uint8)
        yuv[:height, :] = 90
        yuv[: height // 6, i * slot:(i + 1) * slot] = 235
        frames.append(yuv)
    return frames


def _make_bar_track() -> Any:
    from aiortc.mediastreams import VideoStreamTrack
    from av import VideoFrame

    frames = _bar_frames(VIDEO_WIDTH, VIDEO_HEIGHT)

    class BarTrack(VideoStreamTrack):
        """A camera stand-in: VIDEO_FPS frames per second with a moving bar."""

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0

        async def recv(self) -> VideoFrame:
            pts, time_base = await self.next_timestamp()
            frame = VideoFrame.from_ndarray(frames[self.sent % BAR_POSITIONS], format="yuv420p")
            frame.pts = pts
            frame.time_base = time_base
            self.sent += 1
            return frame

    return BarTrack()


class AiortcPeer:
    """A participant's two aiortc peer connections; marks its subscribe side's milestones."""

    def __init__(self, marks: Marks, *, video: bool, audio: bool = True) -> None:
        from aiortc import RTCPeerConnection
        from aiortc.mediastreams import AudioStreamTrack

        self.marks = marks
        self.sub = RTCPeerConnection(_rtc_config())
        self.pub: Any = None
        self.video = _make_bar_track() if video else None
        self.audio = AudioStreamTrack() if audio else None
        self.frames = 0
        self.first_rtp_keyframe: bool | None = None
        self.pli_at: list[float] = []  # perf_counter of each PLI/FIR this peer's video sender heard
        self._tasks: list[asyncio.Task[None]] = []
        self._hooked: set[int] = set()
        self.sub.on("track", self._on_track)
        self.sub.on("iceconnectionstatechange", self._on_ice)
        self.sub.on("connectionstatechange", self._on_state)

    def _on_ice(self) -> None:
        if self.sub.iceConnectionState in ("connected", "completed"):
            self.marks.mark("sub_ice_connected")

    def _on_state(self) -> None:
        self.marks.mark(f"sub_{self.sub.connectionState}")

    def _on_track(self, track: Any) -> None:
        self._tasks.append(asyncio.ensure_future(self._drain(track)))

    async def _drain(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                await track.recv()
                if track.kind == "video":
                    self.marks.mark("video_decoded")
                    self.frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            return

    def _hook_video_receivers(self) -> None:
        """Mark the first video RTP packet (and whether it starts a VP8 keyframe) as aiortc receives it."""
        for t in self.sub.getTransceivers():
            if t.kind != "video" or id(t.receiver) in self._hooked:
                continue
            self._hooked.add(id(t.receiver))
            vp8 = frozenset(c.payloadType for c in getattr(t, "_codecs", []) if c.mimeType.lower() == "video/vp8")
            receiver = t.receiver
            setattr(receiver, "_handle_rtp_packet", _first_rtp_hook(receiver._handle_rtp_packet, self, vp8))  # noqa: B010

    def _hook_pli(self, sender: Any) -> None:
        """Mark when this publisher's video sender first hears a PLI or FIR (the SFU asking for a keyframe)."""
        from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

        original = sender._handle_rtcp_packet
        pli_at = self.pli_at

        async def handle(packet: Any) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                pli_at.append(time.perf_counter())
            await original(packet)

        setattr(sender, "_handle_rtcp_packet", handle)  # noqa: B010

    async def publish(self, offer_answer: Callable[[str], Awaitable[str]], watch_pli: bool = False) -> None:
        from aiortc import RTCPeerConnection, RTCSessionDescription

        self.pub = RTCPeerConnection(_rtc_config())
        if self.audio is not None:
            self.pub.addTransceiver(self.audio, direction="sendonly")
        if self.video is not None:
            tr = self.pub.addTransceiver(self.video, direction="sendonly")
            if watch_pli:
                self._hook_pli(tr.sender)
        await self.pub.setLocalDescription(await self.pub.createOffer())
        answer = await offer_answer(self.pub.localDescription.sdp)
        await self.pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def answer(self, sdp: str) -> str:
        from aiortc import RTCSessionDescription

        await self.sub.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        self._hook_video_receivers()
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        return str(self.sub.localDescription.sdp)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pc in (self.pub, self.sub):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()


def _first_rtp_hook(original: Callable[[Any, int], Awaitable[None]], peer: AiortcPeer,
                    vp8: frozenset[int]) -> Callable[[Any, int], Awaitable[None]]:
    """Wrap an aiortc receiver's RTP entry point to mark the first video packet and the first keyframe start."""
    marks = peer.marks

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        if "video_keyframe_rtp" not in marks.t and packet.payload:
            now = time.perf_counter()
            keyframe = packet.payload_type in vp8 and vp8_keyframe_start(packet.payload)
            if "video_rtp" not in marks.t:
                marks.mark("video_rtp", now)
                peer.first_rtp_keyframe = keyframe
            if keyframe:
                marks.mark("video_keyframe_rtp", now)
        await original(packet, arrival_time_ms)

    return handle


class Signaling:
    """One participant's WebSocket on /v1/rtc: marks message times, answers offers, admits on request."""

    def __init__(self, control: Control, token: str, marks: Marks, peer: AiortcPeer | None = None, *,
                 prefix: str = "", admit: bool = False, publish_on_join: bool = False,
                 watch_pli: bool = False) -> None:
        self.control = control
        self.token = token
        self.marks = marks
        self.peer = peer
        self.prefix = prefix  # mark names of a second participant on the same Marks ("provider_")
        self.admit = admit
        self.publish_on_join = publish_on_join
        self.watch_pli = watch_pli
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.types: list[str] = []
        self.last: dict[str, dict[str, Any]] = {}  # the latest message of each type
        self.errors: list[str] = []
        self.close_code: int | None = None
        self._arrived = asyncio.Event()
        self._publish_answer: asyncio.Future[str] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answering = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        self.ws = await self.control.http.ws_connect(self.control.ws_url, heartbeat=None, autoping=True)
        self._reader = asyncio.ensure_future(self._read())

    async def join(self) -> None:
        assert self.ws is not None
        frame = json.dumps({"type": "join", "token": self.token})
        self.marks.mark(self.prefix + "sent_join")
        await self.ws.send_str(frame)

    async def send(self, d: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(d))

    def _spawn(self, coro: Awaitable[None]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            d = json.loads(m.data)
            t = str(d.get("type", ""))
            self.marks.mark(f"{self.prefix}msg_{t}", now)
            self.types.append(t)
            self.last[t] = d
            if t == "participant_waiting" and self.admit:
                pid = str(d["participant"]["participant_id"])
                self.marks.mark(f"{self.prefix}sent_admit")
                await self.send({"type": "admit", "participant_id": pid})
            elif t == "subscribe_offer" and self.peer is not None:
                self._spawn(self._answer(str(d["sdp"])))
            elif t == "joined" and self.publish_on_join and self.peer is not None:
                self._spawn(self.publish())
            elif t == "publish_answer" and self._publish_answer is not None and not self._publish_answer.done():
                self._publish_answer.set_result(str(d["sdp"]))
            elif t == "error":
                self.errors.append(f"{d.get('code')}: {d.get('message')}")
            self._arrived.set()
        self.close_code = self.ws.close_code
        self._arrived.set()

    async def _answer(self, sdp: str) -> None:
        assert self.peer is not None
        async with self._answering:
            try:
                answer = await self.peer.answer(sdp)
                self.marks.mark(f"{self.prefix}sent_subscribe_answer")
                await self.send({"type": "subscribe_answer", "sdp": answer})
            except Exception as e:  # kept for the report; a lost answer would otherwise be a silent timeout
                self.errors.append(f"subscribe answer failed: {type(e).__name__}: {e}")

    async def publish(self) -> None:
        assert self.peer is not None

        async def offer_answer(sdp: str) -> str:
            self._publish_answer = asyncio.get_running_loop().create_future()
            await self.send({"type": "publish_offer", "sdp": sdp})
            return await asyncio.wait_for(self._publish_answer, HTTP_TIMEOUT)

        try:
            await self.peer.publish(offer_answer, self.watch_pli)
        except Exception as e:
            self.errors.append(f"publish failed: {type(e).__name__}: {e}")

    async def wait_for(self, t: str, timeout: float) -> None:
        async def loop() -> None:
            while t not in self.types:
                if self._reader is not None and self._reader.done():
                    raise RuntimeError(f"closed ({self.close_code}) before {t}; got {self.types}; {self.errors}")
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_closed(self) -> int | None:
        """Until the server closes the socket (or it drops); its close code."""
        if self._reader is not None:
            await asyncio.gather(asyncio.shield(self._reader), return_exceptions=True)
        return self.close_code

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.send({"type": "leave"})
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(self._reader, return_exceptions=True), 5)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.peer is not None:
            await self.peer.close()


async def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        await asyncio.sleep(0.005)


@dataclass(frozen=True, slots=True)
class SampleSettings:
    timeout: float = 20.0  # join to first frame, and each setup step
    warmup: float = PROVIDER_WARMUP_SECONDS
    client_video: bool = True  # the aiortc client publishes a camera and microphone, as the web client does


@dataclass(slots=True)
class Room:
    """One sample's appointment with its provider in the room, publishing video."""

    appointment: str
    provider_id: str
    client_id: str
    client_token: str
    provider: Signaling
    provider_marks: Marks


async def open_room(control: Control, waiting_room: bool, cfg: SampleSettings) -> Room:
    """A fresh provider, client and appointment; the provider joins, publishes and admits whoever waits."""
    prov, cl, apt = uid("bj-prov"), uid("bj-client"), uid("bj-apt")
    await control.provider(prov, waiting_room=waiting_room)
    await control.client(cl)
    await control.appointment(apt, prov, [cl])
    ptoken = await control.token(apt, prov, "provider")
    ctoken = await control.token(apt, cl, "client")
    pmarks = Marks()
    peer = AiortcPeer(pmarks, video=True)
    sig = Signaling(control, ptoken, pmarks, peer, admit=True, watch_pli=True)
    room = Room(apt, prov, cl, ctoken, sig, pmarks)
    try:
        await sig.connect()
        await sig.join()
        await sig.wait_for("joined", cfg.timeout)
        await sig.publish()
        if sig.errors:
            raise RuntimeError(f"provider: {sig.errors}")
        assert peer.pub is not None
        await _wait(lambda: peer.pub.connectionState == "connected", cfg.timeout, "the provider's publish connection")
        await asyncio.sleep(cfg.warmup)
    except BaseException:
        await close_room(control, room)
        raise
    return room


def provider_view(room: Room, since: float, first_rtp: float | None) -> tuple[dict[str, float], int]:
    """The provider's side of one join, on this process's clock: when it heard `participant_waiting`
    and sent `admit`, its first PLI after `since` and the last one before the client's first video
    packet; and how many PLIs it heard in between."""
    pm = room.provider_marks.t
    out = {dst: pm[src] for src, dst in (("msg_participant_waiting", "provider_participant_waiting"),
                                         ("sent_admit", "provider_sent_admit")) if pm.get(src, -1.0) >= since}
    peer = room.provider.peer
    plis = [t for t in (peer.pli_at if peer is not None else ()) if t >= since and (first_rtp is None or t <= first_rtp)]
    if plis:
        out["provider_first_pli"] = plis[0]
        out["provider_pli"] = plis[-1]
    return out, len(plis)


async def close_room(control: Control, room: Room) -> None:
    await room.provider.close()
    await control.end_room(room.appointment)


def _admission_origin(waiting_room: bool) -> str:
    """The client's own view of being let in: `admitted` with the waiting room on, else `joined`."""
    return "msg_admitted" if waiting_room else "msg_joined"


def _sample_record(peer: str, index: int, waiting_room: bool, marks: dict[str, float],
                   extra: dict[str, Any], error: str | None) -> dict[str, Any]:
    rel = relative_ms(marks, "sent_join") if "sent_join" in marks else {}
    total = rel.get("video_decoded")
    origin = rel.get(_admission_origin(waiting_room))
    after = round(total - origin, 2) if total is not None and origin is not None else None
    if error is None and total is None:
        error = "no video frame decoded"
    return {"peer": peer, "index": index, "waiting_room": waiting_room,
            "total_ms": total, "after_admission_ms": after,
            "milestones_ms": {k: v for k, v in rel.items()},
            "segments_ms": segments(rel, waiting_room) if total is not None else {},
            **extra, "error": error}


async def aiortc_sample(control: Control, index: int, waiting_room: bool, cfg: SampleSettings) -> dict[str, Any]:
    """One aiortc client joins a room whose provider publishes; until its first decoded remote frame."""
    timeout = cfg.timeout
    room = await open_room(control, waiting_room, cfg)
    marks = Marks()
    peer = AiortcPeer(marks, video=cfg.client_video, audio=cfg.client_video)
    sig = Signaling(control, room.client_token, marks, peer, publish_on_join=cfg.client_video)
    error: str | None = None
    try:
        await sig.connect()
        await sig.join()
        await _wait(lambda: "video_decoded" in marks.t or sig.close_code is not None, timeout,
                    "the first remote video frame")
        if "video_decoded" not in marks.t:
            error = f"closed {sig.close_code}: {sig.errors or sig.types}"
    except Exception as e:
        error = f"{type(e).__name__}: {e}; got {sig.types}; {sig.errors}"
    finally:
        plis = 0
        if "sent_join" in marks.t:
            seen, plis = provider_view(room, marks.t["sent_join"], marks.t.get("video_rtp"))
            for k, v in seen.items():
                marks.mark(k, v)
        extra = {"first_rtp_keyframe": peer.first_rtp_keyframe, "provider_plis_before_first_rtp": plis,
                 "client_errors": list(sig.errors)}
        await sig.close()
        await close_room(control, room)
    return _sample_record(PEER_AIORTC, index, waiting_room, marks.t, extra, error)


# -- Chromium (the reference web client) ---------------------------------------------------------------

# Runs in the page before app.js: wraps WebSocket and RTCPeerConnection to mark, with
# performance.now(), when join is sent, each message type first arrives, the subscribe peer
# connection reaches ICE connected and connected (DTLS), and (polling getStats every POLL ms
# from join on) when its inbound video first has packets and a decoded frame.
_INSTRUMENT_JS = """
(() => {
  if (window.__bench) return;
  const B = { t: {}, subPc: null, done: false, stats: null, error: "", waiters: [], poll: %(poll)s };
  window.__bench = B;
  const mark = (k) => { if (!(k in B.t)) B.t[k] = performance.now(); };
  const typeOf = (s) => { const m = /^\\{"type":"([a-z_]+)"/.exec(s); return m ? m[1] : ""; };
  document.addEventListener("click", (e) => {
    if (e.target && e.target.closest && e.target.closest("#join-btn")) mark("click");
  }, true);
  const NativeWS = window.WebSocket;
  const nativeSend = NativeWS.prototype.send;
  NativeWS.prototype.send = function (data) {
    if (typeof data === "string") {
      const t = typeOf(data);
      if (t) { mark("sent_" + t); if (t === "join") startPoll(); }
    }
    return nativeSend.call(this, data);
  };
  window.WebSocket = class extends NativeWS {
    constructor(...args) {
      super(...args);
      mark("ws_created");
      this.addEventListener("open", () => mark("ws_open"));
      this.addEventListener("message", (ev) => {
        if (typeof ev.data === "string") { const t = typeOf(ev.data); if (t) mark("msg_" + t); }
      });
    }
  };
  const NativePC = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePC {
    constructor(...args) {
      super(...args);
      this.addEventListener("iceconnectionstatechange", () => {
        const s = this.iceConnectionState;
        if (this === B.subPc && (s === "connected" || s === "completed")) mark("sub_ice_connected");
      });
      this.addEventListener("connectionstatechange", () => {
        mark((this === B.subPc ? "sub_" : "pub_") + this.connectionState);
      });
    }
    setRemoteDescription(desc, ...rest) {
      if (desc && desc.type === "offer" && !B.subPc) B.subPc = this;
      return super.setRemoteDescription(desc, ...rest);
    }
  };
  let polling = false;
  async function startPoll() {
    if (polling) return;
    polling = true;
    while (!B.done) {
      const pc = B.subPc;
      if (pc) {
        try {
          const report = await pc.getStats();
          report.forEach((s) => {
            if (s.type !== "inbound-rtp" || s.kind !== "video") return;
            if ((s.packetsReceived || 0) > 0) mark("video_rtp");
            if ((s.framesDecoded || 0) > 0 && !B.done) {
              mark("video_decoded");
              B.done = true;
              B.stats = { framesDecoded: s.framesDecoded, keyFramesDecoded: s.keyFramesDecoded ?? null,
                packetsReceived: s.packetsReceived, framesReceived: s.framesReceived ?? null,
                jitterBufferDelay: s.jitterBufferDelay ?? null, jitterBufferEmittedCount: s.jitterBufferEmittedCount ?? null,
                totalDecodeTime: s.totalDecodeTime ?? null, pliCount: s.pliCount ?? 0, firCount: s.firCount ?? 0,
                nackCount: s.nackCount ?? 0, frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0,
                decoderImplementation: s.decoderImplementation ?? "" };
            }
          });
        } catch (e) { B.error = String(e); }
      }
      if (!B.done) await new Promise((r) => setTimeout(r, B.poll));
    }
    for (const w of B.waiters) w();
  }
  B.wait = (ms) => new Promise((resolve) => {
    const finish = () => resolve({ t: B.t, stats: B.stats, error: B.error, done: B.done });
    if (B.done) return finish();
    B.waiters.push(finish);
    setTimeout(finish, ms);
  });
})();
"""


class ChromiumRunner:
    """One headless Chromium for all samples; each sample gets a browser context (its own fake camera)."""

    def __init__(self, poll_ms: float) -> None:
        self.poll_ms = poll_ms
        self._pw: Any = None
        self.browser: Any = None
        self.version = ""

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        if not CHROMIUM.exists():
            raise RuntimeError(f"{CHROMIUM} is missing (scripts/setup.sh --test installs Debian's chromium)")
        self._pw = await async_playwright().start()
        self.browser = await self._pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                      headless=True)
        self.version = str(self.browser.version)

    async def stop(self) -> None:
        if self.browser is not None:
            with contextlib.suppress(Exception):
                await self.browser.close()
        if self._pw is not None:
            with contextlib.suppress(Exception):
                await self._pw.stop()

    async def sample(self, control: Control, index: int, waiting_room: bool, cfg: SampleSettings) -> dict[str, Any]:
        """The web client joins a room whose (aiortc) provider publishes; until framesDecoded > 0."""
        timeout = cfg.timeout
        room = await open_room(control, waiting_room, cfg)
        context = await self.browser.new_context(viewport={"width": 1280, "height": 800})
        page_errors: list[str] = []
        marks: dict[str, float] = {}
        extra: dict[str, Any] = {}
        error: str | None = None
        try:
            await context.add_init_script(_INSTRUMENT_JS % {"poll": json.dumps(self.poll_ms)})
            page = await context.new_page()
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            await page.goto(control.join_url(room.client_token))
            await page.wait_for_function(
                "() => window.telesfu && window.telesfu.state.screen === 'prejoin'"
                " && document.querySelector('#join-btn') && !document.querySelector('#join-btn').disabled",
                timeout=timeout * 1000)
            # the page's clock against this process's: performance.now() read between two perf_counter()s
            b0 = time.perf_counter()
            page_now = float(await page.evaluate("performance.now()")) / 1e3
            b1 = time.perf_counter()
            offset = page_now - (b0 + b1) / 2  # page time = bench time + offset (± half the round trip)
            extra["clock_alignment_ms"] = round((b1 - b0) / 2 * 1e3, 2)
            await page.click("#join-btn")
            got = await page.evaluate("ms => window.__bench.wait(ms)", timeout * 1000)
            marks = {k: float(v) / 1e3 for k, v in dict(got["t"]).items()}
            extra["getstats_at_first_frame"] = got.get("stats")
            extra["page_errors"] = page_errors
            if got.get("error"):
                extra["getstats_error"] = got["error"]
            if not got.get("done"):
                state = await page.evaluate("window.telesfu ? window.telesfu.state : null")
                error = f"no video frame decoded within {timeout:.0f} s; state {json.dumps(state)}"
            else:
                # the app's own stats hook agrees: the provider's video was decoded
                inbound = (await page.evaluate("window.telesfu.stats()"))["inbound"]
                decoded = sum(int(s["framesDecoded"]) for s in inbound
                              if s.get("participant_id") == room.provider_id and s["kind"] == "video")
                extra["telesfu_stats_frames_decoded"] = decoded
                if decoded <= 0:
                    error = "window.telesfu.stats() shows no decoded video from the provider"
            # provider-side milestones, moved onto the page's clock
            first_rtp = marks["video_rtp"] - offset if "video_rtp" in marks else None
            seen, extra["provider_plis_before_first_rtp"] = provider_view(room, b1, first_rtp)
            for k, v in seen.items():
                marks.setdefault(k, v + offset)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(Exception):
                await context.close()
            await close_room(control, room)
        rec = _sample_record(PEER_CHROMIUM, index, waiting_room, marks, extra, error)
        if "click" in marks and "sent_join" in marks:
            rec["click_to_join_ms"] = round((marks["sent_join"] - marks["click"]) * 1e3, 2)
        return rec


# -- (3) admitted joins per second ---------------------------------------------------------------------

@dataclass(slots=True)
class JoinResult:
    ok: bool
    joined_at: float  # perf_counter when `joined` arrived (or the failure)
    connect_s: float
    join_s: float  # join sent -> joined
    cycle_s: float  # connect -> closed after leave
    error: str = ""


@dataclass(slots=True)
class RateState:
    results: list[JoinResult] = field(default_factory=list)
    next_index: int = 0


async def _one_join(http: aiohttp.ClientSession, ws_url: str, token: str, timeout: float) -> JoinResult:
    t0 = time.perf_counter()
    try:
        ws = await http.ws_connect(ws_url, heartbeat=None)
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        now = time.perf_counter()
        return JoinResult(False, now, now - t0, 0.0, now - t0, f"connect: {type(e).__name__}")
    t1 = time.perf_counter()
    ok, error, t2 = False, "", t1
    try:
        await ws.send_str('{"type":"join","token":"' + token + '"}')
        t1 = time.perf_counter()
        deadline = t1 + timeout
        while True:
            m = await ws.receive(timeout=max(0.001, deadline - time.perf_counter()))
            t2 = time.perf_counter()
            if m.type != aiohttp.WSMsgType.TEXT:
                error = f"closed {ws.close_code}"
                break
            t = json.loads(m.data).get("type")
            if t == "joined":
                ok = True
                break
            if t == "error":
                error = str(json.loads(m.data).get("code"))
                break
        if ok:
            await ws.send_str('{"type":"leave"}')
            with contextlib.suppress(asyncio.TimeoutError):
                while not ws.closed:
                    m = await ws.receive(timeout=timeout)
                    if m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                        break
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        t2 = time.perf_counter()
        error = error or f"{type(e).__name__}"
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
    t3 = time.perf_counter()
    return JoinResult(ok, t2, t1 - t0, t2 - t1, t3 - t0, error)


async def prepare_join_tokens(control: Control, count: int, roster: int = JOINS_ROSTER,
                              progress: Callable[[str], None] | None = None) -> list[str]:
    """Tokens for `count` distinct (appointment, client) pairs, ordered so consecutive joins hit
    different appointments; waiting room off."""
    tag = uuid.uuid4().hex[:6]
    prov = f"bjr-{tag}-prov"
    clients = [f"bjr-{tag}-c{i}" for i in range(roster)]
    n_apts = max(1, math.ceil(count / roster))
    apts = [f"bjr-{tag}-a{j}" for j in range(n_apts)]
    await control.provider(prov, waiting_room=False)
    for c in clients:
        await control.client(c)
    sem = asyncio.Semaphore(MINT_CONCURRENCY)

    async def put(apt: str) -> None:
        async with sem:
            await control.appointment(apt, prov, clients)

    await asyncio.gather(*(put(a) for a in apts))
    if progress:
        progress(f"joins/s: {n_apts} appointments x {roster} clients registered")
    pairs = [(apts[j], clients[i]) for i in range(roster) for j in range(n_apts)][:count]

    async def mint(pair: tuple[str, str]) -> str:
        async with sem:
            return await control.token(pair[0], pair[1], "client")

    if control.tokens is not None:
        return [await control.token(a, c, "client") for a, c in pairs]
    return list(await asyncio.gather(*(mint(p) for p in pairs)))


async def joins_rate(control: Control, seconds: float, concurrency: int, max_joins: int, node_pid: int,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """Signaling-only joins (join, `joined`, leave) at `concurrency` for `seconds` or until the tokens run out."""
    t_prep = time.perf_counter()
    tokens = await prepare_join_tokens(control, max_joins, progress=progress)
    prep_s = time.perf_counter() - t_prep
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    http = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
    state = RateState()
    try:
        main0, tree0 = tree_cpu_seconds(node_pid) if node_pid else (0.0, 0.0)
        own0 = time.process_time()
        busy0, steal0 = system_busy_seconds()
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline and state.next_index < len(tokens):
                token = tokens[state.next_index]
                state.next_index += 1
                state.results.append(await _one_join(http, control.ws_url, token, HTTP_TIMEOUT))

        async def ticker() -> None:
            while True:
                await asyncio.sleep(1.0)
                ok = sum(1 for r in state.results if r.ok)
                progress(f"joins/s: {time.perf_counter() - t0:4.1f} s  {ok} joined  "
                         f"{len(state.results) - ok} failed")

        tick = asyncio.ensure_future(ticker())
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            tick.cancel()
        wall = time.perf_counter() - t0
        main1, tree1 = tree_cpu_seconds(node_pid) if node_pid else (0.0, 0.0)
        own = time.process_time() - own0
        busy1, steal1 = system_busy_seconds()
    finally:
        await http.close()
    ok = [r for r in state.results if r.ok]
    in_window = [r for r in ok if r.joined_at <= deadline]
    failed = [r for r in state.results if not r.ok]
    errors: dict[str, int] = {}
    for r in failed:
        errors[r.error] = errors.get(r.error, 0) + 1
    timeline = [0] * max(1, math.ceil(seconds))
    for r in in_window:
        timeline[min(len(timeline) - 1, int(r.joined_at - t0))] += 1
    return {
        "seconds": seconds, "concurrency": concurrency, "tokens_prepared": len(tokens),
        "prepare_seconds": round(prep_s, 2), "wall_seconds": round(wall, 3),
        "tokens_exhausted": state.next_index >= len(tokens) and wall < seconds,
        "joins": len(ok), "joins_in_window": len(in_window), "failed": len(failed), "errors": errors,
        "joins_per_second": round(len(in_window) / seconds, 1) if seconds > 0 else 0.0,
        "time_to_joined_ms": summary_ms([r.join_s * 1e3 for r in ok]),
        "connect_ms": summary_ms([r.connect_s * 1e3 for r in ok]),
        "cycle_ms": summary_ms([r.cycle_s * 1e3 for r in ok]),
        "per_second": timeline,
        "time_to_joined_samples_ms": [round(r.join_s * 1e3, 2) for r in ok[:20000]],
        "cpu": {"node_cores": round((tree1 - tree0) / wall, 3) if node_pid else None,
                "node_main_process_cores": round((main1 - main0) / wall, 3) if node_pid else None,
                "bench_cores": round(own / wall, 3), "machine_busy_cores": round((busy1 - busy0) / wall, 3),
                "steal_cores": round((steal1 - steal0) / wall, 3)},
    }


# -- the run -------------------------------------------------------------------------------------------

def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    good = [s for s in samples if s["error"] is None]
    seg_names = [name for name, _, _ in SEGMENTS]
    return {
        "samples": len(samples), "ok": len(good), "failed": len(samples) - len(good),
        # the publisher had to be asked again: its first keyframe reached the SFU before the
        # subscriber's transport was connected (or the request was rate-limited)
        "repeated_keyframe_requests": sum(1 for s in good if s.get("provider_plis_before_first_rtp", 0) > 1),
        "total_first_request_answered": summary_ms([s["total_ms"] for s in good
                                                    if s.get("provider_plis_before_first_rtp", 0) <= 1]),
        "total": summary_ms([s["total_ms"] for s in good]),
        "after_admission": summary_ms([s["after_admission_ms"] for s in good]),
        "segments_p50_ms": {n: round(percentile(sorted(s["segments_ms"].get(n, 0.0) for s in good), 0.5), 2)
                            for n in seg_names},
        "milestones_p50_ms": {m: round(percentile(sorted(s["milestones_ms"][m] for s in good
                                                         if m in s["milestones_ms"]), 0.5), 2)
                              for m in MILESTONES if any(m in s["milestones_ms"] for s in good)},
    }


def _progress_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _sample_line(s: dict[str, Any], n: int) -> str:
    wr = "on " if s["waiting_room"] else "off"
    head = f"{s['peer']:<8} waiting room {wr} {s['index'] + 1:>2}/{n}"
    if s["error"] is not None:
        return f"{head}  FAILED: {s['error'][:160]}"
    seg = s["segments_ms"]
    return (f"{head}  total {s['total_ms']:7.1f} ms  after admission {s['after_admission_ms']:7.1f} ms"
            f"  (ICE {seg.get('ICE', 0):.0f}, DTLS {seg.get('DTLS', 0):.0f}, keyframe "
            f"{seg.get('keyframe request', 0) + seg.get('keyframe delivery', 0):.0f}"
            f" after {s.get('provider_plis_before_first_rtp', 0)} PLI,"
            f" to frame {seg.get('to first frame', 0):.0f})")


async def _latency_configs(control: Control, args: argparse.Namespace, chromium: ChromiumRunner | None,
                           report: dict[str, Any], node_pid: int) -> None:
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.waiting_room]
    plan: list[tuple[str, bool, int]] = []
    if args.aiortc_samples:
        plan += [(PEER_AIORTC, wr, args.aiortc_samples) for wr in settings]
    if args.chromium_samples and chromium is not None:
        plan += [(PEER_CHROMIUM, wr, args.chromium_samples) for wr in settings]
    deadline = time.perf_counter() + args.latency_seconds
    cfg = SampleSettings(args.sample_timeout, args.provider_warmup, not args.no_client_video)
    for peer, wr, n in plan:
        before = await control.media_counters()
        cpu = CpuWindow(node_pid)
        samples: list[dict[str, Any]] = []
        for i in range(n):
            if time.perf_counter() > deadline:
                _progress_line(f"{peer} waiting room {'on' if wr else 'off'}: --latency-seconds reached, "
                               f"{i} of {n} samples")
                break
            try:
                if peer == PEER_AIORTC:
                    s = await aiortc_sample(control, i, wr, cfg)
                else:
                    assert chromium is not None
                    s = await chromium.sample(control, i, wr, cfg)
            except Exception as e:  # the room could not be set up: still one failed sample
                s = _sample_record(peer, i, wr, {}, {}, f"setup: {type(e).__name__}: {e}")
            samples.append(s)
            _progress_line(_sample_line(s, n))
        cores = cpu.close()
        await asyncio.sleep(args.metrics_settle)
        after = await control.media_counters()
        report["latency"].append({
            "peer": peer, "waiting_room": wr, "summary": summarize(samples), "samples": samples,
            "server": {k: round(after.get(k, 0.0) - before.get(k, 0.0), 4) for k in after},
            "cpu": cores,
        })


async def _main(args: argparse.Namespace) -> int:
    import aioice.ice

    report: dict[str, Any] = {
        "command": "telesfu bench joins " + " ".join(shlex.quote(a) for a in bench_argv("joins")),
        "machine": machine_info(),
        "notes": [
            "aiortc's VP8/Opus encoding and decoding (provider and client), Chromium and the node share "
            "this machine's cores; on a 2-vCPU shared VM the latencies include that contention",
            "total = join sent -> first remote video frame decoded; after admission = from the client receiving "
            "`admitted` (waiting room on) or `joined` (off) to that frame",
            "aiortc: milestones on this process's perf_counter; Chromium: performance.now() in the page, first "
            "frame found by polling getStats every --poll-ms",
        ],
        "settings": {"aiortc_samples": args.aiortc_samples, "chromium_samples": args.chromium_samples,
                     "waiting_room": args.waiting_room, "sample_timeout": args.sample_timeout,
                     "client_video": not args.no_client_video, "poll_ms": args.poll_ms,
                     "provider_warmup_seconds": args.provider_warmup,
                     "video": f"{VIDEO_WIDTH}x{VIDEO_HEIGHT}@{VIDEO_FPS} VP8 (aiortc provider)",
                     "joins_seconds": args.joins_seconds, "joins_concurrency": args.joins_concurrency,
                     "joins_max": args.joins_max},
        "aim": {"after_admission_p50_ms": AIM_AFTER_ADMISSION_P50_MS},
        "latency": [], "joins_rate": None, "errors": [], "skipped": [],
    }
    loopback = args.target is None or any(h in args.target for h in ("://127.", "://localhost", "://[::1]"))
    saved = aioice.ice.get_host_addresses
    if loopback:  # aioice gathers non-loopback addresses only; keep everything on 127.0.0.1
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                                 connector=aiohttp.TCPConnector(limit=0))
    node: OwnedNode | None = None
    chromium: ChromiumRunner | None = None
    rc = 0
    try:
        if args.target:
            signing = tuple(args.signing_key.split("=", 1)) if args.signing_key else None
            control = Control(args.target, args.api_key, http, signing)  # type: ignore[arg-type]
            report["node"] = {"owned": False, "url": args.target}
        else:
            node = OwnedNode(args.workers)
            _progress_line(f"starting telesfu serve on {node.url} ({node.workers} media workers, UDP {node.udp_port})")
            await node.start(http)
            control = Control(node.url, node.api_key, http, node.signing)
            report["node"] = {"owned": True, "url": node.url, "media_workers": node.workers, "store": "memory://"}
        if args.chromium_samples:
            try:
                chromium = ChromiumRunner(args.poll_ms)
                await chromium.start()
                report["settings"]["chromium"] = chromium.version
            except Exception as e:  # no browser here: measure the rest, and say so
                report["skipped"].append(f"chromium samples: {type(e).__name__}: {e}")
                _progress_line(f"Chromium unavailable, skipping its samples: {e}")
                chromium = None
        node_pid = node.proc.pid if node is not None and node.proc is not None else 0
        await _latency_configs(control, args, chromium, report, node_pid)
        if chromium is not None:
            await chromium.stop()
            chromium = None
        if args.joins_seconds > 0:
            _progress_line(f"joins/s: preparing {args.joins_max} tokens")
            report["joins_rate"] = await joins_rate(control, args.joins_seconds, args.joins_concurrency,
                                                    args.joins_max, node_pid, _progress_line)
    except Exception as e:
        report["errors"].append(f"{type(e).__name__}: {e}")
        if node is not None:
            report["errors"].append("node log tail:\n" + node.log_tail())
        rc = 1
    finally:
        if chromium is not None:
            await chromium.stop()
        await http.close()
        if node is not None:
            node.stop()
            node.cleanup()
        aioice.ice.get_host_addresses = saved
    with contextlib.suppress(OSError):
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_summary(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=False))
    if args.plot:
        plot(report, args.plot)
    failed = sum(c["summary"]["failed"] for c in report["latency"])
    return rc or (1 if failed or report["errors"] else 0)




# -- output --------------------------------------------------------------------------------------------

def _config_name(c: dict[str, Any]) -> str:
    return f"{c['peer']}, waiting room {'on' if c['waiting_room'] else 'off'}"


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=140)
    m = report["machine"]
    console.print(f"[bold]telesfu bench joins[/]  {m.get('date', '')}  commit {m.get('git_commit') or '?'}  "
                  f"{m.get('nproc')} CPUs ({m.get('cpu_model', '')}), load at start {m.get('loadavg_at_start')}")
    if report["latency"]:
        t = Table(title="Join latency: join sent -> first remote video frame decoded (ms)")
        for col in ("configuration", "n", "total p50", "total p95", "after admission p50", "after admission p95",
                    "PLI repeated", "total p50 if not", "failed"):
            t.add_column(col, justify="left" if col == "configuration" else "right")
        for c in report["latency"]:
            s = c["summary"]
            t.add_row(_config_name(c), str(s["ok"]), f"{s['total']['p50_ms']:.0f}", f"{s['total']['p95_ms']:.0f}",
                      f"{s['after_admission']['p50_ms']:.0f}", f"{s['after_admission']['p95_ms']:.0f}",
                      f"{s['repeated_keyframe_requests']}/{s['ok']}",
                      f"{s['total_first_request_answered']['p50_ms']:.0f}" if s["total_first_request_answered"]["count"]
                      else "-", str(s["failed"]))
        console.print(t)
        seg = Table(title="Where the time goes: median per segment (ms)")
        seg.add_column("configuration")
        for name, _, _ in SEGMENTS:
            seg.add_column(name, justify="right")
        seg.add_column("keyframe req. / join", justify="right")
        seg.add_column("cores: machine / node / bench / browser", justify="right")
        for c in report["latency"]:
            s = c["summary"]
            kf = c["server"].get("keyframe_requests_out", 0.0) / max(1, s["samples"])
            u = c["cpu"]
            seg.add_row(_config_name(c), *(f"{s['segments_p50_ms'][n]:.0f}" for n, _, _ in SEGMENTS), f"{kf:.1f}",
                        f"{u['machine_busy_cores']:.2f} / {u['node_cores']:.2f} / {u['bench_process_cores']:.2f}"
                        f" / {u['browser_cores']:.2f}")
        console.print(seg)
        aim = report["aim"]["after_admission_p50_ms"]
        for c in report["latency"]:
            if c["waiting_room"] and c["summary"]["ok"]:
                p50 = c["summary"]["after_admission"]["p50_ms"]
                verdict = "[green]meets[/]" if p50 < aim else "[red]misses[/]"
                console.print(f"{_config_name(c)}: first frame {p50:.0f} ms p50 after admission: {verdict} "
                              f"the {aim:.0f} ms aim")
    r = report.get("joins_rate")
    if r:
        t = Table(title=f"Admitted joins per second (signaling only, waiting room off, "
                        f"{r['concurrency']} concurrent, {r['seconds']:.0f} s)")
        for col in ("joins/s", "joins", "failed", "to joined p50", "to joined p99", "connect p50",
                    "node cores (main)", "bench cores"):
            t.add_column(col, justify="right")
        tj = r["time_to_joined_ms"]
        t.add_row(f"{r['joins_per_second']:.0f}", str(r["joins"]), str(r["failed"]), f"{tj['p50_ms']:.1f} ms",
                  f"{tj['p99_ms']:.1f} ms", f"{r['connect_ms']['p50_ms']:.1f} ms",
                  "-" if r["cpu"]["node_cores"] is None
                  else f"{r['cpu']['node_cores']} ({r['cpu']['node_main_process_cores']})", str(r["cpu"]["bench_cores"]))
        console.print(t)
        if r["tokens_exhausted"]:
            console.print("[yellow]the prepared tokens ran out before the time bound: raise --joins-max[/]")
    for e in report.get("skipped", []):
        console.print(f"[yellow]skipped:[/] {e}")
    for e in report["errors"]:
        console.print(f"[red]error:[/] {e}")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = [c for c in report["latency"] if c["summary"]["ok"]]
    rate = report.get("joins_rate")
    n_panels = 2 + (1 if rate else 0)
    fig, axes = plt.subplots(1, n_panels, figsize=(6.5 * n_panels, 5.2))
    ax = axes[0]
    labels = [_config_name(c).replace(", ", "\n") for c in configs]
    for i, c in enumerate(configs):
        good = [s for s in c["samples"] if s["error"] is None]
        ax.scatter([i - 0.12] * len(good), [s["total_ms"] for s in good], s=18, color="tab:blue",
                   label="total" if i == 0 else None)
        ax.scatter([i + 0.12] * len(good), [s["after_admission_ms"] for s in good], s=18, color="tab:orange",
                   label="after admission" if i == 0 else None)
        ax.hlines([c["summary"]["total"]["p50_ms"]], i - 0.25, i + 0.01, color="tab:blue")
        ax.hlines([c["summary"]["after_admission"]["p50_ms"]], i - 0.01, i + 0.25, color="tab:orange")
    ax.axhline(report["aim"]["after_admission_p50_ms"], color="grey", ls="--", lw=0.8, label="500 ms aim")
    ax.set_xticks(range(len(configs)), labels, fontsize=8)
    ax.set_ylabel("ms from join sent (dots: samples, lines: p50)")
    ax.set_title("Join to first remote video frame")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = [n for n, _, _ in SEGMENTS]
    bottom = [0.0] * len(configs)
    for n in names:
        vals = [c["summary"]["segments_p50_ms"][n] for c in configs]
        ax.bar(range(len(configs)), vals, bottom=bottom, label=n)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(configs)), labels, fontsize=8)
    ax.set_ylabel("ms (median of each segment)")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=7)
    if rate:
        ax = axes[2]
        vals = rate["time_to_joined_samples_ms"]
        top = 3 * rate["time_to_joined_ms"]["p99_ms"] or 1.0
        if vals:
            ax.hist([min(v, top) for v in vals], bins=60, range=(0.0, top), color="tab:green")
        ax.set_xlabel(f"ms from join sent to `joined` (the last bin holds everything above {top:.0f} ms)")
        ax.set_ylabel("joins")
        ax.set_title(f"{rate['joins_per_second']:.0f} admitted joins/s at {rate['concurrency']} concurrent")
    m = report["machine"]
    fig.suptitle(f"telesfu bench joins — {m.get('date', '')}, {m.get('nproc')} CPUs, commit {m.get('git_commit')}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
