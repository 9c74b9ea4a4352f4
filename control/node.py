"""A node: the control/signaling process and its media workers, wired together.

Drain (SIGTERM): `Node.drain` refuses new joins from its first line (the signaling hub asks
`node.draining`; /readyz answers 503 so a load balancer stops sending), tells every
registered `Drainable` (the hub) how long sessions in progress may go on, waits until they
are idle, the deadline passes or the wait is cut short, then has them let everybody go and
gives the webhook dispatcher a moment to deliver what that queued. Moving participants to
another node instead of closing them (multi-node) belongs in `Drainable.drain_finish`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from control.background import Background
from control.config import Config
from control.events import RoomEvents
from control.media import MediaPlane
from control.media_metrics import MediaCollector
from control.metrics import InstrumentedStore, Metrics
from control.reminders import Reminders
from control.rooms import Rooms
from control.store.base import Store, open_store
from control.tokens import TokenService
from control.webhooks import Webhooks

log = logging.getLogger("telesfu.node")

DRAIN_REASON = "node_shutdown"
_FINISH_TIMEOUT = 10.0  # letting everybody go touches the store: bounded even if it stalls
_WEBHOOK_FLUSH_SECONDS = 5.0


class Drainable(Protocol):
    """What holds participants on this node and must let them go when it drains."""

    def drain_started(self, seconds: float) -> None:
        """New joins are refused from now on; sessions in progress may go on for `seconds`."""

    def idle(self) -> bool:
        """Nobody left to wait for."""

    async def drain_finish(self, reason: str) -> None:
        """The deadline: tell everybody still here and let them go (later: hand them to another node)."""


@dataclass(frozen=True, slots=True)
class DrainReport:
    seconds: float  # from the start of the drain to the end of drain_finish
    idle: bool  # everybody had gone before the deadline
    cut_short: bool  # a second signal ended the wait
    webhooks_left: int  # events still queued when the node let go (lost with the memory store); -1 unknown


class Node:
    """Owns the store, token service, rooms, webhooks and reminders of one `telesfu serve`."""

    def __init__(self, config: Config, store: Store, node_id: str | None = None, *, media: bool = False) -> None:
        self.config = config
        self.node_id = node_id or f"{socket.gethostname()[:32]}-{secrets.token_hex(3)}"
        self.metrics = Metrics()
        self.store: Store = InstrumentedStore(store, self.metrics)  # type: ignore[assignment]
        self.tokens = TokenService(config.tokens.keys, config.tokens.ttl_seconds, config.tokens.leeway_seconds)
        self.events = RoomEvents()
        self.webhooks = Webhooks(config.webhooks, self.store, self.metrics)
        self.rooms = Rooms(self.store, self.tokens, self.webhooks, self.events, self.metrics, config.rooms,
                           self.node_id, audit=config.audit)
        self.reminders = Reminders(self.store, self.webhooks, self.metrics, config.rooms.reminder_lead_minutes)
        self._gauges = Background("gauges", self._refresh_gauges)
        self.started = False
        self.draining = False
        self.drain_deadline = 0.0  # time.monotonic() at which a drain lets everybody go
        self._drainables: list[Drainable] = []
        self.media: MediaPlane | None = None
        if media:
            self.media = MediaPlane(config.media)
            self.metrics.registry.register(MediaCollector(self.media))

    @classmethod
    async def create(cls, config: Config, node_id: str | None = None, *, media: bool = True) -> Node:
        return cls(config, await open_store(config.store.url), node_id, media=media)

    async def start(self) -> None:
        if self.media is not None:
            await self.media.start()
        self.webhooks.start()
        self.reminders.start()
        self._gauges.start()
        self.started = True
        log.info("node %s started (store %s)", self.node_id, self.store.kind)

    async def stop(self) -> None:
        self.started = False
        await self._gauges.stop()
        await self.reminders.stop()
        await self.webhooks.stop()
        if self.media is not None:
            await self.media.stop()
        await self.store.close()
        log.info("node %s stopped", self.node_id)

    async def ready(self) -> bool:
        if self.draining:
            return False
        try:
            return self.started and await self.store.ping()
        except Exception:
            return False

    # -- drain ------------------------------------------------------------------------------------

    def add_drainable(self, d: Drainable) -> Callable[[], None]:
        self._drainables.append(d)

        def remove() -> None:
            if d in self._drainables:
                self._drainables.remove(d)
        return remove

    async def drain(self, seconds: float, cut_short: asyncio.Event | None = None) -> DrainReport:
        """Refuse new joins, let sessions in progress go on until idle or `seconds`, then let go."""
        t0 = time.monotonic()
        self.drain_deadline = t0 + seconds
        self.draining = True
        cut = cut_short or asyncio.Event()
        log.info("node %s draining: no new joins; sessions may go on for up to %.0f s", self.node_id, seconds)
        for d in list(self._drainables):
            d.drain_started(seconds)
        deadline = self.drain_deadline
        while not self._idle() and not cut.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(cut.wait(), min(0.1, left))
            except TimeoutError:
                pass
        idle = self._idle()
        for d in list(self._drainables):
            try:
                await asyncio.wait_for(d.drain_finish(DRAIN_REASON), _FINISH_TIMEOUT)
            except Exception:
                log.exception("drain: letting participants go failed")
        left = await self._flush_webhooks(0.0 if cut.is_set() else _WEBHOOK_FLUSH_SECONDS)
        report = DrainReport(time.monotonic() - t0, idle, cut.is_set(), left)
        if left > 0 and self.store.kind == "memory":
            log.warning("drain: %d webhook event(s) undelivered are lost with the memory store", left)
        elif left > 0:
            log.info("drain: %d webhook event(s) stay queued in the %s store for the next node", left,
                     self.store.kind)
        log.info("node %s drained in %.1f s (%s)", self.node_id, report.seconds,
                 "idle" if idle else "cut short" if report.cut_short else "deadline")
        return report

    def drain_seconds_left(self) -> float:
        return max(0.0, self.drain_deadline - time.monotonic()) if self.draining else 0.0

    def _idle(self) -> bool:
        return all(d.idle() for d in self._drainables)

    async def _flush_webhooks(self, seconds: float) -> int:
        """Give the dispatcher up to `seconds` to deliver what is queued; how many are left."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                depth = await self.store.webhook_queue_depth()
            except Exception:
                log.warning("drain: the webhook queue is unreachable", exc_info=True)
                return -1
            if depth == 0 or not self.webhooks.enabled or time.monotonic() >= deadline:
                return depth
            await asyncio.sleep(0.05)

    async def refresh_gauges(self) -> None:
        rooms = await self.store.list_open_rooms()
        self.metrics.open_rooms.set(len(rooms))
        self.metrics.waiting_participants.set(sum(len(r.waiting) for r in rooms))
        self.metrics.admitted_participants.set(sum(len(r.admitted) for r in rooms))
        self.metrics.webhook_queue.set(await self.store.webhook_queue_depth())

    async def prune_audit(self) -> int:
        """Drop audit entries past `audit.retention_days` on every appointment (0: keep)."""
        days = self.config.audit.retention_days
        if not days:
            return 0
        return await self.store.prune_audit(time.time() - days * 86400.0)

    async def _refresh_gauges(self) -> None:
        next_prune = 0.0
        while True:
            try:
                await self.refresh_gauges()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + 3600
                    dropped = await self.prune_audit()
                    if dropped:
                        log.info("audit: dropped %d entries past the retention of %d days", dropped,
                                 self.config.audit.retention_days)
            except Exception:
                log.warning("could not refresh gauges or prune the audit log", exc_info=True)
            await asyncio.sleep(5)
