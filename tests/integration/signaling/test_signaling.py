"""Signaling over a real WebSocket against a node with real media workers: admission, the
waiting room, provider actions, reconnection, bad input; media with real aiortc peers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from control.domain.models import utcnow
from signaling import protocol as p
from tests.media_helpers import AiortcParticipant, wait_until
from tests.signaling_helpers import SignalingClient, media_config, media_node

pytestmark = pytest.mark.slow


@pytest.fixture
async def ln():
    async with media_node() as node:
        yield node


async def client(ln, apt, pid, peer=None, join=True) -> SignalingClient:
    return await SignalingClient(ln, await ln.token(apt, pid), peer).connect(join)


async def joined_pair(ln) -> tuple[SignalingClient, SignalingClient]:
    """Appointment a1 (waiting room off) with its provider and its client both joined."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    pr = await client(ln, "a1", "prov")
    c = await client(ln, "a1", "cli")
    try:
        await pr.wait_for("joined")
        await c.wait_for("joined")
    except BaseException:
        await c.close()
        await pr.close()
        raise
    return pr, c


async def test_waiting_room_admit_and_both_sides_see_each_other(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=True)
    c = await client(ln, "a1", "cli", AiortcParticipant("cli", "blue"))
    pr = None
    try:
        w = await c.wait_for("waiting")
        assert w["provider_present"] is False  # "waiting for your provider"
        pr = await client(ln, "a1", "prov", AiortcParticipant("prov", "red"))
        assert (await c.wait_for("waiting", count=2))["provider_present"] is True  # the provider arrived
        joined = await pr.wait_for("joined")
        assert joined["participant"]["role"] == "provider"
        assert [x["participant_id"] for x in joined["waiting"]] == ["cli"]
        assert (await pr.wait_for("participant_waiting"))["participant"]["participant_id"] == "cli"
        await pr.publish()
        await pr.send({"type": "admit", "participant_id": "cli"})
        await c.wait_for("admitted")
        cj = await c.wait_for("joined")
        assert [x["participant_id"] for x in cj["participants"]] == ["prov"] and "waiting" not in cj
        await c.publish()
        await wait_until(lambda: all((v := x.peer.video_from(y)) is not None and v.frames >= 10
                                     for x, y in ((c, "prov"), (pr, "cli"))), 20, "both decoding")
        assert c.peer.video_from("prov").main_colour == "red" and pr.peer.video_from("cli").main_colour == "blue"
        assert (await pr.wait_for("participant_joined"))["participant"]["participant_id"] == "cli"
        published = {m["track"]["track_id"] for m in pr.of_type("track_published")}
        assert {"cli:audio:0", "cli:video:0"} <= published
        await c.wait_for("connection_quality", timeout=5)
        # before admission the client heard nothing about the room
        before = c.types()[: c.types().index("admitted")]
        assert before == ["waiting", "waiting"], before
    finally:
        await c.close()
        if pr:
            await pr.close()


async def test_waiting_room_off_joins_directly(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=False)
    c = await client(ln, "a1", "cli")
    try:
        j = await c.wait_for("joined")
        assert j["participants"] == [] and "waiting" not in c.types()
    finally:
        await c.close()


@pytest.mark.parametrize("setup,code", [
    (dict(status="cancelled"), "appointment_cancelled"),
    (dict(teletherapy=False), "telehealth_not_enabled"),
    (dict(portal=False), "portal_account_required"),
    (dict(starts_at_offset=timedelta(days=1)), "outside_join_window"),
    (dict(telehealth=False), "not_telehealth"),
])
async def test_refusals_get_an_error_and_their_close_code(ln, setup, code):
    offset = setup.pop("starts_at_offset", None)
    if offset is not None:
        setup["starts_at"] = utcnow().replace(microsecond=0) + offset
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), **setup)
    c = await client(ln, "a1", "cli")
    try:
        err = await c.wait_for("error")
        assert err["code"] == code and err["message"]
        assert await c.wait_closed() == p.CLOSE_CODES[code]
        assert 4400 <= p.CLOSE_CODES[code] <= 4499
    finally:
        await c.close()


