"""Resuming a session with the credential of `joined`/`waiting`, over real WebSockets against a
node with real media workers, on both stores: after the join token expired, after a drop and a
worker restart (1012), replacing a still-open socket; and what is refused (an old credential,
one the room let go, garbage), changing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from control.domain.admission import Code
from control.domain.models import utcnow
from control.tokens import resume_key
from signaling import protocol as p
from tests.control_helpers import LiveNode, live_node
from tests.media_helpers import wait_until
from tests.signaling_helpers import SignalingClient, media_config

pytestmark = pytest.mark.slow

TTL, LEEWAY = 30, 0  # the shortest join token the config allows


@asynccontextmanager
async def node_on(store_kind: str, request: pytest.FixtureRequest) -> AsyncIterator[LiveNode]:
    config = media_config(tokens={"ttl_seconds": TTL, "leeway_seconds": LEEWAY})
    if store_kind == "memory":
        async with live_node(config, media=True) as ln:
            yield ln
        return
    from control.store.redis import RedisStore
    from tests.conftest import cleanup_redis_store

    prefix = request.getfixturevalue("redis_prefix")
    store = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=prefix)
    try:
        async with live_node(config, store, media=True) as ln:
            yield ln
    finally:
        await cleanup_redis_store(store, prefix)
        await store.close()


@pytest.fixture(params=["memory", "redis"])
async def ln(request):
    async with node_on(request.param, request) as node:
        yield node


def advance(ln: LiveNode, seconds: float) -> None:
    """The rooms service's clock (it checks token times) moves on by `seconds`."""
    offset = timedelta(seconds=seconds)
    ln.node.rooms.clock = lambda: utcnow() + offset


async def joined(ln: LiveNode, apt: str, pid: str) -> SignalingClient:
    c = await SignalingClient(ln, await ln.token(apt, pid)).connect()
    await c.wait_for("joined")
    return c


async def resumed(ln: LiveNode, credential: str) -> SignalingClient:
    c = await SignalingClient(ln, "").connect(join=False)
    await c.send({"type": "resume", "credential": credential})
    return c


async def room_state(ln: LiveNode) -> object:
    return (await ln.call("GET", "/v1/rooms/a1"))[1]


async def test_a_drop_after_the_token_expired_resumes_without_the_waiting_room(ln):
    """Minute 45 of a 50-minute session, in short: the token is past exp + leeway, the socket
    drops, resume{credential} brings the client back into the call (no waiting room); the
    provider sees participant_reconnecting, then the client again; the credential rotates."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=True)
    pr = await joined(ln, "a1", "prov")
    c = await SignalingClient(ln, await ln.token("a1", "cli")).connect()
    back = old = None
    try:
        first = (await c.wait_for("waiting"))["resume"]
        await pr.send({"type": "admit", "participant_id": "cli"})
        j = await c.wait_for("joined")
        credential = j["resume"]
        assert credential == first and len(credential) == 43
        advance(ln, TTL + LEEWAY + 1)
        assert ln.node.tokens.check(c.token, ln.node.rooms.clock().timestamp()) is Code.TOKEN_EXPIRED
        await c.ws.close()  # the socket drops
        assert (await pr.wait_for("participant_reconnecting"))["participant_id"] == "cli"
        n_joined = len(pr.of_type("participant_joined"))
        back = await resumed(ln, credential)
        j2 = await back.wait_for("joined")
        assert "waiting" not in back.types() and "admitted" not in back.types()
        assert [x["participant_id"] for x in j2["participants"]] == ["prov"]
        assert j2["participant"] == j["participant"]
        assert j2["resume"] != credential and len(j2["resume"]) == 43
        back_again = await pr.wait_for("participant_joined", count=n_joined + 1)
        assert back_again["participant"]["participant_id"] == "cli"
        assert pr.types().index("participant_reconnecting") < len(pr.messages) - 1
        await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 5, "back in the media room")
        # the old credential is spent: refused with its code, and nothing changes
        before = await room_state(ln)
        old = await resumed(ln, credential)
        err = await old.wait_for("error")
        assert err["code"] == "resume_invalid" and err["message"]
        assert await old.wait_closed() == p.CLOSE_CODES["resume_invalid"] == 4405
        assert await room_state(ln) == before
        await back.send({"type": "ping"})
        await back.wait_for("pong")  # the resumed session was not disturbed
        assert back.close_code is None
    finally:
        for x in (old, back, c, pr):
            if x is not None:
                await x.close()


async def test_resume_while_the_old_socket_is_open_replaces_it(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    pr = await joined(ln, "a1", "prov")
    c = await joined(ln, "a1", "cli")
    c2 = None
    try:
        c2 = await resumed(ln, c.of_type("joined")[0]["resume"])
        await c2.wait_for("joined")
        assert (await c.wait_for("error"))["code"] == "replaced"
        assert await c.wait_closed() == p.CLOSE_CODES["replaced"]
        room = await room_state(ln)
        assert sorted(x["participant_id"] for x in room["participants"]) == ["cli", "prov"]
        assert "participant_left" not in pr.types()
    finally:
        if c2 is not None:
            await c2.close()
        await c.close()
        await pr.close()


async def test_a_waiting_client_that_dropped_resumes_into_the_waiting_room(ln):
    """The waiting place is kept for the grace too; a resume comes back waiting (not admitted),
    without a second participant_waiting, and is admitted from there."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=True)
    pr = await joined(ln, "a1", "prov")
    c = await SignalingClient(ln, await ln.token("a1", "cli")).connect()
    c2 = None
    try:
        credential = (await c.wait_for("waiting"))["resume"]
        await pr.wait_for("participant_waiting")
        await c.ws.close()
        await wait_until(lambda: ("a1", "cli") in ln.hub._grace, 5, "the grace timer")
        c2 = await resumed(ln, credential)
        w = await c2.wait_for("waiting")
        assert w["resume"] != credential and w["provider_present"] is True
        assert len(pr.of_type("participant_waiting")) == 1
        assert "participant_reconnecting" not in pr.types()  # a waiting client is not in the call
        await pr.send({"type": "admit", "participant_id": "cli"})
        j = await c2.wait_for("joined")
        assert j["resume"] == w["resume"]
    finally:
        if c2 is not None:
            await c2.close()
        await c.close()
        await pr.close()


