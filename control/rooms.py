"""Room use cases: join, admit, deny, remove, mute, leave, end.

The one path every caller takes (control API, signaling): the pure domain decides, the store
applies atomically, then the effects follow (audit entry, metrics, webhooks, room events).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from control.config import AuditConfig, RoomsConfig
from control.domain.admission import (
    MESSAGES,
    Authority,
    Code,
    Decision,
    JoinClaims,
    JoinWindow,
    decide,
    may_manage,
)
from control.domain.models import (
    Appointment,
    AppointmentStatus,
    AuditEntry,
    Presence,
    Role,
    Room,
    RoomMember,
    format_time,
    utcnow,
)
from control.events import RoomEvent, RoomEvents, RoomEventType
from control.metrics import Metrics
from control.ratelimit import KeyedBuckets
from control.store.base import AuditPolicy, Store, StoreError
from control.store.retry import BACKGROUND, retrying
from control.tokens import TokenService, new_resume_credential, resume_key
from control.webhooks import Webhooks

log = logging.getLogger("telesfu.rooms")

API_ACTOR = "api"
_LIMITED_AUDIT_SECONDS = 10.0


class ActionError(Exception):
    """An admit/deny/remove/mute/end that cannot be done; `code` is stable, `status` an HTTP status."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class ActionResult(StrEnum):
    ADMITTED = "admitted"
    ALREADY_ADMITTED = "already_admitted"
    CLEARED = "cleared"  # admitted ahead of their next join
    DENIED = "denied"
    REMOVED = "removed"
    MUTED = "muted"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Actor:
    id: str
    authority: Authority
    role: Role | None = None

    @classmethod
    def api(cls) -> Actor:
        return cls(API_ACTOR, Authority.API)


@dataclass(frozen=True, slots=True)
class JoinResult:
    decision: Decision
    claims: JoinClaims | None
    appointment: Appointment | None
    room: Room | None  # the room after the join (None when refused before a room existed)
    message: str = ""  # what the person reads
    resume: str = ""  # the resume credential of an accepted join

    @property
    def code(self) -> Code:
        return self.decision.code


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """A resume: `admitted` or `waiting` (where the room holds the participant), `resume_invalid`,
    or `rate_limited` (the source address spent its refused-join bucket)."""

    code: Code
    member: RoomMember | None = None  # who the credential names, as the room holds them
    room: Room | None = None
    resume: str = ""  # the next credential (the presented one no longer works)

    @property
    def refused(self) -> bool:
        return self.code is not Code.ADMITTED and self.code is not Code.WAITING

    @property
    def message(self) -> str:
        return MESSAGES[self.code]