async def test_bad_tokens_are_refused(ln):
    await ln.setup_appointment("a1")
    from control.domain.models import Role

    expired = ln.node.tokens.mint("client-1", Role.CLIENT, "a1", "x", now=0).token
    for token, code in (("not-a-jwt", "token_invalid"), (expired, "token_expired")):
        c = await SignalingClient(ln, token).connect()
        try:
            assert (await c.wait_for("error"))["code"] == code
            assert await c.wait_closed() == p.CLOSE_CODES[code]
        finally:
            await c.close()


@pytest.mark.parametrize("waiting_room", [False, True])
async def test_a_replayed_token_is_refused_and_the_rightful_participant_stays(ln, waiting_room):
    """Join tokens are single-use: a second join with one gets token_used (4403), evicts nobody
    (no `replaced`), skips no waiting room and changes nothing in the room."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=waiting_room)
    pr = await client(ln, "a1", "prov")
    c = await client(ln, "a1", "cli")
    replay = None
    try:
        await pr.wait_for("joined")
        if waiting_room:
            await c.wait_for("waiting")
            await pr.wait_for("waiting_list")
        else:
            await c.wait_for("joined")
            await pr.wait_for("participant_joined")  # sent once the client is in the media room
        room_before = (await ln.call("GET", "/v1/rooms/a1"))[1]
        seen_by_provider = len(pr.messages)
        replay = await SignalingClient(ln, c.token).connect()  # the same token, from another device
        err = await replay.wait_for("error")
        assert err["code"] == "token_used" and "already used" in err["message"]
        assert await replay.wait_closed() == p.CLOSE_CODES["token_used"] == 4403
        assert (await ln.call("GET", "/v1/rooms/a1"))[1] == room_before
        await c.send({"type": "ping"})
        await c.wait_for("pong")  # the rightful participant's socket is still open
        assert c.close_code is None and "error" not in c.types()
        assert pr.messages[seen_by_provider:] == []  # nobody reconnected, joined, left or waited anew
        audit = (await ln.call("GET", "/v1/audit?appointment_id=a1"))[1]
        assert [e["code"] for e in audit["entries"] if e["subject_id"] == "cli"][-1] == "token_used"
    finally:
        if replay is not None:
            await replay.close()
        await c.close()
        await pr.close()


async def test_bad_input_gets_an_error_and_changes_nothing(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli", "cli2"), waiting_room=True)
    pr = await client(ln, "a1", "prov")
    w = await client(ln, "a1", "cli2")
    c = await client(ln, "a1", "cli")
    try:
        await pr.wait_for("joined")
        await c.wait_for("waiting")
        await w.wait_for("waiting")
        room_before = (await ln.call("GET", "/v1/rooms/a1"))[1]
        cases = [
            ("{not json", "invalid_json"),
            (json.dumps({"type": "teleport"}), "unknown_type"),
            (json.dumps(["join"]), "invalid_message"),
            (json.dumps({"type": "publish_offer", "sdp": "v=0"}), "not_admitted"),  # an offer before admission
            (json.dumps({"type": "admit", "participant_id": "cli2"}), "not_admitted"),  # a waiting client admitting
            (json.dumps({"type": "join", "token": "again"}), "already_joined"),
            (json.dumps({"type": "subscribe_answer", "sdp": 5}), "invalid_field"),
            ("x" * (p.MAX_FRAME_BYTES + 10), "frame_too_large"),
        ]
        for frame, code in cases:
            n = len(c.of_type("error"))
            await c.send(frame)
            err = await c.wait_for("error", count=n + 1)
            assert err["code"] == code, (frame[:40], err)
        # an admitted client trying a provider action
        await ln.call("POST", "/v1/rooms/a1/participants/cli/admit")
        await c.wait_for("joined")
        n = len(c.of_type("error"))
        await c.send({"type": "admit", "participant_id": "cli2"})
        assert (await c.wait_for("error", count=n + 1))["code"] == "forbidden"
        n = len(c.of_type("error"))
        await c.send({"type": "publish_offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"})
        assert (await c.wait_for("error", count=n + 1))["code"].startswith(("sdp_", "no_"))
        room_after = (await ln.call("GET", "/v1/rooms/a1"))[1]
        cli2 = lambda r: [x for x in r["participants"] if x["participant_id"] == "cli2"]  # noqa: E731
        assert cli2(room_after) == cli2(room_before)  # still waiting: nothing reached the room
        # a flood is rate limited, and the connection survives it
        for _ in range(200):
            await c.send({"type": "ping"})
        await c.wait_for("error", count=len(c.of_type("error")) + 1, timeout=5)
        assert any(e["code"] == "rate_limited" for e in c.of_type("error"))
        metrics = (await ln.call("GET", "/metrics", auth=False))[1]
        assert 'telesfu_signaling_errors_total{code="rate_limited"}' in metrics
    finally:
        for x in (c, w, pr):
            await x.close()


async def test_a_first_message_that_is_not_join_closes_with_a_protocol_error(ln):
    await ln.setup_appointment("a1")
    c = await client(ln, "a1", "client-1", join=False)
    try:
        await c.send({"type": "publish_offer", "sdp": "v=0"})
        assert (await c.wait_for("error"))["code"] == "not_joined"
        assert await c.wait_closed() == p.CLOSE_CODES["protocol_error"]
    finally:
        await c.close()


async def test_deny_remove_and_let_back_in(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=True)
    pr = await client(ln, "a1", "prov")
    c = await client(ln, "a1", "cli")
    try:
        await pr.wait_for("joined")
        await c.wait_for("waiting")
        await pr.send({"type": "deny", "participant_id": "cli", "reason": "wrong session"})
        assert (await c.wait_for("denied"))["reason"] == "wrong session"
        assert await c.wait_closed() == p.CLOSE_CODES["participant_denied"]
        await c.close()
        c = await client(ln, "a1", "cli")  # kept out
        assert (await c.wait_for("error"))["code"] == "participant_denied"
        await c.close()
        await pr.send({"type": "admit", "participant_id": "cli"})  # admitted again: clears the denial
        c = await client(ln, "a1", "cli")
        await c.wait_for("joined")
        await pr.send({"type": "remove", "participant_id": "cli"})
        assert (await c.wait_for("error"))["code"] == "removed"
        assert await c.wait_closed() == p.CLOSE_CODES["removed"]
        assert (await pr.wait_for("participant_left"))["reason"] == "removed"
        await c.close()
        c = await client(ln, "a1", "cli")
        assert (await c.wait_for("error"))["code"] == "participant_denied"
    finally:
        await c.close()
        await pr.close()


async def test_waiting_clients_never_learn_of_each_other(ln):
    await ln.setup_appointment("g", provider="prov", clients=("c1", "c2"), waiting_room=True)
    a = await client(ln, "g", "c1")
    b = await client(ln, "g", "c2")
    pr = await client(ln, "g", "prov")
    try:
        await pr.wait_for("joined")
        await asyncio.sleep(0.3)
        # they hear only whether their provider is there, never about each other
        assert set(a.types()) == {"waiting"} and set(b.types()) == {"waiting"}
        assert "c2" not in json.dumps(a.messages) and "c1" not in json.dumps(b.messages)
        assert (await a.wait_for("waiting"))["provider_present"] is False
        assert a.messages[-1]["provider_present"] is True
        lst = await pr.wait_for("waiting_list")
        assert sorted(x["participant_id"] for x in lst["participants"]) == ["c1", "c2"]
        await pr.send({"type": "admit_all"})
        await a.wait_for("joined")
        await b.wait_for("joined")
    finally:
        for x in (a, b, pr):
            await x.close()


async def test_reconnect_within_grace_is_not_sent_back_to_the_waiting_room(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), waiting_room=True)
    pr = await client(ln, "a1", "prov")
    c = await client(ln, "a1", "cli", AiortcParticipant("cli", "green"))
    try:
        await pr.wait_for("joined")
        await c.wait_for("waiting")
        await pr.send({"type": "admit", "participant_id": "cli"})
        await c.wait_for("joined")
        await c.publish()
        await c.ws.close()  # the socket drops
        assert (await pr.wait_for("participant_reconnecting"))["participant_id"] == "cli"
        c2 = await client(ln, "a1", "cli", AiortcParticipant("cli", "green"))  # a fresh token from the portal
        j = await c2.wait_for("joined")
        assert "waiting" not in c2.types()
        assert [x["participant_id"] for x in j["participants"]] == ["prov"]
        await c2.publish()
        pr.peer = None
        await wait_until(lambda: any(m["type"] == "participant_joined" for m in pr.messages), 5, "rejoined")
        await c2.close()
    finally:
        await c.close()
        await pr.close()


async def test_after_the_grace_period_a_dropped_participant_is_gone():
    async with media_node(media_config()) as ln:
        pr, c = await joined_pair(ln)
        try:
            hub = ln.hub
            hub.grace_seconds = 0.5
            await c.ws.close()
            await pr.wait_for("participant_reconnecting")
            left = await pr.wait_for("participant_left", timeout=5)
            assert left == {"type": "participant_left", "participant_id": "cli", "reason": "disconnected"}
            room = (await ln.call("GET", "/v1/rooms/a1"))[1]
            assert [x["participant_id"] for x in room["participants"]] == ["prov"]
        finally:
            await c.close()
            await pr.close()


async def test_ending_the_session_closes_every_socket(ln):
    pr, c = await joined_pair(ln)
    try:
        s, _ = await ln.call("DELETE", "/v1/rooms/a1")
        assert s == 200
        for x in (pr, c):
            assert (await x.wait_for("room_closed"))["reason"] == "ended"
            assert await x.wait_closed() == p.CLOSE_LEFT
    finally:
        await c.close()
        await pr.close()


async def test_a_worker_restart_sends_participants_to_reconnect(ln):
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    c = await client(ln, "a1", "cli")
    try:
        await c.wait_for("joined")
        await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 5, "in the media room")
        ln.node.media.worker_for("a1").kill()
        assert (await c.wait_for("error"))["code"] == "media_restarted"
        assert await c.wait_closed() == p.CLOSE_SERVICE_RESTART
        await wait_until(lambda: all(w.proc.returncode is None for w in ln.node.media.workers), 20, "restart")
        c2 = await client(ln, "a1", "cli")
        await c2.wait_for("joined")  # back in, on the restarted worker
        await c2.close()
    finally:
        await c.close()


async def test_the_session_ends_when_the_join_window_closes(ln):
    now = utcnow()
    # ended 30 minutes ago less 2 seconds: with join_late_minutes = 30 the window closes in 2 s
    start = now - timedelta(minutes=40)
    await ln.setup_appointment("a1", provider="prov", clients=("cli",), starts_at=start,
                               minutes=10)
    body = (await ln.call("GET", "/v1/appointments/a1"))[1]
    body = {k: body[k] for k in ("provider_id", "client_ids", "telehealth", "starts_at")}
    body["ends_at"] = (now - timedelta(minutes=30) + timedelta(seconds=2)).isoformat()
    assert (await ln.call("PUT", "/v1/appointments/a1", body))[0] == 200
    c = await client(ln, "a1", "cli")
    try:
        await c.wait_for("joined")
        closed = await c.wait_for("room_closed", timeout=8)
        assert closed["reason"] == "window_closed"
        assert await c.wait_closed() == p.CLOSE_LEFT
        audit = (await ln.call("GET", "/v1/audit?appointment_id=a1"))[1]["entries"]
        assert any(e["action"] == "end" and e["code"] == "window_closed" for e in audit)
    finally:
        await c.close()


async def test_a_flooding_client_is_closed_and_leaves_the_room(ln):
    pr, c = await joined_pair(ln)
    try:
        for _ in range(400):
            await c.send({"type": "ping"})
        assert await c.wait_closed() == p.CLOSE_CODES["rate_limited"]
        left = await pr.wait_for("participant_left")
        assert left["participant_id"] == "cli" and left["reason"] == "closed"
        assert not pr.of_type("participant_reconnecting")  # no grace for a connection closed for cause
    finally:
        await c.close()
        await pr.close()


async def test_a_room_everyone_left_frees_its_media_room(ln):
    pr, c = await joined_pair(ln)
    try:
        assert ln.node.media.worker_for("a1") is not None
        await c.send({"type": "leave"})
        await pr.send({"type": "leave"})
        await c.wait_closed()
        await pr.wait_closed()
        await wait_until(lambda: ln.node.media.worker_for("a1") is None, 5, "media room released")
        c2 = await client(ln, "a1", "cli")  # the next session opens it again
        await c2.wait_for("joined")
        await wait_until(lambda: ln.node.media.worker_for("a1") is not None, 5, "media room again")
        await c2.close()
    finally:
        await c.close()
        await pr.close()


async def test_the_provider_ends_the_session_for_everyone(ln):
    pr, c = await joined_pair(ln)
    try:
        await c.send({"type": "end_session"})  # a client may not
        assert (await c.wait_for("error"))["code"] == "forbidden"
        await pr.send({"type": "end_session"})
        for x in (pr, c):
            assert (await x.wait_for("room_closed"))["reason"] == "ended_by_provider"
            assert await x.wait_closed() == p.CLOSE_LEFT
        c2 = await client(ln, "a1", "cli")
        assert (await c2.wait_for("error"))["code"] == "room_closed"
        await c2.close()
    finally:
        await c.close()
        await pr.close()


def _about(m: dict, pid: str) -> bool:
    return m.get("participant_id") == pid or (m.get("participant") or {}).get("participant_id") == pid


@pytest.mark.parametrize("order", [("admit", "remove"), ("remove", "admit")])
async def test_admit_and_remove_back_to_back_leave_no_ghost(ln, order):
    for i in range(6):  # a race: several rounds, each its own appointment
        apt = f"race{i}"
        await ln.setup_appointment(apt, provider="prov", clients=("cli",), waiting_room=True)
        pr = await client(ln, apt, "prov")
        c = await client(ln, apt, "cli")
        try:
            await pr.wait_for("joined")
            await c.wait_for("waiting")
            await pr.wait_for("participant_waiting")
            for action in order:  # back to back, no wait in between
                await pr.send({"type": action, "participant_id": "cli"})
            assert (await c.wait_for("error"))["code"] == "removed"
            assert await c.wait_closed() == p.CLOSE_CODES["removed"]
            await wait_until(lambda: not ln.hub._tasks, 10, "effects settled")
            await pr.send({"type": "ping"})
            await pr.wait_for("pong", count=1)
            room = (await ln.call("GET", f"/v1/rooms/{apt}"))[1]
            assert [m["participant_id"] for m in room["participants"]] == ["prov"], room
            assert not ln.node.media.has_participant(apt, "cli")
            seen = [m["type"] for m in pr.messages
                    if m["type"] in ("participant_joined", "participant_left") and _about(m, "cli")]
            assert not seen or seen[-1] == "participant_left", seen
            assert not (c.of_type("joined")), "a removed client was let into the room"
            await pr.send({"type": "leave"})
            await pr.wait_closed()
            await wait_until(lambda a=apt: ln.node.media.worker_for(a) is None, 5, "media room released")
        finally:
            await c.close()
            await pr.close()


async def _put_times(ln, apt: str, starts_at, ends_at, status: str = "scheduled") -> None:
    body = (await ln.call("GET", f"/v1/appointments/{apt}"))[1]
    body = {k: body[k] for k in ("provider_id", "client_ids", "telehealth")}
    body.update(starts_at=starts_at.isoformat(), ends_at=ends_at.isoformat(), status=status)
    s, out = await ln.call("PUT", f"/v1/appointments/{apt}", body)
    assert s == 200, out


def _window_in(ln, apt: str) -> float:
    """Seconds until the hub ends the room at its join window's close."""
    return ln.hub._window[apt].when() - asyncio.get_running_loop().time()


