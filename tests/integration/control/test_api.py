"""The control API over real HTTP on loopback: contracts, validation, bad input changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from control.domain.models import format_time, utcnow
from tests.control_helpers import API_KEY, live_node, make_config


@pytest.fixture
async def live():
    async with live_node() as ln:
        yield ln


async def snapshot(ln):
    """Everything a refused request must leave untouched."""
    s = ln.node.store.inner
    return json.dumps({
        "providers": {k: v.to_json() for k, v in s._providers.items()},
        "clients": {k: v.to_json() for k, v in s._clients.items()},
        "appointments": {k: v.to_json() for k, v in s._appointments.items()},
        "rooms": {k: v.to_json() for k, v in s._rooms.items()},
        "webhooks": len(s._webhooks), "reminders": s._reminders,
    }, sort_keys=True, default=str)


async def test_auth_required_and_constant_shape_errors(live):
    for headers in ({}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": f"Basic {API_KEY}"},
                    {"Authorization": "Bearer "}):
        status, body = await live.call("GET", "/v1/rooms", auth=False, headers=headers)
        assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = await live.call("GET", "/v1/rooms")
    assert status == 200 and body == {"rooms": []}
    for path in ("/healthz", "/readyz", "/v1/openapi.json"):
        status, _ = await live.call("GET", path, auth=False)
        assert status == 200, path


async def test_put_is_idempotent_and_tells_created_from_replaced(live):
    body = {"name": "Dr P", "teletherapy_enabled": True, "waiting_room_enabled": True}
    s1, b1 = await live.call("PUT", "/v1/providers/p1", body)
    s2, b2 = await live.call("PUT", "/v1/providers/p1", body)
    assert (s1, s2) == (201, 200) and b1 == b2 == {"id": "p1", **body}
    s, b = await live.call("GET", "/v1/providers/p1")
    assert s == 200 and b == b1


async def test_appointment_lifecycle_and_switch_to_telehealth_before_start(live):
    start = utcnow().replace(microsecond=0) + timedelta(hours=2)
    apt = await live.setup_appointment("a1", telehealth=False, starts_at=start)
    assert apt["telehealth"] is False
    s, got = await live.call("GET", "/v1/appointments/a1")
    assert s == 200 and got == apt
    s, got = await live.call("PUT", "/v1/appointments/a1", {**{k: apt[k] for k in (
        "provider_id", "client_ids", "starts_at", "ends_at")}, "telehealth": True})
    assert s == 200 and got["telehealth"] is True
    s, _ = await live.call("PUT", "/v1/appointments/a1", {**{k: apt[k] for k in (
        "provider_id", "client_ids", "starts_at", "ends_at")}, "telehealth": False})
    assert s == 200  # and back


async def test_switch_after_start_is_refused(live):
    apt = await live.setup_appointment("a1", telehealth=True, starts_at=utcnow() - timedelta(minutes=5))
    before = await snapshot(live)
    s, b = await live.call("PUT", "/v1/appointments/a1", {**{k: apt[k] for k in (
        "provider_id", "client_ids", "starts_at", "ends_at")}, "telehealth": False})
    assert s == 409 and b["error"]["code"] == "appointment_started"
    assert await snapshot(live) == before


def _apt(**over):
    start = utcnow().replace(microsecond=0)
    body = {"provider_id": "p1", "client_ids": ["c1"], "telehealth": True, "starts_at": format_time(start),
            "ends_at": format_time(start + timedelta(minutes=50))}
    body.update(over)
    return {k: v for k, v in body.items() if v is not ...}


BAD_APPOINTMENTS = [
    ("missing provider_id", _apt(provider_id=...), 400, "missing_field"),
    ("unknown field", _apt(colour="red"), 400, "unknown_field"),
    ("naive time", _apt(starts_at="2026-01-01T10:00:00"), 400, "invalid_field"),
    ("not a time", _apt(ends_at="tomorrow"), 400, "invalid_field"),
    ("date only", _apt(starts_at="2026-01-01"), 400, "invalid_field"),
    ("ends before starts", _apt(ends_at="2000-01-01T00:00:00Z"), 422, "invalid_time_range"),
    ("bad status", _apt(status="done"), 400, "invalid_field"),
    ("telehealth not bool", _apt(telehealth="yes"), 400, "invalid_field"),
    ("empty roster", _apt(client_ids=[]), 400, "invalid_field"),
    ("duplicate client", _apt(client_ids=["c1", "c1"]), 400, "invalid_field"),
    ("provider as client", _apt(client_ids=["p1"]), 422, "invalid_roster"),
    ("bad max", _apt(max_participants=1), 400, "invalid_field"),
    ("roster too large", _apt(client_ids=["c1", "c2", "c3"], max_participants=3), 422, "roster_too_large"),
    ("unknown provider", _apt(provider_id="nobody"), 422, "unknown_provider"),
    ("unknown client", _apt(client_ids=["c1", "ghost"]), 422, "unknown_client"),
]


@pytest.mark.parametrize("body,status,code", [c[1:] for c in BAD_APPOINTMENTS], ids=[c[0] for c in BAD_APPOINTMENTS])
async def test_bad_appointments_refused_and_change_nothing(live, body, status, code):
    await live.setup_appointment("a1", provider="p1", clients=("c1", "c2", "c3"))
    before = await snapshot(live)
    s, b = await live.call("PUT", "/v1/appointments/a2", body)
    assert (s, b["error"]["code"]) == (status, code), b
    assert b["error"]["message"]
    s, b = await live.call("PUT", "/v1/appointments/a1", body)  # nor an existing one
    assert s == status
    assert await snapshot(live) == before


@pytest.mark.parametrize("raw,code", [(b"{", "invalid_json"), (b"", "invalid_json"), (b"[1,2]", "invalid_body"),
                                      (b"\xff\xfe", "invalid_json"), (b'{"name": ""}', "invalid_field"),
                                      (b'{"name": 5}', "invalid_field"), (b"null", "invalid_body"),
                                      (b'{"name": ' + b"1" * 5000 + b"}", "invalid_json"),  # found by tests/fuzz
                                      (b"[" * 30_000 + b"]" * 30_000, "invalid_json")])
async def test_malformed_bodies(live, raw, code):
    before = await snapshot(live)
    s, b = await live.call("PUT", "/v1/providers/p1", data=raw, headers={"Content-Type": "application/json"})
    assert s == 400 and b["error"]["code"] == code
    assert await snapshot(live) == before


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c",
                                  "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\x07", "\u2028"])
@pytest.mark.parametrize("kind", ["providers", "clients"])
async def test_names_with_bidi_zero_width_or_control_characters_refused(live, kind, char):
    """'Dr. Smith' + U+202E would render reversed in the provider's waiting list: 422 invalid_name."""
    before = await snapshot(live)
    s, b = await live.call("PUT", f"/v1/{kind}/x1", {"name": f"Dr. Smith{char}htimS"})
    assert (s, b["error"]["code"]) == (422, "invalid_name"), b
    assert await snapshot(live) == before
    s, b = await live.call("PUT", f"/v1/{kind}/x1", {"name": "Zoë Ñandú-O'Brien 李"})
    assert s == 201, b


