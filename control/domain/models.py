"""The practice-facing domain: providers, clients, appointments, rooms. Pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    PROVIDER = "provider"
    CLIENT = "client"


class AppointmentStatus(StrEnum):
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class Presence(StrEnum):
    """Where a participant stands in a room."""

    WAITING = "waiting"
    ADMITTED = "admitted"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix and second precision (milliseconds when present)."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp; the offset is required. Raises ValueError."""
    if not isinstance(text, str) or len(text) < 20 or text[10] not in "Tt":
        raise ValueError("not an RFC 3339 date-time")
    s = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    t = datetime.fromisoformat(s)
    if t.tzinfo is None:
        raise ValueError("an RFC 3339 date-time needs an offset (Z or +hh:mm)")
    return t.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    name: str
    teletherapy_enabled: bool = False
    waiting_room_enabled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "teletherapy_enabled": self.teletherapy_enabled,
                "waiting_room_enabled": self.waiting_room_enabled}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Provider:
        return cls(d["id"], d["name"], bool(d["teletherapy_enabled"]), bool(d["waiting_room_enabled"]))


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    portal_account_active: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "portal_account_active": self.portal_account_active}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Client:
        return cls(d["id"], d["name"], bool(d["portal_account_active"]))


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    provider_id: str
    client_ids: tuple[str, ...]
    telehealth: bool
    starts_at: datetime
    ends_at: datetime
    status: AppointmentStatus = AppointmentStatus.SCHEDULED
    max_participants: int | None = None

    @property
    def is_group(self) -> bool:
        return len(self.client_ids) > 1

    def role_of(self, participant_id: str) -> Role | None:
        if participant_id == self.provider_id:
            return Role.PROVIDER
        if participant_id in self.client_ids:
            return Role.CLIENT
        return None

    def capacity(self, default_max: int) -> int:
        return self.max_participants if self.max_participants is not None else default_max

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "provider_id": self.provider_id, "client_ids": list(self.client_ids),
                "telehealth": self.telehealth, "starts_at": format_time(self.starts_at),
                "ends_at": format_time(self.ends_at), "status": self.status.value,
                "max_participants": self.max_participants}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Appointment:
        return cls(d["id"], d["provider_id"], tuple(d["client_ids"]), bool(d["telehealth"]),
                   parse_time(d["starts_at"]), parse_time(d["ends_at"]), AppointmentStatus(d["status"]),
                   d.get("max_participants"))


@dataclass(frozen=True, slots=True)
class RoomMember:
    participant_id: str
    role: Role
    presence: Presence
    since: datetime  # when they started waiting, or when they were admitted
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"participant_id": self.participant_id, "role": self.role.value,
                "presence": self.presence.value, "since": format_time(self.since), "name": self.name}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoomMember:
        return cls(d["participant_id"], Role(d["role"]), Presence(d["presence"]), parse_time(d["since"]),
                   d.get("name", ""))


@dataclass(frozen=True, slots=True)
class Room:
    """The control plane's view of one appointment's session."""

    appointment_id: str
    opened_at: datetime
    node_id: str = ""
    members: tuple[RoomMember, ...] = ()
    denied: tuple[str, ...] = ()  # kept out until admitted again
    cleared: tuple[str, ...] = ()  # admitted once this session: a rejoin skips the waiting room
    closed_at: datetime | None = None
    close_reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    def member(self, participant_id: str) -> RoomMember | None:
        for m in self.members:
            if m.participant_id == participant_id:
                return m
        return None

    @property
    def waiting(self) -> tuple[RoomMember, ...]:
        return tuple(m for m in self.members if m.presence is Presence.WAITING)

    @property
    def admitted(self) -> tuple[RoomMember, ...]:
        return tuple(m for m in self.members if m.presence is Presence.ADMITTED)

    def provider_present(self) -> bool:
        return any(m.role is Role.PROVIDER and m.presence is Presence.ADMITTED for m in self.members)

    def with_member(self, member: RoomMember) -> Room:
        """Put a member in (replacing an earlier entry); admitting clears a denial."""
        pid = member.participant_id
        others = tuple(m for m in self.members if m.participant_id != pid)
        if member.presence is Presence.ADMITTED:
            return replace(self, members=(*others, member), denied=_without(self.denied, pid),
                           cleared=_with(self.cleared, pid))
        return replace(self, members=(*others, member))

    def without_member(self, participant_id: str, *, deny: bool) -> Room:
        """Take a member out; with deny they are kept out until admitted again."""
        members = tuple(m for m in self.members if m.participant_id != participant_id)
        if deny:
            return replace(self, members=members, denied=_with(self.denied, participant_id),
                           cleared=_without(self.cleared, participant_id))
        return replace(self, members=members)

    def with_clearance(self, participant_id: str) -> Room:
        """Admit someone who is not present: lift a denial so their next join goes straight in."""
        return replace(self, denied=_without(self.denied, participant_id),
                       cleared=_with(self.cleared, participant_id))

    def to_json(self) -> dict[str, Any]:
        return {"appointment_id": self.appointment_id, "opened_at": format_time(self.opened_at),
                "node_id": self.node_id, "members": [m.to_json() for m in self.members],
                "denied": list(self.denied), "cleared": list(self.cleared),
                "closed_at": format_time(self.closed_at) if self.closed_at else None,
                "close_reason": self.close_reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Room:
        return cls(d["appointment_id"], parse_time(d["opened_at"]), d.get("node_id", ""),
                   tuple(RoomMember.from_json(m) for m in d.get("members", [])), tuple(d.get("denied", [])),
                   tuple(d.get("cleared", [])),
                   parse_time(d["closed_at"]) if d.get("closed_at") else None, d.get("close_reason", ""))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    appointment_id: str
    action: str  # "join", "admit", "deny", "remove", "mute", "end"
    actor_id: str  # participant id, or "api" for the practice backend
    subject_id: str
    code: str  # the decision code ("admitted", "waiting", "room_full", ...)
    id: str = field(default="")
    count: int = 1  # a refusal repeated within the aggregation window: how many times
    last_at: datetime | None = None  # and when the last repeat was (None: no repeat)

    @property
    def latest(self) -> datetime:
        return self.last_at or self.at

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": format_time(self.at), "appointment_id": self.appointment_id,
                "action": self.action, "actor_id": self.actor_id, "subject_id": self.subject_id,
                "code": self.code, "count": self.count,
                "last_at": format_time(self.last_at) if self.last_at else None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AuditEntry:
        return cls(parse_time(d["at"]), d["appointment_id"], d["action"], d["actor_id"], d["subject_id"],
                   d["code"], d.get("id", ""), int(d.get("count", 1)),
                   parse_time(d["last_at"]) if d.get("last_at") else None)


def _with(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return items if item in items else (*items, item)


def _without(items: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(i for i in items if i != item) if item in items else items
