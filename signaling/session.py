"""One participant's signaling session: a WebSocket and its state machine.

new --join/resume--> waiting --admitted--> joined --leave/removed/room closed--> closed
        \\--refused--> closed                                          (a dropped socket while
                                                                       waiting or joined:
                                                                       reconnect grace)

`waiting` and `joined` carry `resume`, a credential for `resume{credential}` as the first
message of a later socket: back in as the room holds the participant, whatever the join
token's expiry; each use returns a new one in the next `waiting`/`joined`.

Before join nothing is answered: the first frame must arrive within the join deadline
(signaling.join_timeout_seconds, counted from accept, 4408 otherwise) and be one of
`protocol.FIRST_MESSAGES`, at most MAX_FIRST_FRAME_BYTES long; anything else gets one error
and close code 4400. Every refused frame is counted by code; malformed frames (FrameError)
from a joined connection close it after MAX_MALFORMED_FRAMES. None of it is logged.

Messages are handled one at a time in the order they arrive; everything the server says
goes through one outbox drained by one writer task, so room events raised by callbacks
never interleave with a reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from control.domain.admission import MESSAGES, Authority, Code
from control.domain.models import Presence, Role, format_time
from control.media import MediaError
from control.rooms import ActionError, Actor
from control.store.base import StoreError
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.hub import Hub

log = logging.getLogger("telesfu.signaling")


class State(StrEnum):
    NEW = "new"
    WAITING = "waiting"
    JOINED = "joined"
    CLOSED = "closed"


class Session:
    def __init__(self, hub: Hub, ws: web.WebSocketResponse, source: str = "",
                 on_first_message: Callable[[], None] | None = None) -> None:
        self.hub = hub
        self.ws = ws
        self.source = source  # the peer's address: rate limits only, never logged or labelled
        self.state = State.NEW
        self.appointment_id = ""
        self.participant_id = ""
        self.role: Role | None = None
        self.name = ""
        self.joined_at = 0.0
        self.limiter = p.RateLimiter(time.monotonic())
        self.violations = 0
        self.malformed = 0
        self._on_first_message = on_first_message  # the first frame was handled (or never came)
        self._first_wait: asyncio.Timeout | None = None  # the join deadline, while the first frame is awaited
        self._let_go = False
        self._outbox: asyncio.Queue[tuple[str, int | None, str]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.left = False  # left on purpose (or was removed): no reconnect grace
        self.resume = ""  # the credential this session hands out in waiting/joined

    # -- output ---------------------------------------------------------------------------------

    def send(self, frame: str) -> None:
        if self.state is not State.CLOSED:
            self._outbox.put_nowait((frame, None, ""))

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close the socket with `code`."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_code = code
        self._outbox.put_nowait(("", code, reason))

    async def _write(self) -> None:
        while True:
            frame, code, reason = await self._outbox.get()
            try:
                if code is not None:
                    await self.ws.close(code=code, message=reason.encode()[:120])
                    return
                await self.ws.send_str(frame)
            except (ConnectionResetError, RuntimeError):
                return

    # -- the connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write(), name="signaling-writer")
        try:
            await self._receive()
        finally:
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
            await self.hub.session_ended(self)
            if not self.ws.closed:
                self._outbox.put_nowait(("", self.close_code or p.CLOSE_LEFT, ""))
            try:
                await asyncio.wait_for(self._writer, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()

    async def _receive(self) -> None:
        try:
            try:
                async with asyncio.timeout(self.hub.node.config.signaling.join_timeout_seconds) as wait:
                    self._first_wait = wait
                    if self._let_go:
                        wait.reschedule(asyncio.get_running_loop().time())
                    first = await self.ws.receive()
            except TimeoutError:
                if self._let_go:
                    self.send(p.error("server_busy", "this server has too many connections waiting to join; "
                                                     "try again shortly"))
                    self.close(p.CLOSE_TRY_AGAIN, "server_busy")
                    return
                self.hub.metrics.signaling_errors.labels("join_timeout").inc()
                self.send(p.error("join_timeout", "send join{token} first"))
                self.close(p.CLOSE_CODES["join_timeout"], "join timeout")
                return
            finally:
                self._first_wait = None
            await self._handle_frame(first)
        finally:
            if self._on_first_message is not None:
                self._on_first_message()
                self._on_first_message = None
        while self.state is not State.CLOSED:
            m = await self.ws.receive()
            await self._handle_frame(m)

    def let_go(self) -> None:
        """Give up waiting for the first frame (the node needs the slot for a newer socket):
        the session says server_busy and closes 1013, as at its join deadline."""
        self._let_go = True
        if self._first_wait is not None:
            self._first_wait.reschedule(asyncio.get_running_loop().time())

    async def _handle_frame(self, m: Any) -> None:
        if m.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
            return
        if not self.limiter.allow(time.monotonic()):
            self.violations += 1
            self.hub.metrics.signaling_errors.labels("rate_limited").inc()
            if self.violations > 100:
                self.close(p.CLOSE_CODES["rate_limited"], "too many messages")
            elif self.violations % 10 == 1:
                self.send(p.error("rate_limited", "too many messages; slow down"))
            return
        try:
            if m.type is not WSMsgType.TEXT:
                raise p.FrameError("binary_frame", "frames must be JSON text")
            limit = p.MAX_FIRST_FRAME_BYTES if self.state is State.NEW else p.MAX_FRAME_BYTES
            await self._dispatch(p.parse_message(m.data, limit))
        except p.ProtocolError as e:
            self.hub.metrics.signaling_errors.labels(e.code).inc()
            self.send(p.error(e.code, e.message))
            if self.state is State.NEW:  # the first message must be a valid join (or resume)
                self.close(p.CLOSE_CODES["protocol_error"], e.code)
            elif isinstance(e, p.FrameError):
                self.malformed += 1
                if self.malformed >= p.MAX_MALFORMED_FRAMES:
                    self.close(p.CLOSE_CODES["protocol_error"], "too many malformed frames")
        except ActionError as e:
            self.hub.metrics.signaling_errors.labels(e.code).inc()
            self.send(p.error(e.code, e.message))
        except MediaError as e:
            self.hub.metrics.signaling_errors.labels("media").inc()
            self.send(p.error(e.code, e.message))
        except StoreError:  # fail closed: a join the store cannot decide is not let in
            self.hub.metrics.signaling_errors.labels("store_unavailable").inc()
            self.send(p.error("store_unavailable", "the server cannot reach its store; try again shortly"))
            if self.state is State.NEW:
                self.close(p.CLOSE_TRY_AGAIN, "store unavailable")
        except Exception:
            log.exception("signaling: message from %s failed", self.participant_id or "(not joined)")
            self.send(p.error("internal_error", "the server could not handle that message"))

    # -- messages ---------------------------------------------------------------------------------

    async def _dispatch(self, m: p.Message) -> None:
        if self.state is State.NEW:  # nothing is answered before join, not even ping
            if not isinstance(m, p.FIRST_MESSAGES):
                raise p.ProtocolError("not_joined", "the first message must be join{token} or resume{credential}")
            if isinstance(m, p.Join):
                await self._join(m.token)
            elif isinstance(m, p.Resume):
                await self._resume(m.credential)
            return
        if isinstance(m, p.Ping):
            self.send(p.msg("pong"))
            return
        if isinstance(m, p.FIRST_MESSAGES):
            raise p.ProtocolError("already_joined", "this connection already joined")
        if isinstance(m, p.Leave):
            await self.hub.leave(self)
            return
        if self.state is not State.JOINED:
            raise p.ProtocolError("not_admitted", "wait until you are admitted")
        media = self.hub.media
        apt, pid = self.appointment_id, self.participant_id
        if isinstance(m, p.PublishOffer):
            sdp = await media.publish_offer(apt, pid, m.sdp)
            self.send(p.msg("publish_answer", sdp=sdp))
        elif isinstance(m, p.SubscribeAnswer):
            await media.subscribe_answer(apt, pid, m.sdp)
        elif isinstance(m, p.Mute):
            kind = m.track_id if m.track_id in ("audio", "video") else _kind_of(m.track_id, pid)
            await media.set_muted(apt, pid, kind, m.muted, by=pid)
        elif isinstance(m, p.Admit | p.AdmitAll | p.Deny | p.Remove | p.MuteParticipant | p.EndSession):
            await self._manage(m)
        else:  # pragma: no cover - every message type is handled above
            raise p.ProtocolError("unknown_type", "unhandled message")

    async def _manage(self, m: p.Message) -> None:
        rooms = self.hub.rooms
        actor = Actor(self.participant_id, Authority.PARTICIPANT, self.role)
        apt = self.appointment_id
        if isinstance(m, p.Admit):
            await rooms.admit(apt, m.participant_id, actor)
        elif isinstance(m, p.AdmitAll):
            await rooms.admit_all(apt, actor)
        elif isinstance(m, p.Deny):
            await rooms.deny(apt, m.participant_id, actor, m.reason)
        elif isinstance(m, p.Remove):
            await rooms.remove(apt, m.participant_id, actor)
        elif isinstance(m, p.MuteParticipant):
            await rooms.mute(apt, m.participant_id, actor, m.kind, m.muted)
        elif isinstance(m, p.EndSession):
            await rooms.end(apt, actor, "ended_by_provider")

    async def _join(self, token: str) -> None:
        self.joined_at = time.monotonic()
        if self.hub.draining:  # refused before anything is decided or stored
            self.hub.metrics.joins.labels("refused").inc()
            self.send(p.error("node_draining", "this server is shutting down; try again in a moment"))
            self.close(p.CLOSE_GOING_AWAY, "node draining")
            return
        result = await self.hub.rooms.join(token, source=self.source)
        code = result.code
        self.hub.metrics.joins.labels("refused" if result.decision.refused else code.value).inc()
        if result.decision.refused:
            self.send(p.error(code.value, result.message or result.decision.message))
            self.close(p.CLOSE_CODES[code.value], code.value)
            return
        assert result.claims is not None and result.room is not None
        self.appointment_id = result.claims.apt
        self.participant_id = result.claims.sub
        self.role = result.claims.role
        self.name = result.claims.name
        self.resume = result.resume
        self.hub.attach(self)
        if code is Code.WAITING:
            self.state = State.WAITING
            self.send(p.msg("waiting", message=result.decision.message,
                            provider_present=result.room.provider_present(), resume=self.resume))
            return
        await self.enter()

    async def _resume(self, credential: str) -> None:
        """resume{credential}: the participant the room still holds, back on this socket (an
        older socket of theirs is closed with `replaced`); no waiting room, no token."""
        self.joined_at = time.monotonic()
        result = await self.hub.rooms.resume(credential, source=self.source)
        if result.refused or result.member is None or result.room is None:
            self.hub.metrics.joins.labels("refused").inc()
            self.send(p.error(result.code.value, result.message))
            self.close(p.CLOSE_CODES[result.code.value], result.code.value)
            return
        self.hub.metrics.joins.labels("resumed").inc()
        member = result.member
        self.appointment_id = result.room.appointment_id
        self.participant_id = member.participant_id
        self.role = member.role
        self.name = member.name
        self.resume = result.resume
        self.hub.attach(self)
        if result.code is Code.WAITING:
            self.state = State.WAITING
            self.send(p.msg("waiting", message=MESSAGES[Code.WAITING],
                            provider_present=result.room.provider_present(), resume=self.resume))
            return
        await self.enter()

    async def enter(self) -> None:
        """Admitted: say who is here, then bring the participant into the media room."""
        room = await self.hub.store.get_room(self.appointment_id)
        apt = await self.hub.store.get_appointment(self.appointment_id)
        me = room.member(self.participant_id) if room else None
        if self.state is State.CLOSED or self.left or me is None or me.presence is not Presence.ADMITTED:
            return  # removed, denied or closed while this was on its way: the store decided, not us
        members = room.members if room else ()
        others = [_person(m) for m in members
                  if m.presence is Presence.ADMITTED and m.participant_id != self.participant_id]
        joined: dict[str, Any] = {
            "room": {"appointment_id": self.appointment_id, "group": bool(apt and apt.is_group)},
            "participant": {"participant_id": self.participant_id, "role": self.role.value if self.role else "",
                            "name": self.name},
            "participants": others,
            "resume": self.resume,
        }
        if self.role is Role.PROVIDER:
            joined["waiting"] = [_waiting(m) for m in members if m.presence is Presence.WAITING]
        self.state = State.JOINED
        self.send(p.msg("joined", **joined))
        try:
            await self.hub.enter_media(self)
        except MediaError as e:  # no media worker right now: the client reconnects and tries again
            log.warning("signaling: %s could not enter media (%s); asking it to reconnect", self.participant_id,
                        e.code)
            self.send(p.error("media_restarted", "the media server is restarting; reconnecting"))
            self.close(p.CLOSE_SERVICE_RESTART, "media unavailable")
            return
        if self.role is Role.PROVIDER:
            for m in members:
                if m.presence is Presence.WAITING:
                    self.send(p.msg("participant_waiting", participant=_waiting(m)))


def _person(m: Any) -> dict[str, str]:
    return {"participant_id": m.participant_id, "role": m.role.value, "name": m.name}


def _waiting(m: Any) -> dict[str, str]:
    return {"participant_id": m.participant_id, "name": m.name, "since": format_time(m.since)}


def _kind_of(track_id: str, participant_id: str) -> str:
    """A track id is `<participant>:<kind>:<n>`; only one's own tracks can be muted this way."""
    parts = track_id.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != participant_id or parts[1] not in ("audio", "video"):
        raise p.ProtocolError("invalid_track", "track_id must be audio, video or one of your own track ids")
    return parts[1]
