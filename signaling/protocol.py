"""The signaling protocol on `GET /v1/rtc`: JSON text frames with a `type` field.

Client -> server messages are parsed into typed objects here, with every field checked;
anything else is a `ProtocolError` with a stable code (a `FrameError` when the frame itself
is malformed: not JSON, too large, too deep, a number too long, a field of the wrong type). Server -> client messages are built
by the small functions at the bottom, so their shapes live in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from control import jsonparse
from control.domain.admission import REFUSALS, Code

# The largest legitimate frame carries an SDP: a publish offer the SFU refuses over 64 KiB
# (sfu/sdp/publish.py MAX_PUBLISH_SDP_SIZE; a browser's is 5-20 KB), or a subscriber's answer,
# refused over 8 KiB + 4 KiB per offered m-section (sfu/sdp/subscribe.py; Chromium's take ~700
# characters a section, so ~30 KB for a full room of 16). JSON text adds ~4 % to an SDP (each
# CRLF becomes four characters; the captured fixtures grow 3.5-4.6 %), so a 64 KiB offer is a
# frame of ~68 KiB: 80 KiB leaves room for SDP of short lines, and a frame over it is refused
# before it is parsed. What is inside a frame within the limit is bounded by control/jsonparse
# (at most 1,024 keys and values): the costliest such frame parses in well under 1 ms.
MAX_FRAME_BYTES = 80 * 1024  # characters, as len() of the text frame counts them
MAX_FIRST_FRAME_BYTES = 16 * 1024  # before join: a join token (at most 4,096 characters) or a resume credential
MAX_MALFORMED_FRAMES = 20  # malformed frames a joined connection may send before it is closed
MAX_SDP_BYTES = MAX_FRAME_BYTES  # the SFU applies the real limits above (sdp_too_large)
MAX_ID = 64
RECONNECT_GRACE_SECONDS = 30.0
RATE_PER_SECOND = 20.0  # sustained messages per connection
RATE_BURST = 60.0

# Close codes: one per admission refusal (4400-4449), then protocol and session reasons.
CLOSE_CODES: dict[str, int] = {
    Code.TOKEN_INVALID.value: 4401,
    Code.TOKEN_EXPIRED.value: 4402,
    Code.TOKEN_USED.value: 4403,
    Code.APPOINTMENT_NOT_FOUND.value: 4404,
    Code.NOT_TELEHEALTH.value: 4410,
    Code.APPOINTMENT_CANCELLED.value: 4411,
    Code.APPOINTMENT_COMPLETED.value: 4412,
    Code.APPOINTMENT_NO_SHOW.value: 4413,
    Code.OUTSIDE_JOIN_WINDOW.value: 4420,
    Code.NOT_ON_ROSTER.value: 4421,
    Code.TELEHEALTH_NOT_ENABLED.value: 4422,
    Code.PORTAL_ACCOUNT_REQUIRED.value: 4423,
    Code.ROOM_CLOSED.value: 4430,
    Code.ROOM_FULL.value: 4431,
    Code.DENIED.value: 4432,
    Code.RESUME_INVALID.value: 4405,  # resume{credential}: unknown, used before, or the room let them go
    "removed": 4433,
    "join_timeout": 4408,
    "protocol_error": 4400,
    "rate_limited": 4429,
    "replaced": 4409,  # the same participant joined again from elsewhere
}
assert all(c.value in CLOSE_CODES for c in REFUSALS)
CLOSE_LEFT = 1000
# The node is shutting down (drain): a join is refused with error node_draining, and at the
# drain deadline everybody still in gets room_closed{reason: node_shutdown}. Not a 44xx: nothing
# is wrong with the participant and a retry (another node, or this one restarted) can succeed;
# the web client treats it as a dropped connection and reconnects with backoff.
CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012  # the media worker restarted: reconnect
CLOSE_TRY_AGAIN = 1013  # the store is unavailable (error store_unavailable): join again shortly


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FrameError(ProtocolError):
    """The frame is malformed (as opposed to a well-formed message sent at the wrong time)."""


@dataclass(frozen=True, slots=True)
class Join:
    token: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Instead of join, on a new socket: back into the room with the credential of the last
    `joined` (or `waiting`), whatever the join token's expiry."""

    credential: str


