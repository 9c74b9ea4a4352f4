"""The node's side of the media plane: supervise worker processes and place rooms on them.

Each worker is `python -m sfu.worker` on its own UDP port (udp_port + i), spoken to with
one JSON object per line over its stdin/stdout. A room lives on one worker, the least
loaded when the room is created. A worker that dies is restarted; the participants it
held are reported (event `participants_lost`) so signaling can tell them to reconnect.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from control.config import MediaConfig

log = logging.getLogger("telesfu.media")

EventHandler = Callable[[dict[str, Any]], None]
_START_TIMEOUT = 20.0
_REQUEST_TIMEOUT = 10.0
_RESTART_WAIT = 5.0  # a join that meets a worker being restarted waits this long for it
_LOST = frozenset({"worker_lost", "worker_unavailable"})


class MediaError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WorkerHandle:
    """One worker process and the requests under way to it."""

    def __init__(self, index: int, port: int, config: MediaConfig, on_event: Callable[[int, dict[str, Any]], None],
                 on_exit: Callable[[WorkerHandle, int], None]) -> None:
        self.index = index
        self.port = port
        self.config = config
        self.on_event = on_event
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self.stopping = False
        self.last_stats: dict[str, Any] = {}
        self.restarts = 0
        self.generation = 0  # how many times this worker became ready
        self._started: asyncio.Future[None] | None = None  # resolved when it next becomes ready

    async def start(self) -> None:
        args = [sys.executable, "-m", "sfu.worker", "--index", str(self.index), "--port", str(self.port)]
        for ip in self.config.listen_ips:
            args += ["--listen-ip", ip]
        if self.config.announced_ip:
            args += ["--announced-ip", self.config.announced_ip]
        for net in self.config.allowed_source_networks:
            args += ["--allow-network", net]
        tcp_port = self.config.worker_tcp_port(self.index)
        if tcp_port is not None:
            args += ["--tcp-port", str(tcp_port)]
        self._ready = asyncio.get_running_loop().create_future()
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            limit=8 * 1024 * 1024, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.pid = self.proc.pid
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"worker-{self.index}-reader")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), _START_TIMEOUT)
        except TimeoutError:
            raise MediaError("worker_start_failed", f"media worker {self.index} did not start") from None
        self.generation += 1
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        self._started = None

    async def back_since(self, generation: int, timeout: float) -> bool:
        """Wait (at most `timeout`) until this worker was ready again after `generation`."""
        if self.generation > generation and self.proc is not None and self.proc.returncode is None:
            return True
        if self.stopping:
            return False
        if self._started is None or self._started.done():
            self._started = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            return False
        return True

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            line = await stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("worker %d wrote a malformed line", self.index)
                continue
            if "event" in msg:
                event = msg["event"]
                if event.get("type") == "ready" and self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                elif event.get("type") == "worker_stats":
                    self.last_stats = event
                self.on_event(self.index, event)
                continue
            fut = self._pending.pop(msg.get("id"), None)
            if fut is None or fut.done():
                continue
            if msg.get("ok"):
                fut.set_result(msg.get("result"))
            else:
                err = msg.get("error") or {}
                fut.set_exception(MediaError(err.get("code", "worker_error"), err.get("message", "")))
        code = await self.proc.wait()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(MediaError("worker_lost", f"media worker {self.index} exited ({code})"))
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(MediaError("worker_start_failed", f"media worker {self.index} exited ({code})"))
        if not self.stopping:
            self.on_exit(self, code)

    async def request(self, cmd: str, timeout: float = _REQUEST_TIMEOUT, **args: Any) -> Any:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise MediaError("worker_unavailable", f"media worker {self.index} is not running")
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        proc.stdin.write(json.dumps({"id": req_id, "cmd": cmd, "args": args}, separators=(",", ":")).encode()
                         + b"\n")
        try:
            await proc.stdin.drain()
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise MediaError("worker_timeout", f"media worker {self.index} did not answer {cmd}") from None
        except (BrokenPipeError, ConnectionResetError):
            raise MediaError("worker_lost", f"media worker {self.index} went away") from None
        finally:
            self._pending.pop(req_id, None)

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the worker exits when its stdin closes
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def kill(self) -> None:
        """For tests: the worker crashes."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


