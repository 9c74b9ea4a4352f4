"""`telesfu bench media`: what forwarding costs the media plane, and the delay it adds.

By default the harness starts an embedded node (`telesfu serve` as a child process, on a free
HTTP port and UDP range of 127.0.0.1) and drives it as a practice backend and its clients
would: it registers each room's provider, clients and a telehealth appointment through the
control API, mints a join token per participant (`POST /v1/appointments/{id}/tokens`), and
each synthetic participant (`bench.synthetic`) joins over its own signaling WebSocket
(`GET /v1/rtc`: join, publish_offer/answer, subscribe_offer/answer). `--target URL --api-key
KEY` drives a node elsewhere instead; `--direct` skips node and signaling and commands a
MediaPlane in this process. Participants publish pre-encoded VP8 (~1 Mbps, 30 fps) and Opus
and receive what the SFU forwards.

Scenarios: `one-to-one --rooms N`, `group --size K --rooms N`, `fanout --subscribers K` (one
publisher, K subscribe-only), `waiting-room --size K --rooms N` (the provider's waiting room
on; the provider's connection admits each client on `participant_waiting`; admission wait
p50/p95 reported) and `suite` (1:1 x1, 1:1 x5, group of 6, fan-out 1->20). `--ramp` adds
rooms of the chosen scenario step by step (`--rooms-per-step`, `--step-seconds`) until a
step's loss exceeds 1% or its p99 delay 50 ms, or `--max-rooms` / `--max-seconds`, and
reports the capacity: the last step within both limits. `--client aiortc` runs the scenario
again with aiortc peers through the same signaling and sets their forwarded packets/s and SFU
CPU per packet beside the synthetic participants'.

SFU counters come from the node's /metrics (`telesfu_media_*`, per worker), which the workers
refresh every 2 s: samples are taken at each refresh, CPU from the same refresh
(`telesfu_media_worker_cpu_seconds_total`), so packets and CPU cover the same interval (and
a remote node needs no /proc). With `--direct`, the workers' counters come from the `stats`
command and their CPU from /proc every second. Figures, per run:

- forwarded packets/s and Mbps: RTP packets the workers sent to subscribers (retransmissions
  included) and their SRTP bytes;
- SFU CPU time per forwarded packet: worker CPU over the window / forwarded packets;
- SFU cores per 1:1 session (one-to-one only), worker RSS growth per participant (local);
- one-way delay publisher -> subscriber p50/p95/p99 from abs-send-time (same host clock),
  which includes the kernel's loopback and the generator's own scheduling;
- loss, jitter, NACKs, retransmissions, PLIs on both sides; admission waits;
- the generator's CPU: above ~70% of a core it, not the SFU, may be the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench.common import bench_argv, machine_info, run_quietly
from bench.media_source import EncodedMedia, load_media
from bench.synthetic import LoadGenerator, NodeSignaling, histogram_summary, new_histogram
from control.config import MediaConfig
from control.media import MediaPlane, cpu_seconds_of

REPO = Path(__file__).resolve().parents[1]

AIM_US_PER_PACKET = 12.0  # group and fan-out
AIM_CORES_PER_SESSION = 0.013  # one-to-one
JANUS_US_PER_PACKET = {"group": 23.0, "fanout": 28.0, "one-to-one": 93.0}
JANUS_CORES_PER_SESSION = 0.027
GENERATOR_WARN_CORES = 0.7
QUIET_OTHERS_CORES = 0.25  # a second counts as quiet when other processes used less than this

SAMPLE_INTERVAL = 1.0
NODE_SAMPLE_INTERVAL = 2.0  # a node's /metrics carries the workers' stats, which they send every 2 s
STATS_WAIT = 2.5
STATS_POLL = 0.05
DRAIN_SECONDS = 0.5
READY_TIMEOUT_BASE = 20.0
READY_TIMEOUT_PER_PARTICIPANT = 0.25
MAX_PARTICIPANTS = 2000
MAX_DURATION = 3600.0

# Per-worker counters summed over workers (WorkerCounters and endpoint/transport totals).
_WORKER_COUNTERS = ("rtp_in", "rtp_in_bytes", "audio_in", "video_in", "rtcp_in", "rtcp_out", "nacks_in", "nacks_out",
                    "retransmits", "retransmit_misses", "plis_in", "plis_out", "firs_out", "keyframe_waits",
                    "keyframes_in")
_TRANSPORT_COUNTERS = ("rtp_packets_out", "rtp_bytes_out", "rtp_packets_in", "rtcp_packets_out", "rtcp_packets_in",
                       "send_buffer_full", "send_error", "send_no_socket", "unknown_address", "internal_error",
                       "srtp_auth_failed", "srtp_replay", "srtp_bad_packet", "srtp_before_connected",
                       "send_not_connected", "send_protect_failed")


# -- scenarios -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """`rooms` rooms of `members`; the first `publishers` of each room publish audio and video."""

    kind: str  # one-to-one | group | fanout
    rooms: int
    members: int
    publishers: int
    publisher_subscribes: bool = True
    waiting_room: bool = False  # the provider (member 0) has the waiting room on; a script admits clients

    def __post_init__(self) -> None:
        if self.rooms < 1 or self.members < 2 or not 1 <= self.publishers <= self.members:
            raise ValueError("a scenario needs rooms >= 1, members >= 2 and 1..members publishers")
        if self.participants > MAX_PARTICIPANTS:
            raise ValueError(f"at most {MAX_PARTICIPANTS} participants")

    @property
    def name(self) -> str:
        if self.waiting_room:
            return f"waiting room {self.members}x{self.rooms}"
        if self.kind == "one-to-one":
            return f"1:1 x{self.rooms}"
        if self.kind == "group":
            return f"group of {self.members}" + (f" x{self.rooms}" if self.rooms > 1 else "")
        return f"fan-out 1->{self.members - 1}" + (f" x{self.rooms}" if self.rooms > 1 else "")

    @property
    def participants(self) -> int:
        return self.rooms * self.members

    def members_of(self, room: int) -> list[tuple[str, bool, bool]]:
        """(participant id, publishes, subscribes) of one room."""
        out = []
        for i in range(self.members):
            publishes = i < self.publishers
            out.append((f"r{room}-p{i}", publishes, not publishes or self.publisher_subscribes))
        return out

    def expected(self, room: int) -> dict[str, set[tuple[str, str]]]:
        """What each subscribing member of a room must receive: (publisher id, kind)."""
        members = self.members_of(room)
        pubs = [pid for pid, publishes, _ in members if publishes]
        return {pid: {(p, k) for p in pubs if p != pid for k in ("audio", "video")}
                for pid, _, subscribes in members if subscribes}

    @property
    def forwarded_streams(self) -> int:
        return sum(len(v) for room in range(self.rooms) for v in self.expected(room).values())

    @property
    def sessions(self) -> int:
        return self.rooms if self.kind == "one-to-one" else 0


def one_to_one(rooms: int = 1) -> Scenario:
    return Scenario("one-to-one", rooms, 2, 2)


def group(size: int = 6, rooms: int = 1) -> Scenario:
    return Scenario("group", rooms, size, size)


def fanout(subscribers: int = 20, rooms: int = 1) -> Scenario:
    return Scenario("fanout", rooms, subscribers + 1, 1, publisher_subscribes=False)


def waiting_room(rooms: int = 1, size: int = 2) -> Scenario:
    """Rooms of `size` (all publishing) whose provider has the waiting room on."""
    return Scenario("one-to-one" if size == 2 else "group", rooms, size, size, waiting_room=True)


def suite() -> list[Scenario]:
    """The issue's set: a 1:1 room, five 1:1 rooms, a group of 6, a fan-out to 20."""
    return [one_to_one(1), one_to_one(5), group(6), fanout(20)]


# -- /proc and the machine ---------------------------------------------------------------------------

