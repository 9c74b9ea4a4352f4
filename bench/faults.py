"""`telesfu bench faults`: a media worker SIGKILLed mid-session, and how long until both sides of
a 1:1 decode video again.

Each run: a provider and a client (aiortc, both publishing camera video) in a fresh appointment
(waiting room off) on a `telesfu serve` child with one media worker. Once each decodes the
other, the worker process is SIGKILLed. The node restarts it and closes both signaling sockets
with 1012; each participant reconnects as the web client does (signaling/web/app.js: 150-400 ms
after a 1012, else 300 ms, 1 s, 2 s, 3 s, 5 s; the count starts over on `joined`) with new peer
connections. The figure is the time from the kill until both have decoded a frame from the
other again, with where it went: the worker's restart, the reconnect delay, signaling, ICE and
DTLS, the keyframe.

`ReconnectingParticipant.rejoin_frame` is the one place that decides how a participant gets
back in: a `resume{credential}` when the server gave one in `joined`, else a join with a fresh
token (join tokens are single-use).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import command_line, machine_info, percentile
from bench.joins import HTTP_TIMEOUT, AiortcPeer, Control, Marks, OwnedNode, Signaling, uid
from bench.media import worker_pids_of

# signaling/web/app.js, mirrored
RECONNECT_DELAYS_S = (0.3, 1.0, 2.0, 3.0, 5.0)
RESTART_DELAY_S = (0.15, 0.40)  # the first try after a 1012: uniformly in this range
RECONNECT_GIVE_UP_S = 90.0
CLOSE_NORMAL, CLOSE_SERVICE_RESTART = 1000, 1012

AIM_SECONDS = 5.0  # issue 8: decoding again in < 5 s
SETTLE_SECONDS = 1.0  # both sides decode for this long before the kill
RUN_TIMEOUT_SECONDS = 30.0


@dataclass
class Connection:
    """One signaling socket and its peer connections (a reconnect makes new ones, as the web client does)."""

    started_at: float
    marks: Marks
    sig: Signaling
    close_code: int | None = None
    closed_at: float | None = None
    via: str = ""  # "join" (a token) or "resume" (the credential of the previous connection)


@dataclass
class ReconnectingParticipant:
    """A participant that stays in its session: when the socket drops or the server says 1012, it
    gets back in the way the web client does."""

    control: Control
    appointment: str
    participant_id: str
    role: str
    connections: list[Connection] = field(default_factory=list)
    ended: str = ""  # why it stopped trying (a refusal close code, or leaving), empty while in
    resume: str = ""  # the latest resume credential from `joined`, when the server gives one
    rng: random.Random = field(default_factory=random.Random)
    _stopping: bool = False
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def rejoin_frame(self) -> dict[str, Any]:
        """How this participant (re)enters: resume if it can, else join with a freshly minted token."""
        if self.resume:
            return {"type": "resume", "credential": self.resume}
        return {"type": "join", "token": await self.control.token(self.appointment, self.participant_id, self.role)}

    async def _run(self) -> None:
        attempt, since = 0, 0.0
        while not self._stopping:
            marks = Marks()
            sig = Signaling(self.control, "", marks, AiortcPeer(marks, video=True), publish_on_join=True)
            conn = Connection(time.perf_counter(), marks, sig)
            self.connections.append(conn)
            try:
                await sig.connect()
                marks.mark("sent_join")
                frame = await self.rejoin_frame()
                conn.via = frame["type"]
                await sig.send(frame)
                conn.close_code = await sig.wait_closed()
            except (aiohttp.ClientError, OSError, RuntimeError) as e:  # the node is unreachable
                sig.errors.append(f"connect: {type(e).__name__}: {e}")
            conn.closed_at = time.perf_counter()
            joined = sig.last.get("joined")
            if joined is not None:
                attempt = 0
            admitted = joined or sig.last.get("waiting")  # both carry the next resume credential
            if admitted is not None:
                self.resume = str(admitted.get("resume") or "")
            await sig.close()
            code = conn.close_code
            if self._stopping:
                return
            if code == CLOSE_NORMAL or (code is not None and 4400 <= code <= 4499):
                self.ended = f"closed {code}: {sig.errors}"
                return
            if attempt == 0:
                since = time.perf_counter()
            elif time.perf_counter() - since > RECONNECT_GIVE_UP_S:
                self.ended = "gave up reconnecting"
                return
            delay = (self.rng.uniform(*RESTART_DELAY_S) if code == CLOSE_SERVICE_RESTART and attempt == 0
                     else RECONNECT_DELAYS_S[min(attempt, len(RECONNECT_DELAYS_S) - 1)])
            attempt += 1
            await asyncio.sleep(delay)

    def decoded_since(self, t: float) -> Connection | None:
        """The first connection opened after `t` that decoded remote video."""
        for c in self.connections:
            if c.started_at >= t and "video_decoded" in c.marks.t:
                return c
        return None

    def decoding(self) -> bool:
        return bool(self.connections) and "video_decoded" in self.connections[-1].marks.t

    async def stop(self) -> None:
        self._stopping = True
        if self.connections:
            await self.connections[-1].sig.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 10)
        for c in self.connections:
            await c.sig.close()


async def _wait(pred: Any, timeout: float, what: str, participants: Sequence[ReconnectingParticipant] = ()) -> None:
    deadline = time.perf_counter() + timeout
    while not pred():
        for p in participants:
            if p.ended:
                raise RuntimeError(f"{p.participant_id} stopped: {p.ended}")
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        await asyncio.sleep(0.01)


def _ms(t: float | None, origin: float) -> float | None:
    return None if t is None else round((t - origin) * 1000, 1)


def _side(p: ReconnectingParticipant, t_kill: float) -> dict[str, Any]:
    """One participant's way back, in ms from the kill."""
    back = p.decoded_since(t_kill)
    after = [c for c in p.connections if c.started_at >= t_kill or (c.closed_at or 0) >= t_kill]
    lost = next((c for c in p.connections if (c.closed_at or 0) >= t_kill), None)
    out: dict[str, Any] = {
        "decoded_ms": _ms(back.marks.t["video_decoded"], t_kill) if back else None,
        "socket_closed_ms": _ms(lost.closed_at, t_kill) if lost else None,
        "close_codes": [c.close_code for c in after if c.closed_at is not None],
        "connections": len([c for c in p.connections if c.started_at >= t_kill]),
        "rejoined_with": [c.via for c in p.connections if c.started_at >= t_kill],
    }
    if back is not None:
        out["last_connection_ms"] = {k: _ms(back.marks.t.get(k), t_kill) for k in (
            "sent_join", "msg_joined", "msg_subscribe_offer", "sub_ice_connected", "sub_connected", "video_rtp",
            "video_keyframe_rtp", "video_decoded")}
    return out


