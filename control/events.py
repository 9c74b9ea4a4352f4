"""Room events inside a node: the control plane tells signaling sessions what changed.

Handlers are synchronous callbacks (they queue work for their session); a failing handler is
logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from control.domain.models import Appointment, RoomMember

log = logging.getLogger("telesfu.events")


class RoomEventType(StrEnum):
    WAITING = "waiting"  # a client entered the waiting room
    ADMITTED = "admitted"  # a member entered the room (directly or from the waiting room)
    CLEARED = "cleared"  # an absent participant was admitted ahead of their next join
    DENIED = "denied"  # a waiting client was turned away
    REMOVED = "removed"  # a member was removed and is kept out
    LEFT = "left"  # a member left (or dropped for good)
    MUTED = "muted"  # a mute was asked for by the provider or the practice
    CLOSED = "closed"  # the session ended for everyone
    APPOINTMENT_CHANGED = "appointment_changed"  # its times (or anything else) changed: re-arm timers


@dataclass(frozen=True, slots=True)
class RoomEvent:
    type: RoomEventType
    appointment_id: str
    participant_id: str = ""
    member: RoomMember | None = None
    reason: str = ""
    kind: str = ""  # for MUTED: "audio", "video" or "" for both
    muted: bool = True
    appointment: Appointment | None = None  # for APPOINTMENT_CHANGED: the appointment as it is now


Handler = Callable[[RoomEvent], None]


class RoomEvents:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, appointment_id: str, handler: Handler) -> Callable[[], None]:
        """Call handler for every event of that room; returns the unsubscribe function."""
        self._handlers[appointment_id].append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(appointment_id)
            if handlers and handler in handlers:
                handlers.remove(handler)
                if not handlers:
                    del self._handlers[appointment_id]

        return unsubscribe

    def publish(self, event: RoomEvent) -> None:
        for handler in list(self._handlers.get(event.appointment_id, ())):
            try:
                handler(event)
            except Exception:
                log.exception("room event handler failed (appointment %s)", event.appointment_id)