def user_system_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, from /proc/<pid>/stat; zeros when unavailable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def rss_kb(pid: int) -> int:
    """VmRSS of a process in kB (0 when unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_ns_of(pid: int) -> int:
    """CPU time of every thread of a process in ns, from /proc/<pid>/task/*/schedstat
    (nanosecond resolution, where utime+stime advance by clock ticks); 0 when unavailable."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + (v[5] + v[6] if len(v) > 6 else 0)
    return busy / tick, (v[7] if len(v) > 7 else 0) / tick




def free_udp_port(count: int, host: str = "127.0.0.1") -> int:
    """A port p such that p..p+count-1 are free on `host` right now (the workers bind them next)."""
    for _ in range(100):
        socks: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(first)
            first.bind((host, 0))
            base = int(first.getsockname()[1])
            if base + count > 65535:
                continue
            for i in range(1, count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free UDP ports on {host}")


# -- a node driven through its API and signaling -----------------------------------------------------------

NODE_START_TIMEOUT = 30.0
BENCH_API_KEY = "bench-api-key-0123456789"
BENCH_SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """Per-worker stats in the shape `MediaPlane.stats()` has (the fields the harness reads), from a
    node's Prometheus exposition (`telesfu_media_*` families)."""
    workers: dict[str, dict[str, Any]] = {}

    def worker(idx: str) -> dict[str, Any]:
        w = workers.get(idx)
        if w is None:
            w = workers[idx] = {"worker": int(idx), "counters": {}, "transport": {}, "cpu_seconds": 0.0,
                                "loop_lag_seconds": 0.0, "max_rss_bytes": 0.0, "up": 0.0}
        return w

    for line in text.splitlines():
        if not line.startswith("telesfu_media_") or "{" not in line:
            continue
        name, rest = line.split("{", 1)
        labels_text, _, value_text = rest.rpartition("}")
        try:
            value = float(value_text.split()[0])
        except (ValueError, IndexError):
            continue
        labels = dict(kv.split("=", 1) for kv in labels_text.split(",") if "=" in kv)
        labels = {k: v.strip('"') for k, v in labels.items()}
        idx = labels.get("worker")
        if idx is None:
            continue
        w = worker(idx)
        c, t = w["counters"], w["transport"]
        direction = labels.get("direction", "")
        n = int(value)
        if name == "telesfu_media_packets_total":
            if direction == "in":
                c["rtp_in"] = c.get("rtp_in", 0) + n
                c[f"{labels.get('kind')}_in"] = n
            else:
                t["rtp_packets_out"] = t.get("rtp_packets_out", 0) + n
        elif name == "telesfu_media_bytes_total":
            t["rtp_bytes_out" if direction == "out" else "rtp_bytes_in"] = n
        elif name == "telesfu_media_rtcp_packets_total":
            c["rtcp_out" if direction == "out" else "rtcp_in"] = n
        elif name == "telesfu_media_nacks_total":
            c["nacks_out" if direction == "out" else "nacks_in"] = n
        elif name == "telesfu_media_keyframe_requests_total":
            c["plis_out" if direction == "out" else "plis_in"] = n
        elif name == "telesfu_media_retransmissions_total":
            c["retransmits"] = n
        elif name == "telesfu_media_retransmission_misses_total":
            c["retransmit_misses"] = n
        elif name == "telesfu_media_keyframe_waits_total":
            c["keyframe_waits"] = n
        elif name == "telesfu_media_drops_total":
            c.setdefault("drops", {})[labels.get("reason", "")] = n
        elif name == "telesfu_media_worker_cpu_seconds_total":
            w["cpu_seconds"] = value
        elif name == "telesfu_media_worker_loop_lag_seconds":
            w["loop_lag_seconds"] = value
        elif name == "telesfu_media_worker_max_rss_bytes":
            w["max_rss_bytes"] = value
        elif name == "telesfu_media_worker_up":
            w["up"] = value
    for w in workers.values():  # forwarded packets count retransmissions too, as the transport's total does
        w["transport"]["rtp_packets_out"] = w["transport"].get("rtp_packets_out", 0) + w["counters"].get("retransmits", 0)
    return [workers[k] for k in sorted(workers, key=int)]


def worker_pids_of(parent: int) -> list[int]:
    """Pids of the children of `parent` that run `-m sfu.worker` (a local node's media workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"sfu.worker" in argv:
            out.append(int(entry))
    return sorted(out)


class NodeTarget:
    """A telesfu node reached over HTTP: the control API (registrations, tokens), the signaling
    WebSocket and /metrics. `start_embedded` runs `telesfu serve` as a child process first."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.proc: asyncio.subprocess.Process | None = None
        self.workers = 0
        self._http: Any = None

    @property
    def embedded(self) -> bool:
        return self.proc is not None

    async def _session(self) -> Any:
        if self._http is None:
            import aiohttp

            self._http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.api_key}"})
        return self._http

    @classmethod
    async def start_embedded(cls, workers: int = 1, udp_port: int = 0) -> NodeTarget:
        """`telesfu serve` on a free HTTP port and UDP range of 127.0.0.1; returns once /readyz answers
        and every worker is up."""
        http_port = free_tcp_port()
        port = udp_port or free_udp_port(workers)
        env = {**os.environ, "TELESFU_HTTP_PORT": str(http_port), "TELESFU_HTTP_HOST": "127.0.0.1",
               "TELESFU_MEDIA_UDP_PORT": str(port), "TELESFU_MEDIA_WORKERS": str(workers),
               "TELESFU_MEDIA_LISTEN_IPS": "127.0.0.1", "TELESFU_MEDIA_ALLOWED_SOURCE_NETWORKS": "127.0.0.0/8",
               "TELESFU_AUTH_API_KEYS": BENCH_API_KEY, "TELESFU_TOKENS_KEYS": f"k1={BENCH_SIGNING_SECRET}",
               "TELESFU_ROOMS_MAX_PARTICIPANTS": "100", "TELESFU_LOG_LEVEL": "WARNING",
               # every simulated participant connects from 127.0.0.1: no per-source caps
               "TELESFU_HTTP_MAX_CONNECTIONS_PER_SOURCE": "0", "TELESFU_SIGNALING_MAX_UNJOINED_PER_SOURCE": "1000"}
        node = cls(f"http://127.0.0.1:{http_port}", BENCH_API_KEY)
        node.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from control.cli import main; sys.exit(main(['serve']))",
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        node.workers = workers
        deadline = time.monotonic() + NODE_START_TIMEOUT
        while True:
            if node.proc.returncode is not None:
                raise RuntimeError(f"telesfu serve exited with {node.proc.returncode}")
            try:
                stats = await node.stats()
                if len(stats) >= workers and all(w["up"] for w in stats) and len(node.worker_pids()) >= workers:
                    return node
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                await node.stop()
                raise RuntimeError("the embedded node did not become ready")
            await asyncio.sleep(0.2)

    def worker_pids(self) -> list[int]:
        return worker_pids_of(self.proc.pid) if self.proc is not None else []

    async def stats(self) -> list[dict[str, Any]]:
        http = await self._session()
        async with http.get(self.url + "/metrics") as r:
            r.raise_for_status()
            return parse_metrics(await r.text())

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        http = await self._session()
        async with http.request(method, self.url + path, json=body) as r:
            data = await r.json(content_type=None)
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data if isinstance(data, dict) else {}

    async def setup_room(self, appointment_id: str, provider_id: str, client_ids: list[str],
                         waiting_room: bool) -> None:
        """Register the provider, the clients and a telehealth appointment starting now."""
        await self.call("PUT", f"/v1/providers/{provider_id}", {"name": provider_id, "teletherapy_enabled": True,
                                                                "waiting_room_enabled": waiting_room})
        for cid in client_ids:
            await self.call("PUT", f"/v1/clients/{cid}", {"name": cid, "portal_account_active": True})
        start = datetime.now(UTC).replace(microsecond=0)
        await self.call("PUT", f"/v1/appointments/{appointment_id}", {
            "provider_id": provider_id, "client_ids": client_ids, "telehealth": True,
            "starts_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ends_at": datetime.fromtimestamp(start.timestamp() + 7200, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "max_participants": max(2, len(client_ids) + 1)})

    async def token(self, appointment_id: str, participant_id: str) -> str:
        body = await self.call("POST", f"/v1/appointments/{appointment_id}/tokens",
                               {"participant_id": participant_id})
        return str(body["token"])

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _die_with_parent() -> None:
    """In the embedded node's process before exec: SIGTERM it when the harness dies (Linux prctl)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# -- sampling -----------------------------------------------------------------------------------------

@dataclass
class Sample:
    """Everything read at one instant of a run."""

    t: float
    sfu_cpu: float  # utime+stime of the workers (/proc/<pid>/stat, clock ticks)
    sfu_cpu_ns: int  # the same from schedstat, in ns
    sfu_system: float  # the stime part of sfu_cpu (in the kernel: mostly the UDP syscalls)
    gen_cpu: float
    busy: float
    steal: float
    sfu: dict[str, int]
    gen: dict[str, int]
    loop_lag: float
    delay_audio: list[int]
    delay_video: list[int]
    loss: tuple[int, int]  # (expected, lost) over every received stream
    rss_kb: int  # the workers' VmRSS


class StatsSource(Protocol):
    async def stats(self) -> list[dict[str, Any]]: ...


class Sampler:
    """Reads the workers' counters from `plane.stats()`; their CPU from /proc (`pids`), or, with
    `cpu_from_stats`, from the same stats (the `cpu_seconds` each worker reports with its counters)."""

    __slots__ = ("plane", "pids", "gen", "cpu_from_stats")

    def __init__(self, plane: StatsSource, pids: list[int], gen: LoadGenerator, cpu_from_stats: bool = False) -> None:
        self.plane = plane
        self.pids = pids
        self.gen = gen
        self.cpu_from_stats = cpu_from_stats

    async def _fresh_stats(self) -> list[dict[str, Any]]:
        """With stats a node refreshes every few seconds: wait for the next refresh, so the
        generator's counters read right after it line up with the SFU's (within a poll)."""
        deadline = time.monotonic() + STATS_WAIT
        baseline: tuple[float, ...] | None = None
        while True:
            stats = await self.plane.stats()
            sig = tuple(float(s.get("cpu_seconds", 0.0)) + sum((s.get("transport") or {}).get(k, 0)
                                                               for k in ("rtp_packets_out", "rtp_bytes_out"))
                        for s in stats)
            if baseline is None:
                baseline = sig
            elif sig != baseline or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(STATS_POLL)

    async def take(self) -> Sample:
        fresh = await self._fresh_stats() if self.cpu_from_stats else None
        t = time.monotonic()
        sfu_cpu = 0.0
        sfu_ns = 0
        sfu_sys = 0.0
        for pid in () if self.cpu_from_stats else self.pids:
            try:
                sfu_cpu += cpu_seconds_of(pid)
            except OSError:
                pass
            sfu_ns += cpu_ns_of(pid)
            sfu_sys += user_system_seconds(pid)[1]
        gen_cpu = time.process_time()
        busy, steal = system_cpu()
        stats = fresh if fresh is not None else await self.plane.stats()
        sfu = dict.fromkeys(_WORKER_COUNTERS + _TRANSPORT_COUNTERS, 0)
        lag = 0.0
        drops = 0
        for s in stats:
            counters = s.get("counters") or {}
            transport = s.get("transport") or {}
            for k in _WORKER_COUNTERS:
                sfu[k] += int(counters.get(k, 0))
            for k in _TRANSPORT_COUNTERS:
                sfu[k] += int(transport.get(k, 0))
            drops += sum(int(v) for v in (counters.get("drops") or {}).values())
            lag = max(lag, float(s.get("loop_lag_seconds", 0.0)))
            if self.cpu_from_stats:
                sfu_cpu += float(s.get("cpu_seconds", 0.0))
        sfu["routing_drops"] = drops
        audio, video = self.gen.take_delay_interval()
        expected = lost = 0
        for sub in self.gen.subscribers:
            for st in sub.streams.values():
                expected += st.stats.expected
                lost += st.stats.lost
        return Sample(t, sfu_cpu, sfu_ns, sfu_sys, gen_cpu, busy, steal, sfu, self.gen.counters.snapshot(), lag, audio, video,
                      (expected, lost), sum(rss_kb(pid) for pid in self.pids))


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b.get(k, 0) - a.get(k, 0) for k in b}


def _sum_hist(samples: Sequence[Sample], kind: str) -> list[int]:
    total = new_histogram()
    for s in samples:
        h = s.delay_audio if kind == "audio" else s.delay_video
        for i, v in enumerate(h):
            if v:
                total[i] += v
    return total


def _add(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


# -- one run ------------------------------------------------------------------------------------------

ProgressFn = Callable[[str, float, float, str], None]  # (phase, elapsed, total, info)


async def run_scenario(scenario: Scenario, media: EncodedMedia, *, duration: float = 20.0, warmup: float = 3.0,
                       workers: int = 1, udp_port: int = 0, seed: int | None = 1, join_concurrency: int = 8,
                       loss: float = 0.0, progress: ProgressFn | None = None, direct: bool = False,
                       target: NodeTarget | None = None) -> dict[str, Any]:
    """Run one scenario; returns its figures (see the module docstring).

    By default through a node's signaling: `target`, or a fresh embedded node (`telesfu serve`)
    when None. With `direct`, against a MediaPlane in this process (no signaling, no tokens)."""
    if not 0 < duration <= MAX_DURATION or warmup < 0 or workers < 1 or join_concurrency < 1:
        raise ValueError("duration in (0, 3600], warmup >= 0, workers >= 1, join_concurrency >= 1")
    report: dict[str, Any] = {"scenario": scenario_info(scenario),
                              "params": {"duration": duration, "warmup": warmup, "workers": workers,
                                         "seed": seed, "join_concurrency": join_concurrency, "loss": loss,
                                         "mode": "direct" if direct else ("remote" if target else "embedded")}}
    async with _Driver(media, workers=workers, udp_port=udp_port, seed=seed, loss=loss, direct=direct,
                       target=target) as d:
        gen, pids = d.gen, d.pids
        rss_start = sum(rss_kb(pid) for pid in pids)
        t0 = time.monotonic()
        rss_first = await _join_all(scenario, gen, join_concurrency, progress,
                                    lambda: sum(rss_kb(pid) for pid in pids), setup=d.setup_room)
        joined = time.monotonic() - t0
        missing = await _wait_ready(scenario, gen, progress)
        ready = time.monotonic() - t0
        gc.collect()
        gc.freeze()  # the generator's long-lived objects out of the collector's way
        try:
            rss_ready = sum(rss_kb(pid) for pid in pids)
            samples, w0 = await _measure(d.sampler, warmup, duration, progress, d.interval)
            rss_end = sum(rss_kb(pid) for pid in pids)
            gen.stop_sending()
            await asyncio.sleep(DRAIN_SECONDS)  # a node's take() then waits for the next stats refresh
            final = await d.sampler.take()
        finally:
            gc.unfreeze()
        report["setup"] = {"join_seconds": round(joined, 3), "ready_seconds": round(ready, 3),
                           "not_ready": missing, "worker_pids": pids}
        report.update(_figures(scenario, samples, w0, final, gen, (rss_start, rss_first, rss_ready, rss_end)))
        report["admission"] = d.admission()
    return report


def scenario_info(scenario: Scenario) -> dict[str, Any]:
    return {**asdict(scenario), "name": scenario.name, "participants": scenario.participants,
            "forwarded_streams": scenario.forwarded_streams, "sessions": scenario.sessions}


class _Driver:
    """The SFU side of a run and the load generator wired to it: a direct MediaPlane, an embedded
    node or a remote one. Counters from the node's /metrics are refreshed every STATS_INTERVAL s
    there, so samples are taken that often."""

    def __init__(self, media: EncodedMedia, *, workers: int, udp_port: int, seed: int | None, loss: float,
                 direct: bool, target: NodeTarget | None) -> None:
        self.media = media
        self.workers = workers
        self.udp_port = udp_port
        self.seed = seed
        self.loss = loss
        self.direct = direct
        self.target = target
        self.node: NodeTarget | None = None
        self.plane: MediaPlane | None = None
        self.signaling: NodeSignaling | None = None
        self.interval = SAMPLE_INTERVAL
        self.pids: list[int] = []
        self._unsubscribe: Callable[[], None] | None = None
        self.tag = f"b{random.getrandbits(24):06x}-"  # the node's ids are ours behind this run's tag

    async def __aenter__(self) -> _Driver:
        if self.direct:
            port = self.udp_port or free_udp_port(self.workers)
            self.plane = MediaPlane(MediaConfig(workers=self.workers, udp_port=port, listen_ips=["127.0.0.1"],
                                                allowed_source_networks=["127.0.0.0/8"]))
            await self.plane.start()
            self.gen = LoadGenerator(self.media, self.plane, seed=self.seed, loss=self.loss)
            self._unsubscribe = self.plane.subscribe("*", self.gen.on_event)
            self.pids = self.plane.worker_pids()
            self.sampler = Sampler(self.plane, self.pids, self.gen)
        else:
            self.node = self.target or await NodeTarget.start_embedded(self.workers, self.udp_port)
            self.signaling = NodeSignaling(self.node.url, self._token, prefix=self.tag)
            self.gen = LoadGenerator(self.media, self.signaling, seed=self.seed, loss=self.loss)
            self.signaling.on_event = self.gen.on_event
            self.pids = self.node.worker_pids()
            self.sampler = Sampler(self.node, self.pids, self.gen, cpu_from_stats=True)
            self.interval = NODE_SAMPLE_INTERVAL
        self.gen.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self.gen.close()
        if self.signaling is not None:
            await self.signaling.close()
        if self.plane is not None:
            await self.plane.stop()
        if self.node is not None and self.node is not self.target:
            await self.node.stop()

    async def _token(self, room_id: str, participant_id: str) -> str:
        assert self.node is not None
        return await self.node.token(self.tag + room_id, self.tag + participant_id)

    async def setup_room(self, scenario: Scenario, room: int) -> None:
        """Register a room's people and appointment on the node (nothing to do for a direct plane)."""
        if self.node is None:
            return
        members = [self.tag + pid for pid, _, _ in scenario.members_of(room)]
        await self.node.setup_room(f"{self.tag}room-{room}", members[0], members[1:], scenario.waiting_room)

    def admission(self) -> dict[str, Any]:
        waits = sorted(self.signaling.admission_waits) if self.signaling is not None else []
        return {"waited": len(waits), "wait_ms": _quantiles_ms(waits),
                "messages": dict(self.signaling.messages) if self.signaling is not None else {}}


def _quantiles_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))] * 1e3, 2)

    return {"p50": q(0.50), "p95": q(0.95), "max": round(v[-1] * 1e3, 2)}


async def _join_all(scenario: Scenario, gen: LoadGenerator, concurrency: int, progress: ProgressFn | None,
                    measure: Callable[[], int], setup: Callable[[Scenario, int], Any] | None = None,
                    rooms: Sequence[int] | None = None) -> int:
    """Join everyone, the first participant alone; returns `measure()` taken right after that first
    one joined (the worker's one-time costs are then paid, so later growth is per participant)."""
    sem = asyncio.Semaphore(concurrency)
    done = 0
    total = scenario.participants
    t0 = time.monotonic()

    async def one(room_id: str, pid: str, publish: bool, subscribe: bool) -> None:
        nonlocal done
        async with sem:
            started = time.monotonic()
            await gen.add(room_id, pid, publish=publish, subscribe=subscribe)
            JOIN_TIMES.append(time.monotonic() - started)
        done += 1
        if progress is not None:
            progress("joining", done, total, f"{done}/{total} participants")

    room_list = list(range(scenario.rooms)) if rooms is None else list(rooms)
    if setup is not None:
        for room in room_list:
            await setup(scenario, room)
    plan = []
    for room in room_list:
        # publishers first, so subscribers' first offers already carry every track
        members = sorted(scenario.members_of(room), key=lambda m: not m[1])
        plan += [(f"room-{room}", pid, publish, subscribe) for pid, publish, subscribe in members]
    await one(*plan[0])
    await asyncio.sleep(0.2)
    first = measure()
    results = await asyncio.gather(*(one(*m) for m in plan[1:]), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise RuntimeError(f"{len(errors)} participant(s) failed to join: {errors[0]!r}") from errors[0]
    if progress is not None:
        progress("joining", total, total, f"{total} joined in {time.monotonic() - t0:.1f} s")
    return first


async def _wait_ready(scenario: Scenario, gen: LoadGenerator, progress: ProgressFn | None,
                      rooms: Sequence[int] | None = None) -> list[str]:
    """Wait until every subscriber has received audio and video from every publisher of its room."""
    expected = {(f"room-{room}", pid): want for room in (range(scenario.rooms) if rooms is None else rooms)
                for pid, want in scenario.expected(room).items()}
    timeout = READY_TIMEOUT_BASE + READY_TIMEOUT_PER_PARTICIPANT * scenario.participants
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for key, want in expected.items():
            p = gen.participants.get(key)
            got = p.subscriber.received_from() if p is not None and p.subscriber is not None else set()
            if not want <= got:
                missing.append(f"{key[1]} lacks {sorted(want - got)}")
        if progress is not None:
            progress("connecting", len(expected) - len(missing), len(expected),
                     f"{len(expected) - len(missing)}/{len(expected)} subscribers receive everything")
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.1)


async def _measure(sampler: Sampler, warmup: float, duration: float, progress: ProgressFn | None,
                   interval: float = SAMPLE_INTERVAL) -> tuple[list[Sample], int]:
    """Samples every SAMPLE_INTERVAL (and exactly at the end of the warm-up); returns them and
    the index of the window's first sample. With a sampler that waits for a node's stats refresh,
    one sample per refresh instead: ceil(warmup / interval) of warm-up, ceil(duration / interval)
    in the window."""
    total = warmup + duration
    if sampler.cpu_from_stats:
        n_warm, n_window = math.ceil(warmup / interval), max(1, math.ceil(duration / interval))
        total = (n_warm + n_window) * interval
        samples = [await sampler.take()]
        start = samples[0].t
        for k in range(n_warm + n_window):
            s = await sampler.take()
            samples.append(s)
            if progress is not None:
                progress("warm-up" if k < n_warm else "measuring", s.t - start, total, _live_info(samples[-2], s))
        return samples, n_warm
    marks = {round(k * interval, 6) for k in range(1, int(total / interval) + 1)}
    marks |= {round(warmup, 6), round(total, 6)}
    schedule = sorted(m for m in marks if 0 < m <= total)
    samples = [await sampler.take()]
    start = samples[0].t
    w0 = 0
    for mark in schedule:
        await asyncio.sleep(max(0.0, start + mark - time.monotonic()))
        s = await sampler.take()
        samples.append(s)
        if mark == round(warmup, 6):
            w0 = len(samples) - 1
        if progress is not None:
            progress("warm-up" if mark <= warmup else "measuring", s.t - start, total, _live_info(samples[-2], s))
    return samples, w0


def _precise_cpu(a: Sample, b: Sample) -> float:
    """Worker CPU seconds between two samples: schedstat (ns) when the kernel has it, else utime+stime."""
    if a.sfu_cpu_ns and b.sfu_cpu_ns:
        return (b.sfu_cpu_ns - a.sfu_cpu_ns) / 1e9
    return b.sfu_cpu - a.sfu_cpu


def _live_info(a: Sample, b: Sample) -> str:
    dt = max(b.t - a.t, 1e-9)
    fwd = b.sfu["rtp_packets_out"] - a.sfu["rtp_packets_out"]
    cpu = _precise_cpu(a, b)
    d = histogram_summary(_add(b.delay_audio, b.delay_video))
    us = f"{cpu / fwd * 1e6:.1f} us/pkt" if fwd else "- us/pkt"
    return (f"{fwd / dt:,.0f} pkt/s  SFU {cpu / dt:.2f} cores  {us}  delay p50 {d['p50_ms']:.2f} "
            f"p99 {d['p99_ms']:.2f} ms  gen {(b.gen_cpu - a.gen_cpu) / dt:.2f} cores")


def _figures(scenario: Scenario, samples: list[Sample], w0: int, final: Sample, gen: LoadGenerator,
             rss: tuple[int, int, int, int]) -> dict[str, Any]:
    rss_start, rss_first, rss_ready, rss_end = rss
    others = max(1, scenario.participants - 1)
    a, b = samples[w0], samples[-1]
    wall = b.t - a.t
    sfu = _delta(a.sfu, b.sfu)
    g = _delta(a.gen, b.gen)
    cpu = b.sfu_cpu - a.sfu_cpu
    gen_cpu = b.gen_cpu - a.gen_cpu
    forwarded = sfu["rtp_packets_out"]
    received = sfu["rtp_in"]
    window = samples[w0 + 1:]
    audio, video = _sum_hist(window, "audio"), _sum_hist(window, "video")
    expected = b.loss[0] - a.loss[0]
    lost = b.loss[1] - a.loss[1]
    precise = _precise_cpu(a, b)
    sfu_fig: dict[str, Any] = {
        "cpu_seconds": round(cpu, 3), "cores": round(cpu / wall, 4),
        "cpu_seconds_schedstat": round(precise, 4),
        "cpu_system_share": round((b.sfu_system - a.sfu_system) / cpu, 3) if cpu > 0 else None,
        "cpu_us_per_forwarded_packet_schedstat": round(precise / forwarded * 1e6, 2) if forwarded else None,
        "forwarded_packets": forwarded, "forwarded_packets_per_second": round(forwarded / wall, 1),
        "forwarded_mbps": round(sfu["rtp_bytes_out"] * 8 / wall / 1e6, 3),
        "received_packets": received, "received_packets_per_second": round(received / wall, 1),
        "cpu_us_per_forwarded_packet": round(cpu / forwarded * 1e6, 2) if forwarded else None,
        "cpu_us_per_received_packet": round(cpu / received * 1e6, 2) if received else None,
        "cores_per_1to1_session": round(cpu / wall / scenario.sessions, 4) if scenario.sessions else None,
        "loop_lag_ms_max": round(max(s.loop_lag for s in samples[w0:]) * 1e3, 2),
        # growth after the first participant (whose join also pays the worker's one-time costs), per
        # further participant: when all are connected, and at the end of the window (buffers filled)
        "rss_kb": {"start": rss_start, "first_joined": rss_first, "ready": rss_ready, "end": rss_end},
        "rss_kb_per_participant_joined": round((rss_ready - rss_first) / others, 1),
        "rss_kb_per_participant_end": round((rss_end - rss_first) / others, 1),
        "counters": {k: v for k, v in sfu.items() if k not in ("rtp_packets_out", "rtp_bytes_out", "rtp_in")},
    }
    gen_cores = gen_cpu / wall
    jitters: dict[str, list[float]] = {"audio": [], "video": []}
    for sub in gen.subscribers:
        for st in sub.streams.values():
            if st.packets:
                jitters[st.kind].append(st.stats.jitter_ms)
    quality = {
        "expected_packets": expected, "lost_packets": lost,
        "loss_fraction": round(lost / expected, 6) if expected > 0 else 0.0,
        "jitter_ms": {k: {"mean": round(sum(v) / len(v), 3) if v else 0.0, "max": round(max(v), 3) if v else 0.0}
                      for k, v in jitters.items()},
        "simulated_loss": {"dropped_out": g["loss_dropped_out"], "dropped_in": g["loss_dropped_in"]},
        "subscribers": {"nacks_sent": g["nacks_sent"], "nacked_seqs": g["nack_seqs_sent"],
                        "retransmissions_received": g["rtx_received"], "recovered": g["recovered"],
                        "plis_sent": g["plis_sent"], "frames_received": g["frames_received"],
                        "keyframes_received": g["keyframes_received"]},
        "publishers": {"nacks_received": g["nacks_received"], "nacked_seqs": g["nack_seqs_received"],
                       "retransmissions_sent": g["rtx_sent"], "plis_received": g["plis_received"],
                       "keyframes_sent": g["keyframes_sent"]},
        "sfu": {"nacks_from_subscribers": sfu["nacks_in"], "nacks_to_publishers": sfu["nacks_out"],
                "retransmissions": sfu["retransmits"], "retransmit_misses": sfu["retransmit_misses"],
                "plis_from_subscribers": sfu["plis_in"], "plis_to_publishers": sfu["plis_out"],
                "keyframe_waits": sfu["keyframe_waits"]},
    }
    busy, steal = b.busy - a.busy, b.steal - a.steal
    generator = {
        "cpu_seconds": round(gen_cpu, 3), "cores": round(gen_cores, 4),
        "sent_packets": g["rtp_sent"], "received_packets": g["rtp_received"],
        "cpu_us_per_packet_handled": round(gen_cpu / (g["rtp_sent"] + g["rtp_received"]) * 1e6, 2)
        if g["rtp_sent"] + g["rtp_received"] else None,
        "pacer": gen.pacer.stats(),
        "warning": (f"the load generator used {gen_cores:.0%} of a core: it, not the SFU, may limit this run"
                    if gen_cores > GENERATOR_WARN_CORES else None),
    }
    machine = {"busy_cores": round(busy / wall, 3), "steal_cores": round(steal / wall, 3),
               "other_cores": round(max(0.0, busy - cpu - gen_cpu) / wall, 3), "loadavg": list(os.getloadavg())}
    consistency = {
        "publishers_sent": final.gen["rtp_sent"], "sfu_received": final.sfu["rtp_in"],
        "sfu_forwarded": final.sfu["rtp_packets_out"], "subscribers_received": final.gen["rtp_received"],
        "subscriber_srtp_drops": final.gen["srtp_drops"] + final.gen["srtp_before_connected"],
        "unknown_ssrc": final.gen["unknown_ssrc"],
        "simulated_loss_out": final.gen["loss_dropped_out"], "simulated_loss_in": final.gen["loss_dropped_in"],
    }
    timeline = []
    for i in range(1, len(samples)):
        p, s = samples[i - 1], samples[i]
        dt = max(s.t - p.t, 1e-9)
        fwd = s.sfu["rtp_packets_out"] - p.sfu["rtp_packets_out"]
        c = _precise_cpu(p, s)
        d = histogram_summary(_add(s.delay_audio, s.delay_video))
        timeline.append({"t": round(s.t - a.t, 3), "warmup": i <= w0, "forwarded_pps": round(fwd / dt, 1),
                         "forwarded_mbps": round((s.sfu["rtp_bytes_out"] - p.sfu["rtp_bytes_out"]) * 8 / dt / 1e6, 3),
                         "sfu_cores": round(c / dt, 4), "cpu_us_per_packet": round(c / fwd * 1e6, 2) if fwd else None,
                         "delay_p50_ms": d["p50_ms"], "delay_p95_ms": d["p95_ms"], "delay_p99_ms": d["p99_ms"],
                         "generator_cores": round((s.gen_cpu - p.gen_cpu) / dt, 4), "sfu_rss_kb": s.rss_kb,
                         # cores used by other processes of the machine in that second (a shared host)
                         "others_cores": round(max(0.0, (s.busy - p.busy) - c - (s.gen_cpu - p.gen_cpu)) / dt, 3)})
    quiet = _quiet_figures(samples, w0)
    errors = list(gen.errors) + [e for p in gen.participants.values() for e in p.errors]
    run = {
        "window": {"seconds": round(wall, 3), "warmup_seconds": round(a.t - samples[0].t, 3)},
        "sfu": sfu_fig,
        "delay_ms": {"all": histogram_summary(_add(audio, video)), "audio": histogram_summary(audio),
                     "video": histogram_summary(video), "negative": g["negative_delays"],
                     "without_abs_send_time": g["no_abs_send_time"]},
        "quiet": quiet,
        "quality": quality, "generator": generator, "machine_load": machine, "consistency": consistency,
        "timeline": timeline, "streams": gen.stream_summaries(), "events": dict(gen.events), "errors": errors[:50],
    }
    times = sorted(JOIN_TIMES)
    run["join_ms"] = {"count": len(times),
                      "p50": round(1000 * times[len(times) // 2], 2) if times else None,
                      "p95": round(1000 * times[min(len(times) - 1, int(len(times) * 0.95))], 2) if times else None}
    JOIN_TIMES.clear()
    run["aims"] = aims(scenario, run)
    return run


def _quiet_figures(samples: list[Sample], w0: int) -> dict[str, Any]:
    """CPU per packet and delay over the window's seconds in which the rest of the machine used
    less than QUIET_OTHERS_CORES (on a shared host, the seconds least disturbed by others)."""
    cpu = 0.0
    fwd = 0
    seconds = 0
    hist = new_histogram()
    for i in range(w0 + 1, len(samples)):
        p, s = samples[i - 1], samples[i]
        dt = max(s.t - p.t, 1e-9)
        c = _precise_cpu(p, s)
        others = max(0.0, (s.busy - p.busy) - c - (s.gen_cpu - p.gen_cpu)) / dt
        if others >= QUIET_OTHERS_CORES:
            continue
        seconds += 1
        cpu += c
        fwd += s.sfu["rtp_packets_out"] - p.sfu["rtp_packets_out"]
        hist = _add(hist, _add(s.delay_audio, s.delay_video))
    return {"others_below_cores": QUIET_OTHERS_CORES, "seconds": seconds, "forwarded_packets": fwd,
            "cpu_us_per_forwarded_packet": round(cpu / fwd * 1e6, 2) if fwd else None,
            "delay_ms": histogram_summary(hist)}


def aims(scenario: Scenario, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's aims and Janus anchors against this run's figures."""
    out: list[dict[str, Any]] = []
    us = run["sfu"]["cpu_us_per_forwarded_packet"]
    if us is not None:
        janus = JANUS_US_PER_PACKET.get(scenario.kind)
        entry: dict[str, Any] = {"aim": f"{scenario.name}: SFU CPU per forwarded packet", "measured": us,
                                 "unit": "us", "janus": janus}
        if scenario.kind in ("group", "fanout"):
            entry.update(target=AIM_US_PER_PACKET, met=us <= AIM_US_PER_PACKET)
        out.append(entry)
    cores = run["sfu"]["cores_per_1to1_session"]
    if cores is not None:
        out.append({"aim": f"{scenario.name}: SFU cores per 1:1 session", "measured": cores, "unit": "cores",
                    "janus": JANUS_CORES_PER_SESSION, "target": AIM_CORES_PER_SESSION,
                    "met": cores <= AIM_CORES_PER_SESSION})
    return out


# -- the command -----------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--duration", type=float, default=20.0, help="measurement window in seconds (default: 20)")
    common.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of traffic before the window, not measured (default: 3)")
    common.add_argument("--workers", type=int, default=1, help="media worker processes (default: 1)")
    common.add_argument("--json", metavar="FILE", help="write every figure, the timeline and the machine as JSON")
    common.add_argument("--plot", metavar="FILE.png", help="plot throughput, CPU per packet and delay over time")
    common.add_argument("--media-cache", metavar="DIR",
                        help="where the encoded media is cached (default: $TELESFU_MEDIA_CACHE or ~/.cache/telesfu/media)")
    common.add_argument("--udp-port", type=int, default=0, help="first worker UDP port (default: a free one)")
    common.add_argument("--join-concurrency", type=int, default=8, help="participants joining at once (default: 8)")
    common.add_argument("--seed", type=int, default=1, help="random seed of SSRCs, phases, credentials (default: 1)")
    common.add_argument("--loss", type=float, default=0.0, metavar="PERCENT",
                        help="simulated network loss: this share of RTP packets is dropped on each hop, "
                             "publisher->SFU and SFU->subscriber, so NACK/RTX run (default: 0)")
    common.add_argument("--target", metavar="URL",
                        help="drive the node at URL (API, signaling, /metrics) instead of starting an embedded "
                             "`telesfu serve`; SFU CPU then comes from its /metrics")
    common.add_argument("--api-key", default="", help="the node's API key (with --target)")
    common.add_argument("--direct", action="store_true",
                        help="no node and no signaling: a MediaPlane in this process, commanded directly")
    common.add_argument("--client", choices=("synthetic", "aiortc"), default="synthetic",
                        help="aiortc: run the scenario with aiortc peers and, beside it, with synthetic ones, "
                             "and compare forwarded packets/s and SFU CPU per packet (keep it small)")
    common.add_argument("--ramp", action="store_true",
                        help="add rooms of the scenario step by step until loss > 1%% or p99 delay > 50 ms in a "
                             "step, or --max-rooms / --max-seconds; reports the capacity reached")
    common.add_argument("--step-seconds", type=float, default=5.0, help="ramp: measured seconds per step (default: 5)")
    common.add_argument("--rooms-per-step", type=int, default=1, help="ramp: rooms added per step (default: 1)")
    common.add_argument("--max-rooms", type=int, default=100, help="ramp: room cap (default: 100)")
    common.add_argument("--max-seconds", type=float, default=600.0, help="ramp: time cap (default: 600)")
    sub = p.add_subparsers(dest="media_scenario", required=True)
    p1 = sub.add_parser("one-to-one", parents=[common], help="N rooms of two participants, both publishing")
    p1.add_argument("--rooms", type=int, default=1)
    p2 = sub.add_parser("group", parents=[common], help="N rooms of K participants, all publishing")
    p2.add_argument("--size", type=int, default=6)
    p2.add_argument("--rooms", type=int, default=1)
    p3 = sub.add_parser("fanout", parents=[common], help="one publisher, K subscribe-only participants")
    p3.add_argument("--subscribers", type=int, default=20)
    p3.add_argument("--rooms", type=int, default=1)
    p4 = sub.add_parser("waiting-room", parents=[common],
                        help="rooms whose provider has the waiting room on; a scripted provider admits each "
                             "client on participant_waiting; reports the admission wait")
    p4.add_argument("--size", type=int, default=2)
    p4.add_argument("--rooms", type=int, default=1)
    sub.add_parser("suite", parents=[common], help="1:1 x1, 1:1 x5, group of 6 and fan-out 1->20, one after another")


def scenarios_from(args: argparse.Namespace) -> list[Scenario]:
    kind = args.media_scenario
    if kind == "one-to-one":
        return [one_to_one(args.rooms)]
    if kind == "group":
        return [group(args.size, args.rooms)]
    if kind == "fanout":
        return [fanout(args.subscribers, args.rooms)]
    if kind == "waiting-room":
        return [waiting_room(args.rooms, args.size)]
    return suite()


def run(args: argparse.Namespace) -> int:
    try:
        scenarios = scenarios_from(args)
    except ValueError as e:
        print(f"telesfu bench media: {e}", file=sys.stderr)
        return 2
    if not 0 < args.duration <= MAX_DURATION or args.warmup < 0 or args.workers < 1 or not 0 <= args.loss < 50:
        print("telesfu bench media: --duration in (0, 3600], --warmup >= 0, --workers >= 1, --loss in [0, 50)",
              file=sys.stderr)
        return 2
    if args.direct and (args.target or args.client == "aiortc"):
        print("telesfu bench media: --direct drives no node: not with --target or --client aiortc", file=sys.stderr)
        return 2
    if args.target and not args.api_key:
        print("telesfu bench media: --target needs --api-key", file=sys.stderr)
        return 2
    return run_quietly(lambda: _main(args, scenarios))


async def _main(args: argparse.Namespace, scenarios: list[Scenario]) -> int:
    t0 = time.perf_counter()
    media = load_media(Path(args.media_cache) if args.media_cache else None)
    report: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in ["telesfu", "bench", "media", *bench_argv("media")]),
        "machine": machine_info(), "media": media.summary(), "media_load_seconds": round(time.perf_counter() - t0, 2),
        "runs": []}
    target = NodeTarget(args.target, args.api_key) if args.target else None
    ok = True
    try:
        with LiveProgress() as live:
            for sc in scenarios:
                live.start(sc.name)
                if args.ramp:
                    template = dataclasses.replace(sc, rooms=1)
                    report["runs"].append(await run_ramp(
                        template, media, step_seconds=args.step_seconds, rooms_per_step=args.rooms_per_step,
                        max_rooms=args.max_rooms, max_seconds=args.max_seconds, workers=args.workers,
                        udp_port=args.udp_port, seed=args.seed, join_concurrency=args.join_concurrency,
                        direct=args.direct, target=target, progress=live.update))
                    continue
                result = await run_scenario(sc, media, duration=args.duration, warmup=args.warmup,
                                            workers=args.workers, udp_port=args.udp_port, seed=args.seed,
                                            join_concurrency=args.join_concurrency, loss=args.loss / 100.0,
                                            progress=live.update, direct=args.direct, target=target)
                ok = ok and not result["setup"]["not_ready"]
                if args.client == "aiortc":
                    result["aiortc"] = await run_aiortc(sc, duration=args.duration, warmup=args.warmup,
                                                        workers=args.workers, udp_port=args.udp_port, target=target,
                                                        progress=live.update)
                report["runs"].append(result)
    finally:
        if target is not None:
            await target.stop()
    if args.ramp:
        print_ramp(report)
    else:
        print_summary(report)
        if args.client == "aiortc":
            print_cross_check(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        (plot_ramp if args.ramp else plot)(report, args.plot)
    return 0 if ok else 1


def print_cross_check(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 160)
    for r in report["runs"]:
        a = r.get("aiortc")
        if a is None:
            continue
        syn = r["sfu"]
        us_a, us_s = a["cpu_us_per_forwarded_packet"], syn["cpu_us_per_forwarded_packet"]
        ratio = f"{us_a / us_s:.2f}x" if us_a and us_s else "-"
        console.print(f"cross-check {r['scenario']['name']}: forwarded pkt/s synthetic "
                      f"{syn['forwarded_packets_per_second']:,.0f}, aiortc {a['forwarded_packets_per_second']:,.0f}; "
                      f"SFU us/forwarded packet synthetic {us_s}, aiortc {us_a} (aiortc/synthetic {ratio}); "
                      f"aiortc process {a['generator_cores']:.2f} cores")




class LiveProgress:
    """One rich progress bar per phase of each run, refreshed a few times a second."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description:<30}"), BarColumn(bar_width=24),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), auto_refresh=False)
        self._tasks: dict[str, Any] = {}
        self._name = ""
        self._next = 0.0
        self._tty = sys.stderr.isatty()

    def __enter__(self) -> LiveProgress:
        if self._tty:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tty:
            self._progress.stop()

    def start(self, name: str) -> None:
        self._name = name
        self._tasks = {}

    def update(self, phase: str, done: float, total: float, info: str) -> None:
        key = "measure" if phase in ("warm-up", "measuring") else phase
        task = self._tasks.get(key)
        if task is None:
            task = self._progress.add_task(f"{self._name}: {key}", total=max(total, 1e-9), info="")
            self._tasks[key] = task
        now = time.perf_counter()
        force = done >= total or phase == "ramp"
        if not self._tty:  # a log: plain lines, a few of them
            if force or now >= self._next:
                self._next = now + 5.0
                print(f"{self._name}: {phase} {info}", file=sys.stderr, flush=True)
            return
        if force or now >= self._next:
            self._next = now + 0.25
            self._progress.update(task, completed=min(done, total), total=max(total, 1e-9),
                                  description=f"{self._name}: {phase}", info=info, refresh=True)


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    runs = report["runs"]
    t = Table(title="telesfu bench media", title_justify="left")
    t.add_column("figure")
    for r in runs:
        t.add_column(r["scenario"]["name"], justify="right")

    def row(name: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for r in runs:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError):
                cells.append("-")
        t.add_row(name, *cells)

    def opt(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    row("participants / forwarded streams", lambda r: f"{r['scenario']['participants']} / "
                                                      f"{r['scenario']['forwarded_streams']}")
    row("window s (warm-up s)", lambda r: f"{r['window']['seconds']:.1f} ({r['window']['warmup_seconds']:.1f})")
    row("forwarded packets/s", lambda r: f"{r['sfu']['forwarded_packets_per_second']:,.0f}")
    row("forwarded Mbps", lambda r: f"{r['sfu']['forwarded_mbps']:.2f}")
    row("SFU received packets/s", lambda r: f"{r['sfu']['received_packets_per_second']:,.0f}")
    row("SFU cores", lambda r: f"{r['sfu']['cores']:.3f}")
    row("SFU CPU us / forwarded packet", lambda r: opt(r["sfu"]["cpu_us_per_forwarded_packet"], ".1f"))
    row("SFU CPU us / received packet", lambda r: opt(r["sfu"]["cpu_us_per_received_packet"], ".1f"))
    row("  in quiet seconds (how many)", lambda r: f"{opt(r['quiet']['cpu_us_per_forwarded_packet'], '.1f')} "
                                                   f"({r['quiet']['seconds']})")
    row("SFU cores per 1:1 session", lambda r: opt(r["sfu"]["cores_per_1to1_session"], ".4f"))
    row("SFU RSS kB/participant (joined/end)", lambda r: f"{r['sfu']['rss_kb_per_participant_joined']:.0f} / "
                                                         f"{r['sfu']['rss_kb_per_participant_end']:.0f}")
    row("SFU loop lag max ms", lambda r: f"{r['sfu']['loop_lag_ms_max']:.1f}")
    row("delay p50/p95/p99 ms", lambda r: "{p50_ms:.2f} / {p95_ms:.2f} / {p99_ms:.2f}".format(**r["delay_ms"]["all"]))
    row("  in quiet seconds", lambda r: "{p50_ms:.2f} / {p95_ms:.2f} / {p99_ms:.2f}".format(**r["quiet"]["delay_ms"]))
    row("  audio p50/p99 ms", lambda r: "{p50_ms:.2f} / {p99_ms:.2f}".format(**r["delay_ms"]["audio"]))
    row("  video p50/p99 ms", lambda r: "{p50_ms:.2f} / {p99_ms:.2f}".format(**r["delay_ms"]["video"]))
    row("join time p50/p95 ms", lambda r: f"{r['join_ms']['p50']} / {r['join_ms']['p95']}"
        if r.get("join_ms", {}).get("count") else "-")
    row("loss (packets)", lambda r: f"{r['quality']['loss_fraction']:.4%} ({r['quality']['lost_packets']})")
    row("jitter ms audio/video (mean)", lambda r: f"{r['quality']['jitter_ms']['audio']['mean']:.2f} / "
                                                  f"{r['quality']['jitter_ms']['video']['mean']:.2f}")
    row("NACKs sub->SFU / SFU->pub", lambda r: f"{r['quality']['sfu']['nacks_from_subscribers']} / "
                                               f"{r['quality']['sfu']['nacks_to_publishers']}")
    row("retransmissions SFU / received", lambda r: f"{r['quality']['sfu']['retransmissions']} / "
                                                    f"{r['quality']['subscribers']['retransmissions_received']}")
    row("PLIs sub->SFU / SFU->pub", lambda r: f"{r['quality']['sfu']['plis_from_subscribers']} / "
                                              f"{r['quality']['sfu']['plis_to_publishers']}")
    row("admission wait p50/p95 ms (waited)", lambda r: f"{r['admission']['wait_ms']['p50']:.1f} / "
                                                        f"{r['admission']['wait_ms']['p95']:.1f} "
                                                        f"({r['admission']['waited']})")
    row("generator cores", lambda r: f"{r['generator']['cores']:.3f}")
    row("machine busy / others / steal cores", lambda r: f"{r['machine_load']['busy_cores']:.2f} / "
                                                         f"{r['machine_load']['other_cores']:.2f} / "
                                                         f"{r['machine_load']['steal_cores']:.2f}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(t)
    m = report["machine"]
    md = report["media"]
    console.print(f"machine: {m['nproc']} CPU ({m['cpu_model']}), Python {m['python']}, {m['date']}, "
                  f"commit {m['git_commit'] or '?'}")
    console.print(f"media: VP8 {md['width']}x{md['height']} {md['fps']} fps {md['video_kbps']} kbps "
                  f"({md['video_packets_per_second']} packets/s), Opus {md['audio_kbps']} kbps")
    for r in runs:
        for a in r["aims"]:
            janus = f", Janus {a['janus']:g}" if a.get("janus") is not None else ""
            if "target" in a:
                mark = "[green]met   [/]" if a["met"] else "[red]MISSED[/]"
                console.print(f"  {mark} {a['aim']}: {a['measured']:g} {a['unit']} (aim <= {a['target']:g}{janus})")
            else:
                console.print(f"         {a['aim']}: {a['measured']:g} {a['unit']}{janus}")
        if r["generator"]["warning"]:
            console.print(f"  [yellow]warning[/] {r['scenario']['name']}: {r['generator']['warning']}")
        if r["setup"]["not_ready"]:
            console.print(f"  [red]not ready[/] {r['scenario']['name']}: {r['setup']['not_ready'][:3]}")
        if r["errors"]:
            console.print(f"  [red]errors[/] {r['scenario']['name']}: {r['errors'][:3]}")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    (ax_pps, ax_cpu), (ax_delay, ax_bar) = axes
    for i, r in enumerate(runs):
        color = f"C{i}"
        name = r["scenario"]["name"]
        tl = [e for e in r["timeline"] if not e["warmup"]]
        ts = [e["t"] for e in tl]
        ax_pps.plot(ts, [e["forwarded_pps"] for e in tl], color=color, label=name)
        ax_cpu.plot(ts, [e["cpu_us_per_packet"] for e in tl], color=color, label=name)
        for q, style in (("p50", "-"), ("p99", ":")):
            ax_delay.plot(ts, [e[f"delay_{q}_ms"] for e in tl], color=color, linestyle=style,
                          label=f"{name} {q}")
    ax_pps.set_title("forwarded packets / s")
    ax_pps.set_xlabel("s into the window")
    ax_pps.legend(fontsize=8)
    ax_cpu.axhline(AIM_US_PER_PACKET, color="red", linestyle="--", linewidth=1, label="aim (group, fan-out)")
    ax_cpu.set_title("SFU CPU us per forwarded packet (per second)")
    ax_cpu.set_xlabel("s into the window")
    ax_cpu.legend(fontsize=8)
    ax_delay.set_title("one-way delay publisher -> subscriber, p50 (solid) and p99 (dotted), ms")
    ax_delay.set_xlabel("s into the window")
    ax_delay.set_yscale("log")
    ax_delay.legend(fontsize=7, ncol=2, loc="upper left")
    names = [r["scenario"]["name"] for r in runs]
    ours = [r["sfu"]["cpu_us_per_forwarded_packet"] or 0.0 for r in runs]
    janus = [JANUS_US_PER_PACKET.get(r["scenario"]["kind"], 0.0) for r in runs]
    x = range(len(runs))
    bars = ax_bar.bar([i - 0.2 for i in x], ours, 0.4, label="telesfu")
    ax_bar.bar_label(bars, fmt="%.1f", fontsize=8)
    bars = ax_bar.bar([i + 0.2 for i in x], janus, 0.4, label="Janus (issue anchor)", color="grey")
    ax_bar.bar_label(bars, fmt="%.0f", fontsize=8)
    ax_bar.axhline(AIM_US_PER_PACKET, color="red", linestyle="--", linewidth=1, label="aim")
    ax_bar.set_xticks(list(x), names)
    ax_bar.set_title("SFU CPU us per forwarded packet (window)")
    ax_bar.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"telesfu bench media — {m['nproc']} CPU {m['cpu_model']}, {m['date']}, {m['git_commit']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- ramp: rooms added step by step until a limit ---------------------------------------------------------------

RAMP_LOSS_LIMIT = 0.01
RAMP_P99_LIMIT_MS = 50.0
RAMP_SETTLE_SECONDS = 1.0
# How long each participant's join took (token join over signaling through publish/subscribe
# set-up), collected by _join_all for the run being measured.
JOIN_TIMES: list[float] = []
RAMP_JOIN_TIMEOUT = 60.0  # a step whose rooms take longer to join has passed the node's capacity


async def run_ramp(template: Scenario, media: EncodedMedia, *, step_seconds: float = 5.0, rooms_per_step: int = 1,
                   max_rooms: int = 100, max_seconds: float = 600.0, workers: int = 1, udp_port: int = 0,
                   seed: int | None = 1, join_concurrency: int = 8, loss_limit: float = RAMP_LOSS_LIMIT,
                   p99_limit_ms: float = RAMP_P99_LIMIT_MS, direct: bool = False, target: NodeTarget | None = None,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Add `rooms_per_step` rooms of `template` at a time; after each, wait until the new rooms
    receive everything, then measure `step_seconds`. Stops at the first step whose loss exceeds
    `loss_limit` or whose p99 delay exceeds `p99_limit_ms`, at `max_rooms`, or after `max_seconds`;
    the capacity is the last step within both limits."""
    if step_seconds <= 0 or rooms_per_step < 1 or max_rooms < 1 or max_seconds <= 0:
        raise ValueError("step_seconds > 0, rooms_per_step >= 1, max_rooms >= 1, max_seconds > 0")
    limit_rooms = min(max_rooms, MAX_PARTICIPANTS // template.members)
    steps: list[dict[str, Any]] = []
    stopped_by = "max_rooms"
    t_start = time.monotonic()
    async with _Driver(media, workers=workers, udp_port=udp_port, seed=seed, loss=0.0, direct=direct,
                       target=target) as d:
        gen = d.gen
        rooms = 0
        while True:
            new = list(range(rooms, min(limit_rooms, rooms + rooms_per_step)))
            if not new:
                stopped_by = "max_rooms"
                break
            if time.monotonic() - t_start > max_seconds:
                stopped_by = "max_seconds"
                break
            rooms += len(new)
            scenario = dataclasses.replace(template, rooms=rooms)
            t_step = time.monotonic()
            try:
                await asyncio.wait_for(_join_all(scenario, gen, join_concurrency, None, lambda: 0,
                                                 setup=d.setup_room, rooms=new), RAMP_JOIN_TIMEOUT)
            except (RuntimeError, TimeoutError) as e:
                stopped_by = f"join failed at {rooms} rooms: {e!r}"[:300]
                break
            missing = await _wait_ready(scenario, gen, None, rooms=new)
            setup_seconds = time.monotonic() - t_step
            # settle: the joins' handshakes and first keyframes stay out of the step
            await asyncio.sleep(RAMP_SETTLE_SECONDS if direct else 0.0)
            await d.sampler.take()  # a node's: the next stats refresh
            a = await d.sampler.take()
            # a node's take() waits for its next stats refresh (0..interval s)
            await asyncio.sleep(max(0.0, step_seconds - (0.5 * d.interval if not direct else 0.0)))
            b = await d.sampler.take()
            step = _step_figures(scenario, a, b)
            step["not_ready"] = len(missing)
            step["setup_seconds"] = round(setup_seconds, 2)
            steps.append(step)
            if progress is not None:
                progress("ramp", rooms, limit_rooms,
                         f"{rooms} rooms {step['forwarded_pps']:,.0f} pkt/s SFU {step['sfu_cores']:.2f} cores "
                         f"loss {step['loss_fraction']:.2%} p99 {step['delay_p99_ms']:.1f} ms")
            over = []
            if step["loss_fraction"] > loss_limit:
                over.append(f"loss {step['loss_fraction']:.2%} > {loss_limit:.0%}")
            if step["delay_p99_ms"] > p99_limit_ms:
                over.append(f"p99 delay {step['delay_p99_ms']:.1f} ms > {p99_limit_ms:g} ms")
            if missing:
                over.append(f"{len(missing)} subscriber(s) not receiving everything")
            if over:
                step["over"] = over
                stopped_by = "; ".join(over)
                break
        admission = d.admission()
    within = [s for s in steps if "over" not in s]
    capacity = within[-1] if within else None
    return {"scenario": scenario_info(template), "ramp": {
        "step_seconds": step_seconds, "rooms_per_step": rooms_per_step, "max_rooms": max_rooms,
        "max_seconds": max_seconds, "loss_limit": loss_limit, "p99_limit_ms": p99_limit_ms,
        "mode": "direct" if direct else ("remote" if target else "embedded"), "workers": workers,
        "stopped_by": stopped_by, "seconds": round(time.monotonic() - t_start, 1),
        "capacity": capacity, "steps": steps}, "admission": admission}


def _step_figures(scenario: Scenario, a: Sample, b: Sample) -> dict[str, Any]:
    dt = max(b.t - a.t, 1e-9)
    fwd = b.sfu["rtp_packets_out"] - a.sfu["rtp_packets_out"]
    cpu = _precise_cpu(a, b)
    gen_cpu = b.gen_cpu - a.gen_cpu
    d = histogram_summary(_add(b.delay_audio, b.delay_video))
    expected, lost = b.loss[0] - a.loss[0], b.loss[1] - a.loss[1]
    return {"rooms": scenario.rooms, "participants": scenario.participants,
            "forwarded_streams": scenario.forwarded_streams, "seconds": round(dt, 2),
            "forwarded_pps": round(fwd / dt, 1), "received_pps": round((b.sfu["rtp_in"] - a.sfu["rtp_in"]) / dt, 1),
            "sfu_cores": round(cpu / dt, 3), "cpu_us_per_packet": round(cpu / fwd * 1e6, 2) if fwd else None,
            "loss_fraction": round(max(0, lost) / expected, 5) if expected > 0 else 0.0,
            "delay_p50_ms": d["p50_ms"], "delay_p99_ms": d["p99_ms"], "generator_cores": round(gen_cpu / dt, 3),
            "others_cores": round(max(0.0, (b.busy - a.busy) - cpu - gen_cpu) / dt, 3),
            "loop_lag_ms": round(b.loop_lag * 1e3, 2)}


def print_ramp(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    for r in report["runs"]:
        ramp = r["ramp"]
        t = Table(title=f"ramp: {r['scenario']['name'].split(' x')[0]} rooms", title_justify="left")
        for col in ("rooms", "participants", "fwd pkt/s", "SFU cores", "us/pkt", "loss", "p50 ms", "p99 ms",
                    "gen cores", "others cores"):
            t.add_column(col, justify="right")
        for s in ramp["steps"]:
            t.add_row(str(s["rooms"]), str(s["participants"]), f"{s['forwarded_pps']:,.0f}", f"{s['sfu_cores']:.2f}",
                      "-" if s["cpu_us_per_packet"] is None else f"{s['cpu_us_per_packet']:.1f}",
                      f"{s['loss_fraction']:.2%}", f"{s['delay_p50_ms']:.2f}", f"{s['delay_p99_ms']:.2f}",
                      f"{s['generator_cores']:.2f}", f"{s['others_cores']:.2f}")
        console.print(t)
        c = ramp["capacity"]
        if c is None:
            console.print(f"  capacity: none within the limits (stopped by {ramp['stopped_by']})")
        else:
            console.print(f"  capacity: {c['rooms']} rooms, {c['participants']} participants, "
                          f"{c['forwarded_pps']:,.0f} forwarded pkt/s, SFU {c['sfu_cores']:.2f} cores "
                          f"(stopped by {ramp['stopped_by']})")


def plot_ramp(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    (ax_pps, ax_cores), (ax_delay, ax_loss) = axes
    for i, r in enumerate(report["runs"]):
        ramp = r["ramp"]
        steps = ramp["steps"]
        name = r["scenario"]["name"].split(" x")[0]
        rooms = [s["rooms"] for s in steps]
        color = f"C{i}"
        ax_pps.plot(rooms, [s["forwarded_pps"] for s in steps], "o-", color=color, label=name)
        ax_cores.plot(rooms, [s["sfu_cores"] for s in steps], "o-", color=color, label=f"{name} SFU")
        ax_cores.plot(rooms, [s["generator_cores"] for s in steps], "x--", color=color, label=f"{name} generator")
        ax_delay.plot(rooms, [s["delay_p99_ms"] for s in steps], "o-", color=color, label=f"{name} p99")
        ax_delay.plot(rooms, [s["delay_p50_ms"] for s in steps], ".:", color=color, label=f"{name} p50")
        ax_loss.plot(rooms, [s["loss_fraction"] * 100 for s in steps], "o-", color=color, label=name)
        if ramp["capacity"] is not None:
            for ax in (ax_pps, ax_cores, ax_delay, ax_loss):
                ax.axvline(ramp["capacity"]["rooms"], color=color, linestyle=":", linewidth=1)
        p99_limit, loss_limit = ramp["p99_limit_ms"], ramp["loss_limit"]
    ax_pps.set_title("forwarded packets / s per step")
    ax_cores.set_title("cores per step (dotted line: capacity)")
    ax_delay.set_title("one-way delay per step, ms")
    ax_delay.axhline(p99_limit, color="red", linestyle="--", linewidth=1, label="p99 limit")
    ax_loss.set_title("loss per step, %")
    ax_loss.axhline(loss_limit * 100, color="red", linestyle="--", linewidth=1, label="loss limit")
    for ax in (ax_pps, ax_cores, ax_delay, ax_loss):
        ax.set_xlabel("rooms")
        ax.legend(fontsize=7)
    m = report["machine"]
    fig.suptitle(f"telesfu bench media --ramp — {m['nproc']} CPU {m['cpu_model']}, {m['date']}, {m['git_commit']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- aiortc cross-check: the same scenario with full WebRTC peers -------------------------------------------

class _AiortcPeer:
    """One aiortc participant: a publish connection (silence and aiortc's generated video, encoded
    by aiortc) and a subscribe connection whose tracks are drained."""

    def __init__(self, participant_id: str, publish: bool) -> None:
        from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

        self.config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self.id = participant_id
        self.publishes = publish
        self.pub: Any = RTCPeerConnection(self.config) if publish else None
        self.sub: Any = RTCPeerConnection(self.config)
        self.tracks: list[Any] = []
        self.lock = asyncio.Lock()
        self._drains: list[asyncio.Task[None]] = []

        @self.sub.on("track")
        def on_track(track: Any) -> None:
            self._drains.append(asyncio.ensure_future(self._drain(track)))

    async def _drain(self, track: Any) -> None:
        try:
            while True:
                await track.recv()
        except Exception:  # noqa: BLE001 - MediaStreamError when the track ends, or cancellation
            return

    async def publish_offer(self) -> str:
        from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

        assert self.pub is not None
        self.pub.addTransceiver(AudioStreamTrack(), direction="sendonly")
        self.pub.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await self.pub.setLocalDescription(await self.pub.createOffer())
        return str(self.pub.localDescription.sdp)

    async def set_publish_answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pub.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def answer(self, sdp: str) -> str:
        from aiortc import RTCSessionDescription

        await self.sub.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        return str(self.sub.localDescription.sdp)

    async def packets(self) -> tuple[int, int]:
        """(RTP packets sent, RTP packets received) so far, from aiortc's stats."""
        sent = received = 0
        for pc, field, kind in ((self.pub, "packetsSent", "outbound-rtp"), (self.sub, "packetsReceived", "inbound-rtp")):
            if pc is None:
                continue
            report = await pc.getStats()
            n = sum(int(getattr(s, field, 0) or 0) for s in report.values() if getattr(s, "type", "") == kind)
            if kind == "outbound-rtp":
                sent = n
            else:
                received = n
        return sent, received

    async def close(self) -> None:
        for t in self._drains:
            t.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()


async def run_aiortc(scenario: Scenario, *, duration: float = 10.0, warmup: float = 3.0, workers: int = 1,
                     udp_port: int = 0, target: NodeTarget | None = None,
                     progress: ProgressFn | None = None) -> dict[str, Any]:
    """`scenario` with aiortc participants through the node's signaling: forwarded packets/s and
    SFU CPU per forwarded packet, to set beside the synthetic participants' figures."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only
    node = target or await NodeTarget.start_embedded(workers, udp_port)
    peers: dict[tuple[str, str], _AiortcPeer] = {}
    tasks: set[asyncio.Task[None]] = set()
    errors: list[str] = []

    tag = f"a{random.getrandbits(24):06x}-"

    async def token(room_id: str, pid: str) -> str:
        return await node.token(tag + room_id, tag + pid)

    signaling = NodeSignaling(node.url, token, prefix=tag)

    async def answer(e: dict[str, Any]) -> None:
        peer = peers.get((str(e["room_id"]), str(e["participant_id"])))
        if peer is None:
            return
        async with peer.lock:
            sdp = await peer.answer(str(e["sdp"]))
            await signaling.subscribe_answer(str(e["room_id"]), peer.id, sdp)

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            errors.append(repr(t.exception()))

    def on_event(e: dict[str, Any]) -> None:
        if e.get("type") == "subscribe_offer":
            t = asyncio.ensure_future(answer(e))
            tasks.add(t)
            t.add_done_callback(done)

    signaling.on_event = on_event
    try:
        for room in range(scenario.rooms):
            members = scenario.members_of(room)
            await node.setup_room(f"{tag}room-{room}", tag + members[0][0], [tag + m[0] for m in members[1:]],
                                  scenario.waiting_room)
            for pid, publishes, _ in members:
                peer = _AiortcPeer(pid, publishes)
                peers[(f"room-{room}", pid)] = peer
                await signaling.add_participant(f"room-{room}", pid, publishes, True)
                if publishes:
                    sdp = await signaling.publish_offer(f"room-{room}", pid, await peer.publish_offer())
                    await peer.set_publish_answer(sdp)
        if progress is not None:
            progress("warm-up", 0, warmup, f"{len(peers)} aiortc participants joined")
        await asyncio.sleep(warmup)
        sampler = _AiortcSampler(node, list(peers.values()))
        a = await sampler.take()
        await asyncio.sleep(max(0.0, duration - NODE_SAMPLE_INTERVAL / 2))
        b = await sampler.take()
    finally:
        await signaling.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in peers.values():
            await peer.close()
        if node is not target:
            await node.stop()
    dt = b["t"] - a["t"]
    fwd = b["forwarded"] - a["forwarded"]
    cpu = b["sfu_cpu"] - a["sfu_cpu"]
    return {"scenario": scenario_info(scenario), "client": "aiortc", "window_seconds": round(dt, 2),
            "forwarded_packets": fwd, "forwarded_packets_per_second": round(fwd / dt, 1),
            "received_packets_per_second": round((b["received"] - a["received"]) / dt, 1),
            "sfu_cores": round(cpu / dt, 4), "cpu_us_per_forwarded_packet": round(cpu / fwd * 1e6, 2) if fwd else None,
            "publishers_sent": b["sent"] - a["sent"], "sfu_received": b["received"] - a["received"],
            "subscribers_received": b["sub_received"] - a["sub_received"],
            "generator_cores": round((b["gen_cpu"] - a["gen_cpu"]) / dt, 3), "errors": errors[:20]}


class _AiortcSampler:
    def __init__(self, node: NodeTarget, peers: list[_AiortcPeer]) -> None:
        self.node = node
        self.peers = peers
        self.stats = Sampler(node, [], None, cpu_from_stats=True)  # type: ignore[arg-type]

    async def take(self) -> dict[str, Any]:
        stats = await self.stats._fresh_stats()
        t = time.monotonic()
        gen_cpu = time.process_time()
        sent = sub_received = 0
        for p in self.peers:
            s, r = await p.packets()
            sent += s
            sub_received += r
        return {"t": t, "gen_cpu": gen_cpu, "sent": sent, "sub_received": sub_received,
                "forwarded": sum(int(s["transport"].get("rtp_packets_out", 0)) for s in stats),
                "received": sum(int(s["counters"].get("rtp_in", 0)) for s in stats),
                "sfu_cpu": sum(float(s.get("cpu_seconds", 0.0)) for s in stats)}