async def one_run(control: Control, node_pid: int, *, settle: float = SETTLE_SECONDS,
                  timeout: float = RUN_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Provider and client decode each other; SIGKILL the worker; time until both decode again."""
    prov, cl, apt = uid("bf-prov"), uid("bf-client"), uid("bf-apt")
    await control.provider(prov, waiting_room=False)
    await control.client(cl)
    await control.appointment(apt, prov, [cl])
    pr = ReconnectingParticipant(control, apt, prov, "provider")
    cli = ReconnectingParticipant(control, apt, cl, "client")
    both = (pr, cli)
    try:
        pr.start()
        cli.start()
        await _wait(lambda: pr.decoding() and cli.decoding(), timeout, "both sides decoding", both)
        await asyncio.sleep(settle)
        old = worker_pids_of(node_pid)
        if len(old) != 1:
            raise RuntimeError(f"expected one media worker under pid {node_pid}, found {old}")
        os.kill(old[0], signal.SIGKILL)
        t_kill = time.perf_counter()
        restarted: float | None = None
        deadline = t_kill + timeout
        while time.perf_counter() < deadline and not (pr.decoded_since(t_kill) and cli.decoded_since(t_kill)):
            if restarted is None and any(p != old[0] for p in worker_pids_of(node_pid)):
                restarted = time.perf_counter()
            for p in both:
                if p.ended:
                    raise RuntimeError(f"{p.participant_id} stopped: {p.ended}")
            await asyncio.sleep(0.01)
        sides = {"provider": _side(pr, t_kill), "client": _side(cli, t_kill)}
        decoded = [s["decoded_ms"] for s in sides.values()]
        recovered = all(d is not None for d in decoded)
        return {"recovered": recovered, "recovery_ms": max(decoded) if recovered else None,  # type: ignore[type-var]
                "worker_process_back_ms": _ms(restarted, t_kill), **sides}
    finally:
        await control.end_room(apt)
        await asyncio.gather(pr.stop(), cli.stop(), return_exceptions=True)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sorted(r["recovery_ms"] for r in runs if r.get("recovered"))
    return {"runs": len(runs), "recovered": len(ok), "p50_ms": percentile(ok, 0.5), "p95_ms": percentile(ok, 0.95),
            "max_ms": ok[-1] if ok else 0.0, "aim_ms": AIM_SECONDS * 1000}


def table_line(s: dict[str, Any]) -> str:
    return (f"worker SIGKILL -> both decode again: {s['recovered']}/{s['runs']} recovered, "
            f"p50 {s['p50_ms'] / 1000:.2f} s, p95 {s['p95_ms'] / 1000:.2f} s, max {s['max_ms'] / 1000:.2f} s "
            f"(aim < {s['aim_ms'] / 1000:.0f} s)")


async def measure(runs: int, *, settle: float = SETTLE_SECONDS, timeout: float = RUN_TIMEOUT_SECONDS,
                  store_url: str = "memory://", progress: Any = None) -> dict[str, Any]:
    """`runs` kills against one `telesfu serve` child (one media worker); the report."""
    import aioice.ice

    saved = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only
    node = OwnedNode(1, {"TELESFU_STORE_URL": store_url})
    report: dict[str, Any] = {"machine": machine_info(), "settings": {
        "runs": runs, "settle_seconds": settle, "timeout_seconds": timeout, "workers": 1,
        "store": store_url.split("://", 1)[0],
        "peers": "aiortc provider and client, each publishing 640x360 VP8 and Opus, waiting room off",
        "reconnect": "as signaling/web/app.js: 150-400 ms after 1012, then 300 ms, 1 s, 2 s, 3 s, 5 s"},
        "runs": [], "errors": []}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)) as http:
            await node.start(http)
            assert node.proc is not None
            control = Control(node.url, node.api_key, http, node.signing)
            for i in range(runs):
                try:
                    r = await one_run(control, node.proc.pid, settle=settle, timeout=timeout)
                except Exception as e:
                    r = {"recovered": False, "recovery_ms": None, "error": f"{type(e).__name__}: {e}"}
                    report["errors"].append(r["error"])
                report["runs"].append(r)
                if progress is not None:
                    progress(f"run {i + 1}/{runs}: " + (f"both decode again after {r['recovery_ms'] / 1000:.2f} s"
                                                        if r["recovered"] else f"NOT recovered {r.get('error', '')}"))
    finally:
        node.stop()
        if node.proc is not None and node.proc.returncode not in (0, None):
            report["errors"].append(f"telesfu serve exited with {node.proc.returncode}:\n{node.log_tail()}")
        report["node_log_tail"] = node.log_tail(40)
        node.cleanup()
        aioice.ice.get_host_addresses = saved
    report["summary"] = summarise(report["runs"])
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=10, help="worker kills, one fresh 1:1 session each (default: 10)")
    p.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                   help="seconds both sides decode before the kill (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=RUN_TIMEOUT_SECONDS,
                   help="seconds a run may take to recover before it counts as failed (default: %(default)s)")
    p.add_argument("--store", default="memory://", metavar="URL",
                   help="store of the node the bench starts (default: memory://; redis://host:port/db)")
    p.add_argument("--json", metavar="FILE", help="write every run and the summary as JSON (default: stdout)")


def run(args: argparse.Namespace) -> int:
    if args.runs < 1 or args.settle < 0 or args.timeout <= 0:
        print("telesfu bench faults: --runs at least 1, --settle not negative, --timeout positive", file=sys.stderr)
        return 2
    import logging

    for name in ("aioice", "aiortc"):  # their warnings about closed transports would drown the progress lines
        logging.getLogger(name).setLevel(logging.ERROR)
    report = asyncio.run(measure(args.runs, settle=args.settle, timeout=args.timeout, store_url=args.store,
                                 progress=lambda s: print(s, file=sys.stderr, flush=True)))
    report["command"] = command_line("faults")
    text = json.dumps(report, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    print(table_line(report["summary"]), flush=True)
    return 0 if report["summary"]["recovered"] == args.runs else 1
