"""The control REST API: thin aiohttp handlers over the rooms service and the store."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control.api import validation as v
from control.api.openapi import openapi_document
from control.api.validation import RequestError
from control.domain.admission import Authority
from control.domain.models import Role, Room, format_time, utcnow
from control.node import Node
from control.rooms import ActionError, Actor
from control.store.base import StoreError

log = logging.getLogger("telesfu.api")

NODE = web.AppKey("node", Node)
_PUBLIC = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestError as e:
        return error(e.status, e.code, e.message)
    except ActionError as e:
        return error(e.status, e.code, e.message)
    except StoreError:
        log.exception("store unavailable")
        return error(503, "store_unavailable", "the store is unavailable; try again")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, "http_error")
        message = "request body too large" if e.status == 413 else (e.reason or code)
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return error(e.status, code, message, headers)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error(500, "internal_error", "internal error")


def metrics_middleware(node: Node) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            info = request.match_info
            route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
            node.metrics.http_requests.labels(route, request.method, str(status)).inc()
            node.metrics.http_latency.labels(route, request.method).observe(time.perf_counter() - t0)

    return mw


def _bearer_matches(request: web.Request, keys: list[bytes]) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    ok = False
    if scheme.lower() == "bearer" and given:
        g = given.strip().encode()
        for k in keys:  # compare against every key: time does not tell which matched
            ok |= hmac.compare_digest(g, k)
    return ok


def auth_middleware(api_keys: list[str]) -> Any:
    keys = [k.encode() for k in api_keys]

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/v1/") and path not in _PUBLIC and path != "/v1/rtc":
            if not _bearer_matches(request, keys):
                return error(401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)",
                             {"WWW-Authenticate": 'Bearer realm="telesfu"'})
        return await handler(request)

    return mw


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body, read within http.body_timeout_seconds and parsed within bounds
    (control/jsonparse: depth 32, numbers of at most 100 characters, no NaN): RequestError otherwise."""
    try:
        async with asyncio.timeout(request.app[NODE].config.http.body_timeout_seconds):
            raw = await request.read()
    except TimeoutError:
        raise RequestError("body_timeout", "the request body did not arrive in time", 408) from None
    return v.parse_json_body(raw, optional=optional)


def room_json(room: Room) -> dict[str, Any]:
    return {
        "appointment_id": room.appointment_id,
        "opened_at": format_time(room.opened_at),
        "closed_at": format_time(room.closed_at) if room.closed_at else None,
        "close_reason": room.close_reason,
        "node_id": room.node_id,
        "participants": [{"participant_id": m.participant_id, "role": m.role.value, "presence": m.presence.value,
                          "since": format_time(m.since), "name": m.name} for m in room.members],
        "waiting_count": len(room.waiting),
        "admitted_count": len(room.admitted),
    }


# -- handlers -----------------------------------------------------------------------------------

async def put_provider(request: web.Request) -> web.Response:
    node = request.app[NODE]
    provider = v.provider_from_body(v.check_id(request.match_info["id"], "provider id"), await read_json(request))
    prev = await node.store.put_provider(provider)
    return web.json_response(provider.to_json(), status=200 if prev else 201)


async def get_provider(request: web.Request) -> web.Response:
    provider = await request.app[NODE].store.get_provider(v.check_id(request.match_info["id"], "provider id"))
    if provider is None:
        raise RequestError("provider_not_found", "no such provider", 404)
    return web.json_response(provider.to_json())


async def put_client(request: web.Request) -> web.Response:
    node = request.app[NODE]
    client = v.client_from_body(v.check_id(request.match_info["id"], "client id"), await read_json(request))
    prev = await node.store.put_client(client)
    return web.json_response(client.to_json(), status=200 if prev else 201)


async def get_client(request: web.Request) -> web.Response:
    client = await request.app[NODE].store.get_client(v.check_id(request.match_info["id"], "client id"))
    if client is None:
        raise RequestError("client_not_found", "no such client", 404)
    return web.json_response(client.to_json())


