"""The store: one interface, two backends (in-memory, Redis).

Room state changes go through `update_room`, an atomic read-modify-write: the memory backend
runs it without yielding; the Redis backend runs it in a WATCH/MULTI transaction and retries
when another node changed the room in between. The function it runs must be pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from control.domain.models import Appointment, AuditEntry, Client, Provider, Room

T = TypeVar("T")

# fn(current room or None) -> (new room or None to leave it unchanged, result)
RoomUpdate = Callable[[Room | None], tuple[Room | None, T]]


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    created_at: str
    data: dict[str, Any]

    def body(self) -> bytes:
        return json.dumps({"id": self.id, "type": self.type, "created_at": self.created_at,
                           "data": self.data}, separators=(",", ":"), sort_keys=True).encode()

    def to_json(self) -> str:
        return self.body().decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> WebhookEvent:
        d = json.loads(text)
        return cls(d["id"], d["type"], d["created_at"], d["data"])


@dataclass(frozen=True, slots=True)
class PendingWebhook:
    event: WebhookEvent
    attempts: int  # delivery attempts made before this one


@dataclass(frozen=True, slots=True)
class AuditPolicy:
    """How an appointment's audit log is kept (config section [audit]).

    Two retention classes: decisions (admissions, waiting, staff actions, leaves, ends) and
    refusals (refused joins, actions a participant was not allowed). Each keeps its own newest
    `max_entries`, so no flood of refusals can push a decision out. A refusal repeating an
    earlier one (same action, actor, subject and code) within `aggregate_seconds` of its last
    time is folded into it (`count`, `last_at`) instead of appended. Entries whose latest time
    is more than `retention_seconds` older than the newest append are dropped (0: keep).
    """

    retention_seconds: float = 0.0
    aggregate_seconds: float = 3600.0
    max_entries: int = 10_000


DEFAULT_AUDIT = AuditPolicy()
AGGREGATE_LOOKBACK = 8  # how many of the newest refusals a new one is compared with


class StoreError(Exception):
    """The backend failed (connection lost, too much contention)."""


class Store(Protocol):
    kind: str

    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    # practice records; put_* returns the previous value (None when created)
    async def put_provider(self, provider: Provider) -> Provider | None: ...
    async def get_provider(self, provider_id: str) -> Provider | None: ...
    async def put_client(self, client: Client) -> Client | None: ...
    async def get_client(self, client_id: str) -> Client | None: ...
    async def put_appointment(self, appointment: Appointment) -> Appointment | None: ...
    async def get_appointment(self, appointment_id: str) -> Appointment | None: ...
    async def get_many(self, appointment_id: str, client_id: str) -> tuple[Appointment | None, Client | None]:
        """The appointment and a client together (one round trip where the backend can)."""
    async def get_references(self, provider_id: str, client_ids: tuple[str, ...], appointment_id: str
                             ) -> tuple[Provider | None, list[Client | None], Appointment | None]:
        """What a PUT of an appointment refers to, in one round trip where the backend can."""

    # rooms
    async def get_room(self, appointment_id: str) -> Room | None: ...
    async def update_room(self, appointment_id: str, fn: RoomUpdate[T]) -> T: ...
    async def list_open_rooms(self) -> list[Room]: ...

    # audit log, oldest first; ids increase with each new entry (a folded repeat keeps its id)
    async def append_audit(self, entry: AuditEntry, refusal: bool = False,
                           policy: AuditPolicy = DEFAULT_AUDIT) -> AuditEntry: ...
    async def list_audit(self, appointment_id: str, limit: int = 1000, after: int | None = None) -> list[AuditEntry]:
        """The newest `limit` entries; with `after` (an id), the first `limit` entries after it."""
    async def prune_audit(self, before: float) -> int:
        """Drop entries of every appointment whose latest time is before `before` (unix); how many."""

    # webhook queue: at-least-once, leased while a delivery is under way
    async def enqueue_webhook(self, event: WebhookEvent, due: float) -> None: ...
    async def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[PendingWebhook]: ...
    async def complete_webhook(self, event_id: str) -> None: ...
    async def retry_webhook(self, event_id: str, due: float, attempts: int) -> None: ...
    async def dead_letter_webhook(self, event_id: str) -> None: ...
    async def webhook_queue_depth(self) -> int: ...
    async def dead_letters(self) -> list[WebhookEvent]: ...

    # appointment reminders
    async def schedule_reminder(self, appointment_id: str, due: float) -> None: ...
    async def cancel_reminder(self, appointment_id: str) -> None: ...
    async def due_reminders(self, now: float, limit: int) -> list[tuple[str, float]]: ...
    async def finish_reminder(self, appointment_id: str, due: float) -> None:
        """Drop the reminder if it is still due at `due` (a reschedule in between keeps it)."""
    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        """True for the first claim of `key` until `ttl_seconds` pass (atomic, on every node)."""

    # resume credentials: a record per credential hash, what it is bound to
    async def put_resume(self, key: str, record: dict[str, str], ttl_seconds: int) -> None:
        """Store the record of a new credential for record["apt"], record["pid"]; that
        participant's previous credential (if any) stops working, atomically."""
    async def get_resume(self, key: str) -> dict[str, str] | None: ...
    async def take_resume(self, key: str) -> bool:
        """Delete the record; True only for the one caller that deleted it (rotation's winner)."""


async def open_store(url: str) -> Store:
    """The backend named by a store URL (memory:// or redis://...)."""
    if url.startswith("memory:"):
        from control.store.memory import MemoryStore

        return MemoryStore()
    from control.store.redis import RedisStore

    store = RedisStore.from_url(url)
    try:
        await store.ping()
    except Exception as e:
        await store.close()
        raise StoreError(f"cannot reach the store at {_redact(url)}: {e}") from None
    return store


def _redact(url: str) -> str:
    """A store URL without its password, for messages and logs."""
    from urllib.parse import urlparse

    p = urlparse(url)
    if p.password:
        return url.replace(f":{p.password}@", ":***@")
    return url
