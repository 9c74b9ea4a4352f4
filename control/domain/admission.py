"""Admission: who may enter a room, in DESIGN's order, as one pure function.

token (signature, expiry, audience) -> appointment exists -> telehealth -> status scheduled ->
join window -> roster and role -> provider's teletherapy role -> client's portal account ->
room open and not full -> waiting room -> token not used before (jti) -> admitted or waiting.
Every refusal has its own stable code.

The jti step is not pure (it needs the store): `Rooms.join` takes it after this function let
the join in, so only a join that gets in spends its token (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from control.domain.models import (
    Appointment,
    AppointmentStatus,
    Client,
    Presence,
    Provider,
    Role,
    Room,
)


class Code(StrEnum):
    # refusals, in the order they are checked
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    RATE_LIMITED = "rate_limited"  # too many joins by this participant, or refused joins from this source
    APPOINTMENT_NOT_FOUND = "appointment_not_found"
    NOT_TELEHEALTH = "not_telehealth"
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    APPOINTMENT_COMPLETED = "appointment_completed"
    APPOINTMENT_NO_SHOW = "appointment_no_show"
    OUTSIDE_JOIN_WINDOW = "outside_join_window"
    NOT_ON_ROSTER = "not_on_roster"
    TELEHEALTH_NOT_ENABLED = "telehealth_not_enabled"
    PORTAL_ACCOUNT_REQUIRED = "portal_account_required"
    ROOM_CLOSED = "room_closed"
    ROOM_FULL = "room_full"
    DENIED = "participant_denied"
    TOKEN_USED = "token_used"  # single-use: a join this token already let in (checked by Rooms.join)
    # resume{credential} (not an admission step: a resumed participant never left the room)
    RESUME_INVALID = "resume_invalid"
    # outcomes that let the participant in (or keep them waiting)
    WAITING = "waiting"
    ADMITTED = "admitted"


# what `decide` can refuse with (RATE_LIMITED is the rooms service's, before it asks `decide`;
# RESUME_INVALID refuses a resume, not a join)
REFUSALS: tuple[Code, ...] = tuple(c for c in Code if c not in (Code.WAITING, Code.ADMITTED, Code.RATE_LIMITED,
                                                                Code.RESUME_INVALID))

_STATUS_CODES = {
    AppointmentStatus.CANCELLED: Code.APPOINTMENT_CANCELLED,
    AppointmentStatus.COMPLETED: Code.APPOINTMENT_COMPLETED,
    AppointmentStatus.NO_SHOW: Code.APPOINTMENT_NO_SHOW,
}

# What a person reads when refused; the reference web client shows these.
MESSAGES: dict[Code, str] = {
    Code.TOKEN_INVALID: "This join link is not valid. Please open it again from your portal.",
    Code.TOKEN_EXPIRED: "This join link has expired. Please open it again from your portal.",
    Code.RATE_LIMITED: "Too many attempts to join. Please wait a minute and open your join link again.",
    Code.TOKEN_USED: "This join link was already used. Please open it again from your portal.",
    Code.APPOINTMENT_NOT_FOUND: "This appointment could not be found.",
    Code.NOT_TELEHEALTH: "This appointment is not a telehealth appointment.",
    Code.APPOINTMENT_CANCELLED: "This appointment was cancelled.",
    Code.APPOINTMENT_COMPLETED: "This appointment has already been completed.",
    Code.APPOINTMENT_NO_SHOW: "This appointment was marked as missed.",
    Code.OUTSIDE_JOIN_WINDOW: "Telehealth opens 30 minutes before your appointment.",
    Code.NOT_ON_ROSTER: "You are not a participant of this appointment.",
    Code.TELEHEALTH_NOT_ENABLED: "Your provider has not enabled telehealth.",
    Code.PORTAL_ACCOUNT_REQUIRED: "An active client portal account is required to join.",
    Code.ROOM_CLOSED: "This session has ended.",
    Code.ROOM_FULL: "This session is full.",
    Code.DENIED: "Your provider did not admit you to this session.",
    Code.RESUME_INVALID: "This session can no longer be resumed. Please open your join link again from your portal.",
    Code.WAITING: "Please wait, your provider will let you in soon.",
    Code.ADMITTED: "Welcome.",
}


@dataclass(frozen=True, slots=True)
class JoinClaims:
    """The verified claims of a join token."""

    sub: str
    role: Role
    apt: str
    name: str
    exp: int
    iat: int
    nbf: int | None = None
    jti: str | None = None


@dataclass(frozen=True, slots=True)
class JoinWindow:
    early: timedelta
    late: timedelta

    def opens_at(self, apt: Appointment) -> datetime:
        return apt.starts_at - self.early

    def closes_at(self, apt: Appointment) -> datetime:
        return apt.ends_at + self.late

    def contains(self, apt: Appointment, now: datetime) -> bool:
        """Open from `early` before the start (inclusive) to `late` after the end (exclusive)."""
        return self.opens_at(apt) <= now < self.closes_at(apt)


@dataclass(frozen=True, slots=True)
class Decision:
    code: Code
    role: Role | None = None

    @property
    def refused(self) -> bool:
        return self.code not in (Code.WAITING, Code.ADMITTED)

    @property
    def presence(self) -> Presence | None:
        if self.code is Code.ADMITTED:
            return Presence.ADMITTED
        if self.code is Code.WAITING:
            return Presence.WAITING
        return None

    @property
    def message(self) -> str:
        return MESSAGES[self.code]


def decide(
    token: JoinClaims | Code,
    appointment: Appointment | None,
    provider: Provider | None,
    client: Client | None,
    room: Room | None,
    now: datetime,
    window: JoinWindow,
    default_max_participants: int,
) -> Decision:
    """Admission for one join. `token` is the verified claims, or the token refusal code.

    `client` is the joining participant's client record (None for providers or unknown);
    `room` is the room's current state, or None when it has not been opened yet.
    """
    if isinstance(token, Code):
        return Decision(token if token in (Code.TOKEN_INVALID, Code.TOKEN_EXPIRED, Code.TOKEN_USED)
                        else Code.TOKEN_INVALID)
    if appointment is None or appointment.id != token.apt:
        return Decision(Code.APPOINTMENT_NOT_FOUND)
    if not appointment.telehealth:
        return Decision(Code.NOT_TELEHEALTH)
    if appointment.status is not AppointmentStatus.SCHEDULED:
        return Decision(_STATUS_CODES[appointment.status])
    if not window.contains(appointment, now):
        return Decision(Code.OUTSIDE_JOIN_WINDOW)
    role = appointment.role_of(token.sub)
    if role is None or role is not token.role:
        return Decision(Code.NOT_ON_ROSTER)
    if provider is None or provider.id != appointment.provider_id or not provider.teletherapy_enabled:
        return Decision(Code.TELEHEALTH_NOT_ENABLED, role)
    if role is Role.CLIENT and (client is None or client.id != token.sub or not client.portal_account_active):
        return Decision(Code.PORTAL_ACCOUNT_REQUIRED, role)
    member = room.member(token.sub) if room is not None else None
    if room is not None:
        if not room.is_open:
            return Decision(Code.ROOM_CLOSED, role)
        others = sum(1 for m in room.members if m.participant_id != token.sub)
        if others >= appointment.capacity(default_max_participants):
            return Decision(Code.ROOM_FULL, role)
    if role is Role.PROVIDER:
        return Decision(Code.ADMITTED, role)
    # the waiting room step (clients only)
    if room is not None and token.sub in room.denied:
        return Decision(Code.DENIED, role)
    if not provider.waiting_room_enabled:
        return Decision(Code.ADMITTED, role)
    if member is not None and member.presence is Presence.ADMITTED:
        return Decision(Code.ADMITTED, role)  # a reconnect is not sent back to the waiting room
    if room is not None and token.sub in room.cleared:
        return Decision(Code.ADMITTED, role)
    return Decision(Code.WAITING, role)


class Authority(StrEnum):
    """Who acts on a room: the practice backend through the API, or a participant."""

    API = "api"
    PARTICIPANT = "participant"


def may_manage(actor_id: str, actor_role: Role | None, authority: Authority, appointment: Appointment) -> bool:
    """Admit, deny, remove and mute are the appointment's provider's (or the practice's) to do."""
    if authority is Authority.API:
        return True
    return actor_role is Role.PROVIDER and actor_id == appointment.provider_id
