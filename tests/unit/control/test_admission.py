"""Admission, table-driven: every refusal code, DESIGN's order, both edges of the join window."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from control.domain.admission import REFUSALS, Code, JoinClaims, JoinWindow, decide
from control.domain.models import (
    Appointment,
    AppointmentStatus,
    Client,
    Presence,
    Provider,
    Role,
    Room,
    RoomMember,
)

START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
END = START + timedelta(minutes=50)
WINDOW = JoinWindow(timedelta(minutes=30), timedelta(minutes=30))
APT = Appointment("a1", "p1", ("c1", "c2"), True, START, END)
PROVIDER = Provider("p1", "Dr P", teletherapy_enabled=True, waiting_room_enabled=False)
CLIENT = Client("c1", "C One", portal_account_active=True)
CLIENT_CLAIMS = JoinClaims("c1", Role.CLIENT, "a1", "C One", exp=0, iat=0)
PROVIDER_CLAIMS = JoinClaims("p1", Role.PROVIDER, "a1", "Dr P", exp=0, iat=0)


def room(*members: tuple[str, Role, Presence], denied: tuple[str, ...] = (), closed: bool = False,
         cleared: tuple[str, ...] = ()) -> Room:
    r = Room("a1", START, members=tuple(RoomMember(p, role, pr, START) for p, role, pr in members),
             denied=denied, cleared=cleared)
    return replace(r, closed_at=START, close_reason="ended") if closed else r


def run(token=CLIENT_CLAIMS, apt=APT, provider=PROVIDER, client=CLIENT, rm=None, now=START, max_p=16):
    return decide(token, apt, provider, client, rm, now, WINDOW, max_p)


WR_ON = replace(PROVIDER, waiting_room_enabled=True)
FULL_3 = room(("p1", Role.PROVIDER, Presence.ADMITTED), ("c2", Role.CLIENT, Presence.ADMITTED),
              ("x", Role.CLIENT, Presence.WAITING))

CASES = [
    # (id, kwargs, expected code)
    ("token_invalid", dict(token=Code.TOKEN_INVALID), Code.TOKEN_INVALID),
    ("token_expired", dict(token=Code.TOKEN_EXPIRED), Code.TOKEN_EXPIRED),
    ("token_used", dict(token=Code.TOKEN_USED), Code.TOKEN_USED),
    ("appointment_not_found", dict(apt=None), Code.APPOINTMENT_NOT_FOUND),
    ("appointment_of_other_id", dict(token=replace(CLIENT_CLAIMS, apt="other")), Code.APPOINTMENT_NOT_FOUND),
    ("not_telehealth", dict(apt=replace(APT, telehealth=False)), Code.NOT_TELEHEALTH),
    ("cancelled", dict(apt=replace(APT, status=AppointmentStatus.CANCELLED)), Code.APPOINTMENT_CANCELLED),
    ("completed", dict(apt=replace(APT, status=AppointmentStatus.COMPLETED)), Code.APPOINTMENT_COMPLETED),
    ("no_show", dict(apt=replace(APT, status=AppointmentStatus.NO_SHOW)), Code.APPOINTMENT_NO_SHOW),
    ("window_too_early", dict(now=START - timedelta(minutes=30, microseconds=1)), Code.OUTSIDE_JOIN_WINDOW),
    ("window_too_late", dict(now=END + timedelta(minutes=30)), Code.OUTSIDE_JOIN_WINDOW),
    ("not_on_roster", dict(token=replace(CLIENT_CLAIMS, sub="stranger")), Code.NOT_ON_ROSTER),
    ("client_claims_provider_role", dict(token=replace(CLIENT_CLAIMS, role=Role.PROVIDER)), Code.NOT_ON_ROSTER),
    ("provider_claims_client_role", dict(token=replace(PROVIDER_CLAIMS, role=Role.CLIENT), client=None),
     Code.NOT_ON_ROSTER),
    ("teletherapy_off", dict(provider=replace(PROVIDER, teletherapy_enabled=False)), Code.TELEHEALTH_NOT_ENABLED),
    ("provider_record_missing", dict(provider=None), Code.TELEHEALTH_NOT_ENABLED),
    ("portal_inactive", dict(client=replace(CLIENT, portal_account_active=False)), Code.PORTAL_ACCOUNT_REQUIRED),
    ("client_record_missing", dict(client=None), Code.PORTAL_ACCOUNT_REQUIRED),
    ("room_closed", dict(rm=room(closed=True)), Code.ROOM_CLOSED),
    ("room_full", dict(rm=FULL_3, max_p=3), Code.ROOM_FULL),
    ("room_full_by_appointment_cap", dict(rm=FULL_3, apt=replace(APT, max_participants=3)), Code.ROOM_FULL),
    ("denied_stays_out", dict(rm=room(denied=("c1",))), Code.DENIED),
    ("denied_even_with_waiting_room_off", dict(rm=room(denied=("c1",)), provider=PROVIDER), Code.DENIED),
    ("waiting_room_on", dict(provider=WR_ON), Code.WAITING),
    ("waiting_before_provider", dict(provider=WR_ON, rm=room()), Code.WAITING),
    ("waiting_room_off_direct", dict(), Code.ADMITTED),
    ("window_opens_inclusive", dict(now=START - timedelta(minutes=30)), Code.ADMITTED),
    ("window_last_instant", dict(now=END + timedelta(minutes=30) - timedelta(microseconds=1)), Code.ADMITTED),
    ("provider_never_waits", dict(token=PROVIDER_CLAIMS, provider=WR_ON, client=None), Code.ADMITTED),
    ("reconnect_not_sent_back", dict(provider=WR_ON, rm=room(("c1", Role.CLIENT, Presence.ADMITTED))),
     Code.ADMITTED),
    ("cleared_goes_straight_in", dict(provider=WR_ON, rm=room(cleared=("c1",))), Code.ADMITTED),
    ("rejoin_counts_not_twice", dict(rm=room(("p1", Role.PROVIDER, Presence.ADMITTED),
                                             ("c1", Role.CLIENT, Presence.ADMITTED)), max_p=2), Code.ADMITTED),
]


@pytest.mark.parametrize("kwargs,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decision(kwargs, expected):
    assert run(**kwargs).code is expected


def test_every_refusal_code_is_covered_by_the_table():
    covered = {c[2] for c in CASES}
    assert set(REFUSALS) <= covered, set(REFUSALS) - covered


ORDER = [Code.TOKEN_INVALID, Code.APPOINTMENT_NOT_FOUND, Code.NOT_TELEHEALTH, Code.APPOINTMENT_CANCELLED,
         Code.OUTSIDE_JOIN_WINDOW, Code.NOT_ON_ROSTER, Code.TELEHEALTH_NOT_ENABLED, Code.PORTAL_ACCOUNT_REQUIRED,
         Code.ROOM_FULL, Code.WAITING]


def test_order_each_failure_masks_the_later_ones():
    """Break every rule at once, then repair them one by one: the codes come in DESIGN's order."""
    broken = dict(token=Code.TOKEN_INVALID, apt=None, provider=replace(WR_ON, teletherapy_enabled=False),
                  client=replace(CLIENT, portal_account_active=False), rm=FULL_3, max_p=3,
                  now=START - timedelta(hours=2))
    bad_apt = replace(APT, telehealth=False, status=AppointmentStatus.CANCELLED)
    bad_claims = replace(CLIENT_CLAIMS, sub="stranger")
    repairs = [
        ("token", bad_claims), ("apt", bad_apt), ("apt", replace(bad_apt, telehealth=True)), ("apt", APT),
        ("now", START), ("token", CLIENT_CLAIMS), ("provider", WR_ON), ("client", CLIENT), ("max_p", 16),
    ]
    seen = [run(**broken).code]
    for key, value in repairs:
        broken[key] = value
        seen.append(run(**broken).code)
    assert seen == ORDER


def test_refusals_carry_a_message_for_people():
    for code in Code:
        assert run(token=code).message if code in (Code.TOKEN_INVALID, Code.TOKEN_EXPIRED) else True
    assert "cancelled" in run(apt=replace(APT, status=AppointmentStatus.CANCELLED)).message


def test_decision_reports_presence_and_role():
    d = run(provider=WR_ON)
    assert (d.presence, d.role, d.refused) == (Presence.WAITING, Role.CLIENT, False)
    d = run(token=PROVIDER_CLAIMS, client=None)
    assert (d.presence, d.role) == (Presence.ADMITTED, Role.PROVIDER)
    assert run(apt=None).presence is None and run(apt=None).refused


def test_room_transitions_denial_and_clearance():
    r = room(("c1", Role.CLIENT, Presence.WAITING))
    r = r.without_member("c1", deny=True)
    assert r.member("c1") is None and "c1" in r.denied
    r = r.with_clearance("c1")
    assert "c1" not in r.denied and "c1" in r.cleared
    r = r.with_member(RoomMember("c1", Role.CLIENT, Presence.ADMITTED, START))
    r = r.without_member("c1", deny=True)
    assert "c1" in r.denied and "c1" not in r.cleared
    assert Room.from_json(r.to_json()) == r
