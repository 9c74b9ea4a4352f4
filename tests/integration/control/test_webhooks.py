"""Webhooks received by a real local HTTP server: signed, retried, at least once, across restarts."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from aiohttp import web

from control.domain.models import utcnow
from control.webhooks import SIGNATURE_HEADER, backoff_delay, sign, verify_signature
from tests.control_helpers import live_node, make_config

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    url: str
    events: list[dict] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to this many deliveries first
    bad_signatures: int = 0
    attempts: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def of_type(self, t: str) -> list[dict]:
        return [e for e in self.events if e["type"] == t]

    async def wait_for(self, pred, timeout: float = 10.0) -> None:
        async def loop():
            while not pred():
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(loop(), timeout)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        rec.attempts += 1
        if not verify_signature(SECRET, body, request.headers.get(SIGNATURE_HEADER, "")):
            rec.bad_signatures += 1
            return web.Response(status=400)
        if rec.fail_next > 0:
            rec.fail_next -= 1
            return web.Response(status=500)
        rec.events.append(json.loads(body))
        rec.arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"
    try:
        yield rec
    finally:
        await runner.cleanup()


def hook_config(url: str, **rooms):
    return make_config(webhooks={"url": url, "secret": SECRET, "backoff_base_seconds": 0.05,
                                 "backoff_max_seconds": 0.2, "max_attempts": 5},
                       rooms=rooms or {})


def test_signature_format_and_verification():
    body = b'{"a":1}'
    header = sign(SECRET, body, 1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and len(v1) == len("v1=") + 64
    assert verify_signature(SECRET, body, header, now=1_700_000_010)
    assert not verify_signature(SECRET, body + b" ", header, now=1_700_000_010)
    assert not verify_signature("other-secret-000000", body, header, now=1_700_000_010)
    assert not verify_signature(SECRET, body, header, now=1_700_001_000)  # stale: replay refused
    assert not verify_signature(SECRET, body, "garbage", now=1_700_000_010)


def test_backoff_grows_exponentially_with_full_jitter_and_a_cap():
    assert backoff_delay(0, 1.0, 600, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, 1.0, 600, rand=lambda: 1.0) == 8.0
    assert backoff_delay(20, 1.0, 600, rand=lambda: 1.0) == 600
    assert backoff_delay(3, 1.0, 600, rand=lambda: 0.0) == 0.5  # never hammers
    rng = random.Random(7)
    delays = {backoff_delay(5, 1.0, 600, rand=rng.random) for _ in range(50)}
    assert len(delays) > 40 and all(0.5 <= d <= 32 for d in delays)


async def test_lifecycle_events_are_delivered_signed():
    async with receiver() as rec, live_node(hook_config(rec.url)) as ln:
        await ln.setup_appointment("a1", waiting_room=True)
        await ln.node.rooms.join(await ln.token("a1", "prov-1"))
        await ln.node.rooms.join(await ln.token("a1", "client-1"))
        await ln.call("POST", "/v1/rooms/a1/participants/client-1/admit")
        await ln.call("DELETE", "/v1/rooms/a1")
        want = ["room.started", "participant.joined", "participant.waiting", "participant.admitted",
                "participant.joined", "participant.left", "participant.left", "room.finished"]
        await rec.wait_for(lambda: len(rec.events) >= len(want))
        assert sorted(e["type"] for e in rec.events) == sorted(want)
        assert rec.bad_signatures == 0
        admitted = rec.of_type("participant.admitted")[0]
        assert admitted["data"]["participant_id"] == "client-1" and admitted["data"]["appointment_id"] == "a1"
        assert admitted["id"].startswith("evt_") and admitted["created_at"].endswith("Z")
        assert len({e["id"] for e in rec.events}) == len(rec.events)


async def test_failed_deliveries_are_retried_then_succeed():
    async with receiver() as rec, live_node(hook_config(rec.url)) as ln:
        rec.fail_next = 3
        await ln.node.webhooks.emit("room.started", {"appointment_id": "a1"})
        await rec.wait_for(lambda: rec.events)
        assert rec.attempts == 4 and rec.of_type("room.started")
        await asyncio.sleep(0.1)
        assert await ln.node.store.webhook_queue_depth() == 0
        text = (await ln.call("GET", "/metrics", auth=False))[1]
        assert 'telesfu_webhook_deliveries_total{outcome="failed",type="room.started"} 3.0' in text


async def test_dead_letter_after_max_attempts():
    async with receiver() as rec, live_node(hook_config(rec.url)) as ln:
        rec.fail_next = 100
        await ln.node.webhooks.emit("room.finished", {"appointment_id": "a1"})
        for _ in range(100):
            if await ln.node.store.dead_letters():
                break
            await asyncio.sleep(0.05)
        assert [e.type for e in await ln.node.store.dead_letters()] == ["room.finished"]
        assert rec.attempts == 5 and await ln.node.store.webhook_queue_depth() == 0


async def test_emit_never_waits_for_a_slow_receiver():
    """A practice server that hangs does not slow down the API: the request only enqueues."""
    hang = asyncio.Event()

    async def slow(request):
        await hang.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hooks", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"
    try:
        async with live_node(hook_config(url)) as ln:
            await ln.setup_appointment("a1")
            t0 = asyncio.get_running_loop().time()
            for _ in range(5):
                await ln.node.rooms.join(await ln.token("a1", "prov-1"))
                await ln.node.rooms.leave("a1", "prov-1")
            assert asyncio.get_running_loop().time() - t0 < 3.0  # receiver timeout is 5 s per attempt
            hang.set()
    finally:
        hang.set()
        await runner.cleanup()


async def test_pending_events_survive_a_node_restart_on_redis(redis_url, redis_prefix):
    """Stop the node with events pending (receiver down), start it again: they are delivered."""
    from control.store.redis import RedisStore
    from tests.conftest import cleanup_redis_store

    async with receiver() as rec:
        dead_url = rec.url.rsplit(":", 1)[0] + ":1/hooks"  # nothing listens there
        cfg = hook_config(dead_url)
        async with live_node(cfg, store=RedisStore.from_url(redis_url, prefix=redis_prefix)) as ln:
            await ln.setup_appointment("a1")
            await ln.node.rooms.join(await ln.token("a1", "prov-1"))
            await asyncio.sleep(0.3)  # a few failed attempts
            pending = await ln.node.store.webhook_queue_depth()
        assert pending == 2  # room.started, participant.joined
        cfg2 = hook_config(rec.url)
        store2 = RedisStore.from_url(redis_url, prefix=redis_prefix)
        async with live_node(cfg2, store=store2) as ln2:
            await rec.wait_for(lambda: len(rec.events) >= 2, timeout=15)
            assert sorted(e["type"] for e in rec.events) == ["participant.joined", "room.started"]
            for _ in range(50):
                if await ln2.node.store.webhook_queue_depth() == 0:
                    break
                await asyncio.sleep(0.05)
            assert await ln2.node.store.webhook_queue_depth() == 0
        await cleanup_redis_store(RedisStore.from_url(redis_url, prefix=redis_prefix), redis_prefix)


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_starting_soon_reminders(backend, request):
    """Once per telehealth appointment, lead minutes before; also when registered late; once more
    when rescheduled; never for standard or cancelled appointments, nor for one already started."""
    store = None
    if backend == "redis":
        from control.store.redis import RedisStore

        store = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("redis_prefix"))
    async with receiver() as rec, live_node(hook_config(rec.url, reminder_lead_minutes=30), store=store) as ln:
        rem = ln.node.reminders
        now = utcnow().replace(microsecond=0)
        late = await ln.setup_appointment("late", starts_at=now + timedelta(minutes=10))  # due already
        await ln.setup_appointment("later", clients=("c2",), provider="p2", starts_at=now + timedelta(minutes=45))
        await ln.setup_appointment("standard", clients=("c3",), telehealth=False, starts_at=now + timedelta(minutes=5))
        await ln.setup_appointment("cancelled", clients=("c4",), status="cancelled",
                                   starts_at=now + timedelta(minutes=5))
        await ln.setup_appointment("started", clients=("c5",), starts_at=now - timedelta(minutes=1))
        await rem.tick()
        await rec.wait_for(lambda: rec.events)
        await rem.tick()  # twice: still once
        await asyncio.sleep(0.2)
        assert [e["data"]["appointment_id"] for e in rec.of_type("appointment.starting_soon")] == ["late"]
        # time passes: 'later' becomes due
        rem.clock = lambda: now + timedelta(minutes=16)
        await rem.tick()
        await rec.wait_for(lambda: len(rec.events) >= 2)
        # reschedule 'late' to a new start that is due: announced once more
        body = {k: late[k] for k in ("provider_id", "client_ids", "telehealth")}
        body.update(starts_at=(now + timedelta(minutes=20)).isoformat(), ends_at=(now + timedelta(minutes=70)).isoformat())
        s, _ = await ln.call("PUT", "/v1/appointments/late", body)
        assert s == 200
        await rem.tick()
        await rec.wait_for(lambda: len(rec.events) >= 3)
        await rem.tick()
        await asyncio.sleep(0.2)
        ids = [e["data"]["appointment_id"] for e in rec.of_type("appointment.starting_soon")]
        assert ids == ["late", "later", "late"]
    if store is not None:
        from tests.conftest import cleanup_redis_store

        await cleanup_redis_store(RedisStore.from_url(request.getfixturevalue("redis_url"),
                                                      prefix=request.getfixturevalue("redis_prefix")),
                                  request.getfixturevalue("redis_prefix"))


async def test_a_full_queue_sheds_presence_events_counts_them_logs_once_and_keeps_room_events(caplog):
    from control.metrics import Metrics
    from control.store.memory import MemoryStore
    from control.webhooks import Webhooks

    cfg = make_config(webhooks={"url": "http://127.0.0.1:9/hooks", "secret": SECRET, "max_queue": 100})
    store, metrics = MemoryStore(), Metrics()
    hooks = Webhooks(cfg.webhooks, store, metrics)  # not started: nothing is delivered, the queue fills
    for i in range(150):
        await hooks.emit("participant.joined", {"participant_id": f"c{i}"})
    assert await hooks.emit("room.finished", {"appointment_id": "a1"}) is not None  # never shed
    assert await store.webhook_queue_depth() == 101
    dropped = metrics.registry.get_sample_value("telesfu_webhook_dropped_total", {"reason": "queue_full"})
    assert dropped == 50
    assert sum("dropping events" in r.getMessage() for r in caplog.records) == 1
    for p in await store.claim_webhooks(1e12, 60, 60):  # the practice's server is back: 60 delivered
        await store.complete_webhook(p.event.id)
    assert await hooks.refresh_depth() == 41
    assert await hooks.emit("participant.left", {"participant_id": "c0"}) is not None
    assert metrics.registry.get_sample_value("telesfu_webhook_queue_depth") == 41