async def test_an_appointment_changed_during_its_session_moves_or_ends_the_session():
    # join_late_minutes = 0: the join window closes at ends_at, so times a few seconds from now work
    async with media_node(media_config(rooms={"join_late_minutes": 0})) as ln:
        pr, c = await joined_pair(ln)
        try:
            await wait_until(lambda: "a1" in ln.hub._window, 5, "window armed")
            assert _window_in(ln, "a1") > 2000  # 50 minutes
            now = utcnow().replace(microsecond=0)
            start = now - timedelta(minutes=40)
            await _put_times(ln, "a1", start, now + timedelta(seconds=3))  # now ends in 3 s
            assert _window_in(ln, "a1") < 4
            # extended by an hour: the session's end moves with it
            await _put_times(ln, "a1", start, now + timedelta(hours=1))
            assert _window_in(ln, "a1") > 3000
            await wait_until(lambda: utcnow() > now + timedelta(seconds=4), 6, "past the old end")
            assert not c.of_type("room_closed") and not pr.of_type("room_closed")
            await c.ws.close()  # a drop and a rejoin after the old end are fine
            c = await client(ln, "a1", "cli")
            await c.wait_for("joined")
            # shortened to end in a second: the session ends then, for everyone
            await _put_times(ln, "a1", start, utcnow().replace(microsecond=0) + timedelta(seconds=2))
            for x in (pr, c):
                assert (await x.wait_for("room_closed", timeout=6))["reason"] == "window_closed"
        finally:
            await c.close()
            await pr.close()


