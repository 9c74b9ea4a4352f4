"""`appointment.starting_soon`: once per telehealth appointment, `reminder_lead_minutes` before it.

Each PUT of an appointment (re)schedules its reminder; a ticker emits due ones. The "once"
is a store marker keyed by the appointment and its start time, so two nodes never both
emit, and a rescheduled appointment (new start) is announced once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from control.background import Background
from control.domain.models import Appointment, AppointmentStatus, format_time, utcnow
from control.metrics import Metrics
from control.store.base import Store
from control.webhooks import Webhooks

log = logging.getLogger("telesfu.reminders")

_MARKER_TTL = 90 * 24 * 3600


def wants_reminder(apt: Appointment, now: datetime) -> bool:
    return apt.telehealth and apt.status is AppointmentStatus.SCHEDULED and apt.starts_at > now


class Reminders:
    def __init__(self, store: Store, webhooks: Webhooks, metrics: Metrics, lead_minutes: int,
                 clock: Callable[[], datetime] = utcnow, interval_seconds: float = 1.0) -> None:
        self.store = store
        self.webhooks = webhooks
        self.metrics = metrics
        self.lead = timedelta(minutes=lead_minutes)
        self.clock = clock
        self.interval = interval_seconds
        self._loop = Background("reminders", self._run)

    async def appointment_changed(self, apt: Appointment) -> None:
        """Called after every PUT of an appointment."""
        if wants_reminder(apt, self.clock()):
            await self.store.schedule_reminder(apt.id, (apt.starts_at - self.lead).timestamp())
        else:
            await self.store.cancel_reminder(apt.id)

    async def tick(self) -> int:
        """Emit every due reminder; returns how many were emitted."""
        now = self.clock()
        emitted = 0
        for apt_id, due in await self.store.due_reminders(now.timestamp(), 100):
            apt = await self.store.get_appointment(apt_id)
            if apt is not None and wants_reminder(apt, now) and \
                    await self.store.claim_once(f"reminder:{apt.id}:{format_time(apt.starts_at)}", _MARKER_TTL):
                await self.webhooks.emit("appointment.starting_soon", {
                    "appointment_id": apt.id, "provider_id": apt.provider_id, "client_ids": list(apt.client_ids),
                    "starts_at": format_time(apt.starts_at), "ends_at": format_time(apt.ends_at)})
                self.metrics.reminders.inc()
                emitted += 1
            await self.store.finish_reminder(apt_id, due)
        return emitted

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("reminder tick failed")
            await asyncio.sleep(self.interval)
