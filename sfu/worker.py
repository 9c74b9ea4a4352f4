"""A media worker: one event loop, one UDP port, its rooms, its tickers.

`Worker` is the in-process object (tests drive it directly); `python -m sfu.worker` runs it
as a process that the node talks to over stdin/stdout, one JSON object per line:
requests `{"id", "cmd", "args"}`, answers `{"id", "ok", "result" | "error"}`, and events
`{"event": {...}}` the worker sends on its own (subscribe offers, track changes, transport
states, active speakers, connection quality, stats).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, get_type_hints

from sfu import heap
from sfu.errors import BadArguments, RoomNotFound, SfuError, UnknownCommand
from sfu.nack import ResendPolicy
from sfu.routing.counters import WorkerCounters
from sfu.routing.room import Room
from sfu.sdp import DEFAULT_CAPABILITIES, URI_TRANSPORT_CC, MediaCapabilities, SdpError

log = logging.getLogger("telesfu.sfu.worker")

Emit = Callable[[dict[str, Any]], None]

NACK_INTERVAL = 0.02  # while packets are missing (armed by the first gap, not a free-running ticker)
KEYFRAME_INTERVAL = 0.1
REPORT_INTERVAL = 1.0
SPEAKER_INTERVAL = 0.3
STATS_INTERVAL = 2.0
HOUSEKEEPING_INTERVAL = 1.0
HEAP_TRIM_INTERVAL = 30.0  # free heap pages back to the system (sfu/heap.py), after a participant left


def _without_transport_cc(caps: MediaCapabilities) -> MediaCapabilities:
    # Congestion feedback is REMB for now: transport-cc feedback generation comes with the allocator.
    exts = tuple(h for h in caps.header_extensions if h.uri != URI_TRANSPORT_CC)
    codecs = tuple(replace(c, rtcp_fb=tuple(fb for fb in c.rtcp_fb if fb.type != "transport-cc"))
                   for c in caps.codecs)
    return replace(caps, header_extensions=exts, codecs=codecs)


PUBLISH_CAPS = _without_transport_cc(DEFAULT_CAPABILITIES)
SUBSCRIBE_CAPS = PUBLISH_CAPS


@dataclass
class WorkerConfig:
    index: int = 0
    port: int = 40000
    listen_ips: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    announced_ip: str = ""
    allowed_source_networks: list[str] = field(default_factory=list)
    consent_timeout: float = 30.0
    tcp_port: int | None = None  # passive ICE-TCP on this TCP port (0: a free one); None: UDP only
    resend: ResendPolicy = field(default_factory=ResendPolicy)  # answering subscribers' NACKs
    heap_trim_interval: float = HEAP_TRIM_INTERVAL  # 0: never trim


class Worker:
    def __init__(self, config: WorkerConfig, emit: Emit) -> None:
        self.config = config
        self.emit = emit
        self.counters = WorkerCounters()
        self.rooms: dict[str, Room] = {}
        self.endpoint: Any = None
        self._timers: list[asyncio.TimerHandle] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Event-loop lag: how late a ticker ran. The largest of the current stats interval, and of
        # the last finished one (what worker_stats reports): a stall shows in the interval it hit.
        self._lag_max = 0.0
        self._lag_reported = 0.0
        self._gone_out = [0, 0]  # packets sent by DownTracks that no longer exist
        self._nack_armed = False
        self.started_at = time.monotonic()
        self.trim_heap: Callable[[], bool] = heap.trim
        self._released = False  # a participant or room went away since the last heap trim
        self.heap_trims = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        from sfu.transport.udp import MediaEndpoint

        self._loop = asyncio.get_running_loop()
        self.endpoint = MediaEndpoint(
            self.config.listen_ips, self.config.port, announced_ip=self.config.announced_ip or None,
            allowed_sources=self.config.allowed_source_networks or None,
            consent_timeout=self.config.consent_timeout, clock=self._loop.time, tcp_port=self.config.tcp_port)
        await self.endpoint.start()
        self.config.port = self.endpoint.port
        if self.endpoint.tcp is not None:
            self.config.tcp_port = self.endpoint.tcp.port
        # The DTLS certificate and context, made now rather than on the first join: the
        # first participant should not wait for them (and they belong to the baseline).
        _ = self.endpoint.dtls_context
        self._every(KEYFRAME_INTERVAL, self._tick_keyframes)
        self._every(REPORT_INTERVAL, self._tick_reports)
        self._every(SPEAKER_INTERVAL, self._tick_speakers)
        self._every(STATS_INTERVAL, self._tick_stats)
        if self.config.heap_trim_interval > 0 and heap.available:
            self._every(self.config.heap_trim_interval, self._tick_heap)

    async def stop(self) -> None:
        for room in list(self.rooms.values()):
            room.close()
        self.rooms.clear()
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def _every(self, interval: float, fn: Callable[[float], None]) -> None:
        loop = self._loop
        assert loop is not None
        slot = len(self._timers)
        self._timers.append(None)  # type: ignore[arg-type]
        due = [loop.time() + interval]

        def run() -> None:
            now = loop.time()
            late = now - due[0]
            if late > self._lag_max:
                self._lag_max = late
            try:
                fn(now)
            except Exception:
                log.exception("worker %d: %s failed", self.config.index, fn.__name__)
            due[0] += interval
            if due[0] < now:  # fell behind: do not try to catch up
                due[0] = now + interval
            self._timers[slot] = loop.call_at(due[0], run)

        self._timers[slot] = loop.call_at(due[0], run)

    def clock(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # -- commands ---------------------------------------------------------------------------------

    def _make_transport(self, handler: Any, on_state: Callable[[str, str], None], label: str) -> Any:
        return self.endpoint.create_transport(handler, lambda _t, state, reason: on_state(state, reason or ""))

    def _room(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise RoomNotFound(f"room {room_id} is not on this worker")
        return room

    def create_room(self, room_id: str) -> dict[str, Any]:
        if room_id not in self.rooms:
            room = Room(room_id, self._make_transport, self.counters, self.clock, time.time, self.emit,
                        PUBLISH_CAPS, SUBSCRIBE_CAPS, self.config.resend, self.arm_nack)
            self.rooms[room_id] = room
        return {"room_id": room_id, "worker": self.config.index}

    def _retire(self, participants: list[Any]) -> None:
        self._released = True
        for p in participants:
            for dt in p.downtracks.values():
                self._gone_out[1 if dt.is_video else 0] += dt.packets

    def close_room(self, room_id: str) -> dict[str, Any]:
        room = self.rooms.pop(room_id, None)
        if room is not None:
            self._retire(list(room.participants.values()))
            room.close()
        return {"closed": room is not None}

    def add_participant(self, room_id: str, participant_id: str, can_publish: bool = True,
                        can_subscribe: bool = True) -> dict[str, Any]:
        if room_id not in self.rooms:
            self.create_room(room_id)
        self._room(room_id).add_participant(participant_id, can_publish, can_subscribe)
        return {"participant_id": participant_id}

    def remove_participant(self, room_id: str, participant_id: str) -> dict[str, Any]:
        room = self.rooms.get(room_id)
        if room is None or participant_id not in room.participants:
            return {"removed": False}
        self._retire([room.participants[participant_id]])
        return {"removed": room.remove_participant(participant_id)}

    def publish_offer(self, room_id: str, participant_id: str, sdp: str) -> dict[str, Any]:
        return {"sdp": self._room(room_id).publish_offer(participant_id, sdp)}

    def subscribe_answer(self, room_id: str, participant_id: str, sdp: str) -> dict[str, Any]:
        self._room(room_id).subscribe_answer(participant_id, sdp)
        return {}

    def set_muted(self, room_id: str, participant_id: str, kind: str = "", muted: bool = True,
                  by: str = "") -> dict[str, Any]:
        return {"tracks": self._room(room_id).set_muted(participant_id, kind, muted, by)}

    def reset_participant(self, room_id: str, participant_id: str) -> dict[str, Any]:
        self._room(room_id).reset_participant(participant_id)
        return {}

    def room_stats(self, room_id: str) -> dict[str, Any]:
        return self._room(room_id).stats()

    def load(self) -> dict[str, Any]:
        return {"rooms": len(self.rooms), "participants": sum(len(r.participants) for r in self.rooms.values())}

    def packets_out(self) -> tuple[int, int]:
        """(audio, video) packets sent to subscribers, summed from the DownTracks (not per packet)."""
        audio = video = 0
        for room in self.rooms.values():
            for p in room.participants.values():
                for dt in p.downtracks.values():
                    if dt.is_video:
                        video += dt.packets
                    else:
                        audio += dt.packets
        return audio + self._gone_out[0], video + self._gone_out[1]

    def stats(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        audio_out, video_out = self.packets_out()
        return {"worker": self.config.index, "pid": os.getpid(), "port": self.config.port, **self.load(),
                "audio_out": audio_out, "video_out": video_out,
                "cpu_seconds": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss,
                "loop_lag_seconds": round(max(self._lag_reported, self._lag_max), 6), "heap_trims": self.heap_trims,
                "counters": self.counters.snapshot(),
                "transport": self.endpoint.totals() if self.endpoint is not None else {}}

    COMMANDS = ("create_room", "close_room", "add_participant", "remove_participant", "publish_offer",
                "subscribe_answer", "set_muted", "reset_participant", "room_stats", "stats", "load")

    def handle(self, cmd: str, args: dict[str, Any]) -> Any:
        """Run one command. A refusal raises SfuError (with its code); anything else is a bug."""
        if cmd not in self.COMMANDS:
            raise UnknownCommand(f"unknown command {cmd}")
        if not isinstance(args, dict):
            raise BadArguments(f"{cmd}: args must be an object")
        method = getattr(self, cmd)
        _check_arguments(cmd, method, args)
        try:
            return method(**args)
        except SdpError as e:
            raise SfuError(str(e), e.code) from None

    def answer(self, req_id: Any, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        """The IPC reply to one request: its result, its refusal's code, or internal_error for a bug
        (logged with its traceback; the client is told nothing of the internals)."""
        try:
            return {"id": req_id, "ok": True, "result": self.handle(cmd, args)}
        except SfuError as e:
            return {"id": req_id, "ok": False, "error": {"code": e.code, "message": e.message}}
        except Exception:
            log.exception("worker %d: command %s failed", self.config.index, cmd)
            return {"id": req_id, "ok": False, "error": {"code": "internal_error", "message": "internal error"}}

    # -- tickers ----------------------------------------------------------------------------------

    def arm_nack(self) -> None:
        """A stream saw a gap: run the NACK tick in NACK_INTERVAL, and again while packets miss."""
        if not self._nack_armed and self._loop is not None:
            self._nack_armed = True
            self._loop.call_later(NACK_INTERVAL, self._run_nack)

    def _run_nack(self) -> None:
        self._nack_armed = False
        assert self._loop is not None
        now = self._loop.time()
        pending = False
        for room in self.rooms.values():
            try:
                pending = room.tick_nack(now) or pending
            except Exception:
                log.exception("worker %d: NACK tick failed", self.config.index)
        if pending:
            self.arm_nack()

    def _tick_keyframes(self, now: float) -> None:
        for room in self.rooms.values():
            room.tick_keyframes(now)

    def _tick_reports(self, now: float) -> None:
        for room in self.rooms.values():
            room.tick_reports(now)
            quality = room.connection_quality()
            if quality:
                self.emit({"type": "connection_quality", "room_id": room.id, "participants": quality})

    def _tick_speakers(self, now: float) -> None:
        for room in self.rooms.values():
            room.tick_speakers(now)
            room.tick_first_media()

    def _tick_heap(self, now: float) -> None:
        """What departed participants and rooms freed, handed back to the system: their packet
        rings and buffers leave holes in glibc's heap that it keeps forever otherwise."""
        if self._released:
            self._released = False
            self.trim_heap()
            self.heap_trims += 1

    def _tick_stats(self, now: float) -> None:
        # The interval ends here: report its maximum lag (this tick's own lateness included), then start over.
        self._lag_reported = self._lag_max
        self._lag_max = 0.0
        self.emit({"type": "worker_stats", **self.stats()})


