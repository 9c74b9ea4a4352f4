"""Request bodies to domain objects. Every failure names the field and says why."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from control import jsonparse
from control.domain.models import Appointment, AppointmentStatus, Client, Provider, parse_time
from control.domain.text import unsafe_character

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
ID_PATTERN = ID_RE.pattern
MAX_NAME = 200
MAX_CLIENTS = 99


class RequestError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def parse_json_body(raw: bytes, *, optional: bool = False) -> Any:
    """A request body's bytes to JSON within control/jsonparse's bounds (depth 32, numbers of
    at most 100 characters, no NaN); None for an empty optional body. Raises RequestError."""
    if not raw.strip():
        if optional:
            return None
        raise RequestError("invalid_json", "a JSON body is required")
    try:
        return jsonparse.parse(raw)
    except jsonparse.JsonInputError as e:
        raise RequestError("invalid_json", f"the body is not acceptable JSON: {e.message}") from None


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise RequestError("invalid_id", f"{what} must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return value


def _obj(body: Any, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError("unknown_field", f"unknown field {unknown[0]!r}")
    missing = sorted(required - set(body))
    if missing:
        raise RequestError("missing_field", f"field {missing[0]!r} is required")
    return body


def _str(body: dict[str, Any], key: str, max_len: int = MAX_NAME) -> str:
    v = body[key]
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
        raise RequestError("invalid_field", f"{key} must be a non-empty string of at most {max_len} characters")
    return v.strip()


def _name(body: dict[str, Any], key: str) -> str:
    """A display name: _str, and no bidi, zero-width or other control characters (422).
    Checked before stripping: Python strips some control characters (U+001C-U+001F) as
    white space, so a name of only those would read as blank (400) though it is no blank."""
    raw = body[key]
    v = _str(body, key) if not isinstance(raw, str) or unsafe_character(raw) is None else raw
    bad = unsafe_character(v)
    if bad is not None:
        raise RequestError("invalid_name", f"{key} may not contain control, bidi, zero-width or invisible characters "
                                           f"(found {bad})", 422)
    return v


def _bool(body: dict[str, Any], key: str, default: bool | None = None) -> bool:
    if key not in body and default is not None:
        return default
    v = body[key]
    if not isinstance(v, bool):
        raise RequestError("invalid_field", f"{key} must be true or false")
    return v


# Times outside these years are refused: the join window and reminders add and subtract
# minutes to them, which overflows datetime near years 1 and 9999.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)


def _time(body: dict[str, Any], key: str) -> datetime:
    v = body[key]
    out_of_range = RequestError("invalid_time_range", f"{key} must be between the years 1970 and 8999", 422)
    try:
        t = parse_time(v)
    except OverflowError:  # a valid date-time whose offset moves it past year 1 or 9999
        raise out_of_range from None
    except (ValueError, TypeError):
        raise RequestError("invalid_field", f"{key} must be an RFC 3339 date-time with an offset, "
                                            f"e.g. 2026-01-02T15:04:05Z") from None
    if not MIN_TIME <= t < MAX_TIME:
        raise out_of_range
    return t


def provider_from_body(provider_id: str, body: Any) -> Provider:
    b = _obj(body, {"name", "teletherapy_enabled", "waiting_room_enabled"}, {"name"})
    return Provider(provider_id, _name(b, "name"), _bool(b, "teletherapy_enabled", False),
                    _bool(b, "waiting_room_enabled", False))


def client_from_body(client_id: str, body: Any) -> Client:
    b = _obj(body, {"name", "portal_account_active"}, {"name"})
    return Client(client_id, _name(b, "name"), _bool(b, "portal_account_active", False))


def appointment_from_body(appointment_id: str, body: Any, default_max: int) -> Appointment:
    b = _obj(body, {"provider_id", "client_ids", "telehealth", "starts_at", "ends_at", "status",
                    "max_participants"}, {"provider_id", "client_ids", "telehealth", "starts_at", "ends_at"})
    provider_id = b["provider_id"]
    if not isinstance(provider_id, str) or not ID_RE.fullmatch(provider_id):
        raise RequestError("invalid_field", "provider_id must be a valid id")
    client_ids = b["client_ids"]
    if not isinstance(client_ids, list) or not client_ids or len(client_ids) > MAX_CLIENTS:
        raise RequestError("invalid_field", f"client_ids must be a list of 1 to {MAX_CLIENTS} client ids")
    for c in client_ids:
        if not isinstance(c, str) or not ID_RE.fullmatch(c):
            raise RequestError("invalid_field", "client_ids must hold valid ids")
    if len(set(client_ids)) != len(client_ids):
        raise RequestError("invalid_field", "client_ids has a duplicate")
    if provider_id in client_ids:
        raise RequestError("invalid_roster", "the provider cannot also be a client of the appointment", 422)
    starts_at, ends_at = _time(b, "starts_at"), _time(b, "ends_at")
    if ends_at <= starts_at:
        raise RequestError("invalid_time_range", "ends_at must be after starts_at", 422)
    if (ends_at - starts_at).total_seconds() > 24 * 3600:
        raise RequestError("invalid_time_range", "an appointment may last at most 24 hours", 422)
    status = b.get("status", "scheduled")
    try:
        status_v = AppointmentStatus(status)
    except (ValueError, TypeError):
        raise RequestError("invalid_field", "status must be one of scheduled, cancelled, completed, no_show") from None
    max_p = b.get("max_participants")
    if max_p is not None and (not isinstance(max_p, int) or isinstance(max_p, bool) or not 2 <= max_p <= 100):
        raise RequestError("invalid_field", "max_participants must be an integer from 2 to 100")
    capacity = max_p if max_p is not None else default_max
    if len(client_ids) + 1 > capacity:
        raise RequestError("roster_too_large", f"the roster ({len(client_ids) + 1} people) exceeds "
                                               f"max_participants ({capacity})", 422)
    return Appointment(appointment_id, provider_id, tuple(client_ids), _bool(b, "telehealth"), starts_at, ends_at,
                       status_v, max_p)


def token_request(body: Any) -> str:
    b = _obj(body, {"participant_id"}, {"participant_id"})
    return check_id(b["participant_id"], "participant_id")


def action_body(body: Any, allowed: set[str]) -> dict[str, Any]:
    if body is None:
        return {}
    b = _obj(body, allowed, set())
    if "reason" in b and (not isinstance(b["reason"], str) or len(b["reason"]) > 200):
        raise RequestError("invalid_field", "reason must be a string of at most 200 characters")
    if "kind" in b and b["kind"] not in ("audio", "video", ""):
        raise RequestError("invalid_field", "kind must be audio or video")
    if "muted" in b and not isinstance(b["muted"], bool):
        raise RequestError("invalid_field", "muted must be true or false")
    return b
