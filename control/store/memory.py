"""The embedded store: everything in this process's memory. Nothing survives a restart."""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

from control.domain.models import Appointment, AuditEntry, Client, Provider, Room
from control.store.base import (
    AGGREGATE_LOOKBACK,
    DEFAULT_AUDIT,
    AuditPolicy,
    PendingWebhook,
    RoomUpdate,
    T,
    WebhookEvent,
)


class MemoryStore:
    kind = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # for claim_once expiries
        self._providers: dict[str, Provider] = {}
        self._clients: dict[str, Client] = {}
        self._appointments: dict[str, Appointment] = {}
        self._rooms: dict[str, Room] = {}
        # (appointment id, refusal?) -> entries, oldest first
        self._audit: dict[tuple[str, bool], list[AuditEntry]] = defaultdict(list)
        self._audit_seq = 0
        self._webhooks: dict[str, tuple[WebhookEvent, float, int]] = {}  # id -> (event, due, attempts)
        self._dead: list[WebhookEvent] = []
        self._reminders: dict[str, float] = {}
        self._once: dict[str, float] = {}  # key -> expiry (monotonic)
        self._once_expiries: list[tuple[float, str]] = []  # heap, to forget expired keys
        self._resume: dict[str, tuple[dict[str, str], float]] = {}  # key -> (record, expiry)
        self._resume_expiries: list[tuple[float, str]] = []
        self._resume_of: dict[tuple[str, str], str] = {}  # (apt, pid) -> their live credential's key

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass

    async def put_provider(self, provider: Provider) -> Provider | None:
        prev = self._providers.get(provider.id)
        self._providers[provider.id] = provider
        return prev

    async def get_provider(self, provider_id: str) -> Provider | None:
        return self._providers.get(provider_id)

    async def put_client(self, client: Client) -> Client | None:
        prev = self._clients.get(client.id)
        self._clients[client.id] = client
        return prev

    async def get_client(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    async def put_appointment(self, appointment: Appointment) -> Appointment | None:
        prev = self._appointments.get(appointment.id)
        self._appointments[appointment.id] = appointment
        return prev

    async def get_appointment(self, appointment_id: str) -> Appointment | None:
        return self._appointments.get(appointment_id)

    async def get_many(self, appointment_id: str, client_id: str) -> tuple[Appointment | None, Client | None]:
        return self._appointments.get(appointment_id), self._clients.get(client_id)

    async def get_references(self, provider_id: str, client_ids: tuple[str, ...], appointment_id: str
                             ) -> tuple[Provider | None, list[Client | None], Appointment | None]:
        return (self._providers.get(provider_id), [self._clients.get(c) for c in client_ids],
                self._appointments.get(appointment_id))

    async def get_room(self, appointment_id: str) -> Room | None:
        return self._rooms.get(appointment_id)

    async def update_room(self, appointment_id: str, fn: RoomUpdate[T]) -> T:
        # No await between read and write: atomic on the event loop.
        new, result = fn(self._rooms.get(appointment_id))
        if new is not None:
            self._rooms[appointment_id] = new
        return result

    async def list_open_rooms(self) -> list[Room]:
        return [r for r in self._rooms.values() if r.is_open]

    async def append_audit(self, entry: AuditEntry, refusal: bool = False,
                           policy: AuditPolicy = DEFAULT_AUDIT) -> AuditEntry:
        log = self._audit[(entry.appointment_id, refusal)]
        if refusal:
            for i in range(len(log) - 1, max(-1, len(log) - 1 - AGGREGATE_LOOKBACK), -1):
                e = log[i]
                if (e.action, e.actor_id, e.subject_id, e.code) == (entry.action, entry.actor_id, entry.subject_id,
                                                                    entry.code) \
                        and (entry.at - e.latest).total_seconds() <= policy.aggregate_seconds:
                    log[i] = replace(e, count=e.count + 1, last_at=entry.at)
                    return log[i]
        self._audit_seq += 1
        entry = replace(entry, id=str(self._audit_seq))
        log.append(entry)
        if len(log) > policy.max_entries:
            del log[: len(log) - policy.max_entries]
        if policy.retention_seconds:
            cutoff = entry.at.timestamp() - policy.retention_seconds
            for key in ((entry.appointment_id, False), (entry.appointment_id, True)):
                _drop_head(self._audit.get(key, []), cutoff)
        return entry

    async def list_audit(self, appointment_id: str, limit: int = 1000, after: int | None = None) -> list[AuditEntry]:
        entries = sorted([*self._audit.get((appointment_id, False), []), *self._audit.get((appointment_id, True), [])],
                         key=lambda e: int(e.id))
        if after is not None:
            return [e for e in entries if int(e.id) > after][:limit]
        return entries[-limit:]

    async def prune_audit(self, before: float) -> int:
        dropped = 0
        for key in list(self._audit):
            dropped += _drop_older(self._audit[key], before)
            if not self._audit[key]:
                del self._audit[key]
        return dropped

    async def enqueue_webhook(self, event: WebhookEvent, due: float) -> None:
        self._webhooks[event.id] = (event, due, 0)

    async def claim_webhooks(self, now: float, lease_seconds: float, limit: int) -> list[PendingWebhook]:
        due = heapq.nsmallest(limit, ((d, i) for i, (_, d, _) in self._webhooks.items() if d <= now))
        out = []
        for _, event_id in due:
            event, _, attempts = self._webhooks[event_id]
            self._webhooks[event_id] = (event, now + lease_seconds, attempts)
            out.append(PendingWebhook(event, attempts))
        return out

    async def complete_webhook(self, event_id: str) -> None:
        self._webhooks.pop(event_id, None)

    async def retry_webhook(self, event_id: str, due: float, attempts: int) -> None:
        if event_id in self._webhooks:
            self._webhooks[event_id] = (self._webhooks[event_id][0], due, attempts)

    async def dead_letter_webhook(self, event_id: str) -> None:
        item = self._webhooks.pop(event_id, None)
        if item is not None:
            self._dead.append(item[0])
            del self._dead[:-1000]

    async def webhook_queue_depth(self) -> int:
        return len(self._webhooks)

    async def dead_letters(self) -> list[WebhookEvent]:
        return list(self._dead)

    async def schedule_reminder(self, appointment_id: str, due: float) -> None:
        self._reminders[appointment_id] = due

    async def cancel_reminder(self, appointment_id: str) -> None:
        self._reminders.pop(appointment_id, None)

    async def due_reminders(self, now: float, limit: int) -> list[tuple[str, float]]:
        return [(a, d) for d, a in sorted((d, a) for a, d in self._reminders.items() if d <= now)[:limit]]

    async def finish_reminder(self, appointment_id: str, due: float) -> None:
        if self._reminders.get(appointment_id) == due:
            del self._reminders[appointment_id]

    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        t = self._clock()
        heap = self._once_expiries
        while heap and heap[0][0] <= t:  # every join claims a jti: forget the expired ones
            at, old = heapq.heappop(heap)
            if self._once.get(old) == at:
                del self._once[old]
        expiry = self._once.get(key)
        if expiry is not None and expiry > t:
            return False
        self._once[key] = t + ttl_seconds
        heapq.heappush(heap, (t + ttl_seconds, key))
        return True

    async def put_resume(self, key: str, record: dict[str, str], ttl_seconds: int) -> None:
        t = self._clock()
        heap = self._resume_expiries
        while heap and heap[0][0] <= t:
            at, old = heapq.heappop(heap)
            item = self._resume.get(old)
            if item is not None and item[1] == at:
                self._drop_resume(old)
        owner = (record["apt"], record["pid"])
        previous = self._resume_of.get(owner)
        if previous is not None:
            self._drop_resume(previous)
        self._resume[key] = (dict(record), t + ttl_seconds)
        self._resume_of[owner] = key
        heapq.heappush(heap, (t + ttl_seconds, key))

    async def get_resume(self, key: str) -> dict[str, str] | None:
        item = self._resume.get(key)
        if item is None or item[1] <= self._clock():
            return None
        return dict(item[0])

    async def take_resume(self, key: str) -> bool:
        item = self._resume.get(key)
        self._drop_resume(key)
        return item is not None and item[1] > self._clock()

    def _drop_resume(self, key: str) -> None:
        item = self._resume.pop(key, None)
        if item is not None:
            owner = (item[0]["apt"], item[0]["pid"])
            if self._resume_of.get(owner) == key:
                del self._resume_of[owner]


def _drop_older(log: list[AuditEntry], before: float) -> int:
    """Drop the entries whose latest time is before `before`; returns how many."""
    keep = [e for e in log if e.latest.timestamp() >= before]
    dropped = len(log) - len(keep)
    if dropped:
        log[:] = keep
    return dropped


def _drop_head(log: list[AuditEntry], before: float) -> None:
    """Drop the oldest entries while they are older than `before` (entries are in time order)."""
    i = 0
    while i < len(log) and log[i].latest.timestamp() < before:
        i += 1
    if i:
        del log[:i]