@pytest.mark.parametrize("change,reason", [("cancel", "cancelled"), ("reschedule", "rescheduled"),
                                           ("end_earlier", "window_closed")])
async def test_an_appointment_cancelled_or_moved_away_during_its_session_ends_it_now(change, reason):
    async with media_node(media_config(rooms={"join_late_minutes": 0})) as ln:
        pr, c = await joined_pair(ln)
        try:
            start = utcnow().replace(microsecond=0) - timedelta(minutes=5)
            if change == "cancel":
                await _put_times(ln, "a1", start, start + timedelta(minutes=50), status="cancelled")
            elif change == "reschedule":  # to tomorrow
                await _put_times(ln, "a1", start + timedelta(days=1), start + timedelta(days=1, minutes=50))
            else:  # its end moved to a minute ago
                await _put_times(ln, "a1", start - timedelta(minutes=10), start + timedelta(minutes=4))
            for x in (pr, c):
                assert (await x.wait_for("room_closed", timeout=5))["reason"] == reason
                assert await x.wait_closed() == p.CLOSE_LEFT
            assert "a1" not in ln.hub._window
        finally:
            await c.close()
            await pr.close()


async def test_reconnect_churn_is_rate_limited_per_participant_and_bounds_the_webhooks():
    from tests.integration.control.test_webhooks import SECRET, receiver

    async with receiver() as rec:
        cfg = media_config(webhooks={"url": rec.url, "secret": SECRET}, rooms={"join_burst": 5})
        async with media_node(cfg) as ln:
            ln.node.rooms.monotonic = lambda: 1000.0  # the limiter's clock stands still: no refill
            pr, c = await joined_pair(ln)  # the client's first join spends one of its five
            limited, rejoined = None, 0
            try:
                await c.send({"type": "leave"})
                await c.wait_closed()
                for _ in range(20):  # join, leave, join again, as fast as it can
                    c = x = await client(ln, "a1", "cli")
                    await wait_until(lambda x=x: x.of_type("joined") or x.of_type("error"), 5, "an answer")
                    if c.of_type("error"):
                        limited = c
                        break
                    rejoined += 1
                    await c.send({"type": "leave"})
                    await c.wait_closed()
                    await c.close()
                assert limited is not None, "the churn was never limited"
                assert rejoined == 4  # four more joins, then refused
                err = limited.of_type("error")[0]
                assert err["code"] == "rate_limited" and err["message"]
                assert await limited.wait_closed() == p.CLOSE_CODES["rate_limited"] == 4429
                assert not limited.of_type("joined")
                await rec.wait_for(lambda: len([e for e in rec.of_type("participant.left")
                                                if e["data"]["participant_id"] == "cli"]) >= 5, 10)
                joins = [e for e in rec.of_type("participant.joined") if e["data"]["participant_id"] == "cli"]
                assert len(joins) == 5  # the burst
                audit = (await ln.call("GET", "/v1/audit?appointment_id=a1"))[1]["entries"]
                assert [e["count"] for e in audit if e["code"] == "rate_limited"] == [1]
            finally:
                await c.close()
                await pr.close()
