"""Webhooks: signed, queued in the store, delivered at least once by a background dispatcher.

`emit` only writes the event to the store's queue, so a request never waits on the
practice's server. The dispatcher claims due events with a lease (a node that dies mid-
delivery leaves them to be delivered again), POSTs them, and on failure retries with
exponential backoff and full jitter until `max_attempts`, then dead-letters the event.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from control.background import Background
from control.config import WebhooksConfig
from control.domain.models import format_time, utcnow
from control.metrics import Metrics
from control.store.base import PendingWebhook, Store, StoreError, WebhookEvent
from control.store.retry import INTERACTIVE, retrying

log = logging.getLogger("telesfu.webhooks")

EVENT_TYPES = (
    "appointment.starting_soon",
    "room.started",
    "room.finished",
    "participant.waiting",
    "participant.admitted",
    "participant.denied",
    "participant.joined",
    "participant.left",
)
SIGNATURE_HEADER = "Telesfu-Signature"
# What a full queue sheds: presence, which a reconnecting client can repeat without bound.
# Room lifecycle and decisions (started, finished, admitted, denied, starting_soon) are bounded
# by rooms and staff actions and always queued.
SHEDDABLE = frozenset({"participant.waiting", "participant.joined", "participant.left"})


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Telesfu-Signature header value: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, now: float | None = None,
                     tolerance_seconds: int = 300) -> bool:
    """What a receiving practice backend does: check the MAC and that the time is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_seconds:
        return False
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff_delay(attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempts)], at least base/2."""
    ceiling = min(cap, base * (2 ** min(attempts, 30)))
    return max(base / 2, ceiling * rand())


class Webhooks:
    def __init__(self, config: WebhooksConfig, store: Store, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.enabled = bool(config.url)
        self._loop = Background("webhook-dispatcher", self._run)
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        # events the store could not take (stalled, restarting): handed to it when it is back
        self._held: collections.deque[tuple[WebhookEvent, float]] = collections.deque()
        self._depth = 0  # queue depth as last read from the store, plus what was queued since
        self._shedding: set[str] = set()  # reasons being dropped for now (logged once per episode)

    async def emit(self, type_: str, data: dict[str, Any]) -> WebhookEvent | None:
        """Queue an event for delivery. Returns it, or None when webhooks are off or it was shed
        (a presence event while the queue holds `max_queue`; counted in telesfu_webhook_dropped_total)."""
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {type_}")
        if not self.enabled:
            return None
        event = WebhookEvent(id="evt_" + secrets.token_hex(12), type=type_, created_at=format_time(utcnow()),
                             data=data)
        if self._depth + len(self._held) >= self.config.max_queue:
            if type_ in SHEDDABLE:
                self._drop(event, "queue_full")
                return None
        elif self._shedding:
            self._recovered("queue_full")
        due = self.clock()
        if self._held:  # keep the order: nothing overtakes what is already held
            self._hold(event, due)
        else:
            try:
                await self.store.enqueue_webhook(event, due)
                self._depth += 1
            except StoreError as e:
                log.warning("webhook %s (%s) held in memory: the store is unavailable (%s)", event.id, type_, e)
                self._hold(event, due)
        self._wake.set()
        return event

    def _drop(self, event: WebhookEvent, reason: str) -> None:
        self.metrics.webhook_dropped.labels(reason).inc()
        if reason not in self._shedding:
            self._shedding.add(reason)
            log.error("webhooks: dropping events (%s; first: %s %s); counted in telesfu_webhook_dropped_total",
                      reason, event.type, event.id)

    def _recovered(self, reason: str) -> None:
        if reason in self._shedding:
            self._shedding.discard(reason)
            log.warning("webhooks: events are queued again (%s is over)", reason)

    def _hold(self, event: WebhookEvent, due: float) -> None:
        if len(self._held) >= self.config.max_queue:  # memory is bounded too: the oldest goes
            old, _ = self._held.popleft()
            self._drop(old, "store_unavailable")
        self._held.append((event, due))

    async def flush_held(self) -> int:
        """Hand held events to the store, oldest first; stops at the first failure. Returns how many."""
        n = 0
        while self._held:
            event, due = self._held[0]
            try:
                await self.store.enqueue_webhook(event, due)
            except StoreError:
                break
            self._held.popleft()
            self._depth += 1
            n += 1
        if not self._held:
            self._recovered("store_unavailable")
        return n

    async def refresh_depth(self) -> int:
        """Read the queue depth from the store (the shared queue, every node's events)."""
        self._depth = await self.store.webhook_queue_depth()
        self.metrics.webhook_queue.set(self._depth)
        return self._depth

    @property
    def held(self) -> int:
        return len(self._held)

    def start(self) -> None:
        if self.enabled:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._held and await self.flush_held() == 0 and self._held:
            log.error("%d webhook events held in memory are lost: the store is unavailable", len(self._held))
        for t in list(self._inflight):
            t.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds))
        lease = self.config.timeout_seconds * 3 + 5
        while True:
            if self._held:
                await self.flush_held()
            try:
                pending = await self.store.claim_webhooks(self.clock(), lease, 32)
                await self.refresh_depth()
            except Exception:
                log.exception("webhook queue unavailable; retrying")
                pending = []
            for p in pending:
                task = asyncio.get_running_loop().create_task(self._deliver(p))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if len(pending) < 32:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=0.5)
                except TimeoutError:
                    pass

    async def _deliver(self, p: PendingWebhook) -> None:
        assert self._session is not None
        event, body = p.event, p.event.body()
        headers = {"Content-Type": "application/json", "User-Agent": "telesfu-webhooks/1",
                   SIGNATURE_HEADER: sign(self.config.secret, body, int(self.clock())),
                   "Telesfu-Event-Id": event.id}
        t0 = time.perf_counter()
        error = ""
        try:
            async with self._session.post(self.config.url, data=body, headers=headers) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    self.metrics.webhook_deliveries.labels(event.type, "delivered").inc()
                    try:
                        await retrying(lambda: self.store.complete_webhook(event.id), "complete webhook",
                                       INTERACTIVE)
                    except StoreError:
                        log.warning("webhook %s delivered but not marked done (store unavailable); it is "
                                    "delivered again when its lease ends", event.id)
                    return
                error = f"HTTP {resp.status}"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            error = type(e).__name__
        finally:
            self.metrics.webhook_latency.observe(time.perf_counter() - t0)
        attempts = p.attempts + 1
        try:
            if attempts >= self.config.max_attempts:
                await self.store.dead_letter_webhook(event.id)
                self.metrics.webhook_deliveries.labels(event.type, "dead_lettered").inc()
                log.warning("webhook %s (%s) dead-lettered after %d attempts: %s", event.id, event.type,
                            attempts, error)
            else:
                delay = backoff_delay(attempts - 1, self.config.backoff_base_seconds,
                                      self.config.backoff_max_seconds)
                await self.store.retry_webhook(event.id, self.clock() + delay, attempts)
                self.metrics.webhook_deliveries.labels(event.type, "failed").inc()
                log.info("webhook %s (%s) attempt %d failed (%s); next in %.1fs", event.id, event.type,
                         attempts, error, delay)
        except Exception:
            log.exception("could not reschedule webhook %s; its lease will expire and it is retried", event.id)