@pytest.mark.parametrize("name", ["\u3164", "\u115f\u1160", "\uffa0", "\u2800\u2800", "Dr. P\u034fx", "Dr. P\u3164x",
                                  "Dr. P\u17b4x", "Dr. P\u180bx", "\x1d", "\x1c\x1f"])
@pytest.mark.parametrize("kind", ["providers", "clients"])
async def test_names_with_invisible_fillers_refused(live, kind, name):
    """Hangul and braille fillers and other invisible letters are not Cf but render as nothing:
    a name of U+3164 alone passed the blank check ("   " is refused) and showed as an empty name."""
    before = await snapshot(live)
    s, b = await live.call("PUT", f"/v1/{kind}/x1", {"name": name})
    assert (s, b["error"]["code"]) == (422, "invalid_name"), b
    assert await snapshot(live) == before
    s, b = await live.call("PUT", f"/v1/{kind}/x1", {"name": "\ud55c\uad6d \u2801 Zo\u00eb"})  # Hangul, braille
    assert s == 201, b


async def test_body_size_limit(live):
    s, b = await live.call("PUT", "/v1/providers/p1", data=b'{"name": "' + b"x" * 70_000 + b'"}',
                           headers={"Content-Type": "application/json"})
    assert s == 413 and b["error"]["code"] == "payload_too_large"
    assert await live.node.store.get_provider("p1") is None


