"""`telesfu bench control`: admission decisions per second and control API latency.

(a) Admission: `Rooms.join(token)` in a loop bounded by count and time, on one event loop,
    with a realistic mix of joins (admitted, waiting, expired, tampered, off-roster, early,
    no portal account, denied), rooms emptied between rounds with `Rooms.leave`.
(b) API: the aiohttp app in a separate process on 127.0.0.1, driven by aiohttp from this
    process: closed loop at max concurrency for the peak, then open loop at half the peak
    for latency percentiles (measured from each request's scheduled send time).

Both for the memory store and a real Redis (keys under a unique prefix, removed at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import multiprocessing
import os
import random
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import bench_argv, machine_info, percentile
from control.config import Config
from control.domain.admission import Code
from control.domain.models import Appointment, Client, Provider, Role, format_time, utcnow
from control.rooms import Actor, JoinResult
from control.tokens import TokenService

REPO = Path(__file__).resolve().parents[1]

AIM_MEMORY_DECISIONS = 5000.0  # per second, one core
AIM_REDIS_DECISIONS = 2000.0
AIM_API_P99_MS = 10.0

# Shares of the join list per refusal kind (of the appointment count; at least one each).
SHARE_EXPIRED = 0.05
SHARE_OFF_ROSTER = 0.05
SHARE_TAMPERED = 0.015
SHARE_LATER = 0.04  # appointments that start in 3 hours: outside the join window
SHARE_NO_PORTAL = 0.02  # clients without an active portal account
SHARE_DENIED = 0.03  # waiting clients denied after the first round (waiting room on)

KIND_PUT_APPOINTMENT, KIND_POST_TOKEN, KIND_GET_ROOM = 0, 1, 2
KIND_NAMES = ("put_appointment", "post_token", "get_room")
MIX_WEIGHTS = (0.4, 0.3, 0.3)
SHARE_OPEN_ROOMS = 0.75  # of the API's appointments, rooms opened before the load starts
NEW_PER_APPOINTMENT = 4  # size of tomorrow's calendar the PUTs create and reschedule, per seeded appointment

HTTP_TIMEOUT_SECONDS = 10.0
SETTLE_SECONDS = 0.5
BACKGROUND_TASKS = frozenset({"reminders", "gauges", "webhook-dispatcher"})  # the node's tickers, by task name
MAX_INFLIGHT = 2000  # open loop: beyond this the server is overloaded; sends are skipped and counted


# -- arguments ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", choices=("memory", "redis", "both"), default="both",
                   help="which store backends to measure (default: both)")
    p.add_argument("--redis-url", default=None,
                   help="Redis to use (default: $REDIS_URL or redis://127.0.0.1:6379/0; "
                        "a throwaway redis-server is started when it is unreachable)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="time budget of each measured phase (default: 10)")
    p.add_argument("--json", metavar="FILE", help="write every figure and the machine as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write latency percentiles and decisions/s as a PNG")
    p.add_argument("--appointments", type=int, default=1000,
                   help="appointments per admission phase and for the API (default: 1000)")
    p.add_argument("--join-concurrency", type=int, default=32,
                   help="concurrent joins on the one event loop with Redis (memory never yields; default: 32)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="concurrent API requests when finding the peak (default: 64)")
    p.add_argument("--max-decisions", type=int, default=5_000_000,
                   help="count bound of each admission phase (default: 5000000)")
    p.add_argument("--max-requests", type=int, default=2_000_000,
                   help="count bound of each API phase (default: 2000000)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the generated practice (default: 1)")
    p.add_argument("--profile", metavar="PREFIX",
                   help="cProfile the timed joins; writes PREFIX-<store>-wr<off|on>.prof (slows them down)")


def run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.appointments < 4 or args.concurrency < 1 or args.join_concurrency < 1:
        print("telesfu bench control: --seconds must be positive, --appointments at least 4, "
              "concurrencies at least 1", file=sys.stderr)
        return 2
    import logging

    import uvloop

    logging.getLogger("telesfu").setLevel(logging.WARNING)  # node start/stop lines would break the progress bars
    try:
        return uvloop.run(_main(args))
    except KeyboardInterrupt:
        return 130


# -- machine ---------------------------------------------------------------------------------------



# -- small pure helpers -----------------------------------------------------------------------------



def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds of latencies given in seconds."""
    s = sorted(values)
    if not s:
        return {"count": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
    return {"count": len(s), "p50_ms": percentile(s, 0.50) * 1e3, "p95_ms": percentile(s, 0.95) * 1e3,
            "p99_ms": percentile(s, 0.99) * 1e3, "max_ms": s[-1] * 1e3, "mean_ms": sum(s) / len(s) * 1e3}


def tamper(token: str) -> str:
    """The token with one signature character changed: a bad signature (token_invalid)."""
    head, _, sig = token.rpartition(".")
    c = "A" if sig[len(sig) // 2] != "A" else "B"
    return f"{head}.{sig[:len(sig) // 2]}{c}{sig[len(sig) // 2 + 1:]}"


def _system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat.

    Steal is time the hypervisor gave this VM's vCPUs to someone else.
    """
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    busy = v[0] + v[1] + v[2] + (v[5] + v[6] if len(v) > 6 else 0)  # user nice system irq softirq
    return busy / tick, (v[7] if len(v) > 7 else 0) / tick


class CpuWindow:
    """Cores used during a phase: the machine, this bench, its API server process, Redis, everything else."""

    __slots__ = ("_t0", "_busy0", "_steal0", "_own0", "_srv0", "_redis0", "_server_pid", "_redis_url")

    def __init__(self, server_pid: int = 0, redis_url: str = "") -> None:
        self._server_pid = server_pid
        self._redis_url = redis_url
        self._t0 = time.perf_counter()
        self._busy0, self._steal0 = _system_cpu()
        self._own0 = time.process_time()
        self._srv0 = _proc_cpu_seconds(server_pid) if server_pid else 0.0
        self._redis0 = 0.0

    @classmethod
    async def open(cls, server_pid: int = 0, redis_url: str = "") -> CpuWindow:
        w = cls(server_pid, redis_url)
        if redis_url:
            w._redis0 = await redis_cpu_seconds(redis_url)
        return w

    async def close(self) -> dict[str, float]:
        redis_cpu = await redis_cpu_seconds(self._redis_url) - self._redis0 if self._redis_url else 0.0
        wall = time.perf_counter() - self._t0
        busy, steal = _system_cpu()
        own = time.process_time() - self._own0
        srv = _proc_cpu_seconds(self._server_pid) - self._srv0 if self._server_pid else 0.0
        machine = busy - self._busy0
        return {"machine_busy_cores": machine / wall, "bench_cores": own / wall, "server_cores": srv / wall,
                "redis_cores": redis_cpu / wall, "other_cores": max(0.0, machine - own - srv - redis_cpu) / wall,
                "steal_cores": (steal - self._steal0) / wall}


def _own_cpu() -> float:
    """CPU seconds of this process and its reaped children (the API server processes)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _proc_cpu_seconds(pid: int) -> float:
    """User+system CPU time of another process, from /proc (0.0 when unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# -- the generated practice ------------------------------------------------------------------------

@dataclass(slots=True)
class Practice:
    providers: list[Provider]
    clients: list[Client]
    appointments: list[Appointment]
    later: set[str]  # appointment ids outside the join window


def plan_practice(tag: str, n: int, seed: int, now: datetime, waiting_room: bool) -> Practice:
    """n appointments: 70% one client, 20% couples, 10% groups of 3-6 (groups and couples at capacity)."""
    rng = random.Random(f"{seed}:{tag}")
    providers = [Provider(f"{tag}-p{i}", f"Dr. Bench {i}", teletherapy_enabled=True, waiting_room_enabled=waiting_room)
                 for i in range(max(2, n // 20))]
    clients: list[Client] = []
    apts: list[Appointment] = []
    later: set[str] = set()
    n_later = max(1, round(n * SHARE_LATER))
    for i in range(n):
        r = rng.random()
        k = 1 if r < 0.7 else 2 if r < 0.9 else rng.randint(3, 6)
        ids = []
        for _ in range(k):
            cid = f"{tag}-c{len(clients)}"
            clients.append(Client(cid, f"Client {len(clients)}", portal_account_active=True))
            ids.append(cid)
        if i < n_later:
            start = now + timedelta(hours=3)
            later.add(f"{tag}-a{i}")
        else:
            start = now - timedelta(minutes=rng.randint(0, 20))
        apts.append(Appointment(f"{tag}-a{i}", providers[i % len(providers)].id, tuple(ids), True,
                                start.replace(microsecond=0), start.replace(microsecond=0) + timedelta(minutes=50),
                                max_participants=k + 1 if k > 1 else None))
    for j in rng.sample(range(len(clients)), max(1, round(len(clients) * SHARE_NO_PORTAL))):
        clients[j] = replace(clients[j], portal_account_active=False)
    return Practice(providers, clients, apts, later)


async def seed_store(store: Any, practice: Practice) -> None:
    for p in practice.providers:
        await store.put_provider(p)
    for c in practice.clients:
        await store.put_client(c)
    for a in practice.appointments:
        await store.put_appointment(a)


def plan_joins(practice: Practice, tokens: TokenService, seed: int) -> list[str]:
    """One token per (participant, appointment) of the roster, plus the refusal mix; shuffled."""
    rng = random.Random(seed)
    now = time.time()
    names = {c.id: c.name for c in practice.clients} | {p.id: p.name for p in practice.providers}
    out: list[str] = []
    for a in practice.appointments:
        out.append(tokens.mint(a.provider_id, Role.PROVIDER, a.id, names[a.provider_id], now=now,
                               ttl_seconds=86400).token)
        for c in a.client_ids:
            out.append(tokens.mint(c, Role.CLIENT, a.id, names[c], now=now, ttl_seconds=86400).token)
    n = len(practice.appointments)
    apts = practice.appointments
    for a in rng.sample(apts, max(1, round(n * SHARE_EXPIRED))):
        c = a.client_ids[0]
        out.append(tokens.mint(c, Role.CLIENT, a.id, names[c], now=now - 7200, ttl_seconds=600).token)
    for a in rng.sample(apts, max(1, round(n * SHARE_OFF_ROSTER))):
        other = rng.choice([c for c in practice.clients if c.id not in a.client_ids])
        out.append(tokens.mint(other.id, Role.CLIENT, a.id, other.name, now=now, ttl_seconds=86400).token)
    for a in rng.sample(apts, max(1, round(n * SHARE_TAMPERED))):
        c = a.client_ids[0]
        out.append(tamper(tokens.mint(c, Role.CLIENT, a.id, names[c], now=now, ttl_seconds=86400).token))
    rng.shuffle(out)
    return out


# -- the store backends -----------------------------------------------------------------------------

def redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """A redis-server of our own on a free loopback port, without persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("no Redis is reachable and redis-server is not installed")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="telesfu-bench-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not redis_reachable(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the throwaway redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


async def delete_prefix(url: str, prefix: str) -> int:
    """Remove every key under prefix; returns how many."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, decode_responses=True)
    try:
        n = 0
        batch: list[str] = []
        async for k in r.scan_iter(match=prefix + "*", count=1000):
            batch.append(k)
            if len(batch) >= 500:
                n += await r.delete(*batch)
                batch.clear()
        if batch:
            n += await r.delete(*batch)
        return n
    finally:
        await r.aclose()


async def redis_info(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, decode_responses=True)
    try:
        info = await r.info()
        t0 = time.perf_counter()
        for _ in range(200):
            await r.ping()
        rtt = (time.perf_counter() - t0) / 200
        return {"version": info.get("redis_version", ""), "cpu_seconds": _redis_cpu(info),
                "ping_rtt_us": rtt * 1e6}
    finally:
        await r.aclose()


def _redis_cpu(info: dict[str, Any]) -> float:
    return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))


async def redis_cpu_seconds(url: str) -> float:
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, decode_responses=True)
    try:
        return _redis_cpu(await r.info("cpu"))
    finally:
        await r.aclose()


def open_raw_store(kind: str, url: str, prefix: str) -> Any:
    if kind == "memory":
        from control.store.memory import MemoryStore

        return MemoryStore()
    from control.store.redis import RedisStore

    return RedisStore.from_url(url, prefix=prefix)


def bench_config(store_url: str) -> Config:
    cfg = Config()
    cfg.auth.api_keys = [secrets.token_urlsafe(18)]
    cfg.tokens.keys = {"bench": secrets.token_hex(24)}
    cfg.tokens.ttl_seconds = 86400  # the join mix is minted once for the whole run (verify caps exp - iat at it)
    cfg.http.port = 0
    cfg.store.url = store_url
    # the admission bench rejoins the same few participants as fast as it can: measure admission,
    # not the per-participant churn limit (rooms.join_burst)
    cfg.rooms.join_burst = 1000
    cfg.rooms.join_rate_per_second = 100.0
    return cfg.check()


# -- progress ---------------------------------------------------------------------------------------

class Progress:
    """A rich progress bar per phase, refreshed by the caller at most a few times a second."""

    __slots__ = ("_progress", "_task", "_next", "_total")

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(TextColumn("{task.description:<34}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), console=Console(stderr=True), auto_refresh=False)
        self._task: Any = None
        self._next = 0.0
        self._total = 1.0

    def __enter__(self) -> Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def phase(self, description: str, seconds: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=self._total, refresh=True)
        self._total = seconds
        self._task = self._progress.add_task(description, total=seconds, info="")
        self._next = 0.0

    def tick(self, elapsed: float, info: str, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now >= self._next:
            self._next = now + 0.25
            self._progress.update(self._task, completed=min(elapsed, self._total), info=info, refresh=True)

    def done(self, info: str) -> None:
        self._progress.update(self._task, completed=self._total, info=info, refresh=True)


# -- (a) admission ----------------------------------------------------------------------------------

async def _drive(items: Sequence[str], fn: Callable[[str], Awaitable[Any]], concurrency: int,
                 deadline: float, out: list[Any]) -> None:
    """fn over items in order with `concurrency` workers on this loop, until done or the deadline."""
    if concurrency <= 1:
        for item in items:
            if time.perf_counter() >= deadline:
                return
            out.append(await fn(item))
        return
    it = iter(items)

    async def worker() -> None:
        for item in it:
            if time.perf_counter() >= deadline:
                return
            out.append(await fn(item))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bounded(aw: Awaitable[Any], timeout: float, what: str) -> Any:
    """Await with a time bound; on expiry print every task's stack (where it hangs), then raise."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
    if task in done:
        return task.result()
    print(f"telesfu bench control: {what} did not finish within {timeout:.0f} s; tasks:", file=sys.stderr)
    for t in asyncio.all_tasks():
        t.print_stack(limit=12, file=sys.stderr)
    task.cancel()
    raise TimeoutError(f"{what} did not finish within {timeout:.0f} s")


async def finish_stop(aw: Awaitable[Any], limit: int = 30) -> int:
    """Await a node's stop, cancelling its background tasks again while it hangs; returns how many times.

    Python 3.11's asyncio.wait_for (which redis-py uses for every send) can swallow a cancellation
    that arrives as the awaited write completes; a ticker's single cancel() is then lost and
    Node.stop() waits forever.
    """
    task = asyncio.ensure_future(aw)
    recancels = 0
    while True:
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if done:
            task.result()
            return recancels
        if recancels >= limit:
            task.cancel()
            raise TimeoutError("the node did not stop")
        for t in asyncio.all_tasks():
            if t.get_name() in BACKGROUND_TASKS and not t.done():
                t.cancel()
                recancels += 1


async def admission_phase(node: Any, store_kind: str, practice: Practice, joins: list[str], waiting_room: bool,
                          args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    """Rounds of joins (timed) each followed by leaves (not timed), bounded by count and time.

    Each round after the first mints the mix again (join tokens are single-use).
    """
    concurrency = 1 if store_kind == "memory" else args.join_concurrency
    rooms = node.rooms
    codes: Counter[str] = Counter()
    decisions = rounds = leaves = denied = 0
    wall = cpu = leave_wall = 0.0
    rng = random.Random(args.seed)
    hard_deadline = time.perf_counter() + args.seconds * 3 + 60
    profiler = cProfile.Profile() if args.profile else None
    label = f"admission {store_kind} waiting room {'on' if waiting_room else 'off'}"
    progress.phase(label, args.seconds)
    while decisions < args.max_decisions and (rounds == 0 or wall < args.seconds) \
            and time.perf_counter() < hard_deadline:
        batch = joins[:args.max_decisions - decisions]
        results: list[JoinResult] = []
        remaining = args.seconds - wall if rounds else hard_deadline - time.perf_counter()  # round one completes
        if profiler is not None:
            profiler.enable()
        c0, t0 = time.process_time(), time.perf_counter()
        await bounded(_drive(batch, rooms.join, concurrency, t0 + remaining, results),
                      hard_deadline + 30 - t0, "a round of joins")
        t1, c1 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.disable()
        wall += t1 - t0
        cpu += c1 - c0
        decisions += len(results)
        rounds += 1
        present: list[tuple[str, str]] = []
        waiting: list[tuple[str, str]] = []
        for res in results:
            codes[res.code.value] += 1
            if not res.decision.refused and res.claims is not None:
                present.append((res.claims.apt, res.claims.sub))
                if res.code is Code.WAITING:
                    waiting.append(present[-1])
        if waiting_room and rounds == 1:  # a few waiting clients are turned away; later rounds see the denial
            n_deny = min(len(waiting), max(1, round(len(practice.appointments) * SHARE_DENIED)))
            chosen = set(rng.sample(sorted(set(waiting)), n_deny))
            for apt_id, pid in chosen:
                await bounded(rooms.deny(apt_id, pid, Actor.api(), "bench"), 30, "a deny")
            denied = len(chosen)
            present = [pa for pa in present if pa not in chosen]
        l0 = time.perf_counter()
        leave_out: list[Any] = []
        pairs = {f"{a}\x00{p}" for a, p in present}  # a pair is left once (a concurrent rejoin is one member)
        await bounded(_drive(sorted(pairs), lambda s: rooms.leave(*s.split("\x00", 1)), concurrency, math.inf,
                             leave_out), 60 + len(pairs) * 0.01, "the leaves of a round")
        leaves += sum(1 for ok in leave_out if ok)
        leave_wall += time.perf_counter() - l0
        await asyncio.sleep(0)  # let the node's background tasks run between rounds
        # tokens are single-use: the next round joins with the same mix freshly minted (not timed)
        joins = plan_joins(practice, node.tokens, args.seed + rounds)
        progress.tick(wall, f"{decisions:>9,} decisions  {decisions / wall if wall else 0:>8,.0f}/s")
    progress.done(f"{decisions:>9,} decisions  {decisions / wall if wall else 0:>8,.0f}/s")
    if profiler is not None:
        path = f"{args.profile}-{store_kind}-wr{'on' if waiting_room else 'off'}.prof"
        profiler.dump_stats(path)
    return {
        "waiting_room": waiting_room, "concurrency": concurrency, "appointments": len(practice.appointments),
        "joins_per_round": len(joins), "rounds": rounds, "decisions": decisions, "codes": dict(sorted(codes.items())),
        "wall_seconds": wall, "cpu_seconds": cpu,
        "decisions_per_second": decisions / wall if wall else 0.0,
        "cpu_us_per_decision": cpu / decisions * 1e6 if decisions else 0.0,
        "decisions_per_cpu_second": decisions / cpu if cpu else 0.0,
        "leaves": leaves, "leave_wall_seconds": leave_wall, "denied_after_round_one": denied,
        "profiled": profiler is not None,
    }


def verify_phase(tokens: TokenService, joins: list[str], seconds: float, max_count: int) -> dict[str, Any]:
    """TokenService.check alone over the same token mix, bounded by count and time."""
    now = time.time()
    check = tokens.check
    n = 0
    deadline = time.perf_counter() + seconds
    c0, t0 = time.process_time(), time.perf_counter()
    while n < max_count and time.perf_counter() < deadline:
        for tok in joins:
            check(tok, now)
        n += len(joins)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"verifies": n, "cpu_seconds": cpu, "wall_seconds": wall, "cpu_us_per_verify": cpu / n * 1e6 if n else 0.0}


async def admission_bench(store_kind: str, redis_url: str, args: argparse.Namespace,
                          progress: Progress) -> dict[str, Any]:
    from control.node import Node

    prefix = f"telesfu-bench-{uuid.uuid4().hex[:12]}:"
    raw = open_raw_store(store_kind, redis_url, prefix)
    cfg = bench_config("memory://" if store_kind == "memory" else redis_url)
    node = Node(cfg, raw, node_id=f"bench-{store_kind}")
    out: dict[str, Any] = {"key_prefix": prefix if store_kind == "redis" else ""}
    try:
        await node.start()
        now = utcnow()
        all_joins: list[str] = []
        for waiting_room in (False, True):
            tag = f"wr{'on' if waiting_room else 'off'}"
            practice = plan_practice(tag, args.appointments, args.seed, now, waiting_room)
            await seed_store(node.store, practice)
            joins = plan_joins(practice, node.tokens, args.seed)
            all_joins.extend(joins)
            window = await CpuWindow.open(0, redis_url if store_kind == "redis" else "")
            fig = await admission_phase(node, store_kind, practice, joins, waiting_room, args, progress)
            fig["cpu"] = await window.close()
            out[f"waiting_room_{'on' if waiting_room else 'off'}"] = fig
        verify = verify_phase(node.tokens, all_joins, min(2.0, max(0.2, args.seconds / 4)), args.max_decisions)
        for key in ("waiting_room_off", "waiting_room_on"):
            per = out[key]["cpu_us_per_decision"]
            verify[f"share_of_decision_cpu_{key}"] = verify["cpu_us_per_verify"] / per if per else 0.0
        out["token_verify"] = verify
    finally:
        out["node_stop_recancels"] = await finish_stop(node.stop())
        if store_kind == "redis":
            out["keys_removed"] = await delete_prefix(redis_url, prefix)
    return out


# -- (b) the API, served from another process ------------------------------------------------------

class Probe:
    """Pauses of one process: garbage collections (all generations) and, when started, event-loop lag."""

    __slots__ = ("_gc_t0", "gc", "gc_gen2", "gc_seconds", "gc_max", "lag_max", "lag_over_5ms", "lag_over_50ms",
                 "_task")

    def __init__(self) -> None:
        import gc

        self._gc_t0 = 0.0
        self._task: asyncio.Task[None] | None = None
        self.reset()
        gc.callbacks.append(self._on_gc)

    def reset(self) -> None:
        self.gc = self.gc_gen2 = self.lag_over_5ms = self.lag_over_50ms = 0
        self.gc_seconds = self.gc_max = self.lag_max = 0.0

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        d = time.perf_counter() - self._gc_t0
        self.gc += 1
        self.gc_gen2 += info.get("generation") == 2
        self.gc_seconds += d
        self.gc_max = max(self.gc_max, d)

    def start_lag_monitor(self, interval: float = 0.02) -> None:
        async def monitor() -> None:
            while True:
                t = time.perf_counter()
                await asyncio.sleep(interval)
                lag = time.perf_counter() - t - interval
                self.lag_max = max(self.lag_max, lag)
                self.lag_over_5ms += lag > 0.005
                self.lag_over_50ms += lag > 0.05

        self._task = asyncio.get_running_loop().create_task(monitor())

    def close(self) -> None:
        import gc

        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()

    def snapshot(self, reset: bool = True) -> dict[str, Any]:
        out = {"gc_collections": self.gc, "gc_gen2": self.gc_gen2, "gc_ms_total": self.gc_seconds * 1e3,
               "gc_ms_max": self.gc_max * 1e3}
        if self._task is not None:
            out |= {"loop_lag_ms_max": self.lag_max * 1e3, "loop_lags_over_5ms": self.lag_over_5ms,
                    "loop_lags_over_50ms": self.lag_over_50ms}
        if reset:
            self.reset()
        return out


@dataclass(frozen=True, slots=True)
class ServerSpec:
    store_kind: str
    redis_url: str
    prefix: str
    appointments: int
    seed: int
    now: float
    api_key: str
    token_key: str


def _server_process(spec: ServerSpec, conn: Connection) -> None:
    """Entry point of the server process (spawned): serve the app until told to stop."""
    import logging

    import uvloop

    logging.basicConfig(level=logging.WARNING)
    try:
        uvloop.run(_serve(spec, conn))
    except Exception as e:  # tell the parent rather than leave it waiting
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass


async def _serve(spec: ServerSpec, conn: Connection) -> None:
    from aiohttp import web

    from control.api.app import build_app
    from control.node import Node

    cfg = bench_config("memory://" if spec.store_kind == "memory" else spec.redis_url)
    cfg.auth.api_keys = [spec.api_key]
    cfg.tokens.keys = {"bench": spec.token_key}
    node = Node(cfg, open_raw_store(spec.store_kind, spec.redis_url, spec.prefix), node_id=f"bench-api-{spec.store_kind}")
    runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    practice = plan_practice("api", spec.appointments, spec.seed, datetime.fromtimestamp(spec.now, UTC), True)
    await seed_store(node.store, practice)
    names = {c.id: c.name for c in practice.clients} | {p.id: p.name for p in practice.providers}
    for i, a in enumerate(practice.appointments):
        if a.id in practice.later or i % 100 >= SHARE_OPEN_ROOMS * 100:  # the others stay unopened (404)
            continue
        for pid, role in ((a.provider_id, Role.PROVIDER), *((c, Role.CLIENT) for c in a.client_ids)):
            await node.rooms.join(node.tokens.mint(pid, role, a.id, names[pid], ttl_seconds=3600).token)
    probe = Probe()
    probe.start_lag_monitor()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_message() -> None:  # "stats": send the probe's figures since the last ask; "stop"
        msg = conn.recv()
        if msg == "stats":
            conn.send(("stats", probe.snapshot()))
        else:
            stop.set()

    loop.add_reader(conn.fileno(), on_message)
    probe.reset()
    conn.send(("ready", port, os.getpid()))
    await stop.wait()
    loop.remove_reader(conn.fileno())
    conn.send(("stopped", await finish_stop(runner.cleanup())))


class RequestMix:
    """Request i of the load: 40% PUT appointment, 30% POST token, 30% GET room.

    Half the PUTs update a seeded appointment; the other half go to a calendar of NEW_PER_APPOINTMENT
    times as many appointments tomorrow, created on first use and rescheduled after, so the store
    reaches a steady size instead of growing for as long as the bench runs.
    """

    __slots__ = ("_kinds", "_puts", "_tokens", "_rooms", "_practice", "_start")

    def __init__(self, practice: Practice, seed: int, now: datetime) -> None:
        rng = random.Random(seed)
        self._kinds = rng.choices(range(3), weights=MIX_WEIGHTS, k=10007)
        self._practice = practice
        self._start = (now + timedelta(days=1)).replace(microsecond=0, second=0)
        self._puts = [(f"/v1/appointments/{a.id}", _appointment_body(a)) for a in practice.appointments]
        self._tokens = [(f"/v1/appointments/{a.id}/tokens",
                         json.dumps({"participant_id": rng.choice((a.provider_id, *a.client_ids))}).encode())
                        for a in practice.appointments]
        rng.shuffle(self._tokens)
        self._rooms = [f"/v1/rooms/{a.id}" for a in practice.appointments]
        rng.shuffle(self._rooms)

    def kind(self, i: int) -> int:
        return self._kinds[i % len(self._kinds)]

    def request(self, i: int) -> tuple[str, str, bytes | None]:
        kind = self.kind(i)
        if kind == KIND_POST_TOKEN:
            path, body = self._tokens[i % len(self._tokens)]
            return "POST", path, body
        if kind == KIND_GET_ROOM:
            return "GET", self._rooms[i % len(self._rooms)], None
        if i % 2 == 0:  # an update of a known appointment
            path, body = self._puts[i % len(self._puts)]
            return "PUT", path, body
        p = self._practice  # tomorrow's calendar
        start = self._start + timedelta(minutes=i % 600)
        j = (i // 2) % (NEW_PER_APPOINTMENT * len(p.appointments))
        a = Appointment(f"api-new-{j}", p.providers[i % len(p.providers)].id,
                        (p.clients[i % len(p.clients)].id,), True, start, start + timedelta(minutes=50))
        return "PUT", f"/v1/appointments/{a.id}", _appointment_body(a)


def _appointment_body(a: Appointment) -> bytes:
    body: dict[str, Any] = {"provider_id": a.provider_id, "client_ids": list(a.client_ids), "telehealth": a.telehealth,
                            "starts_at": format_time(a.starts_at), "ends_at": format_time(a.ends_at),
                            "status": a.status.value}
    if a.max_participants is not None:
        body["max_participants"] = a.max_participants
    return json.dumps(body).encode()


class LoadStats:
    """Counts and latencies of one API phase."""

    __slots__ = ("sent", "responses", "errors", "skipped", "statuses", "by_kind", "latency", "service", "lag",
                 "at", "t0")

    def __init__(self) -> None:
        self.sent = 0
        self.responses = 0
        self.errors = 0  # no response: connection error or timeout
        self.skipped = 0  # open loop only: not sent because MAX_INFLIGHT were outstanding
        self.statuses: Counter[int] = Counter()
        self.by_kind: Counter[str] = Counter()
        self.latency = array("d")  # from the scheduled send time (open loop) or the send (closed loop)
        self.service = array("d")  # from the actual send
        self.lag = array("d")  # open loop: actual send - scheduled send
        self.at = array("d")  # when each latency's request was (to be) sent, from t0
        self.t0 = time.perf_counter()

    def timeline(self, bucket: float = 0.5) -> list[dict[str, float]]:
        """Latency per `bucket` seconds of send time: where in the phase the tail comes from."""
        rows: dict[int, list[float]] = {}
        for at, lat in zip(self.at, self.latency, strict=True):
            rows.setdefault(int(at / bucket), []).append(lat)
        return [{"t": k * bucket, **{x: round(v, 3) for x, v in latency_summary(v).items() if x != "mean_ms"}}
                for k, v in sorted(rows.items())]

    def to_json(self, wall: float, client_cpu: float, server_cpu: float) -> dict[str, Any]:
        return {
            "sent": self.sent, "responses": self.responses, "errors": self.errors, "skipped": self.skipped,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_errors": sum(v for k, v in self.statuses.items() if k >= 500),
            "by_kind": dict(sorted(self.by_kind.items())),
            "wall_seconds": wall, "requests_per_second": self.responses / wall if wall else 0.0,
            "latency": latency_summary(self.latency), "service_latency": latency_summary(self.service),
            "send_lag": latency_summary(self.lag), "timeline": self.timeline(),
            "client_cpu_us_per_request": client_cpu / self.responses * 1e6 if self.responses else 0.0,
            "server_cpu_us_per_request": server_cpu / self.responses * 1e6 if self.responses else 0.0,
            # busy share of one core: near 1.0 means that side was the bottleneck
            "client_cpu_utilisation": client_cpu / wall if wall else 0.0,
            "server_cpu_utilisation": server_cpu / wall if wall else 0.0,
        }


class LoadClient:
    __slots__ = ("_session", "_base", "_headers", "_mix")

    def __init__(self, session: Any, base: str, api_key: str, mix: RequestMix) -> None:
        self._session = session
        self._base = base
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._mix = mix

    async def send(self, i: int, stats: LoadStats, scheduled: float | None) -> None:
        import aiohttp

        method, path, body = self._mix.request(i)
        stats.sent += 1
        stats.by_kind[KIND_NAMES[self._mix.kind(i)]] += 1
        t0 = time.perf_counter()
        try:
            async with self._session.request(method, self._base + path, data=body, headers=self._headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            stats.errors += 1
            return
        t1 = time.perf_counter()
        stats.responses += 1
        stats.statuses[status] += 1
        stats.service.append(t1 - t0)
        if scheduled is None:
            stats.latency.append(t1 - t0)
            stats.at.append(t0 - stats.t0)
        else:
            stats.latency.append(t1 - scheduled)
            stats.lag.append(t0 - scheduled)
            stats.at.append(scheduled - stats.t0)


async def closed_loop(client: LoadClient, start_index: int, concurrency: int, seconds: float, max_count: int,
                      progress: Progress, label: str, server_pid: int) -> tuple[dict[str, Any], int]:
    """`concurrency` back-to-back senders; returns the phase's figures and the next request index."""
    stats = LoadStats()
    index = start_index
    end = start_index + max_count
    t0 = stats.t0 = time.perf_counter()
    deadline = t0 + seconds
    progress.phase(label, seconds)

    async def worker() -> None:
        nonlocal index
        while index < end and time.perf_counter() < deadline:
            i = index
            index += 1
            await client.send(i, stats, None)

    ticker = asyncio.get_running_loop().create_task(_ticker(progress, stats, t0))
    c0, s0 = time.process_time(), _proc_cpu_seconds(server_pid)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    figures = stats.to_json(wall, time.process_time() - c0, _proc_cpu_seconds(server_pid) - s0)
    ticker.cancel()
    progress.done(f"{stats.responses:>9,} responses {figures['requests_per_second']:>8,.0f}/s")
    figures["concurrency"] = concurrency
    return figures, index


async def open_loop(client: LoadClient, start_index: int, rate: float, seconds: float, max_count: int,
                    progress: Progress, label: str, server_pid: int) -> tuple[dict[str, Any], int]:
    """Requests scheduled every 1/rate s whatever the responses; latency counts from the schedule."""
    stats = LoadStats()
    loop = asyncio.get_running_loop()
    count = min(max_count, max(1, int(rate * seconds)))
    interval = 1.0 / rate
    inflight: set[asyncio.Task[None]] = set()
    progress.phase(label, seconds)
    t0 = stats.t0 = time.perf_counter()
    ticker = loop.create_task(_ticker(progress, stats, t0))
    c0, s0 = time.process_time(), _proc_cpu_seconds(server_pid)
    n = 0
    while n < count:
        now = time.perf_counter()
        due = t0 + n * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while n < count and t0 + n * interval <= now:
            scheduled = t0 + n * interval
            if len(inflight) >= MAX_INFLIGHT:
                stats.skipped += 1
            else:
                task = loop.create_task(client.send(start_index + n, stats, scheduled))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            n += 1
        await asyncio.sleep(0)
    if inflight:
        await asyncio.wait(inflight, timeout=HTTP_TIMEOUT_SECONDS + 5)
    wall = time.perf_counter() - t0
    figures = stats.to_json(wall, time.process_time() - c0, _proc_cpu_seconds(server_pid) - s0)
    ticker.cancel()
    progress.done(f"{stats.responses:>9,} responses  p99 {figures['latency']['p99_ms']:.2f} ms")
    figures["target_rate"] = rate
    return figures, start_index + n


async def _ticker(progress: Progress, stats: LoadStats, t0: float) -> None:
    while True:
        elapsed = time.perf_counter() - t0
        progress.tick(elapsed, f"{stats.responses:>9,} responses {stats.responses / elapsed if elapsed else 0:>8,.0f}/s",
                      force=True)
        await asyncio.sleep(0.5)


async def api_bench(store_kind: str, redis_url: str, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    import aiohttp

    now = utcnow()
    spec = ServerSpec(store_kind, redis_url, f"telesfu-bench-{uuid.uuid4().hex[:12]}:", args.appointments, args.seed,
                      now.timestamp(), secrets.token_urlsafe(18), secrets.token_hex(24))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_server_process, args=(spec, child), name=f"telesfu-bench-api-{store_kind}", daemon=True)
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"key_prefix": spec.prefix if store_kind == "redis" else "", "mix": dict(zip(KIND_NAMES, MIX_WEIGHTS, strict=True))}
    client_probe = Probe()
    proc.start()
    try:
        started = time.monotonic()
        while not await loop.run_in_executor(None, parent.poll, 0.2):
            if not proc.is_alive():
                raise RuntimeError(f"the API server process exited with code {proc.exitcode} before serving")
            if time.monotonic() - started > 120:
                raise RuntimeError("the API server process did not start within 120 s")
        msg = parent.recv()
        if msg[0] != "ready":
            raise RuntimeError(f"the API server process failed: {msg[1]}")
        _, port, server_pid = msg
        practice = plan_practice("api", args.appointments, args.seed, now, True)
        mix = RequestMix(practice, args.seed, now)
        # One pool for every phase: the open loop reuses the peak's warm connections, and a burst queues
        # in the client (counted in the latency) instead of opening connections into the accept backlog.
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            client = LoadClient(session, f"http://127.0.0.1:{port}", spec.api_key, mix)
            warm = min(2.0, max(0.3, args.seconds / 5))
            phases = (("warmup", warm), ("peak", args.seconds), ("half_peak", args.seconds))
            await _server_probe(parent, loop)  # pauses count from here on
            client_probe.reset()
            index = 0
            with _frozen_gc():
                for name, seconds in phases:
                    window = await CpuWindow.open(server_pid, redis_url if store_kind == "redis" else "")
                    if name == "half_peak":
                        rate = out["peak"]["requests_per_second"] / 2
                        if rate <= 0:
                            break
                        await asyncio.sleep(SETTLE_SECONDS)  # the open loop starts from an idle server
                        window = await CpuWindow.open(server_pid, redis_url if store_kind == "redis" else "")
                        fig, index = await open_loop(client, index, rate, seconds, args.max_requests, progress,
                                                     f"api {store_kind} open loop {rate:,.0f}/s", server_pid)
                    else:
                        fig, index = await closed_loop(client, index, args.concurrency, seconds, args.max_requests,
                                                       progress, f"api {store_kind} {name} (c={args.concurrency})",
                                                       server_pid)
                    fig["cpu"] = await window.close()
                    fig["pauses"] = {"client": client_probe.snapshot(), "server": await _server_probe(parent, loop)}
                    out[name] = fig
    finally:
        client_probe.close()
        if proc.is_alive():
            try:
                parent.send("stop")
            except OSError:
                pass
            await loop.run_in_executor(None, proc.join, 45)
            if parent.poll():
                msg = parent.recv()
                if msg[0] == "stopped":
                    out["node_stop_recancels"] = msg[1]
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(None, proc.join, 5)
        parent.close()
        if store_kind == "redis":
            out["keys_removed"] = await delete_prefix(redis_url, spec.prefix)
    return out


@contextmanager
def _frozen_gc() -> Iterator[None]:
    """The load generator's own objects (request pools, rich, aiohttp) out of the collector's reach.

    Only in the generator: its collection pauses would be counted as server latency.
    """
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _server_probe(conn: Connection, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """The server process's pauses since the last ask."""
    conn.send("stats")
    if not await loop.run_in_executor(None, conn.poll, 10):
        return {}
    msg = conn.recv()
    return msg[1] if msg[0] == "stats" else {}


# -- the run ----------------------------------------------------------------------------------------

def aims(stores: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for kind, res in stores.items():
        target = AIM_MEMORY_DECISIONS if kind == "memory" else AIM_REDIS_DECISIONS
        adm = res.get("admission", {})
        for wr in ("waiting_room_off", "waiting_room_on"):
            if wr in adm:
                v = adm[wr]["decisions_per_second"]
                out.append({"aim": f"{kind} admission decisions/s ({wr.replace('_', ' ')})", "target": f">= {target:,.0f}",
                            "measured": round(v, 1), "met": v >= target})
        half = res.get("api", {}).get("half_peak")
        if half:
            p99 = half["latency"]["p99_ms"]
            out.append({"aim": f"{kind} API p99 at half peak ({half['target_rate']:,.0f} req/s)",
                        "target": f"< {AIM_API_P99_MS:g} ms", "measured": round(p99, 3), "met": p99 < AIM_API_P99_MS})
    return out


async def _main(args: argparse.Namespace) -> int:
    kinds = ["memory", "redis"] if args.store == "both" else [args.store]
    redis_url = args.redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    report: dict[str, Any] = {"command": " ".join(shlex.quote(a) for a in ["telesfu", "bench", "control", *bench_argv("control")]),
                              "machine": machine_info(), "params": {k: v for k, v in vars(args).items() if k != "func"},
                              "stores": {}}
    load0, (busy0, steal0), own0, w0 = list(os.getloadavg()), _system_cpu(), _own_cpu(), time.perf_counter()
    with _redis_for(kinds, redis_url) as url, Progress() as progress:
        if "redis" in kinds:
            report["redis"] = {"url": _redact(url), **await redis_info(url)}
        for kind in kinds:
            res: dict[str, Any] = {}
            report["stores"][kind] = res
            res["admission"] = await admission_bench(kind, url, args, progress)
            res["api"] = await api_bench(kind, url, args, progress)
    busy1, steal1 = _system_cpu()
    wall = time.perf_counter() - w0
    report["contention"] = {
        "wall_seconds": wall, "loadavg_start": load0, "loadavg_end": list(os.getloadavg()),
        "machine_busy_cores": (busy1 - busy0) / wall, "bench_cpu_cores": (_own_cpu() - own0) / wall,
        # CPU used by everything else (other users' processes, and a shared Redis server)
        "other_cpu_cores": max(0.0, ((busy1 - busy0) - (_own_cpu() - own0)) / wall),
        "steal_cores": (steal1 - steal0) / wall,
    }
    report["aims"] = aims(report["stores"])
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0




@contextmanager
def _redis_for(kinds: list[str], url: str) -> Iterator[str]:
    if "redis" not in kinds or redis_reachable(url):
        yield url
        return
    print(f"telesfu bench control: {_redact(url)} is unreachable; starting a throwaway redis-server", file=sys.stderr)
    with throwaway_redis() as own:
        yield own


def _redact(url: str) -> str:
    from urllib.parse import urlparse

    p = urlparse(url)
    return url.replace(f":{p.password}@", ":***@") if p.password else url


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="telesfu bench control", title_justify="left")
    t.add_column("figure")
    kinds = list(report["stores"])
    for k in kinds:
        t.add_column(k, justify="right")

    def row(name: str, fn: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for k in kinds:
            try:
                cells.append(fn(report["stores"][k]))
            except KeyError:
                cells.append("-")
        t.add_row(name, *cells)

    def adm(key: str, name: str, fmt: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: format(s["admission"][key][name], fmt)

    for wr in ("off", "on"):
        row(f"admission decisions/s (waiting room {wr})", adm(f"waiting_room_{wr}", "decisions_per_second", ",.0f"))
        row(f"  CPU us/decision (waiting room {wr})", adm(f"waiting_room_{wr}", "cpu_us_per_decision", ",.1f"))
    row("  token verify us (share of decision CPU)",
        lambda s: f"{s['admission']['token_verify']['cpu_us_per_verify']:.1f} "
                  f"({s['admission']['token_verify']['share_of_decision_cpu_waiting_room_off']:.0%})")
    row("API peak req/s", lambda s: f"{s['api']['peak']['requests_per_second']:,.0f} (c={s['api']['peak']['concurrency']})")
    row("  server CPU us/request at peak (busy)", lambda s: f"{s['api']['peak']['server_cpu_us_per_request']:,.0f} "
                                                         f"({s['api']['peak']['server_cpu_utilisation']:.0%})")
    row("  client CPU us/request at peak (busy)", lambda s: f"{s['api']['peak']['client_cpu_us_per_request']:,.0f} "
                                                         f"({s['api']['peak']['client_cpu_utilisation']:.0%})")
    row("API open loop req/s (target)", lambda s: f"{s['api']['half_peak']['requests_per_second']:,.0f} "
                                                  f"({s['api']['half_peak']['target_rate']:,.0f})")
    row("  latency p50/p95/p99 ms", lambda s: "{p50_ms:.2f} / {p95_ms:.2f} / {p99_ms:.2f}".format(**s["api"]["half_peak"]["latency"]))
    row("  service p50/p95/p99 ms", lambda s: "{p50_ms:.2f} / {p95_ms:.2f} / {p99_ms:.2f}".format(**s["api"]["half_peak"]["service_latency"]))
    row("  responses / sent / 5xx", lambda s: "{responses} / {sent} / {server_errors}".format(**s["api"]["half_peak"]))
    row("  server loop lag max / GC max ms", lambda s: "{:.1f} / {:.1f}".format(
        s["api"]["half_peak"]["pauses"]["server"].get("loop_lag_ms_max", 0.0),
        s["api"]["half_peak"]["pauses"]["server"].get("gc_ms_max", 0.0)))
    row("cores used by others: adm off/on, API peak/open",
        lambda s: " / ".join(f"{x['cpu']['other_cores']:.2f}" for x in (
            s["admission"]["waiting_room_off"], s["admission"]["waiting_room_on"], s["api"]["peak"],
            s["api"]["half_peak"])))
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(t)
    for k in kinds:
        for wr in ("off", "on"):
            codes = report["stores"][k]["admission"][f"waiting_room_{wr}"]["codes"]
            console.print(f"codes {k}, waiting room {wr}: " + ", ".join(f"{c} {n:,}" for c, n in codes.items()))
    m = report["machine"]
    c = report["contention"]
    console.print(f"machine: {m['nproc']} CPU ({m['cpu_model']}), Python {m['python']}, {m['date']}, commit {m['git_commit'] or '?'}")
    console.print(f"contention: load {c['loadavg_start'][0]:.2f} -> {c['loadavg_end'][0]:.2f}; busy cores: machine "
                  f"{c['machine_busy_cores']:.2f}, this bench {c['bench_cpu_cores']:.2f}, everything else {c['other_cpu_cores']:.2f}")
    for a in report["aims"]:
        console.print(f"  [{'green' if a['met'] else 'red'}]{'met   ' if a['met'] else 'MISSED'}[/] {a['aim']}: "
                      f"{a['measured']:,} (aim {a['target']})")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(report["stores"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.25
    for j, (q, name) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
        vals = [report["stores"][k]["api"].get("half_peak", {}).get("latency", {}).get(q, 0.0) for k in kinds]
        bars = ax1.bar([i + (j - 1) * width for i in range(len(kinds))], vals, width, label=name)
        ax1.bar_label(bars, fmt="%.2f", fontsize=8)
    ax1.axhline(AIM_API_P99_MS, color="red", linestyle="--", linewidth=1, label=f"aim p99 < {AIM_API_P99_MS:g} ms")
    ax1.set_xticks(range(len(kinds)), [
        f"{k}\n{report['stores'][k]['api'].get('half_peak', {}).get('target_rate', 0):,.0f} req/s" for k in kinds])
    ax1.set_yscale("log")  # tails under contention run to seconds; the aim is 10 ms
    ax1.set_ylabel("latency (ms, log scale)")
    ax1.set_title("Control API latency at half the measured peak")
    ax1.legend(fontsize=8)
    for j, wr in enumerate(("off", "on")):
        vals = [report["stores"][k]["admission"][f"waiting_room_{wr}"]["decisions_per_second"] for k in kinds]
        bars = ax2.bar([i + (j - 0.5) * width for i in range(len(kinds))], vals, width, label=f"waiting room {wr}")
        ax2.bar_label(bars, fmt="%.0f", fontsize=8)
    for i, k in enumerate(kinds):
        target = AIM_MEMORY_DECISIONS if k == "memory" else AIM_REDIS_DECISIONS
        ax2.hlines(target, i - 0.45, i + 0.45, colors="red", linestyles="--", linewidth=1,
                   label="aim" if i == 0 else None)
    ax2.set_xticks(range(len(kinds)), kinds)
    ax2.set_ylabel("admission decisions / s (one core)")
    ax2.set_title("Rooms.join throughput")
    ax2.legend(fontsize=8)
    m = report["machine"]
    others = report.get("contention", {}).get("other_cpu_cores", 0.0)
    fig.suptitle(f"telesfu bench control — {m['nproc']} CPU {m['cpu_model']}, {m['date']}, {m['git_commit'] or ''}; "
                 f"other processes used {others:.2f} cores on average", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