class Rooms:
    def __init__(self, store: Store, tokens: TokenService, webhooks: Webhooks, events: RoomEvents,
                 metrics: Metrics, config: RoomsConfig, node_id: str,
                 clock: Callable[[], datetime] = utcnow, audit: AuditConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.tokens = tokens
        self.webhooks = webhooks
        self.events = events
        self.metrics = metrics
        self.config = config
        self.node_id = node_id
        self.clock = clock
        self.window = JoinWindow(timedelta(minutes=config.join_early_minutes),
                                 timedelta(minutes=config.join_late_minutes))
        a = audit or AuditConfig()
        self.audit_policy = AuditPolicy(retention_seconds=a.retention_days * 86400.0,
                                        aggregate_seconds=float(a.aggregate_seconds), max_entries=a.max_entries)
        self.monotonic = monotonic
        # joins per (appointment, participant); refused joins per source address; and at most one
        # audit write per participant every _LIMITED_AUDIT_SECONDS for the joins the first refuses
        self._joins = KeyedBuckets(config.join_rate_per_second, config.join_burst)
        self._refusals_by_source = KeyedBuckets(config.refused_joins_per_second_per_source,
                                                config.refused_joins_burst_per_source)
        self._limited_audit = KeyedBuckets(1 / _LIMITED_AUDIT_SECONDS, 1)

    # -- join ---------------------------------------------------------------------------------

    async def join(self, token: str, source: str = "") -> JoinResult:
        """Admission for a join token, in DESIGN's order. `source`: the connection's address, for
        rate limiting only.

        Tokens are single-use. Where the jti check sits: last, once every other rule has let the
        join in (to the waiting room or the call), and before the room is written. Its jti is
        then claimed in the store (SET NX with a TTL to exp + leeway on Redis, so on every node);
        a use after the first is refused with `token_used` and changes nothing: the participant
        it names stays where they are, nobody is `replaced`. A join refused for another reason
        (too early, room full, denied, ...) does not spend the token, so "Try again" on such a
        screen works while the token lives, and a refused join writes nothing but its audit
        entry; a copy of such a token lets no one in that the rules would not (and it is minted
        per click behind the portal sign-in, living minutes). The decision is taken on the room
        as read, the claim follows, then the room is written atomically as before: if the room
        changed in between so that the join is refused after all (it just filled up), the token
        stays spent. Reconnecting goes through `resume`, not through the token.
        """
        now = self.clock()
        if source and self._refusals_by_source.empty(source, self.monotonic()):
            return await self._refused(Decision(Code.RATE_LIMITED), None, None, None)
        checked = self.tokens.check(token, now.timestamp())
        if isinstance(checked, Code):
            return await self._refused(Decision(checked), None, None, None, source)
        claims = checked
        if not self._joins.take(f"{claims.apt}\n{claims.sub}", self.monotonic()):
            return await self._refused(Decision(Code.RATE_LIMITED), claims, None, None, source)
        assert claims.jti is not None  # verify() requires it
        apt, client = await self.store.get_many(claims.apt, claims.sub)
        provider = await self.store.get_provider(apt.provider_id) if apt else None
        if claims.role is not Role.CLIENT:
            client = None
        if apt is None:
            return await self._refused(Decision(Code.APPOINTMENT_NOT_FOUND), claims, None, None)
        max_p = self.config.max_participants

        def apply(room: Room | None) -> tuple[Room | None, tuple[Decision, Room | None, Room | None]]:
            before = room
            if room is not None and not room.is_open and room.close_reason == "empty":
                # everyone had left: the next join opens a new session; denials stand, but
                # "admitted in this session" does not carry over
                room = replace(room, opened_at=now, closed_at=None, close_reason="", members=(), cleared=(),
                               node_id=self.node_id)
                before = None
            decision = decide(claims, apt, provider, client, room, now, self.window, max_p)
            if decision.refused:
                return None, (decision, before, room)
            assert decision.presence is not None and decision.role is not None
            current = room.member(claims.sub) if room else None
            since = current.since if current is not None and current.presence is decision.presence else now
            member = RoomMember(claims.sub, decision.role, decision.presence, since, claims.name)
            base = room or Room(apt.id, opened_at=now, node_id=self.node_id)
            after = base.with_member(member)
            return after, (decision, before, after)

        _, (decision, _, current_room) = apply(await self.store.get_room(apt.id))
        if decision.refused:  # refused on the room as it is: the token is not spent
            return await self._refused(decision, claims, apt, current_room)
        remember = max(1, int(claims.exp + self.tokens.leeway_seconds - now.timestamp()) + 1)
        if not await self.store.claim_once(f"jti:{claims.jti}", remember):
            return await self._refused(Decision(Code.TOKEN_USED, decision.role), claims, apt, current_room, source)
        decision, before, after = await self.store.update_room(apt.id, apply)
        if decision.refused:
            return await self._refused(decision, claims, apt, after)
        assert after is not None
        await self._audit(apt.id, "join", claims.sub, claims.sub, decision.code.value)
        self.metrics.admissions.labels(decision.code.value).inc()
        member = after.member(claims.sub)
        assert member is not None
        previous = before.member(claims.sub) if before else None
        if before is None:
            await self.webhooks.emit("room.started", {"appointment_id": apt.id, "node_id": self.node_id})
        if decision.code is Code.WAITING and previous is None:
            await self.webhooks.emit("participant.waiting", self._pdata(apt.id, member))
            self.events.publish(RoomEvent(RoomEventType.WAITING, apt.id, claims.sub, member))
        elif decision.code is Code.ADMITTED and (previous is None or previous.presence is not Presence.ADMITTED):
            await self.webhooks.emit("participant.joined", self._pdata(apt.id, member))
            self.events.publish(RoomEvent(RoomEventType.ADMITTED, apt.id, claims.sub, member))
        resume = await self._new_resume(apt, after, claims.sub, now)
        return JoinResult(decision, claims, apt, after, decision.message, resume)

    # -- resume ---------------------------------------------------------------------------------

    async def resume(self, credential: str, source: str = "") -> ResumeResult:
        """Back into the room with a resume credential, whatever the join token's expiry.

        The credential is bound to a participant, an appointment and a session (the room's
        `opened_at`: a room everyone left and a later join reopened is a new session, and the
        old credentials die with the old one). It works while the room holds the participant:
        admitted or waiting, connected or within the reconnection grace, in an appointment that
        is still scheduled and inside its join window; denied, removed, left, the room closed,
        the appointment cancelled, and it is refused. It is rotated on every use: the presented one is
        deleted (only one of two racing resumes wins) and a new one is returned. The waiting
        room is not passed again: the participant comes back as the room holds them.
        A refused resume writes nothing (and has no audit entry: an unknown credential names
        no appointment). A refused resume spends the source address's refused-join bucket
        (`source`: the connection's address), so a flood of guesses gets rate_limited like one
        of refused joins.
        """
        if source and self._refusals_by_source.empty(source, self.monotonic()):
            self.metrics.resumes.labels("refused_rate_limited").inc()
            return ResumeResult(Code.RATE_LIMITED)
        key = resume_key(credential)
        record = await self.store.get_resume(key) if key is not None else None
        if key is None or record is None:
            return self._resume_refused("unknown", source)
        apt_id, pid = record.get("apt", ""), record.get("pid", "")
        room = await self.store.get_room(apt_id) if apt_id else None
        member = room.member(pid) if room is not None else None
        if room is None or member is None or not room.is_open or format_time(room.opened_at) != record.get("session"):
            return self._resume_refused("not_in_room", source)
        apt = await self.store.get_appointment(apt_id)
        now = self.clock()
        if apt is None or apt.status is not AppointmentStatus.SCHEDULED or not self.window.contains(apt, now):
            return self._resume_refused("appointment", source)  # cancelled, or the window closed, meanwhile
        if not await self.store.take_resume(key):
            return self._resume_refused("used", source)  # another resume with it won
        new = await self._new_resume(apt, room, pid, now)
        code = Code.ADMITTED if member.presence is Presence.ADMITTED else Code.WAITING
        await self._audit(apt_id, "resume", pid, pid, code.value)
        self.metrics.resumes.labels(code.value).inc()
        return ResumeResult(code, member, room, new)

    def _resume_refused(self, why: str, source: str = "") -> ResumeResult:
        self.metrics.resumes.labels(f"refused_{why}").inc()
        if source:
            self._refusals_by_source.spend(source, self.monotonic())
        return ResumeResult(Code.RESUME_INVALID)

    async def _new_resume(self, apt: Appointment | None, room: Room, participant_id: str, now: datetime) -> str:
        """Mint and store a credential for this participant in this session of the room.

        Its record lives until an hour after the join window closes (the room cannot outlive
        the window; an hour covers a later extension until the next rotation sets it again).
        """
        credential, key = new_resume_credential()
        closes = self.window.closes_at(apt) if apt is not None else now
        ttl = max(0, int((closes - now).total_seconds())) + 3600
        await self.store.put_resume(key, {"apt": room.appointment_id, "pid": participant_id,
                                          "session": format_time(room.opened_at)}, ttl)
        return credential

    def window_message(self, apt: Appointment, now: datetime) -> str:
        if now < self.window.opens_at(apt):
            return (f"Telehealth opens {self.config.join_early_minutes} minutes before your appointment. "
                    f"Please open your join link from the portal again then.")
        return "The time for this telehealth appointment has passed."

    async def _refused(self, decision: Decision, claims: JoinClaims | None, apt: Appointment | None,
                       room: Room | None, source: str = "") -> JoinResult:
        self.metrics.admissions.labels(decision.code.value).inc()
        if source:
            self._refusals_by_source.spend(source, self.monotonic())
        apt_id = apt.id if apt else (claims.apt if claims else "")
        audited = bool(apt_id)  # an unverifiable token names no appointment we could file it under
        if audited and decision.code is Code.RATE_LIMITED and claims is not None:
            # a flood is not worth a store write per attempt: the metric counts every one
            audited = self._limited_audit.take(f"{apt_id}\n{claims.sub}", self.monotonic())
        if audited:
            await self._audit(apt_id, "join", claims.sub if claims else "", claims.sub if claims else "",
                              decision.code.value, refusal=True)
        message = decision.message
        if decision.code is Code.OUTSIDE_JOIN_WINDOW and apt is not None:
            message = self.window_message(apt, self.clock())
        return JoinResult(decision, claims, apt, room, message)

    # -- provider / practice actions ------------------------------------------------------------

    async def _authorised(self, appointment_id: str, actor: Actor, action: str) -> Appointment:
        apt = await self.store.get_appointment(appointment_id)
        if apt is None:
            raise ActionError("appointment_not_found", "no such appointment", 404)
        if not may_manage(actor.id, actor.role, actor.authority, apt):
            await self._audit(appointment_id, action, actor.id, "", "forbidden", refusal=True)
            self.metrics.waiting_actions.labels(action, "forbidden").inc()
            raise ActionError("forbidden", f"only the appointment's provider may {action}", 403)
        return apt

    async def admit(self, appointment_id: str, participant_id: str, actor: Actor) -> ActionResult:
        apt = await self._authorised(appointment_id, actor, "admit")
        if apt.role_of(participant_id) is None:
            raise ActionError("not_on_roster", "that participant is not on the appointment's roster", 404)
        now = self.clock()

        def apply(room: Room | None) -> tuple[Room | None, tuple[ActionResult, RoomMember | None]]:
            if room is None or not room.is_open:
                raise ActionError("room_not_open", "the room is not open", 409)
            m = room.member(participant_id)
            if m is not None and m.presence is Presence.ADMITTED:
                return None, (ActionResult.ALREADY_ADMITTED, m)
            if m is None:
                return room.with_clearance(participant_id), (ActionResult.CLEARED, None)
            return room.with_member(replace(m, presence=Presence.ADMITTED, since=now)), (ActionResult.ADMITTED, m)

        result, waited = await self.store.update_room(appointment_id, apply)
        await self._audit(appointment_id, "admit", actor.id, participant_id, result.value)
        self.metrics.waiting_actions.labels("admit", result.value).inc()
        if result is ActionResult.ADMITTED:
            assert waited is not None
            self.metrics.wait_time.observe(max(0.0, (now - waited.since).total_seconds()))
            member = replace(waited, presence=Presence.ADMITTED, since=now)
            await self.webhooks.emit("participant.admitted", {**self._pdata(appointment_id, member),
                                                              "waited_seconds": round((now - waited.since).total_seconds(), 3),
                                                              "actor_id": actor.id})
            await self.webhooks.emit("participant.joined", self._pdata(appointment_id, member))
            self.events.publish(RoomEvent(RoomEventType.ADMITTED, appointment_id, participant_id, member))
        elif result is ActionResult.CLEARED:
            self.events.publish(RoomEvent(RoomEventType.CLEARED, appointment_id, participant_id))
        return result

    async def admit_all(self, appointment_id: str, actor: Actor) -> list[str]:
        await self._authorised(appointment_id, actor, "admit")
        room = await self.store.get_room(appointment_id)
        admitted = []
        for m in room.waiting if room else ():
            try:
                if await self.admit(appointment_id, m.participant_id, actor) is ActionResult.ADMITTED:
                    admitted.append(m.participant_id)
            except ActionError:
                continue  # left or was handled meanwhile
        return admitted

    async def deny(self, appointment_id: str, participant_id: str, actor: Actor, reason: str = "") -> ActionResult:
        await self._authorised(appointment_id, actor, "deny")

        def apply(room: Room | None) -> tuple[Room | None, RoomMember]:
            m = room.member(participant_id) if room else None
            if room is None or m is None or m.presence is not Presence.WAITING:
                raise ActionError("not_waiting", "that participant is not in the waiting room", 409)
            return room.without_member(participant_id, deny=True), m

        member = await self.store.update_room(appointment_id, apply)
        await self._audit(appointment_id, "deny", actor.id, participant_id, "denied")
        self.metrics.waiting_actions.labels("deny", "denied").inc()
        await self.webhooks.emit("participant.denied", {**self._pdata(appointment_id, member), "reason": reason,
                                                        "actor_id": actor.id})
        self.events.publish(RoomEvent(RoomEventType.DENIED, appointment_id, participant_id, member, reason))
        return ActionResult.DENIED

    async def remove(self, appointment_id: str, participant_id: str, actor: Actor, reason: str = "") -> ActionResult:
        await self._authorised(appointment_id, actor, "remove")
        if actor.authority is Authority.PARTICIPANT and participant_id == actor.id:
            raise ActionError("invalid_target", "use leave to leave the room", 400)

        def apply(room: Room | None) -> tuple[Room | None, RoomMember]:
            m = room.member(participant_id) if room else None
            if room is None or m is None:
                raise ActionError("not_in_room", "that participant is not in the room", 404)
            return room.without_member(participant_id, deny=True), m

        member = await self.store.update_room(appointment_id, apply)
        await self._audit(appointment_id, "remove", actor.id, participant_id, "removed")
        self.metrics.waiting_actions.labels("remove", "removed").inc()
        if member.presence is Presence.WAITING:
            await self.webhooks.emit("participant.denied", {**self._pdata(appointment_id, member),
                                                            "reason": reason or "removed", "actor_id": actor.id})
        else:
            await self.webhooks.emit("participant.left", {**self._pdata(appointment_id, member),
                                                          "reason": "removed", "actor_id": actor.id})
        self.events.publish(RoomEvent(RoomEventType.REMOVED, appointment_id, participant_id, member, reason))
        await self._finish_if_empty(appointment_id)
        return ActionResult.REMOVED

    async def mute(self, appointment_id: str, participant_id: str, actor: Actor, kind: str = "",
                   muted: bool = True) -> ActionResult:
        await self._authorised(appointment_id, actor, "mute")
        room = await self.store.get_room(appointment_id)
        m = room.member(participant_id) if room else None
        if m is None or m.presence is not Presence.ADMITTED:
            raise ActionError("not_in_room", "that participant is not in the room", 404)
        await self._audit(appointment_id, "mute", actor.id, participant_id, f"{'muted' if muted else 'unmuted'}"
                                                                           f"{':' + kind if kind else ''}")
        self.metrics.waiting_actions.labels("mute", "muted" if muted else "unmuted").inc()
        self.events.publish(RoomEvent(RoomEventType.MUTED, appointment_id, participant_id, m, kind=kind,
                                      muted=muted))
        return ActionResult.MUTED

    async def leave(self, appointment_id: str, participant_id: str, reason: str = "left",
                    still_gone: Callable[[], bool] | None = None) -> bool:
        """A participant left (or dropped for good). False when they were not in the room.

        Rides out a stalled or restarting store (bounded retries). `still_gone` is asked inside
        the atomic update: a participant who came back meanwhile is not taken out.
        """
        seen: list[RoomMember] = []
        cut_off = [False]  # an attempt failed after it may have written

        def apply(room: Room | None) -> tuple[Room | None, RoomMember | None]:
            if still_gone is not None and not still_gone():
                return None, None
            m = room.member(participant_id) if room else None
            if room is None or m is None:
                # a stall can cut off the reply of a write that happened: that was this leave
                return None, (seen[0] if seen and cut_off[0] else None)
            seen[:] = [m]
            return room.without_member(participant_id, deny=False), m

        async def attempt() -> RoomMember | None:
            try:
                return await self.store.update_room(appointment_id, apply)
            except StoreError:
                cut_off[0] = bool(seen)
                raise

        member = await retrying(attempt, f"leave {appointment_id}/{participant_id}")
        if member is None:
            return False
        await self._audit(appointment_id, "leave", participant_id, participant_id, reason, durable=True)
        await self.webhooks.emit("participant.left", {**self._pdata(appointment_id, member), "reason": reason})
        self.events.publish(RoomEvent(RoomEventType.LEFT, appointment_id, participant_id, member, reason))
        await self._finish_if_empty(appointment_id)
        return True

    async def end(self, appointment_id: str, actor: Actor, reason: str = "ended") -> ActionResult:
        """End the session for everyone; nobody can rejoin it."""
        await self._authorised(appointment_id, actor, "end")
        now = self.clock()

        def apply(room: Room | None) -> tuple[Room | None, tuple[RoomMember, ...]]:
            if room is None or not room.is_open:
                raise ActionError("room_not_open", "the room is not open", 404)
            return replace(room, members=(), closed_at=now, close_reason=reason), room.members

        members = await retrying(lambda: self.store.update_room(appointment_id, apply), f"end {appointment_id}")
        await self._audit(appointment_id, "end", actor.id, "", reason, durable=True)
        for m in members:
            await self.webhooks.emit("participant.left", {**self._pdata(appointment_id, m), "reason": reason})
        await self.webhooks.emit("room.finished", {"appointment_id": appointment_id, "reason": reason})
        self.events.publish(RoomEvent(RoomEventType.CLOSED, appointment_id, reason=reason))
        return ActionResult.ENDED

    async def appointment_changed(self, apt: Appointment) -> None:
        """After every PUT of an appointment: a session it no longer allows ends now, with the reason.

        Cancelled (or completed, no-show, no longer telehealth): ended with that status. Moved so that
        now is outside its join window: ended (`rescheduled` when the window now opens later,
        `window_closed` when it has closed). Clients taken off the roster are removed. Then the
        room's timers are re-armed on the new times (an extension moves the session's end).
        """
        room = await self.store.get_room(apt.id)
        if room is None or not room.is_open:
            return
        now = self.clock()
        reason = ""
        if not apt.telehealth:
            reason = "not_telehealth"
        elif apt.status is not AppointmentStatus.SCHEDULED:
            reason = apt.status.value
        elif now < self.window.opens_at(apt):
            reason = "rescheduled"
        elif now >= self.window.closes_at(apt):
            reason = "window_closed"
        if reason:
            try:
                await self.end(apt.id, Actor.api(), reason)
            except ActionError:
                pass  # closed meanwhile
            return
        for m in room.members:
            if apt.role_of(m.participant_id) is None:  # taken off the roster mid-session
                try:
                    await self.remove(apt.id, m.participant_id, Actor.api(), "removed_from_roster")
                except ActionError:
                    pass  # left meanwhile
        self.events.publish(RoomEvent(RoomEventType.APPOINTMENT_CHANGED, apt.id, appointment=apt))

    async def _finish_if_empty(self, appointment_id: str) -> None:
        now = self.clock()

        def apply(room: Room | None) -> tuple[Room | None, bool]:
            if room is None or not room.is_open or room.members:
                return None, False
            return replace(room, closed_at=now, close_reason="empty"), True

        if await retrying(lambda: self.store.update_room(appointment_id, apply), f"finish {appointment_id}"):
            await self.webhooks.emit("room.finished", {"appointment_id": appointment_id, "reason": "empty"})
            self.events.publish(RoomEvent(RoomEventType.CLOSED, appointment_id, reason="empty"))

    # -- helpers --------------------------------------------------------------------------------

    async def _audit(self, appointment_id: str, action: str, actor_id: str, subject_id: str, code: str,
                     durable: bool = False, refusal: bool = False) -> None:
        """Write an audit entry. Refusals are their own class (folded when repeated); `durable`
        ones (background paths) ride out a store outage."""
        entry = AuditEntry(self.clock(), appointment_id, action, actor_id, subject_id, code)
        policy = self.audit_policy
        if not durable:
            await self.store.append_audit(entry, refusal, policy)
            return
        try:
            await retrying(lambda: self.store.append_audit(entry, refusal, policy), f"audit {appointment_id}",
                           BACKGROUND)
        except StoreError:
            log.error("audit entry lost after retries: %s %s %s %s", appointment_id, action, subject_id, code)

    def _pdata(self, appointment_id: str, m: RoomMember) -> dict[str, object]:
        return {"appointment_id": appointment_id, "participant_id": m.participant_id, "role": m.role.value,
                "at": format_time(self.clock())}
