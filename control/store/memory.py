"""The embedded store: everything in this process's memory. Nothing survives a restart."""

from __future__ import annotations

import heapq
import time
from collections import defaultdict
from dataclasses import replace

from control.domain.models import Appointment, AuditEntry, Client, Provider, Room
from control.store.base import PendingWebhook, RoomUpdate, T, WebhookEvent

_AUDIT_PER_APPOINTMENT = 10_000


class MemoryStore:
    kind = "memory"

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._clients: dict[str, Client] = {}
        self._appointments: dict[str, Appointment] = {}
        self._rooms: dict[str, Room] = {}
        self._audit: dict[str, list[AuditEntry]] = defaultdict(list)
        self._audit_seq = 0
        self._webhooks: dict[str, tuple[WebhookEvent, float, int]] = {}  # id -> (event, due, attempts)
        self._dead: list[WebhookEvent] = []
        self._reminders: dict[str, float] = {}
        self._once: dict[str, float] = {}  # key -> expiry (monotonic)

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

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        self._audit_seq += 1
        entry = replace(entry, id=str(self._audit_seq))
        log = self._audit[entry.appointment_id]
        log.append(entry)
        if len(log) > _AUDIT_PER_APPOINTMENT:
            del log[: len(log) - _AUDIT_PER_APPOINTMENT]
        return entry

    async def list_audit(self, appointment_id: str, limit: int = 1000) -> list[AuditEntry]:
        return self._audit.get(appointment_id, [])[-limit:]

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
        t = time.monotonic()
        expiry = self._once.get(key)
        if expiry is not None and expiry > t:
            return False
        self._once[key] = t + ttl_seconds
        return True