async def test_resume_is_refused_once_the_room_let_the_participant_go(ln):
    """After the grace ran out, after a removal, after leaving: resume_invalid, nothing changes."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli", "cli2", "cli3"))
    ln.hub.grace_seconds = 0.3
    pr = await joined(ln, "a1", "prov")
    dropped = await joined(ln, "a1", "cli")
    removed = await joined(ln, "a1", "cli2")
    leaving = await joined(ln, "a1", "cli3")
    tries: list[SignalingClient] = []
    try:
        creds = {x: x.of_type("joined")[0]["resume"] for x in (dropped, removed, leaving)}
        await dropped.ws.close()
        await pr.wait_for("participant_left")  # the grace ran out
        await pr.send({"type": "remove", "participant_id": "cli2"})
        await removed.wait_closed()
        await leaving.send({"type": "leave"})
        await leaving.wait_closed()
        await wait_until(lambda: len(pr.of_type("participant_left")) == 3, 5, "three gone")
        before = await room_state(ln)
        assert [x["participant_id"] for x in before["participants"]] == ["prov"]
        for x in (dropped, removed, leaving):
            t = await resumed(ln, creds[x])
            tries.append(t)
            assert (await t.wait_for("error"))["code"] == "resume_invalid"
            assert await t.wait_closed() == 4405
        for garbage in ("", "x" * 43, "A" * 44, creds[dropped][:-1] + "B"):
            t = await resumed(ln, garbage)
            tries.append(t)
            assert (await t.wait_for("error"))["code"] in ("resume_invalid", "invalid_field")
            assert 4400 <= (await t.wait_closed() or 0) <= 4499
        assert await room_state(ln) == before
    finally:
        for x in (*tries, leaving, removed, dropped, pr):
            await x.close()


async def test_a_worker_restart_is_resumed_with_the_credential(ln):
    """Close 1012 (media restarted): the client resumes after its token expired, on the new worker."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    c = await joined(ln, "a1", "cli")
    c2 = None
    try:
        await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 5, "in the media room")
        advance(ln, TTL + LEEWAY + 1)
        ln.node.media.worker_for("a1").kill()
        assert (await c.wait_for("error"))["code"] == "media_restarted"
        assert await c.wait_closed() == p.CLOSE_SERVICE_RESTART
        await wait_until(lambda: all(w.proc.returncode is None for w in ln.node.media.workers), 20, "restart")
        c2 = await resumed(ln, c.of_type("joined")[0]["resume"])
        await c2.wait_for("joined")
        await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 5, "back in the media room")
    finally:
        if c2 is not None:
            await c2.close()
        await c.close()


