"""A node: the control/signaling process and (later) its media workers, wired together."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time

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
        try:
            return self.started and await self.store.ping()
        except Exception:
            return False

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