async def put_appointment(request: web.Request) -> web.Response:
    node = request.app[NODE]
    apt_id = v.check_id(request.match_info["id"], "appointment id")
    apt = v.appointment_from_body(apt_id, await read_json(request), node.config.rooms.max_participants)
    provider, clients, current = await node.store.get_references(apt.provider_id, apt.client_ids, apt_id)
    if provider is None:
        raise RequestError("unknown_provider", f"provider {apt.provider_id} is not registered", 422)
    for cid, client in zip(apt.client_ids, clients, strict=True):
        if client is None:
            raise RequestError("unknown_client", f"client {cid} is not registered", 422)
    now = utcnow()
    if current is not None and current.telehealth != apt.telehealth and current.starts_at <= now:
        raise RequestError("appointment_started", "telehealth can only be switched before the appointment starts",
                           409)
    prev = await node.store.put_appointment(apt)
    await node.reminders.appointment_changed(apt)
    await node.rooms.appointment_changed(apt)
    return web.json_response(apt.to_json(), status=200 if prev else 201)


async def get_appointment(request: web.Request) -> web.Response:
    apt = await request.app[NODE].store.get_appointment(v.check_id(request.match_info["id"], "appointment id"))
    if apt is None:
        raise RequestError("appointment_not_found", "no such appointment", 404)
    return web.json_response(apt.to_json())


async def post_token(request: web.Request) -> web.Response:
    node = request.app[NODE]
    apt_id = v.check_id(request.match_info["id"], "appointment id")
    participant_id = v.token_request(await read_json(request))
    apt = await node.store.get_appointment(apt_id)
    if apt is None:
        raise RequestError("appointment_not_found", "no such appointment", 404)
    role = apt.role_of(participant_id)
    if role is None:
        raise RequestError("not_on_roster", "that participant is not on the appointment's roster", 404)
    record = await (node.store.get_provider(participant_id) if role is Role.PROVIDER
                    else node.store.get_client(participant_id))
    name = record.name if record is not None else ""
    minted = node.tokens.mint(participant_id, role, apt_id, name)
    node.metrics.tokens_minted.inc()
    from datetime import UTC, datetime

    return web.json_response({
        "token": minted.token,
        "expires_at": format_time(datetime.fromtimestamp(minted.expires_at, UTC)),
        "join_url": f"{node.config.public_url()}/join#token={minted.token}",
    }, status=201)


async def list_rooms(request: web.Request) -> web.Response:
    rooms = await request.app[NODE].store.list_open_rooms()
    return web.json_response({"rooms": [room_json(r) for r in sorted(rooms, key=lambda r: r.appointment_id)]})


async def get_room(request: web.Request) -> web.Response:
    room = await request.app[NODE].store.get_room(v.check_id(request.match_info["id"], "appointment id"))
    if room is None:
        raise RequestError("room_not_found", "no room has been opened for that appointment", 404)
    return web.json_response(room_json(room))


async def participant_action(request: web.Request) -> web.Response:
    node = request.app[NODE]
    apt_id = v.check_id(request.match_info["id"], "appointment id")
    pid = v.check_id(request.match_info["pid"], "participant id")
    action = request.match_info["action"]
    actor = Actor.api()
    if action == "admit":
        v.action_body(await read_json(request, optional=True), set())
        result = await node.rooms.admit(apt_id, pid, actor)
    elif action == "deny":
        b = v.action_body(await read_json(request, optional=True), {"reason"})
        result = await node.rooms.deny(apt_id, pid, actor, b.get("reason", ""))
    elif action == "remove":
        b = v.action_body(await read_json(request, optional=True), {"reason"})
        result = await node.rooms.remove(apt_id, pid, actor, b.get("reason", ""))
    elif action == "mute":
        b = v.action_body(await read_json(request, optional=True), {"kind", "muted"})
        result = await node.rooms.mute(apt_id, pid, actor, b.get("kind", ""), b.get("muted", True))
    else:  # the route only matches the four actions
        raise RequestError("not_found", "unknown action", 404)
    room = await node.store.get_room(apt_id)
    return web.json_response({"result": result.value, "room": room_json(room) if room else None})


async def admit_all(request: web.Request) -> web.Response:
    node = request.app[NODE]
    apt_id = v.check_id(request.match_info["id"], "appointment id")
    v.action_body(await read_json(request, optional=True), set())
    admitted = await node.rooms.admit_all(apt_id, Actor.api())
    return web.json_response({"admitted": admitted})