def _parameters(method: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, type]]:
    hints = get_type_hints(method)
    return inspect.signature(method), {k: v for k, v in hints.items() if v in (str, bool)}


# Resolved once, at import (bind time): the first command of a new worker is not slower than the rest.
_PARAMS = {cmd: _parameters(getattr(Worker, cmd)) for cmd in Worker.COMMANDS}


def _check_arguments(cmd: str, method: Callable[..., Any], args: dict[str, Any]) -> None:
    """Refuse (bad_arguments) arguments that do not fit the command's signature: names, and the
    types of its str/bool parameters. Checked before the call, so a TypeError inside is a bug."""
    sig, types = _PARAMS[cmd]
    try:
        sig.bind(None, **args)  # the unbound method's signature: None stands for self
    except TypeError as e:
        raise BadArguments(f"{cmd}: {e}") from None
    for name, value in args.items():
        want = types.get(name)
        if want is not None and type(value) is not want:
            raise BadArguments(f"{cmd}: {name} must be {'a string' if want is str else 'true or false'}")


# -- the process ------------------------------------------------------------------------------------

async def _serve_stdio(config: WorkerConfig) -> None:
    loop = asyncio.get_running_loop()
    out = sys.stdout

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps({"event": event}, separators=(",", ":")) + "\n")
        out.flush()

    worker = Worker(config, emit)
    await worker.start()
    emit({"type": "ready", "worker": config.index, "port": config.port, "pid": os.getpid()})
    reader = asyncio.StreamReader(limit=4 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break  # the node went away
            try:
                msg = json.loads(line)
                req_id, cmd, args = msg["id"], msg["cmd"], msg.get("args") or {}
            except (ValueError, KeyError, TypeError):
                log.warning("worker %d: malformed request dropped", config.index)
                continue
            reply = worker.answer(req_id, cmd, args)
            out.write(json.dumps(reply, separators=(",", ":")) + "\n")
            out.flush()
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sfu.worker")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--listen-ip", action="append", default=[])
    p.add_argument("--announced-ip", default="")
    p.add_argument("--allow-network", action="append", default=[])
    p.add_argument("--tcp-port", type=int, default=None, help="passive ICE-TCP port (0: a free one)")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("TELESFU_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker{args.index} %(name)s: %(message)s")
    config = WorkerConfig(args.index, args.port, args.listen_ip or ["127.0.0.1"], args.announced_ip,
                          args.allow_network, tcp_port=args.tcp_port)
    try:
        import uvloop

        uvloop.run(_serve_stdio(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