@dataclass(frozen=True, slots=True)
class PublishOffer:
    sdp: str


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    sdp: str


@dataclass(frozen=True, slots=True)
class Mute:
    track_id: str  # a track id from track_published, or "audio" / "video" for the own track of that kind
    muted: bool


@dataclass(frozen=True, slots=True)
class Admit:
    participant_id: str


@dataclass(frozen=True, slots=True)
class AdmitAll:
    pass


@dataclass(frozen=True, slots=True)
class Deny:
    participant_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Remove:
    participant_id: str


@dataclass(frozen=True, slots=True)
class MuteParticipant:
    participant_id: str
    kind: str  # "audio", "video" or "" for both
    muted: bool = True


@dataclass(frozen=True, slots=True)
class EndSession:
    """The provider ends the session for everyone."""


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Message = (Join | Resume | PublishOffer | SubscribeAnswer | Mute | Admit | AdmitAll | Deny | Remove | MuteParticipant
           | EndSession | Leave | Ping)

# The messages a connection may open with; anything else first is refused (not_joined) and closed.
FIRST_MESSAGES: tuple[type, ...] = (Join, Resume)


def _str(d: dict[str, Any], key: str, max_len: int, *, required: bool = True) -> str:
    v = d.get(key, None if required else "")
    if not isinstance(v, str) or (required and not v) or len(v) > max_len:
        raise FrameError("invalid_field", f"{key} must be a string of at most {max_len} characters")
    return v


def _bool(d: dict[str, Any], key: str, default: bool | None = None) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise FrameError("invalid_field", f"{key} must be true or false")
    return v


def parse_message(frame: str | bytes, max_bytes: int = MAX_FRAME_BYTES) -> Message:
    """One text frame to a typed message. Raises FrameError (malformed) or ProtocolError, nothing else."""
    if not isinstance(frame, str):
        raise FrameError("binary_frame", "frames must be JSON text")
    if len(frame) > max_bytes:
        raise FrameError("frame_too_large", f"frames are limited to {max_bytes} bytes here")
    try:
        d = jsonparse.parse(frame)
    except jsonparse.JsonInputError as e:  # invalid_json, json_too_deep, json_number_too_long, json_too_many_values
        raise FrameError(e.reason, e.message) from None
    if not isinstance(d, dict):
        raise FrameError("invalid_message", "a message is a JSON object with a type")
    t = d.get("type")
    if t == "join":
        return Join(_str(d, "token", 4096))
    if t == "resume":
        return Resume(_str(d, "credential", 128))
    if t == "publish_offer":
        return PublishOffer(_str(d, "sdp", MAX_SDP_BYTES))
    if t == "subscribe_answer":
        return SubscribeAnswer(_str(d, "sdp", MAX_SDP_BYTES))
    if t == "mute":
        return Mute(_str(d, "track_id", 200), _bool(d, "muted"))
    if t == "admit":
        return Admit(_str(d, "participant_id", MAX_ID))
    if t == "admit_all":
        return AdmitAll()
    if t == "deny":
        return Deny(_str(d, "participant_id", MAX_ID), _str(d, "reason", 200, required=False))
    if t == "remove":
        return Remove(_str(d, "participant_id", MAX_ID))
    if t == "mute_participant":
        kind = d.get("kind", "")
        if kind not in ("audio", "video", ""):
            raise FrameError("invalid_field", "kind must be audio, video or empty")
        return MuteParticipant(_str(d, "participant_id", MAX_ID), kind, _bool(d, "muted", True))
    if t == "end_session":
        return EndSession()
    if t == "leave":
        return Leave()
    if t == "ping":
        return Ping()
    if not isinstance(t, str):
        raise FrameError("invalid_message", "a message needs a string type")
    raise FrameError("unknown_type", f"unknown message type {t[:40]!r}")


class RateLimiter:
    """Token bucket per connection, on an injected clock."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, now: float, rate: float = RATE_PER_SECOND, burst: float = RATE_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# -- server -> client ---------------------------------------------------------------------------

def msg(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields}, separators=(",", ":"))


def error(code: str, message: str) -> str:
    return msg("error", code=code, message=message)
