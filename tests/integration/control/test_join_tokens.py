"""Single-use join tokens through the rooms service, on the memory store and a real Redis:
a token that let someone in works once (even for 20 racing joins), a refused join does not
spend it, and a replay changes nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from control.domain.models import Presence, utcnow
from tests.control_helpers import live_node, make_config


@pytest.fixture(params=["memory", "redis"])
async def ln(request):
    config = make_config(rooms={"join_burst": 100})  # 20 racing joins are not a flood here
    if request.param == "memory":
        async with live_node(config) as node:
            yield node
        return
    from control.store.redis import RedisStore
    from tests.conftest import cleanup_redis_store

    prefix = request.getfixturevalue("redis_prefix")
    store = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=prefix)
    try:
        async with live_node(config, store) as node:
            yield node
    finally:
        await cleanup_redis_store(store, prefix)
        await store.close()


async def test_twenty_concurrent_joins_with_one_token_let_one_in(ln):
    await ln.setup_appointment("a1", clients=("c1",), waiting_room=True)
    token = await ln.token("a1", "c1")
    results = await asyncio.gather(*(ln.node.rooms.join(token) for _ in range(20)))
    codes = sorted(r.code.value for r in results)
    assert codes == ["token_used"] * 19 + ["waiting"], codes
    winner = next(r for r in results if not r.decision.refused)
    assert winner.resume and all(not r.resume for r in results if r.decision.refused)
    room = await ln.node.store.get_room("a1")
    assert [(m.participant_id, m.presence) for m in room.members] == [("c1", Presence.WAITING)]
    # and later, once admitted, a replay still changes nothing
    await ln.call("POST", "/v1/rooms/a1/participants/c1/admit")
    before = (await ln.node.store.get_room("a1")).to_json()
    assert (await ln.node.rooms.join(token)).code.value == "token_used"
    assert (await ln.node.store.get_room("a1")).to_json() == before


async def test_a_refused_join_does_not_spend_the_token(ln):
    """Too early: the same link works once the join window opened (Try again on the screen)."""
    start = utcnow().replace(microsecond=0) + timedelta(minutes=35)  # the window opens in 5 minutes
    await ln.setup_appointment("a1", clients=("c1",), starts_at=start)
    r = ln.node.rooms
    token = await ln.token("a1", "c1")
    assert (await r.join(token)).code.value == "outside_join_window"
    assert (await r.join(token)).code.value == "outside_join_window"
    assert await ln.node.store.get_room("a1") is None  # nothing written
    later = utcnow() + timedelta(minutes=6)  # the token (10 minutes) still lives
    r.clock = lambda: later
    assert (await r.join(token)).code.value == "admitted"
    assert (await r.join(token)).code.value == "token_used"
