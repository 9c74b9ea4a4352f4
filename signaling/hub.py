"""The node's signaling hub: which sessions are open, and who hears about what.

Room events (control plane: waiting, admitted, denied, removed, left, muted, closed) and
media events (subscribe offers, tracks, speakers, quality, lost workers) arrive as
synchronous callbacks and are turned into messages for the right sessions. Anything that
must await (media commands) runs as a task. Waiting participants hear nothing about the
room; providers hear about the waiting room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from control.domain.models import Appointment, Presence, Role, format_time, utcnow
from control.events import RoomEvent, RoomEventType
from control.media import MediaError, MediaPlane
from control.node import Node
from control.rooms import ActionError, Actor
from control.store.base import StoreError
from control.store.retry import INTERACTIVE, retrying
from signaling import protocol as p
from signaling.session import Session, State

log = logging.getLogger("telesfu.signaling")

Key = tuple[str, str]  # (appointment id, participant id)


class Hub:
    def __init__(self, node: Node, grace_seconds: float = p.RECONNECT_GRACE_SECONDS) -> None:
        assert node.media is not None, "signaling needs the media plane"
        self.node = node
        self.rooms = node.rooms
        self.store = node.store
        self.media: MediaPlane = node.media
        self.metrics = node.metrics
        self.grace_seconds = grace_seconds
        self.sessions: dict[Key, Session] = {}
        self.by_room: dict[str, set[Session]] = defaultdict(set)
        self._grace: dict[Key, asyncio.TimerHandle] = {}
        self._window: dict[str, asyncio.TimerHandle] = {}
        self._unsubscribe: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._media_locks: dict[Key, asyncio.Lock] = {}
        self._unsub_media = self.media.subscribe("*", self._on_media_event)
        self._undrain = node.add_drainable(self)

    @property
    def draining(self) -> bool:
        """The node is shutting down: joins are refused (`node_draining`)."""
        return self.node.draining

    async def close(self) -> None:
        self._unsub_media()
        self._undrain()
        for h in [*self._grace.values(), *self._window.values()]:
            h.cancel()
        for s in list(self.sessions.values()):
            s.left = True
            s.close(p.CLOSE_GOING_AWAY, "server shutting down")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except (ActionError, MediaError) as e:
                log.info("signaling: %s: %s", what, e)
            except Exception:
                log.exception("signaling: %s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions ---------------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """A session passed admission (waiting or admitted)."""
        key = (session.appointment_id, session.participant_id)
        old = self.sessions.get(key)
        if old is not None and old is not session:
            old.left = True
            old.send(p.error("replaced", "you joined again from another window"))
            old.close(p.CLOSE_CODES["replaced"], "replaced")
            self.by_room[key[0]].discard(old)
        self.sessions[key] = session
        self.by_room[key[0]].add(session)
        grace = self._grace.pop(key, None)
        if grace is not None:
            grace.cancel()
        apt_id = key[0]
        if apt_id not in self._unsubscribe:
            self._unsubscribe[apt_id] = self.node.events.subscribe(apt_id, self._on_room_event)
            self._spawn(self._arm_window(apt_id), "join window timer")
        if self.draining:  # back with resume during a drain (joins are refused): told what the others were
            session.send(p.msg("node_draining", seconds=round(self.node.drain_seconds_left())))

    def _media_lock(self, key: Key) -> asyncio.Lock:
        """Media membership changes of one participant run one at a time, in the order asked."""
        lock = self._media_locks.get(key)
        if lock is None:
            lock = self._media_locks[key] = asyncio.Lock()
        return lock

    def _still_in(self, session: Session) -> bool:
        key = (session.appointment_id, session.participant_id)
        return self.sessions.get(key) is session and session.state is State.JOINED and not session.left

    def _wanted_in_media(self, key: Key) -> bool:
        s = self.sessions.get(key)
        return s is not None and self._still_in(s)

    async def enter_media(self, session: Session) -> None:
        apt, pid = session.appointment_id, session.participant_id
        async with self._media_lock((apt, pid)):
            if not self._still_in(session):
                return  # removed or closed before it got here
            if self.media.has_participant(apt, pid):  # back within the grace period, on a new page
                await self.media.reset_participant(apt, pid)
            else:
                await self.media.add_participant(apt, pid, can_publish=True, can_subscribe=True)
            if not self._still_in(session):  # removed while the worker was adding it: undo, say nothing
                if self.media.has_participant(apt, pid) and not self._wanted_in_media((apt, pid)):
                    await self.media.remove_participant(apt, pid)
                return
        self._to_joined(apt, p.msg("participant_joined", participant={
            "participant_id": pid, "role": session.role.value if session.role else "", "name": session.name}),
            exclude=pid)

    async def session_ended(self, session: Session) -> None:
        """A socket closed. Never raises and never waits on the store: what follows runs as a task."""
        key = (session.appointment_id, session.participant_id)
        if not session.participant_id or self.sessions.get(key) is not session:
            return  # never attached, or replaced by a newer session
        del self.sessions[key]
        self.by_room[key[0]].discard(session)
        if session.left:
            return
        dropped = session.close_code in (None, p.CLOSE_SERVICE_RESTART, p.CLOSE_TRY_AGAIN)
        self._spawn(self._after_close(key, dropped), "session ended")

    async def _after_close(self, key: Key, dropped: bool) -> None:
        def gone() -> bool:
            return key not in self.sessions  # not back on a new socket meanwhile

        try:
            room = await retrying(lambda: self.store.get_room(key[0]), "read room after a drop", INTERACTIVE)
        except StoreError:
            # the store is down: whatever the participant was, keep the place for the grace
            # period; its leave is applied when the store is back
            log.warning("signaling: store unavailable after %s/%s dropped; arming the grace anyway", *key)
            if gone():
                self._arm_grace(key, announce=True)
            return
        member = room.member(key[1]) if room else None
        if member is None or not gone():
            return
        waiting = member.presence is Presence.WAITING
        if dropped:
            # the connection dropped (or media restarted): keep the place for the grace period, in
            # the waiting room or in the call, for a resume{credential} on a new socket
            self._arm_grace(key, announce=not waiting, reason="left_waiting" if waiting else "disconnected")
        else:  # closed by the server for cause (rate limit, protocol error): gone now
            await self.rooms.leave(key[0], key[1], "left_waiting" if waiting else "closed", still_gone=gone)

    def _arm_grace(self, key: Key, announce: bool, reason: str = "disconnected") -> None:
        old = self._grace.pop(key, None)
        if old is not None:
            old.cancel()
        if announce:
            self._to_joined(key[0], p.msg("participant_reconnecting", participant_id=key[1]))
        self._grace[key] = asyncio.get_running_loop().call_later(self.grace_seconds, self._grace_expired, key,
                                                                 reason)

    def _grace_expired(self, key: Key, reason: str) -> None:
        self._grace.pop(key, None)
        if key not in self.sessions:
            self._spawn(self.rooms.leave(key[0], key[1], reason, still_gone=lambda: key not in self.sessions),
                        "leave after grace")

    async def leave(self, session: Session) -> None:
        session.left = True
        await self.rooms.leave(session.appointment_id, session.participant_id, "left")
        session.close(p.CLOSE_LEFT, "left")

    # -- drain (the node is shutting down) ---------------------------------------------------------------

    def drain_started(self, seconds: float) -> None:
        frame = p.msg("node_draining", seconds=round(seconds))
        for s in list(self.sessions.values()):
            s.send(frame)

    def idle(self) -> bool:
        return not self.sessions and not self._grace

    async def drain_finish(self, reason: str) -> None:
        """Everybody still here hears room_closed{reason} and leaves the room in the store.

        The seam for moving participants to another node (a later issue): instead of closing a
        session here, tell it where to go (`redirect{url}`, or 1012 to resume elsewhere).
        """
        keys = [*self.sessions, *self._grace]
        for s in list(self.sessions.values()):
            s.left = True
            s.send(p.msg("room_closed", reason=reason))
            s.close(p.CLOSE_GOING_AWAY, "node shutting down")
        for h in self._grace.values():
            h.cancel()
        self._grace.clear()
        by_room: dict[str, list[str]] = defaultdict(list)
        for apt, pid in dict.fromkeys(keys):
            by_room[apt].append(pid)

        async def leave_room(apt: str, pids: list[str]) -> None:  # one room's updates in turn, rooms at once
            for pid in pids:
                try:
                    await self.rooms.leave(apt, pid, reason)
                except Exception:
                    log.warning("drain: %s could not leave room %s", pid, apt, exc_info=True)

        await asyncio.gather(*(leave_room(apt, pids) for apt, pids in by_room.items()))

    # -- fan-out helpers --------------------------------------------------------------------------------

    def _joined(self, apt_id: str) -> list[Session]:
        return [s for s in self.by_room.get(apt_id, ()) if s.state is State.JOINED]

    def _to_joined(self, apt_id: str, frame: str, exclude: str = "") -> None:
        for s in self._joined(apt_id):
            if s.participant_id != exclude:
                s.send(frame)

    def _to_providers(self, apt_id: str, frame: str) -> None:
        for s in self._joined(apt_id):
            if s.role is Role.PROVIDER:
                s.send(frame)

    async def _send_waiting_list(self, apt_id: str) -> None:
        room = await self.store.get_room(apt_id)
        waiting = [{"participant_id": m.participant_id, "name": m.name, "since": format_time(m.since)}
                   for m in (room.waiting if room else ())]
        self._to_providers(apt_id, p.msg("waiting_list", participants=waiting))

    # -- room events (control plane) ------------------------------------------------------------

    def _on_room_event(self, e: RoomEvent) -> None:
        apt, pid = e.appointment_id, e.participant_id
        target = self.sessions.get((apt, pid)) if pid else None
        t = e.type
        if t is RoomEventType.WAITING and e.member is not None:
            self._to_providers(apt, p.msg("participant_waiting", participant={
                "participant_id": pid, "name": e.member.name, "since": format_time(e.member.since)}))
            self._spawn(self._send_waiting_list(apt), "waiting list")
        elif t is RoomEventType.ADMITTED:
            if e.member is not None and e.member.role is Role.PROVIDER:
                self._tell_waiting(apt, provider_present=True)
            if target is not None and target.state is State.WAITING:
                self.metrics.signaling_admitted_from_waiting.inc()
                target.send(p.msg("admitted"))
                self._spawn(target.enter(), "enter after admission")
            self._spawn(self._send_waiting_list(apt), "waiting list")
        elif t is RoomEventType.DENIED:
            if target is not None:
                target.left = True
                target.send(p.msg("denied", reason=e.reason))
                target.close(p.CLOSE_CODES["participant_denied"], "denied")
            self._spawn(self._send_waiting_list(apt), "waiting list")
        elif t is RoomEventType.REMOVED:
            if target is not None:
                target.left = True
                target.send(p.error("removed", "your provider removed you from the session"))
                target.close(p.CLOSE_CODES["removed"], "removed")
            self._drop_from_media(apt, pid, "removed")
            self._spawn(self._send_waiting_list(apt), "waiting list")
        elif t is RoomEventType.LEFT:
            if target is not None and not target.left and e.reason in ("disconnected", "left_waiting"):
                # the grace ran out while a resume of theirs was under way: that socket has no place
                target.left = True
                target.send(p.error("resume_invalid", "the reconnection grace ended before you were back"))
                target.close(p.CLOSE_CODES["resume_invalid"], "resume_invalid")
            if e.member is not None and e.member.role is Role.PROVIDER:
                self._tell_waiting(apt, provider_present=False)
            self._drop_from_media(apt, pid, e.reason or "left")
            self._spawn(self._send_waiting_list(apt), "waiting list")
        elif t is RoomEventType.MUTED:
            self._spawn(self.media.set_muted(apt, pid, e.kind, e.muted, by="provider"), "mute")
        elif t is RoomEventType.APPOINTMENT_CHANGED and e.appointment is not None:
            self._set_window(e.appointment)  # extended, shortened or moved: the session ends on the new times
        elif t is RoomEventType.CLOSED:
            if e.reason == "empty":
                self._release_room(apt)
            else:
                self._close_room(apt, e.reason)

    def _tell_waiting(self, apt: str, provider_present: bool) -> None:
        """Waiting clients learn whether their provider is there, and nothing else."""
        message = ("Your provider will let you in soon." if provider_present
                   else "Waiting for your provider to join.")
        for s in self.by_room.get(apt, ()):
            if s.state is State.WAITING:
                s.send(p.msg("waiting", message=message, provider_present=provider_present))

    def _drop_from_media(self, apt: str, pid: str, reason: str) -> None:
        grace = self._grace.pop((apt, pid), None)
        if grace is not None:
            grace.cancel()
        self._to_joined(apt, p.msg("participant_left", participant_id=pid, reason=reason), exclude=pid)
        key = (apt, pid)

        async def remove() -> None:
            async with self._media_lock(key):  # after an add still under way, never before it
                if self.media.has_participant(apt, pid) and not self._wanted_in_media(key):
                    await self.media.remove_participant(apt, pid)
            lock = self._media_locks.get(key)
            if lock is not None and not lock.locked() and not self._wanted_in_media(key):
                del self._media_locks[key]

        self._spawn(remove(), "remove from media")

    def _close_room(self, apt: str, reason: str) -> None:
        for s in list(self.by_room.get(apt, ())):
            s.left = True
            s.send(p.msg("room_closed", reason=reason))
            s.close(p.CLOSE_LEFT, "room closed")
        for key in [k for k in self._grace if k[0] == apt]:
            self._grace.pop(key).cancel()
        self._forget_locks(apt)
        h = self._window.pop(apt, None)
        if h is not None:
            h.cancel()
        unsub = self._unsubscribe.pop(apt, None)
        if unsub is not None:
            unsub()
        if self.media.worker_for(apt) is not None:
            self._spawn(self.media.close_room(apt), "close media room")

    def _forget_locks(self, apt: str) -> None:
        for key in [k for k, lock in self._media_locks.items() if k[0] == apt and not lock.locked()]:
            del self._media_locks[key]

    def _release_room(self, apt: str) -> None:
        """Everyone left: free the media room and the room's timers (a new join opens them again)."""
        self._forget_locks(apt)
        h = self._window.pop(apt, None)
        if h is not None:
            h.cancel()
        unsub = self._unsubscribe.pop(apt, None)
        if unsub is not None:
            unsub()

        async def close_if_still_empty() -> None:
            if self.media.worker_for(apt) is not None and not self.media.members.get(apt):
                await self.media.close_room(apt)

        self._spawn(close_if_still_empty(), "release the media room")

    async def _arm_window(self, apt_id: str) -> None:
        """End the session when its join window closes (armed when the room's first session attaches)."""
        apt = await retrying(lambda: self.store.get_appointment(apt_id), "read appointment for its window")
        if apt is None or apt_id in self._window or apt_id not in self._unsubscribe:
            return  # gone, armed meanwhile (a change re-armed it with newer times), or no session left
        self._set_window(apt)

    def _set_window(self, apt: Appointment) -> None:
        """(Re)arm the room's end at its join window's close, from the appointment as it is now."""
        apt_id = apt.id
        old = self._window.pop(apt_id, None)
        if old is not None:
            old.cancel()
        closes = apt.ends_at + timedelta(minutes=self.node.config.rooms.join_late_minutes)
        delay = max(0.0, (closes - utcnow()).total_seconds())

        def fire() -> None:
            self._window.pop(apt_id, None)
            self._spawn(retrying(lambda: self.rooms.end(apt_id, Actor.api(), "window_closed"), "end at window close"),
                        "end at window close")

        self._window[apt_id] = asyncio.get_running_loop().call_later(delay, fire)

    # -- media events ---------------------------------------------------------------------------------

    def _on_media_event(self, e: dict[str, Any]) -> None:
        t = e.get("type")
        apt = e.get("room_id", "")
        if t == "subscribe_offer":
            s = self.sessions.get((apt, e["participant_id"]))
            if s is not None and s.state is State.JOINED:
                s.send(p.msg("subscribe_offer", sdp=e["sdp"], tracks=e["tracks"]))
        elif t in ("track_published", "track_unpublished"):
            self._to_joined(apt, p.msg(t, track=e["track"]))
        elif t == "track_muted":
            tr = e["track"]
            self._to_joined(apt, p.msg("track_muted", track_id=tr["track_id"], participant_id=tr["participant_id"],
                                       kind=tr["kind"], muted=tr["muted"], by=e.get("by", "")))
        elif t == "active_speakers":
            self._to_joined(apt, p.msg("active_speakers", participant_ids=e["participant_ids"]))
        elif t == "connection_quality":
            self._to_joined(apt, p.msg("connection_quality", participants=e["participants"]))
        elif t == "first_media":
            s = self.sessions.get((apt, e["participant_id"]))
            if s is not None and s.joined_at:
                self.metrics.join_to_first_media.observe(time.monotonic() - s.joined_at)
        elif t == "participants_lost":
            for pid in e.get("participant_ids", ()):
                s = self.sessions.get((apt, pid))
                if s is not None:
                    s.send(p.error("media_restarted", "the media server restarted; reconnecting"))
                    s.close(p.CLOSE_SERVICE_RESTART, "media restarted")
