"""One contract, two backends: the in-memory store and a real Redis server."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from control.domain.models import (
    Appointment,
    AuditEntry,
    Client,
    Presence,
    Provider,
    Role,
    Room,
    RoomMember,
)
from control.store.base import StoreError, WebhookEvent, open_store
from control.store.memory import MemoryStore

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    from control.store.redis import RedisStore
    from tests.conftest import cleanup_redis_store

    prefix = request.getfixturevalue("redis_prefix")
    s = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=prefix)
    yield s
    await cleanup_redis_store(s, prefix)


async def test_records_round_trip_and_put_returns_previous(store):
    p = Provider("p1", "Dr P", True, False)
    assert await store.put_provider(p) is None
    assert await store.put_provider(replace(p, waiting_room_enabled=True)) == p
    assert (await store.get_provider("p1")).waiting_room_enabled is True
    c = Client("c1", "C", True)
    assert await store.put_client(c) is None
    assert await store.get_client("c1") == c
    a = Appointment("a1", "p1", ("c1", "c2"), True, T0, T0 + timedelta(minutes=50), max_participants=4)
    assert await store.put_appointment(a) is None
    assert await store.get_appointment("a1") == a
    assert await store.put_appointment(replace(a, telehealth=False)) == a
    assert await store.get_provider("nope") is None and await store.get_appointment("nope") is None
    assert await store.get_many("a1", "c1") == (replace(a, telehealth=False), c)
    assert await store.get_many("nope", "c1") == (None, c)
    assert await store.get_many("a1", "nope") == (replace(a, telehealth=False), None)
    assert await store.get_references("p1", ("c1", "ghost"), "a1") == (
        replace(p, waiting_room_enabled=True), [c, None], replace(a, telehealth=False))
    assert await store.get_references("nope", (), "nope") == (None, [], None)


def _member(pid: str, presence=Presence.WAITING) -> RoomMember:
    return RoomMember(pid, Role.CLIENT, presence, T0)


async def test_update_room_is_read_modify_write(store):
    def open_(room):
        assert room is None
        return Room("a1", T0, "n1", (_member("c1"),)), "opened"

    assert await store.update_room("a1", open_) == "opened"
    assert (await store.get_room("a1")).member("c1").presence is Presence.WAITING
    assert await store.update_room("a1", lambda r: (None, len(r.members))) == 1  # no write
    assert [r.appointment_id for r in await store.list_open_rooms()] == ["a1"]
    await store.update_room("a1", lambda r: (replace(r, closed_at=T0, close_reason="ended"), None))
    assert await store.list_open_rooms() == []
    assert (await store.get_room("a1")).close_reason == "ended"


async def test_update_room_propagates_errors_and_writes_nothing(store):
    await store.update_room("a1", lambda r: (Room("a1", T0), None))

    def boom(room):
        raise ValueError("refused")

    with pytest.raises(ValueError):
        await store.update_room("a1", boom)
    assert await store.get_room("a1") == Room("a1", T0)


async def test_concurrent_admits_of_one_client_take_effect_once(store):
    await store.update_room("a1", lambda r: (Room("a1", T0, members=(_member("c1"),)), None))

    def admit(room):
        m = room.member("c1")
        if m.presence is Presence.ADMITTED:
            return None, "already"
        return room.with_member(replace(m, presence=Presence.ADMITTED)), "admitted"

    results = await asyncio.gather(*(store.update_room("a1", admit) for _ in range(20)))
    assert results.count("admitted") == 1 and results.count("already") == 19


async def test_concurrent_joins_never_overfill_a_room(store):
    """Many clients race for 3 places: exactly 3 get in, none is lost or doubled."""

    def join(pid):
        def fn(room):
            room = room or Room("a1", T0)
            if len(room.members) >= 3:
                return None, False
            return room.with_member(_member(pid, Presence.ADMITTED)), True
        return fn

    results = await asyncio.gather(*(store.update_room("a1", join(f"c{i}")) for i in range(15)))
    room = await store.get_room("a1")
    assert sum(results) == 3 and len(room.members) == 3


async def test_two_nodes_opening_one_room_one_wins(redis_url, redis_prefix):
    """Two separate connections (two nodes) race to open the same room on a real Redis."""
    from control.store.redis import RedisStore

    a, b = RedisStore.from_url(redis_url, redis_prefix), RedisStore.from_url(redis_url, redis_prefix)
    try:
        def open_as(node):
            def fn(room):
                if room is not None:
                    return None, (False, room.node_id)
                return Room("a1", T0, node), (True, node)
            return fn

        for _ in range(10):
            results = await asyncio.gather(*[s.update_room("race", open_as(n)) for s, n in ((a, "n1"), (b, "n2"))
                                             for _ in range(5)])
            winners = [r for r in results if r[0]]
            owner = (await a.get_room("race")).node_id
            assert len(winners) == 1 and all(r[1] == owner for r in results)
            await a._r.delete(redis_prefix + "room:race")
    finally:
        await a.close()
        await b.close()


async def test_audit_log_appends_in_order_with_ids(store):
    for i in range(5):
        e = await store.append_audit(AuditEntry(T0, "a1", "join", f"c{i}", f"c{i}", "admitted"))
        assert e.id
    await store.append_audit(AuditEntry(T0, "a2", "join", "x", "x", "waiting"))
    entries = await store.list_audit("a1")
    assert [e.actor_id for e in entries] == [f"c{i}" for i in range(5)]
    assert len({e.id for e in entries}) == 5
    assert [e.actor_id for e in await store.list_audit("a1", limit=2)] == ["c3", "c4"]


async def test_webhook_queue_claim_lease_retry_complete(store):
    ev = [WebhookEvent(f"e{i}", "room.started", "2026-01-01T00:00:00Z", {"i": i}) for i in range(3)]
    for i, e in enumerate(ev):
        await store.enqueue_webhook(e, due=100 + i)
    assert await store.webhook_queue_depth() == 3
    assert await store.claim_webhooks(now=99, lease_seconds=10, limit=10) == []
    got = await store.claim_webhooks(now=101, lease_seconds=10, limit=10)
    assert [p.event.id for p in got] == ["e0", "e1"] and got[0].event == ev[0] and got[0].attempts == 0
    assert [p.event.id for p in await store.claim_webhooks(now=105, lease_seconds=10, limit=10)] == ["e2"]
    # leased: invisible until the lease runs out (a dead deliverer's events come back)
    assert await store.claim_webhooks(now=110, lease_seconds=10, limit=10) == []
    assert {p.event.id for p in await store.claim_webhooks(now=111.5, lease_seconds=10, limit=10)} == {"e0", "e1"}
    await store.complete_webhook("e0")
    await store.retry_webhook("e1", due=200, attempts=3)
    await store.dead_letter_webhook("e2")
    assert await store.webhook_queue_depth() == 1
    again = await store.claim_webhooks(now=200, lease_seconds=10, limit=10)
    assert [(p.event.id, p.attempts) for p in again] == [("e1", 3)]
    assert [e.id for e in await store.dead_letters()] == ["e2"]


async def test_reminders_due_and_finish_only_if_unchanged(store):
    await store.schedule_reminder("a1", 100.0)
    await store.schedule_reminder("a2", 300.0)
    assert await store.due_reminders(150.0, 10) == [("a1", 100.0)]
    await store.schedule_reminder("a1", 250.0)  # rescheduled in between
    await store.finish_reminder("a1", 100.0)
    assert await store.due_reminders(260.0, 10) == [("a1", 250.0)]
    await store.finish_reminder("a1", 250.0)
    await store.cancel_reminder("a2")
    assert await store.due_reminders(1e12, 10) == []


async def test_claim_once(store):
    assert await store.claim_once("k", 60) is True
    assert await store.claim_once("k", 60) is False
    assert await store.claim_once("k2", 60) is True


async def test_a_jti_is_claimed_by_exactly_one_of_20_concurrent_uses(store):
    """Single-use join tokens: 20 joins racing with one token, one wins; other ids are independent."""
    results = await asyncio.gather(*(store.claim_once("jti:abc", 600) for _ in range(20)))
    assert results.count(True) == 1
    assert await store.claim_once("jti:abd", 600) is True


async def test_a_jti_is_claimed_once_across_two_redis_connections(redis_url, redis_prefix):
    """Two nodes (two connections to one Redis) race 20 uses of each of 10 tokens: one win per token."""
    from control.store.redis import RedisStore

    a, b = RedisStore.from_url(redis_url, redis_prefix), RedisStore.from_url(redis_url, redis_prefix)
    try:
        for n in range(10):
            results = await asyncio.gather(*(s.claim_once(f"jti:t{n}", 60) for s in (a, b) for _ in range(10)))
            assert results.count(True) == 1
        ttl = await a._r.ttl(redis_prefix + "once:jti:t0")
        assert 0 < ttl <= 60  # remembered until the token's expiry, then Redis forgets it
    finally:
        await a.close()
        await b.close()


async def test_resume_records_one_live_per_participant_taken_once(store):
    rec = {"apt": "a1", "pid": "c1", "session": "2026-03-02T15:00:00Z"}
    await store.put_resume("k1", rec, 600)
    assert await store.get_resume("k1") == rec
    await store.put_resume("k2", rec, 600)  # a new credential for the same participant
    assert await store.get_resume("k1") is None and await store.get_resume("k2") == rec
    other = {**rec, "pid": "c2"}
    await store.put_resume("k3", other, 600)  # another participant's does not touch c1's
    assert await store.get_resume("k2") == rec and await store.get_resume("k3") == other
    # ids may hold ':' — ("a:b", "c") and ("a", "b:c") are two participants
    await store.put_resume("k4", {**rec, "apt": "a:b", "pid": "c"}, 600)
    await store.put_resume("k5", {**rec, "apt": "a", "pid": "b:c"}, 600)
    assert await store.get_resume("k4") is not None and await store.get_resume("k5") is not None
    results = await asyncio.gather(*(store.take_resume("k2") for _ in range(20)))
    assert results.count(True) == 1  # rotation: one of racing resumes wins
    assert await store.get_resume("k2") is None and await store.take_resume("k2") is False
    await store.put_resume("k6", rec, 600)  # after a take, the participant gets a new one as usual
    assert await store.get_resume("k6") == rec


async def test_memory_resume_records_expire():
    t = [1000.0]
    s = MemoryStore(clock=lambda: t[0])
    rec = {"apt": "a1", "pid": "c1", "session": "x"}
    await s.put_resume("k1", rec, 10)
    t[0] += 10.5
    assert await s.get_resume("k1") is None and await s.take_resume("k1") is False
    for i in range(100):
        await s.put_resume(f"n{i}", {**rec, "pid": f"p{i}"}, 5)
    t[0] += 60
    await s.put_resume("last", rec, 5)
    assert set(s._resume) == {"last"} and set(s._resume_of) == {("a1", "c1")}


async def test_memory_claim_once_forgets_expired_keys():
    t = [1000.0]
    s = MemoryStore(clock=lambda: t[0])
    assert await s.claim_once("jti:a", 10) is True
    t[0] += 9.9
    assert await s.claim_once("jti:a", 10) is False
    t[0] += 0.2
    assert await s.claim_once("jti:a", 10) is True  # expired: may be claimed again
    for i in range(1000):
        await s.claim_once(f"jti:{i}", 5)
    t[0] += 60
    await s.claim_once("jti:last", 5)
    assert set(s._once) == {"jti:last"}  # one entry per live token, not one per join ever made


async def test_open_store_reports_an_unreachable_redis():
    with pytest.raises(StoreError, match="cannot reach"):
        await open_store("redis://:secretpw@127.0.0.1:1/0")
    try:
        await open_store("redis://:secretpw@127.0.0.1:1/0")
    except StoreError as e:
        assert "secretpw" not in str(e)


# -- audit log: retention classes, folded refusals, retention by age, export ------------------------------


async def test_refusals_never_push_out_a_decision_and_repeats_fold_into_one_entry(store):
    from control.store.base import AuditPolicy

    policy = AuditPolicy(aggregate_seconds=60)
    deny = await store.append_audit(AuditEntry(T0, "a1", "deny", "prov", "c1", "denied"), policy=policy)
    for i in range(20_000):  # a denied client retrying, once every 10 ms
        await store.append_audit(AuditEntry(T0 + timedelta(milliseconds=10 * i), "a1", "join", "c1", "c1",
                                            "participant_denied"), refusal=True, policy=policy)
    entries = await store.list_audit("a1")
    assert [(e.action, e.code, e.count) for e in entries] == [("deny", "denied", 1),
                                                             ("join", "participant_denied", 20_000)]
    assert entries[0] == deny
    assert entries[1].at == T0 and entries[1].last_at == T0 + timedelta(milliseconds=10 * 19_999)


async def test_refusals_fold_only_when_they_repeat_within_the_window_and_are_capped_apart(store):
    from control.store.base import AuditPolicy

    policy = AuditPolicy(aggregate_seconds=60, max_entries=100)
    for i in range(3):  # two codes alternating fold into one entry each
        for code in ("room_full", "outside_join_window"):
            await store.append_audit(AuditEntry(T0 + timedelta(seconds=i), "a1", "join", "c1", "c1", code),
                                     refusal=True, policy=policy)
    later = T0 + timedelta(minutes=5)  # past the window: a new entry
    await store.append_audit(AuditEntry(later, "a1", "join", "c1", "c1", "room_full"), refusal=True, policy=policy)
    assert [(e.code, e.count) for e in await store.list_audit("a1")] == [
        ("room_full", 3), ("outside_join_window", 3), ("room_full", 1)]
    # a flood of distinct refusals is capped in its own class; decisions are untouched
    await store.append_audit(AuditEntry(later, "a2", "admit", "prov", "c1", "admitted"), policy=policy)
    for i in range(150):
        await store.append_audit(AuditEntry(later, "a2", "join", f"x{i}", f"x{i}", "not_on_roster"),
                                 refusal=True, policy=policy)
    entries = await store.list_audit("a2", limit=10_000)
    assert entries[0].action == "admit" and len(entries) == 101
    assert entries[1].actor_id == "x50"  # the oldest refusals went first


async def test_audit_retention_by_age_drops_old_entries_only(store):
    from control.store.base import AuditPolicy

    day = AuditPolicy(retention_seconds=86400)
    await store.append_audit(AuditEntry(T0, "a1", "admit", "prov", "c1", "admitted"), policy=day)
    await store.append_audit(AuditEntry(T0, "a1", "join", "c2", "c2", "room_full"), refusal=True, policy=day)
    await store.append_audit(AuditEntry(T0 + timedelta(hours=1), "a1", "deny", "prov", "c3", "denied"), policy=day)
    await store.append_audit(AuditEntry(T0, "a2", "end", "api", "", "ended"), policy=day)
    # a day and a half later: what is more than a day old goes, the rest stays
    await store.append_audit(AuditEntry(T0 + timedelta(hours=24, minutes=30), "a1", "leave", "c1", "c1", "left"),
                             policy=day)
    assert [e.action for e in await store.list_audit("a1")] == ["deny", "leave"]
    assert [e.action for e in await store.list_audit("a2")] == ["end"]  # no append there yet
    # the periodic sweep covers appointments nobody appends to
    assert await store.prune_audit((T0 + timedelta(minutes=1)).timestamp()) == 1
    assert await store.list_audit("a2") == []
    assert [e.action for e in await store.list_audit("a1")] == ["deny", "leave"]


async def test_audit_export_pages_forward_with_after(store):
    for i in range(25):
        await store.append_audit(AuditEntry(T0, "a1", "join", f"c{i}", f"c{i}", "admitted"), refusal=i % 3 == 0)
    pages, after = [], 0
    for _ in range(10):  # bounded
        page = await store.list_audit("a1", limit=10, after=after)
        if not page:
            break
        pages.append([e.actor_id for e in page])
        after = int(page[-1].id)
    assert [x for p in pages for x in p] == [f"c{i}" for i in range(25)]
    assert [len(p) for p in pages] == [10, 10, 5]


async def test_a_denied_client_flooding_joins_leaves_the_deny_in_place_in_o1_entries(store):
    from control.config import Config
    from control.node import Node
    from control.rooms import Actor

    cfg = Config()
    cfg.tokens.keys = {"k1": "test-signing-secret-0123456789abcdef"}
    now = [1000.0]
    node = Node(cfg.check(), store, node_id="n1")
    node.rooms.monotonic = lambda: now[0]
    await store.put_provider(Provider("p1", "Dr P", True, True))
    await store.put_client(Client("c1", "C", True))
    start = datetime.now(UTC)
    await store.put_appointment(Appointment("a1", "p1", ("c1",), True, start, start + timedelta(minutes=50)))
    mint = node.tokens.mint
    assert (await node.rooms.join(mint("c1", Role.CLIENT, "a1", "C").token)).code.value == "waiting"
    await node.rooms.deny("a1", "c1", Actor.api())
    codes: dict[str, int] = {}
    tokens = [mint("c1", Role.CLIENT, "a1", "C").token for _ in range(200)]
    for i in range(20_000):  # 20,000 refused joins over 40 s of the limiter's clock
        now[0] += 0.002
        r = await node.rooms.join(tokens[i % 200], source="127.0.0.9")
        codes[r.code.value] = codes.get(r.code.value, 0) + 1
    assert set(codes) <= {"participant_denied", "rate_limited", "token_used"} and sum(codes.values()) == 20_000
    assert codes["rate_limited"] > 19_000  # a burst of 10, then one every 2 s
    entries = await store.list_audit("a1", limit=10_000)
    assert ("deny", "api", "c1", "denied") in [(e.action, e.actor_id, e.subject_id, e.code) for e in entries]
    assert len(entries) <= 6, [(e.action, e.code, e.count) for e in entries]
