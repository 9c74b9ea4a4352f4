"""`telesfu bench soak`: a long run at a fraction of measured capacity, with joins and leaves,
watching memory, file descriptors and loss of every process.

One embedded node (`telesfu serve`, `--workers` media workers, memory store) on loopback,
driven through its real signaling (`bench.synthetic.NodeSignaling`, tokens minted by its API)
by synthetic participants (`bench.synthetic`). The load is a mix of 1:1 rooms and group rooms,
sized so that their expected forwarded packets/s is `--load` times the capacity:

- the capacity is in forwarded packets/s: `--capacity-pps N` takes it as given, otherwise it
  is measured first with the media bench's capacity search (`bench.media.run_ramp`, groups
  of 6 added one at a time on a fresh node, the same as `telesfu bench media group --size 6
  --ramp`), bounded by `--ramp-seconds`;
- each publisher sends ~162 packets/s (112 VP8 + 50 Opus), forwarded to every other member:
  a room of n forwards ~162 n (n-1) packets/s; `--one-to-one-share` of the participants sit
  in 1:1 rooms, the rest in groups of `--group-size`.

Churn: every `--churn-seconds` one event, alternately (a) a participant of a random room
leaves (`leave`, sockets closed) and joins again with a fresh token, (b) a random room is
emptied and replaced by a new room of the same kind with new people and a new appointment.
The number of rooms stays constant, so every event is bounded.

Every `--sample-seconds` (10 by default): VmRSS and open fds of each process of the node (the
control process and its workers) and of the load generator, forwarded packets (the node's
/metrics), loss (RFC 3550, over every stream received, departed subscribers included). At the
end: RSS growth per process after the warm-up (`--warmup-minutes`, excluded) in %, fds at the
start and end of the measured part, loss %, and the issue's rule: RSS growth <= 5% after
warm-up, fds flat (end <= start + max(4, 2%)), loss < 0.5%.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import command_line, machine_info, run_quietly
from bench.media import (
    LiveProgress,
    NodeTarget,
    ProgressFn,
    Scenario,
    _Driver,
    group,
    rss_kb,
    run_ramp,
    system_cpu,
    worker_pids_of,
)
from bench.media_source import EncodedMedia, load_media
from bench.synthetic import LoadGenerator, SyntheticParticipant

PACKETS_PER_PUBLISHER = 162.0  # 112 video + 50 audio packets/s of the pre-encoded media
RSS_GROWTH_LIMIT = 0.05
LOSS_LIMIT = 0.005
FDS_SLACK = 4
FDS_SLACK_SHARE = 0.02
MAX_MINUTES = 240.0
MAX_PARTICIPANTS = 400
READY_TIMEOUT = 60.0
LEAVE_TIMEOUT = 5.0
JOIN_CONCURRENCY = 8


def open_fds(pid: int) -> int:
    """Open file descriptors of a process (entries of /proc/<pid>/fd); -1 when unreadable."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# -- the mix of rooms -----------------------------------------------------------------------------------------

def room_pps(members: int) -> float:
    """Expected forwarded packets/s of a room whose `members` all publish and subscribe."""
    return PACKETS_PER_PUBLISHER * members * (members - 1)


def plan_mix(target_pps: float, *, one_to_one_share: float = 0.5, group_size: int = 4) -> tuple[int, int]:
    """(1:1 rooms, group rooms) whose expected forwarded packets/s is about `target_pps`, with
    `one_to_one_share` of the participants in 1:1 rooms. At least one room of each kind."""
    if target_pps <= 0 or not 0.0 <= one_to_one_share <= 1.0 or group_size < 3:
        raise ValueError("target_pps > 0, one_to_one_share in [0, 1], group_size >= 3")
    # packets/s per participant: a 1:1 member forwards to one other, a group member to group_size - 1
    per_participant = PACKETS_PER_PUBLISHER * (one_to_one_share + (1 - one_to_one_share) * (group_size - 1))
    participants = target_pps / per_participant
    ones = max(1, round(participants * one_to_one_share / 2))
    groups = max(1, round(participants * (1 - one_to_one_share) / group_size))
    if 2 * ones + group_size * groups > MAX_PARTICIPANTS:
        raise ValueError(f"the mix would need more than {MAX_PARTICIPANTS} participants")
    return ones, groups


