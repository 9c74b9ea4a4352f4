"""Faults of the store under live sessions: a throwaway redis-server of the test's own is paused
(SIGSTOP) or restarted while a provider and a client are in a room, over real signaling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from control.store.redis import RedisStore
from signaling import protocol as p
from tests.control_helpers import LiveNode, live_node
from tests.integration.control.test_webhooks import SECRET, Receiver, receiver
from tests.media_helpers import wait_until
from tests.redis_helpers import RedisProcess
from tests.signaling_helpers import SignalingClient, media_config

pytestmark = pytest.mark.slow


@asynccontextmanager
async def faulty_node() -> AsyncIterator[tuple[LiveNode, RedisProcess, Receiver]]:
    rp = RedisProcess()
    try:
        rp.start()
        async with receiver() as rec:
            # a short socket timeout so a stalled call fails in a second rather than five
            client = aioredis.from_url(rp.url, decode_responses=True, socket_timeout=1, socket_connect_timeout=1)
            cfg = media_config(webhooks={"url": rec.url, "secret": SECRET, "backoff_base_seconds": 0.05,
                                         "backoff_max_seconds": 0.5, "max_attempts": 50})
            async with live_node(cfg, RedisStore(client, prefix="fault:"), media=True) as ln:
                ln.hub.grace_seconds = 0.5
                yield ln, rp, rec
    finally:
        rp.close()


async def joined(ln: LiveNode, pid: str) -> SignalingClient:
    c = await SignalingClient(ln, await ln.token("a1", pid)).connect()
    await c.wait_for("joined")
    return c


def events_of(rec: Receiver) -> set[tuple[str, str]]:
    return {(e["type"], e["data"].get("participant_id", "")) for e in rec.events}


async def finish_and_check_webhooks(ln: LiveNode, rec: Receiver, pr: SignalingClient) -> None:
    await pr.send({"type": "leave"})
    await pr.wait_closed()
    await rec.wait_for(lambda: rec.of_type("room.finished"), 30)
    assert {("room.started", ""), ("participant.joined", "prov"), ("participant.joined", "cli"),
            ("participant.left", "cli"), ("participant.left", "prov"), ("room.finished", "")} <= events_of(rec)
    left = {e["data"]["participant_id"]: e["data"]["reason"] for e in rec.of_type("participant.left")}
    assert left == {"cli": "disconnected", "prov": "left"}
    room = (await ln.call("GET", "/v1/rooms/a1"))[1]
    assert room["participants"] == [] and room["closed_at"]


async def test_a_redis_stall_fails_joins_closed_and_the_dropped_client_still_leaves_and_the_room_finishes():
    async with faulty_node() as (ln, rp, rec):
        await ln.setup_appointment("a1", provider="prov", clients=("cli", "cli2"))
        pr = await joined(ln, "prov")
        c = await joined(ln, "cli")
        late_token = await ln.token("a1", "cli2")
        late = SignalingClient(ln, late_token)
        key = ("a1", "cli")
        rp.pause()
        try:
            await c.ws.close()  # the client drops while Redis is stalled
            await late.connect()  # and someone joins during the stall
            err = await late.wait_for("error", timeout=15)
            assert err["code"] == "store_unavailable"
            assert await late.wait_closed() == p.CLOSE_TRY_AGAIN  # closed, not left hanging
            # the grace is armed although the store could not say what the client was...
            await wait_until(lambda: key in ln.hub._grace, 15, "grace armed during the stall")
            assert (await pr.wait_for("participant_reconnecting"))["participant_id"] == "cli"
            # ...and runs out while Redis is still stalled
            await wait_until(lambda: key not in ln.hub._grace, 5, "grace over")
        finally:
            rp.resume()
        left = await pr.wait_for("participant_left", timeout=30)  # the leave is applied once Redis is back
        assert left["participant_id"] == "cli" and left["reason"] == "disconnected"
        room = (await ln.call("GET", "/v1/rooms/a1"))[1]
        assert [m["participant_id"] for m in room["participants"]] == ["prov"]
        await finish_and_check_webhooks(ln, rec, pr)
        await late.close()
        await c.close()


async def test_a_redis_restart_mid_session_keeps_the_session_loses_no_webhook_and_the_room_finishes():
    async with faulty_node() as (ln, rp, rec):
        await ln.setup_appointment("a1", provider="prov", clients=("cli",))
        pr = await joined(ln, "prov")
        c = await joined(ln, "cli")
        await rec.wait_for(lambda: ("participant.joined", "cli") in events_of(rec), 10)
        key = ("a1", "cli")
        rp.stop()
        try:
            await c.ws.close()  # the client drops while Redis is down
            await wait_until(lambda: key in ln.hub._grace, 15, "grace armed while Redis is down")
            await wait_until(lambda: key not in ln.hub._grace, 5, "grace over")
            await pr.send({"type": "ping"})  # the provider's session goes on meanwhile
            await pr.wait_for("pong")
        finally:
            rp.start()  # same port, same append-only file
        left = await pr.wait_for("participant_left", timeout=30)
        assert left["participant_id"] == "cli" and left["reason"] == "disconnected"
        await finish_and_check_webhooks(ln, rec, pr)
        assert rec.bad_signatures == 0
        await c.close()