async def test_a_room_everyone_left_is_a_new_session_and_old_credentials_die(ln):
    """A credential is bound to the room's session: once everyone left and a join reopened the
    room, a credential of the old session is refused even if its record were still there."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    pr = await joined(ln, "a1", "prov")
    credential = pr.of_type("joined")[0]["resume"]
    key = resume_key(credential)
    assert key is not None
    record = await ln.node.store.get_resume(key)
    assert record is not None and (record["apt"], record["pid"]) == ("a1", "prov")
    await pr.send({"type": "leave"})
    await pr.wait_closed()
    await wait_until(lambda: not ln.hub.by_room.get("a1"), 5, "left")
    assert await ln.node.store.get_resume(key) is not None  # kept until its TTL, useless now
    pr2 = await joined(ln, "a1", "prov")  # a new session of the room (everyone had left)
    assert await ln.node.store.get_resume(key) is None  # the participant's new credential replaced it
    await ln.node.store.put_resume(key, record, 600)  # as if it had survived
    before = await room_state(ln)
    t = await resumed(ln, credential)
    try:
        assert (await t.wait_for("error"))["code"] == "resume_invalid"
        assert await room_state(ln) == before and pr2.close_code is None
    finally:
        await t.close()
        await pr2.close()


async def test_resume_is_refused_when_the_appointment_is_no_longer_joinable(ln):
    """The appointment turned cancelled (written straight to the store, before the room was
    ended) or its join window closed: a resume is refused even though the room still holds them."""
    from dataclasses import replace

    from control.domain.models import AppointmentStatus

    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    c = await joined(ln, "a1", "cli")
    tries = []
    try:
        credential = c.of_type("joined")[0]["resume"]
        await c.ws.close()
        await wait_until(lambda: ("a1", "cli") in ln.hub._grace, 5, "the grace timer")
        apt = await ln.node.store.get_appointment("a1")
        await ln.node.store.put_appointment(replace(apt, status=AppointmentStatus.CANCELLED))
        t = await resumed(ln, credential)
        tries.append(t)
        assert (await t.wait_for("error"))["code"] == "resume_invalid"
        await ln.node.store.put_appointment(apt)
        advance(ln, 51 * 60 + 30 * 60)  # past the end of the join window
        t = await resumed(ln, credential)
        tries.append(t)
        assert (await t.wait_for("error"))["code"] == "resume_invalid"
        advance(ln, 0)
        t = await resumed(ln, credential)  # refusals spent nothing: it still works
        tries.append(t)
        await t.wait_for("joined")
    finally:
        for x in (*tries, c):
            await x.close()


async def test_a_grace_that_ran_out_while_a_resume_was_under_way_closes_that_socket(ln):
    """The grace's leave can land after a resume passed its checks: the resumed socket is then
    told resume_invalid and closed, instead of staying in a call that no longer holds it."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    pr = await joined(ln, "a1", "prov")
    c = await joined(ln, "a1", "cli")
    try:
        await ln.node.rooms.leave("a1", "cli", "disconnected")  # as the grace timer's leave does
        assert (await c.wait_for("error"))["code"] == "resume_invalid"
        assert await c.wait_closed() == 4405
        assert (await pr.wait_for("participant_left"))["participant_id"] == "cli"
    finally:
        await c.close()
        await pr.close()


async def test_refused_resumes_count_against_the_source_like_refused_joins():
    """Unknown credentials were answered resume_invalid without limit (500 from one address in
    0.8 s, each a store read): they spend the per-source refused-join bucket, and past it the
    address gets rate_limited (4429) for resumes and joins alike; nothing is written."""
    config = media_config(rooms={"refused_joins_burst_per_source": 3,
                                 "refused_joins_per_second_per_source": 0.001})
    async with live_node(config, media=True) as node:
        await node.setup_appointment("a1", provider="prov", clients=("cli",))
        before = await node.call("GET", "/v1/rooms/a1")
        tries: list[SignalingClient] = []
        try:
            codes = []
            for i in range(5):
                t = await resumed(node, f"{i:043d}")
                tries.append(t)
                codes.append(((await t.wait_for("error"))["code"], await t.wait_closed()))
            assert codes == [("resume_invalid", 4405)] * 3 + [("rate_limited", 4429)] * 2
            c = await SignalingClient(node, await node.token("a1", "cli")).connect()
            tries.append(c)
            assert (await c.wait_for("error"))["code"] == "rate_limited"  # the same bucket as joins
            assert await node.call("GET", "/v1/rooms/a1") == before
        finally:
            for x in tries:
                await x.close()