async def delete_room(request: web.Request) -> web.Response:
    node = request.app[NODE]
    apt_id = v.check_id(request.match_info["id"], "appointment id")
    await node.rooms.end(apt_id, Actor.api(), "ended")
    room = await node.store.get_room(apt_id)
    assert room is not None
    return web.json_response(room_json(room))


async def get_audit(request: web.Request) -> web.Response:
    apt_id = request.query.get("appointment_id")
    if not apt_id:
        raise RequestError("missing_parameter", "appointment_id is required")
    v.check_id(apt_id, "appointment_id")
    limit_s = request.query.get("limit", "1000")
    if not _LIMIT_RE.fullmatch(limit_s) or not 1 <= int(limit_s) <= 10000:  # ASCII digits only: int() takes "²"
        raise RequestError("invalid_parameter", "limit must be an integer from 1 to 10000")
    after_s = request.query.get("after")  # absent: from the start; present, even empty: an entry id
    if after_s is not None and not _AFTER_RE.fullmatch(after_s):  # ASCII digits only, as for limit
        raise RequestError("invalid_parameter", "after must be an entry id (a decimal integer)")
    after = int(after_s) if after_s is not None else None
    limit = int(limit_s)
    entries = await request.app[NODE].store.list_audit(apt_id, limit, after)
    body: dict[str, Any] = {"entries": [e.to_json() for e in entries]}
    if after is not None:
        body["next_after"] = entries[-1].id if len(entries) == limit else None  # None: nothing more yet
    return web.json_response(body)


_LIMIT_RE = re.compile(r"[0-9]{1,5}")
_AFTER_RE = re.compile(r"[0-9]{1,18}")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if await node.ready():
        return web.json_response({"status": "ready", "store": node.store.kind})
    if node.draining:
        return error(503, "node_draining", "the node is shutting down and takes no new sessions")
    return error(503, "not_ready", "the node is not ready (store unreachable or starting)")


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    token = node.config.metrics.bearer_token
    if token and not _bearer_matches(request, [token.encode()]):
        return error(401, "unauthorized", "/metrics wants Authorization: Bearer <metrics.bearer_token>",
                     {"WWW-Authenticate": 'Bearer realm="telesfu-metrics"'})
    resp = web.Response(body=generate_latest(node.metrics.registry))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[NODE].config.public_url()))


def build_app(node: Node, *, manage_node: bool = True) -> web.Application:
    """The aiohttp application. With manage_node the app starts and stops the node."""
    app = web.Application(
        client_max_size=node.config.http.max_body_bytes,
        middlewares=[metrics_middleware(node), errors_middleware, auth_middleware(node.config.auth.api_keys)],
    )
    app[NODE] = node
    r = app.router
    r.add_put("/v1/providers/{id}", put_provider)
    r.add_get("/v1/providers/{id}", get_provider)
    r.add_put("/v1/clients/{id}", put_client)
    r.add_get("/v1/clients/{id}", get_client)
    r.add_put("/v1/appointments/{id}", put_appointment)
    r.add_get("/v1/appointments/{id}", get_appointment)
    r.add_post("/v1/appointments/{id}/tokens", post_token)
    r.add_get("/v1/rooms", list_rooms)
    r.add_get("/v1/rooms/{id}", get_room)
    r.add_delete("/v1/rooms/{id}", delete_room)
    r.add_post("/v1/rooms/{id}/admit_all", admit_all)
    r.add_post("/v1/rooms/{id}/participants/{pid}/{action:admit|deny|remove|mute}", participant_action)
    r.add_get("/v1/audit", get_audit)
    r.add_get("/v1/openapi.json", openapi)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    if not node.config.metrics.port:  # else on its own listener: build_metrics_app
        r.add_get("/metrics", metrics)
    if manage_node:
        async def lifecycle(app: web.Application) -> Any:
            await node.start()
            yield
            await node.stop()

        app.cleanup_ctx.append(lifecycle)
    if node.media is not None:
        from signaling.server import add_signaling

        add_signaling(app, node)
    return app


def build_metrics_app(node: Node) -> web.Application | None:
    """/metrics alone, for its own listener (metrics.host:metrics.port); None when metrics.port is 0."""
    if not node.config.metrics.port:
        return None
    app = web.Application(client_max_size=1024)
    app[NODE] = node
    app.router.add_get("/metrics", metrics)
    return app


__all__ = ["build_app", "build_metrics_app", "NODE", "Authority"]