# -- rooms, joins and leaves ----------------------------------------------------------------------------------

@dataclass
class Room:
    index: int
    members: int
    ids: list[str] = field(default_factory=list)

    @property
    def room_id(self) -> str:
        return f"room-{self.index}"

    @property
    def kind(self) -> str:
        return "one-to-one" if self.members == 2 else "group"


@dataclass
class Retired:
    """Receive statistics of subscribers that have left (so loss covers the whole run)."""

    expected: int = 0
    lost: int = 0


class Churn:
    """The live rooms of a soak and the joins and leaves that change them."""

    def __init__(self, d: _Driver, rng: random.Random) -> None:
        self.d = d
        self.gen: LoadGenerator = d.gen
        self.rng = rng
        self.rooms: list[Room] = []
        self.next_index = 0
        self.retired = Retired()
        self.joins = 0
        self.leaves = 0
        self.join_failures = 0
        self.rooms_opened = 0
        self.rooms_closed = 0
        self.errors: list[str] = []
        self._sem = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def open_room(self, members: int) -> Room:
        room = Room(self.next_index, members)
        self.next_index += 1
        scenario = Scenario("one-to-one" if members == 2 else "group", 1, members, members)
        room.ids = [pid for pid, _, _ in scenario.members_of(room.index)]
        await self.d.setup_room(scenario, room.index)
        results = await asyncio.gather(*(self.join(room, pid) for pid in room.ids), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self._error(f"join in {room.room_id}: {r!r}")
        self.rooms.append(room)
        self.rooms_opened += 1
        return room

    async def join(self, room: Room, pid: str) -> SyntheticParticipant:
        async with self._sem:
            try:
                p = await self.gen.add(room.room_id, pid, publish=True, subscribe=True)
            except BaseException:
                self.join_failures += 1
                await self.leave(room, pid, count=False)
                raise
            self.joins += 1
            return p

    async def leave(self, room: Room, pid: str, *, count: bool = True) -> None:
        """The participant says `leave`, closes its WebSocket and its peer connections, and is
        forgotten by the generator (its receive statistics kept in `retired`)."""
        gen = self.gen
        key = (room.room_id, pid)
        signaling = self.d.signaling
        conn = signaling.connections.pop(key, None) if signaling is not None else None
        if conn is not None:
            try:
                if not conn.ws.closed:
                    await conn.ws.send_str(json.dumps({"type": "leave"}))
                    await asyncio.wait_for(conn.ws.close(), LEAVE_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - a dead socket is closed anyway
                self._error(f"leave {pid}: {e!r}")
            if conn.reader is not None:
                try:
                    await asyncio.wait_for(conn.reader, LEAVE_TIMEOUT)
                except (Exception, asyncio.CancelledError):  # noqa: BLE001
                    conn.reader.cancel()
        p = gen.participants.pop(key, None)
        if p is None:
            return
        p.close()
        if p.subscriber is not None:
            for st in p.subscriber.streams.values():
                self.retired.expected += st.stats.expected
                self.retired.lost += st.stats.lost
            gen.subscribers = tuple(s for s in gen.subscribers if s is not p.subscriber)
            p.subscriber.pc = None  # pc <-> subscriber and pc <-> publisher are cycles: free them now
        if p.publisher is not None:
            gen.publishers = tuple(x for x in gen.publishers if x is not p.publisher)
            p.publisher.pc = None
            p.publisher._history = []  # ~1 MB of packets per publisher, kept for NACKs
        if count:
            self.leaves += 1

    async def rejoin_one(self) -> None:
        """A participant of a random room leaves and comes back with a fresh token."""
        room = self.rng.choice(self.rooms)
        pid = self.rng.choice(room.ids)
        await self.leave(room, pid)
        try:
            await self.join(room, pid)
        except Exception as e:  # noqa: BLE001 - counted; the soak goes on
            self._error(f"rejoin {pid}: {e!r}")

    async def replace_room(self) -> None:
        """Everyone in a random room leaves; a new room of the same size, new people, takes its place."""
        room = self.rooms.pop(self.rng.randrange(len(self.rooms)))
        for pid in room.ids:
            await self.leave(room, pid)
        self.rooms_closed += 1
        for sub in self.gen.subscribers:  # streams of publishers that left: their stats are final
            for ssrc in [k for k, st in sub.streams.items() if not st.active]:
                st = sub.streams.pop(ssrc)
                self.retired.expected += st.stats.expected
                self.retired.lost += st.stats.lost
                sub.by_ssrc = {k: v for k, v in sub.by_ssrc.items() if v is not st}
        gc.collect()  # the generator's own garbage, so its RSS shows what it holds
        await self.open_room(room.members)

    def loss(self) -> tuple[int, int]:
        """(expected, lost) over every stream received so far, departed subscribers included."""
        expected, lost = self.retired.expected, self.retired.lost
        for sub in self.gen.subscribers:
            for st in sub.streams.values():
                expected += st.stats.expected
                lost += st.stats.lost
        return expected, lost

    def live_participants(self) -> int:
        return len(self.gen.participants)

    def _error(self, text: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(text[:300])


async def wait_receiving(churn: Churn, timeout: float = READY_TIMEOUT) -> int:
    """Wait until every live subscriber receives audio and video from every other member of its
    room; returns how many still do not at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        missing = 0
        for room in churn.rooms:
            for pid in room.ids:
                p = churn.gen.participants.get((room.room_id, pid))
                got = p.subscriber.received_from() if p is not None and p.subscriber is not None else set()
                want = {(o, k) for o in room.ids if o != pid for k in ("audio", "video")}
                if not want <= got:
                    missing += 1
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.2)


# -- samples ---------------------------------------------------------------------------------------------------

def node_processes(node: NodeTarget) -> dict[int, str]:
    """pid -> name of every process of the node: its control process and its media workers."""
    if node.proc is None:
        return {}
    out = {node.proc.pid: "control"}
    for i, pid in enumerate(worker_pids_of(node.proc.pid)):
        out[pid] = f"worker-{i}"
    return out


async def take_sample(t0: float, node: NodeTarget, churn: Churn, warmup: bool) -> dict[str, Any]:
    procs = node_processes(node)
    procs[os.getpid()] = "generator"
    stats = await node.stats()
    forwarded = sum(int((w.get("transport") or {}).get("rtp_packets_out", 0)) for w in stats)
    received = sum(int((w.get("counters") or {}).get("rtp_in", 0)) for w in stats)
    drops: dict[str, int] = {}
    for w in stats:
        for reason, n in ((w.get("counters") or {}).get("drops") or {}).items():
            drops[reason] = drops.get(reason, 0) + int(n)
    expected, lost = churn.loss()
    return {"t": round(time.monotonic() - t0, 2), "warmup": warmup,
            "processes": {name: {"pid": pid, "rss_kb": rss_kb(pid), "fds": open_fds(pid)}
                          for pid, name in procs.items()},
            "forwarded_packets": forwarded, "received_packets": received, "drops": drops,
            # what the subscribers got (the node's forwarded counter drops when participants leave on 675b178)
            "subscribers_received_packets": churn.gen.counters.rtp_received,
            "expected_packets": expected, "lost_packets": lost,
            "live_participants": churn.live_participants(), "rooms": len(churn.rooms),
            "joins": churn.joins, "leaves": churn.leaves, "join_failures": churn.join_failures,
            "generator_cpu_seconds": round(time.process_time(), 3),
            # the whole machine: on a shared host, what else ran (busy CPU seconds since boot, load)
            "machine_busy_cpu_seconds": round(system_cpu()[0], 2), "loadavg_1m": round(os.getloadavg()[0], 2),
            "sfu_cpu_seconds": round(sum(float(w.get("cpu_seconds", 0.0)) for w in stats), 3)}


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth per process after the warm-up, fds at the start and end of the measured part,
    loss, and the issue's pass rule over them."""
    measured = [s for s in samples if not s["warmup"]]
    if len(measured) < 2:
        return {"samples_measured": len(measured), "pass": None, "why": "fewer than 2 samples after the warm-up"}
    first, last = measured[0], measured[-1]
    processes: dict[str, Any] = {}
    failures = []
    for name, p0 in first["processes"].items():
        p1 = last["processes"].get(name)
        if p1 is None or p1["pid"] != p0["pid"]:
            failures.append(f"{name}: process replaced or gone during the run")
            processes[name] = {"pid_start": p0["pid"], "pid_end": p1["pid"] if p1 else None}
            continue
        series = [s["processes"][name]["rss_kb"] for s in measured if name in s["processes"]]
        growth = (p1["rss_kb"] - p0["rss_kb"]) / p0["rss_kb"] if p0["rss_kb"] > 0 else 0.0
        fd_limit = p0["fds"] + max(FDS_SLACK, round(FDS_SLACK_SHARE * p0["fds"]))
        processes[name] = {"pid": p0["pid"], "rss_kb_start": p0["rss_kb"], "rss_kb_end": p1["rss_kb"],
                           "rss_kb_max": max(series), "rss_growth_pct": round(100 * growth, 2),
                           "fds_start": p0["fds"], "fds_end": p1["fds"],
                           "fds_max": max(s["processes"][name]["fds"] for s in measured if name in s["processes"]),
                           "fds_flat": p1["fds"] <= fd_limit}
        if growth > RSS_GROWTH_LIMIT:
            failures.append(f"{name}: RSS grew {100 * growth:.1f}% > {100 * RSS_GROWTH_LIMIT:g}%")
        if p1["fds"] > fd_limit:
            failures.append(f"{name}: fds {p0['fds']} -> {p1['fds']}")
    expected = last["expected_packets"] - first["expected_packets"]
    lost = last["lost_packets"] - first["lost_packets"]
    loss = lost / expected if expected > 0 else 0.0
    if loss >= LOSS_LIMIT:
        failures.append(f"loss {100 * loss:.3f}% >= {100 * LOSS_LIMIT:g}%")
    wall = max(last["t"] - first["t"], 1e-9)
    return {"samples_measured": len(measured), "measured_seconds": round(wall, 1), "processes": processes,
            "expected_packets": expected, "lost_packets": lost, "loss_pct": round(100 * loss, 4),
            "forwarded_packets": last["forwarded_packets"] - first["forwarded_packets"],
            "forwarded_pps": round((last["forwarded_packets"] - first["forwarded_packets"]) / wall, 1),
            "subscribers_received_pps": round((last["subscribers_received_packets"]
                                               - first["subscribers_received_packets"]) / wall, 1),
            "sfu_cores": round((last["sfu_cpu_seconds"] - first["sfu_cpu_seconds"]) / wall, 3),
            "generator_cores": round((last["generator_cpu_seconds"] - first["generator_cpu_seconds"]) / wall, 3),
            "machine_busy_cores": round((last["machine_busy_cpu_seconds"] - first["machine_busy_cpu_seconds"]) / wall, 3),
            "loadavg_1m_max": max(s["loadavg_1m"] for s in measured),
            "joins": last["joins"] - first["joins"], "leaves": last["leaves"] - first["leaves"],
            "rule": {"rss_growth_pct_max": 100 * RSS_GROWTH_LIMIT, "fds": f"end <= start + max({FDS_SLACK}, "
                     f"{100 * FDS_SLACK_SHARE:g}%)", "loss_pct_below": 100 * LOSS_LIMIT},
            "pass": not failures, "failures": failures}


# -- the run ---------------------------------------------------------------------------------------------------

async def measure_capacity(media: EncodedMedia, *, workers: int, max_seconds: float,
                           progress: ProgressFn | None) -> dict[str, Any]:
    """Forwarded packets/s at the media bench's capacity (`run_ramp`, groups of 6, +1 per step)."""
    r = await run_ramp(group(6, 1), media, step_seconds=5.0, rooms_per_step=1, max_rooms=40,
                       max_seconds=max_seconds, workers=workers, progress=progress)
    cap = r["ramp"]["capacity"]
    return {"method": "telesfu bench media group --size 6 --ramp --step-seconds 5 "
                      f"--max-seconds {max_seconds:g} (run_ramp, fresh node)",
            "stopped_by": r["ramp"]["stopped_by"], "rooms": cap["rooms"] if cap else 0,
            "pps": cap["forwarded_pps"] if cap else 0.0, "steps": len(r["ramp"]["steps"])}


async def run_soak(media: EncodedMedia, *, seconds: float, warmup: float, load: float = 0.5,
                   capacity_pps: float = 0.0, ramp_seconds: float = 150.0, one_to_one_share: float = 0.5,
                   group_size: int = 4, churn_seconds: float = 5.0, sample_seconds: float = 10.0,
                   workers: int = 1, seed: int = 1, rooms: tuple[int, int] | None = None,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Soak for `seconds` (the first `warmup` of them excluded from the verdict). `rooms` (1:1,
    groups) overrides the mix computed from `load` x capacity."""
    if not 0 < seconds <= MAX_MINUTES * 60 or not 0 <= warmup < seconds or churn_seconds <= 0 or sample_seconds <= 0:
        raise ValueError("seconds in (0, 4 h], 0 <= warmup < seconds, churn_seconds > 0, sample_seconds > 0")
    report: dict[str, Any] = {"params": {"seconds": seconds, "warmup_seconds": warmup, "load": load,
                                         "one_to_one_share": one_to_one_share, "group_size": group_size,
                                         "churn_seconds": churn_seconds, "sample_seconds": sample_seconds,
                                         "workers": workers, "seed": seed}}
    if rooms is None:
        if capacity_pps <= 0:
            report["capacity"] = await measure_capacity(media, workers=workers, max_seconds=ramp_seconds,
                                                        progress=progress)
            capacity_pps = report["capacity"]["pps"]
            if capacity_pps <= 0:
                raise RuntimeError(f"no capacity measured: {report['capacity']}")
        else:
            report["capacity"] = {"method": "given (--capacity-pps)", "pps": capacity_pps}
        rooms = plan_mix(load * capacity_pps, one_to_one_share=one_to_one_share, group_size=group_size)
    else:
        report["capacity"] = {"method": "none: rooms given", "pps": capacity_pps}
    ones, groups = rooms
    report["mix"] = {"one_to_one_rooms": ones, "group_rooms": groups, "group_size": group_size,
                     "participants": 2 * ones + group_size * groups,
                     "expected_forwarded_pps": round(ones * room_pps(2) + groups * room_pps(group_size), 1)}
    rng = random.Random(seed)
    samples: list[dict[str, Any]] = []
    async with _Driver(media, workers=workers, udp_port=0, seed=seed, loss=0.0, direct=False, target=None) as d:
        assert d.node is not None
        churn = Churn(d, rng)
        t_join = time.monotonic()
        sizes = [2] * ones + [group_size] * groups
        for i, size in enumerate(sizes):
            await churn.open_room(size)
            if progress is not None:
                progress("joining", i + 1, len(sizes), f"{churn.joins} joined, {len(churn.rooms)} rooms")
        not_receiving = await wait_receiving(churn)
        report["setup"] = {"join_seconds": round(time.monotonic() - t_join, 1), "not_receiving": not_receiving,
                           "worker_pids": d.pids}
        t0 = time.monotonic()
        end = t0 + seconds
        next_sample = t0
        next_churn = t0 + churn_seconds
        events = 0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                s = await take_sample(t0, d.node, churn, warmup=now - t0 < warmup)
                samples.append(s)
                next_sample += sample_seconds
                if progress is not None:
                    procs = "  ".join(f"{n} {p['rss_kb'] / 1024:.0f} MB/{p['fds']} fd"
                                      for n, p in s["processes"].items())
                    lossp = 100 * s["lost_packets"] / s["expected_packets"] if s["expected_packets"] else 0.0
                    progress("warm-up" if s["warmup"] else "soak", now - t0, seconds,
                             f"{procs}  loss {lossp:.3f}%  joins {s['joins']} leaves {s['leaves']}")
            if now >= end:
                break
            if now >= next_churn:
                next_churn += churn_seconds
                events += 1
                try:
                    await (churn.rejoin_one() if events % 2 else churn.replace_room())
                except Exception as e:  # noqa: BLE001 - counted; the soak goes on
                    churn._error(f"churn: {e!r}")
            await asyncio.sleep(max(0.0, min(next_sample, next_churn, end) - time.monotonic()))
        report["churn"] = {"events": events, "joins": churn.joins, "leaves": churn.leaves,
                           "join_failures": churn.join_failures, "rooms_opened": churn.rooms_opened,
                           "rooms_closed": churn.rooms_closed, "errors": churn.errors[:50]}
        report["generator_errors"] = list(d.gen.errors)[:50]
        report["generator_counters"] = d.gen.counters.snapshot()
    report["samples"] = samples
    report["result"] = verdict(samples)
    return report


# -- output ----------------------------------------------------------------------------------------------------

def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    r = report["result"]
    mix = report["mix"]
    cap = report["capacity"]
    console.print(f"capacity {cap.get('pps', 0):,.0f} forwarded pkt/s ({cap['method']}); load "
                  f"{report['params']['load']:g}: {mix['one_to_one_rooms']} 1:1 rooms + {mix['group_rooms']} groups of "
                  f"{mix['group_size']} = {mix['participants']} participants, ~{mix['expected_forwarded_pps']:,.0f} "
                  f"pkt/s expected")
    if r.get("pass") is None:
        console.print(f"no verdict: {r.get('why')}")
        return
    t = Table(title="telesfu bench soak (after the warm-up)", title_justify="left")
    for col in ("process", "pid", "RSS start MB", "RSS end MB", "RSS max MB", "growth %", "fds start", "fds end",
                "fds max"):
        t.add_column(col, justify="left" if col == "process" else "right")
    for name, p in r["processes"].items():
        if "rss_kb_start" not in p:
            t.add_row(name, str(p.get("pid_start")), "-", "-", "-", "replaced", "-", "-", "-")
            continue
        t.add_row(name, str(p["pid"]), f"{p['rss_kb_start'] / 1024:.1f}", f"{p['rss_kb_end'] / 1024:.1f}",
                  f"{p['rss_kb_max'] / 1024:.1f}", f"{p['rss_growth_pct']:+.2f}", str(p["fds_start"]),
                  str(p["fds_end"]), str(p["fds_max"]))
    console.print(t)
    console.print(f"{r['measured_seconds']:.0f} s measured, {r['samples_measured']} samples; forwarded "
                  f"{r['forwarded_pps']:,.0f} pkt/s (subscribers received {r['subscribers_received_pps']:,.0f}), SFU {r['sfu_cores']:.2f} cores, generator "
                  f"{r['generator_cores']:.2f} cores, whole machine {r['machine_busy_cores']:.2f} cores (1-min load "
                  f"up to {r['loadavg_1m_max']:.1f}); loss {r['loss_pct']:.4f}% ({r['lost_packets']:,} of "
                  f"{r['expected_packets']:,}); joins {r['joins']}, leaves {r['leaves']}")
    console.print(("PASS" if r["pass"] else "FAIL: " + "; ".join(r["failures"])) +
                  " (rule: RSS growth <= 5% after warm-up, fds flat, loss < 0.5%)")


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    fig, (ax_rss, ax_fds, ax_loss) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    names = list(samples[0]["processes"]) if samples else []
    ts = [s["t"] / 60 for s in samples]
    for i, name in enumerate(names):
        rss = [s["processes"][name]["rss_kb"] / 1024 if name in s["processes"] else float("nan") for s in samples]
        fds = [s["processes"][name]["fds"] if name in s["processes"] else float("nan") for s in samples]
        ax_rss.plot(ts, rss, color=f"C{i}", label=name)
        ax_fds.plot(ts, fds, color=f"C{i}", label=name)
    warm = report["params"]["warmup_seconds"] / 60
    for ax in (ax_rss, ax_fds, ax_loss):
        ax.axvline(warm, color="grey", linestyle=":", linewidth=1)
    ax_rss.set_title("VmRSS per process, MB (dotted: end of warm-up)")
    ax_rss.legend(fontsize=8)
    ax_fds.set_title("open file descriptors per process")
    ax_fds.legend(fontsize=8)
    loss_pct = []
    pps = []
    for a, b in zip(samples, samples[1:], strict=False):
        e = b["expected_packets"] - a["expected_packets"]
        loss_pct.append(100 * (b["lost_packets"] - a["lost_packets"]) / e if e > 0 else 0.0)
        key = "subscribers_received_packets" if "subscribers_received_packets" in b else "forwarded_packets"
        pps.append((b[key] - a[key]) / max(b["t"] - a["t"], 1e-9))
    ax_loss.plot(ts[1:], loss_pct, color="C3", label="loss % per interval")
    ax_loss.axhline(100 * LOSS_LIMIT, color="red", linestyle="--", linewidth=1, label="0.5% limit")
    ax_loss.set_ylabel("loss %")
    ax_loss.legend(fontsize=8, loc="upper left")
    ax_pps = ax_loss.twinx()
    received = bool(samples) and "subscribers_received_packets" in samples[-1]
    ax_pps.plot(ts[1:], pps, color="C0", alpha=0.6,
                label="received by subscribers, pkt/s" if received else "forwarded (node counter), pkt/s")
    ax_pps.set_ylabel("forwarded pkt/s")
    ax_pps.legend(fontsize=8, loc="upper right")
    ax_loss.set_title("loss per sample interval (RFC 3550: negative when late packets and retransmissions "
                      "fill earlier gaps), and packets/s")
    ax_loss.set_xlabel("minutes")
    m = report.get("machine", {})
    r = report.get("result", {})
    fig.suptitle(f"telesfu bench soak — {report['mix']['participants']} participants, "
                 f"{'PASS' if r.get('pass') else 'FAIL'}; {m.get('nproc')} CPU, {m.get('date')}, {m.get('git_commit')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0, help="soak length, warm-up included (default: 30)")
    p.add_argument("--warmup-minutes", type=float, default=2.5,
                   help="first minutes excluded from the verdict (default: 2.5)")
    p.add_argument("--load", type=float, default=0.5, help="fraction of the capacity (default: 0.5)")
    p.add_argument("--capacity-pps", type=float, default=0.0,
                   help="capacity in forwarded packets/s; default: measure it first with the media bench's "
                        "ramp (groups of 6) on a fresh node")
    p.add_argument("--ramp-seconds", type=float, default=150.0, help="time cap of the capacity ramp (default: 150)")
    p.add_argument("--rooms", type=int, nargs=2, metavar=("ONE_TO_ONE", "GROUPS"),
                   help="fixed numbers of 1:1 and group rooms instead of --load x capacity")
    p.add_argument("--one-to-one-share", type=float, default=0.5,
                   help="share of the participants in 1:1 rooms (default: 0.5)")
    p.add_argument("--group-size", type=int, default=4, help="members of each group room (default: 4)")
    p.add_argument("--churn-seconds", type=float, default=5.0,
                   help="one join/leave event this often: a rejoin, then a room replaced (default: 5)")
    p.add_argument("--sample-seconds", type=float, default=10.0, help="sampling interval (default: 10)")
    p.add_argument("--workers", type=int, default=1, help="media worker processes (default: 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--media-cache", metavar="DIR", help="where the encoded media is cached")
    p.add_argument("--json", metavar="FILE", help="write the samples, the verdict and the machine as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot RSS and fds per process and loss over time")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.minutes <= MAX_MINUTES or not 0 <= args.warmup_minutes < args.minutes or not 0 < args.load <= 2:
        print("telesfu bench soak: --minutes in (0, 240], 0 <= --warmup-minutes < --minutes, --load in (0, 2]",
              file=sys.stderr)
        return 2
    return run_quietly(lambda: _main(args))


async def _main(args: argparse.Namespace) -> int:
    media = load_media(Path(args.media_cache) if args.media_cache else None)
    report: dict[str, Any] = {"command": command_line("soak"),
                              "machine": machine_info()}
    with LiveProgress() as live:
        live.start("soak")
        report.update(await run_soak(
            media, seconds=args.minutes * 60, warmup=args.warmup_minutes * 60, load=args.load,
            capacity_pps=args.capacity_pps, ramp_seconds=args.ramp_seconds, one_to_one_share=args.one_to_one_share,
            group_size=args.group_size, churn_seconds=args.churn_seconds, sample_seconds=args.sample_seconds,
            workers=args.workers, seed=args.seed, rooms=tuple(args.rooms) if args.rooms else None,
            progress=live.update))
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0 if report["result"].get("pass") else 1