class MediaPlane:
    """All workers of a node, room placement, and their events for signaling."""

    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self.workers: list[WorkerHandle] = []
        self.placement: dict[str, int] = {}  # room id -> worker index
        self.members: dict[str, set[str]] = defaultdict(set)  # room id -> participant ids
        self._handlers: dict[str, list[EventHandler]] = defaultdict(list)  # room id ("*" for all) -> handlers
        self._restarting: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.started = False

    async def start(self) -> None:
        n = self.config.worker_count()
        self.workers = [WorkerHandle(i, self.config.udp_port + i, self.config, self._on_event, self._on_exit)
                        for i in range(n)]
        try:
            await asyncio.gather(*(w.start() for w in self.workers))
        except Exception:
            await self.stop()
            raise
        self.started = True
        log.info("media plane: %d worker(s) on UDP %d-%d", n, self.config.udp_port, self.config.udp_port + n - 1)

    async def stop(self) -> None:
        self.started = False
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers), return_exceptions=True)

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self, room_id: str, handler: EventHandler) -> Callable[[], None]:
        """Handler for the events of one room ("*" for every event of every worker)."""
        self._handlers[room_id].append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers.get(room_id, []):
                self._handlers[room_id].remove(handler)
        return unsubscribe

    def _dispatch(self, event: dict[str, Any]) -> None:
        for key in (event.get("room_id"), "*"):
            if key is None:
                continue
            for handler in list(self._handlers.get(key, ())):
                try:
                    handler(event)
                except Exception:
                    log.exception("media event handler failed")

    def _on_event(self, index: int, event: dict[str, Any]) -> None:
        event.setdefault("worker", index)
        self._dispatch(event)

    def _on_exit(self, worker: WorkerHandle, code: int) -> None:
        lost = {room: sorted(self.members.get(room, ())) for room, i in self.placement.items() if i == worker.index}
        for room in lost:
            del self.placement[room]
            self.members.pop(room, None)
        log.error("media worker %d (pid %d) exited with %s; %d room(s) lost; restarting", worker.index, worker.pid,
                  code, len(lost))
        for room, participants in lost.items():
            self._dispatch({"type": "participants_lost", "room_id": room, "worker": worker.index,
                            "participant_ids": participants, "reason": "worker_restarted"})
        task = asyncio.get_running_loop().create_task(self._restart(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, worker: WorkerHandle) -> None:
        delay = 0.2
        while self.started:
            try:
                worker.restarts += 1
                await worker.start()
                self._dispatch({"type": "worker_restarted", "worker": worker.index})
                return
            except MediaError:
                log.exception("media worker %d failed to restart", worker.index)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- placement and commands ---------------------------------------------------------------------

    def worker_for(self, room_id: str) -> WorkerHandle | None:
        i = self.placement.get(room_id)
        return self.workers[i] if i is not None else None

    def _least_loaded(self) -> WorkerHandle:
        load: dict[int, int] = defaultdict(int)
        for room, i in self.placement.items():
            load[i] += 1 + len(self.members.get(room, ()))
        alive = [w for w in self.workers if w.proc is not None and w.proc.returncode is None] or self.workers
        return min(alive, key=lambda w: (load[w.index], w.index))

    async def ensure_room(self, room_id: str) -> WorkerHandle:
        w = self.worker_for(room_id)
        if w is None:
            w = self._least_loaded()
            self.placement[room_id] = w.index
            try:
                await w.request("create_room", room_id=room_id)
            except MediaError:
                self.placement.pop(room_id, None)
                raise
        return w

    async def close_room(self, room_id: str) -> None:
        w = self.worker_for(room_id)
        self.placement.pop(room_id, None)
        self.members.pop(room_id, None)
        if w is not None:
            await w.request("close_room", room_id=room_id)

    async def add_participant(self, room_id: str, participant_id: str, can_publish: bool = True,
                              can_subscribe: bool = True) -> None:
        """Into the room's worker. A join that meets a worker that just died (often one of its own
        participants coming back after the 1012) waits for the restart and tries once more,
        instead of bouncing the participant into another reconnect."""
        for retry in (False, True):
            w = self.worker_for(room_id) or self._least_loaded()
            generation = w.generation
            try:
                w = await self.ensure_room(room_id)
                await w.request("add_participant", room_id=room_id, participant_id=participant_id,
                                can_publish=can_publish, can_subscribe=can_subscribe)
            except MediaError as e:
                if retry or e.code not in _LOST or not self.started or not await w.back_since(generation,
                                                                                             _RESTART_WAIT):
                    raise
                log.info("media worker %d was lost during a join to room %s; joining again on its restart",
                         w.index, room_id)
                continue
            self.members[room_id].add(participant_id)
            return

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        w = self.worker_for(room_id)
        self.members.get(room_id, set()).discard(participant_id)
        if w is not None:
            await w.request("remove_participant", room_id=room_id, participant_id=participant_id)

    async def _on_room(self, room_id: str, cmd: str, **args: Any) -> Any:
        w = self.worker_for(room_id)
        if w is None:
            raise MediaError("room_not_found", "the room has no media worker")
        return await w.request(cmd, room_id=room_id, **args)

    async def publish_offer(self, room_id: str, participant_id: str, sdp: str) -> str:
        result = await self._on_room(room_id, "publish_offer", participant_id=participant_id, sdp=sdp)
        return str(result["sdp"])

    async def subscribe_answer(self, room_id: str, participant_id: str, sdp: str) -> None:
        await self._on_room(room_id, "subscribe_answer", participant_id=participant_id, sdp=sdp)

    async def set_muted(self, room_id: str, participant_id: str, kind: str = "", muted: bool = True,
                        by: str = "") -> Any:
        return await self._on_room(room_id, "set_muted", participant_id=participant_id, kind=kind, muted=muted,
                                   by=by)

    async def reset_participant(self, room_id: str, participant_id: str) -> None:
        await self._on_room(room_id, "reset_participant", participant_id=participant_id)

    def has_participant(self, room_id: str, participant_id: str) -> bool:
        return participant_id in self.members.get(room_id, ())

    async def room_stats(self, room_id: str) -> dict[str, Any]:
        return dict(await self._on_room(room_id, "room_stats"))

    async def stats(self) -> list[dict[str, Any]]:
        out = []
        for w in self.workers:
            try:
                out.append(await w.request("stats", timeout=2.0))
            except MediaError:
                out.append({"worker": w.index, "down": True})
        return out

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid]


def cpu_seconds_of(pid: int) -> float:
    """utime + stime of a process, from /proc (for benchmarks and stats)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def now() -> float:
    return time.monotonic()