async def test_bad_ids_and_unknown_routes(live):
    s, b = await live.call("PUT", "/v1/providers/has space", {"name": "x"})
    assert s == 400 and b["error"]["code"] == "invalid_id"
    s, b = await live.call("GET", "/v1/nothing-here")
    assert s == 404 and b["error"]["code"] == "not_found"
    async with live.http.delete(live.url + "/v1/providers/p1", headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        assert resp.status == 405 and "PUT" in resp.headers["Allow"]
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_token_mint_and_roster(live):
    await live.setup_appointment("a1")
    s, b = await live.call("POST", "/v1/appointments/a1/tokens", {"participant_id": "client-1"})
    assert s == 201 and b["join_url"].endswith("/join#token=" + b["token"])
    claims = live.node.tokens.verify(b["token"])
    assert (claims.sub, claims.role.value, claims.apt, claims.name) == ("client-1", "client", "a1", "Client client-1")
    s, b = await live.call("POST", "/v1/appointments/a1/tokens", {"participant_id": "stranger"})
    assert s == 404 and b["error"]["code"] == "not_on_roster"
    s, b = await live.call("POST", "/v1/appointments/nope/tokens", {"participant_id": "client-1"})
    assert s == 404 and b["error"]["code"] == "appointment_not_found"


async def test_waiting_room_through_the_api(live):
    await live.setup_appointment("a1", clients=("c1", "c2"), waiting_room=True)
    r = live.node.rooms
    assert (await r.join(await live.token("a1", "c1"))).code.value == "waiting"
    assert (await r.join(await live.token("a1", "prov-1"))).code.value == "admitted"
    assert (await r.join(await live.token("a1", "c2"))).code.value == "waiting"
    s, room = await live.call("GET", "/v1/rooms/a1")
    assert s == 200 and room["waiting_count"] == 2 and room["admitted_count"] == 1
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c1/admit")
    assert s == 200 and b["result"] == "admitted"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c1/admit")
    assert s == 200 and b["result"] == "already_admitted"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c2/deny", {"reason": "wrong session"})
    assert s == 200 and b["result"] == "denied"
    assert (await r.join(await live.token("a1", "c2"))).code.value == "participant_denied"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c2/deny")
    assert s == 409 and b["error"]["code"] == "not_waiting"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c2/admit")  # admitted again: let back in
    assert s == 200 and b["result"] == "cleared"
    assert (await r.join(await live.token("a1", "c2"))).code.value == "admitted"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c1/mute", {"kind": "audio"})
    assert s == 200 and b["result"] == "muted"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/c1/remove")
    assert s == 200 and b["result"] == "removed"
    assert (await r.join(await live.token("a1", "c1"))).code.value == "participant_denied"
    s, b = await live.call("POST", "/v1/rooms/a1/participants/stranger/admit")
    assert s == 404 and b["error"]["code"] == "not_on_roster"
    s, audit = await live.call("GET", "/v1/audit?appointment_id=a1")
    actions = [(e["action"], e["subject_id"], e["code"]) for e in audit["entries"]]
    assert ("admit", "c1", "admitted") in actions and ("deny", "c2", "denied") in actions
    assert ("join", "c2", "participant_denied") in actions and ("remove", "c1", "removed") in actions
    assert all(e["actor_id"] == "api" for e in audit["entries"] if e["action"] in ("admit", "deny", "remove"))
    s, b = await live.call("DELETE", "/v1/rooms/a1")
    assert s == 200 and b["close_reason"] == "ended" and b["participants"] == []
    assert (await r.join(await live.token("a1", "prov-1"))).code.value == "room_closed"
    s, b = await live.call("GET", "/v1/rooms")
    assert b == {"rooms": []}
    s, b = await live.call("DELETE", "/v1/rooms/a1")
    assert s == 404


async def test_admit_all(live):
    await live.setup_appointment("a1", clients=("c1", "c2", "c3"), waiting_room=True)
    for c in ("c1", "c2", "c3"):
        await live.node.rooms.join(await live.token("a1", c))
    s, b = await live.call("POST", "/v1/rooms/a1/admit_all")
    assert s == 200 and sorted(b["admitted"]) == ["c1", "c2", "c3"]
    s, room = await live.call("GET", "/v1/rooms/a1")
    assert room["waiting_count"] == 0 and room["admitted_count"] == 3


async def test_cancelling_an_open_appointment_closes_its_room(live):
    apt = await live.setup_appointment("a1")
    await live.node.rooms.join(await live.token("a1", "prov-1"))
    s, _ = await live.call("PUT", "/v1/appointments/a1", {**{k: apt[k] for k in (
        "provider_id", "client_ids", "starts_at", "ends_at", "telehealth")}, "status": "cancelled"})
    assert s == 200
    room = await live.node.store.get_room("a1")
    assert not room.is_open and room.close_reason == "cancelled"


async def test_audit_parameters(live):
    s, b = await live.call("GET", "/v1/audit")
    assert s == 400 and b["error"]["code"] == "missing_parameter"
    s, b = await live.call("GET", "/v1/audit?appointment_id=a1&limit=0")
    assert s == 400 and b["error"]["code"] == "invalid_parameter"
    s, b = await live.call("GET", "/v1/audit?appointment_id=a1&after=x")
    assert s == 400 and b["error"]["code"] == "invalid_parameter"


async def test_a_practice_exports_the_audit_log_page_by_page(live):
    await live.setup_appointment("a1", provider="prov", clients=("c1", "c2", "c3"))
    for pid in ("prov", "c1", "c2", "c3"):
        await live.node.rooms.join(await live.token("a1", pid))
    for pid in ("c1", "c2", "c3"):
        await live.node.rooms.leave("a1", pid)
    exported, after = [], "0"
    for _ in range(10):  # bounded: 7 entries, 3 a page
        s, b = await live.call("GET", f"/v1/audit?appointment_id=a1&after={after}&limit=3")
        assert s == 200
        exported += b["entries"]
        if b["next_after"] is None:
            break
        after = b["next_after"]
    assert [(e["action"], e["subject_id"]) for e in exported] == [
        ("join", "prov"), ("join", "c1"), ("join", "c2"), ("join", "c3"), ("leave", "c1"), ("leave", "c2"),
        ("leave", "c3")]
    assert all(e["count"] == 1 and e["last_at"] is None for e in exported)
    assert [int(e["id"]) for e in exported] == sorted(int(e["id"]) for e in exported)


async def test_metrics_exposed_without_ids(live):
    await live.setup_appointment("apt-secret-id", provider="prov-secret", clients=("client-secret",))
    await live.node.rooms.join(await live.token("apt-secret-id", "client-secret"))
    await live.node.refresh_gauges()
    s, text = await live.call("GET", "/metrics", auth=False)
    assert s == 200
    assert 'telesfu_admission_decisions_total{code="admitted"} 1.0' in text
    assert 'telesfu_http_requests_total{method="PUT",route="/v1/appointments/{id}",status="201"}' in text
    assert "telesfu_store_operation_seconds_bucket" in text and "telesfu_room_participants 1.0" in text
    assert "secret" not in text and "Client" not in text


async def test_readyz_fails_when_the_store_is_down(redis_url, redis_prefix):
    from control.store.redis import RedisStore

    store = RedisStore.from_url("redis://127.0.0.1:1/0", prefix=redis_prefix)
    async with live_node(make_config(), store=store) as ln:
        s, b = await ln.call("GET", "/readyz", auth=False)
        assert s == 503 and b["error"]["code"] == "not_ready"
        s, b = await ln.call("GET", "/v1/rooms")
        assert s == 503 and b["error"]["code"] == "store_unavailable"


async def test_a_client_taken_off_the_roster_is_removed_from_the_live_room(live):
    apt = await live.setup_appointment("a1", clients=("c1", "c2"))
    await live.node.rooms.join(await live.token("a1", "c2"))
    body = {k: apt[k] for k in ("provider_id", "telehealth", "starts_at", "ends_at")}
    s, _ = await live.call("PUT", "/v1/appointments/a1", {**body, "client_ids": ["c1"]})
    assert s == 200
    room = (await live.call("GET", "/v1/rooms/a1"))[1]
    assert [p["participant_id"] for p in room["participants"]] == []
    audit = (await live.call("GET", "/v1/audit?appointment_id=a1"))[1]["entries"]
    assert ("remove", "c2", "removed") in [(e["action"], e["subject_id"], e["code"]) for e in audit]


async def test_a_new_session_after_everyone_left_starts_with_a_waiting_room_again(live):
    await live.setup_appointment("a1", clients=("c1",), waiting_room=True)
    r = live.node.rooms
    assert (await r.join(await live.token("a1", "c1"))).code.value == "waiting"
    await live.call("POST", "/v1/rooms/a1/participants/c1/admit")
    assert (await r.join(await live.token("a1", "c1"))).code.value == "admitted"  # a reconnect
    await r.leave("a1", "c1")  # everyone left: the session is over
    assert (await r.join(await live.token("a1", "c1"))).code.value == "waiting"


async def test_refused_joins_are_rate_limited_per_source_address(live):
    await live.setup_appointment("a1", provider="prov", clients=("c1",))
    burst = live.node.config.rooms.refused_joins_burst_per_source
    t = [100.0]
    live.node.rooms.monotonic = lambda: t[0]
    for _ in range(burst):  # garbage tokens from one address
        assert (await live.node.rooms.join("not-a-token", source="127.0.0.7")).code.value == "token_invalid"
    good = await live.token("a1", "c1")
    assert (await live.node.rooms.join(good, source="127.0.0.7")).code.value == "rate_limited"
    assert (await live.node.rooms.join(good, source="127.0.0.8")).code.value == "admitted"  # others are not
    t[0] += 2 * burst / live.node.config.rooms.refused_joins_per_second_per_source  # it refills
    assert (await live.node.rooms.join(await live.token("a1", "prov"), source="127.0.0.7")).code.value == "admitted"
