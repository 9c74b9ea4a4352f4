"""HTTP side of signaling: the WebSocket endpoint and the reference web client."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling import protocol as p
from signaling.hub import Hub
from signaling.session import Session

WEB_DIR = Path(__file__).resolve().parent / "web"
HUB = web.AppKey("signaling_hub", Hub)


def source_key(address: str) -> str:
    """What the per-source cap counts: an IPv4 address, or the /64 of an IPv6 one (a host is
    handed a whole /64, so its addresses cost nothing to vary)."""
    if ":" not in address:
        return address
    try:
        net = ipaddress.IPv6Network((address.split("%", 1)[0], 64), strict=False)
    except ValueError:
        return address
    return str(net)


class UnjoinedGate:
    """Counts WebSockets that have not joined yet, per source and in total, and caps them.

    A slot is taken before the upgrade is accepted and given back once the first message was
    handled (joined, waiting, refused) or the connection ended, so a source cannot hold more
    than `per_source` sockets without a join behind them (429 past that). When the node holds
    `total`, the oldest unjoined socket is let go (closed 1013, try again) to make room, rather
    than the new one refused: many sources each under their cap could otherwise fill the node
    and keep every legitimate join out for as long as they reconnect every join deadline,
    while a browser sends its join within a round trip of the upgrade and so is never the
    oldest for long.
    """

    __slots__ = ("per_source", "total", "by_source", "_unjoined", "_tickets")

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self.by_source: dict[str, int] = {}
        self._unjoined: dict[int, tuple[str, Callable[[], None]]] = {}  # ticket -> (source key, let go); oldest first
        self._tickets = itertools.count(1)

    @property
    def count(self) -> int:
        return len(self._unjoined)

    def acquire(self, source: str, let_go: Callable[[], None]) -> tuple[int, str]:
        """Take a slot for `source`: (ticket, "") when taken, (0, cap) when refused ("per_source",
        or "total" when the node takes no unjoined socket at all). `let_go` is called if the slot
        is later taken back to make room for a newer socket; the ticket is then released already."""
        key = source_key(source)
        n = self.by_source.get(key, 0)
        if n >= self.per_source:
            return 0, "per_source"
        if self.total <= 0:
            return 0, "total"
        while len(self._unjoined) >= self.total:
            oldest = next(iter(self._unjoined))
            _, oldest_let_go = self._unjoined[oldest]
            self.release(oldest)
            oldest_let_go()
        n = self.by_source.get(key, 0)  # letting one go may have freed a slot of this source
        ticket = next(self._tickets)
        self._unjoined[ticket] = (key, let_go)
        self.by_source[key] = n + 1
        return ticket, ""

    def release(self, ticket: int) -> None:
        """Give a slot back (idempotent)."""
        entry = self._unjoined.pop(ticket, None)
        if entry is None:
            return
        key = entry[0]
        n = self.by_source.get(key, 0)
        if n <= 1:
            self.by_source.pop(key, None)
        else:
            self.by_source[key] = n - 1


GATE = web.AppKey("signaling_unjoined_gate", UnjoinedGate)

PAGE_HEADERS = web.AppKey("signaling_page_headers", dict)


def page_headers(frame_ancestors: list[str]) -> dict[str, str]:
    """Headers of the join page and its files.

    The page needs camera/microphone (and screen capture), its own scripts and styles, and
    WebSockets (to this node, or another one a `redirect` names); nothing else: no plugins,
    forms or <base>. The token is in the URL's fragment, which browsers never send, and
    no-referrer keeps the rest of the URL out of other sites' logs. No site may frame the
    page unless http.frame_ancestors names it (clickjacking of the admit/deny buttons).
    """
    ancestors = " ".join(frame_ancestors) if frame_ancestors else "'none'"
    headers = {
        "Cache-Control": "no-store",
        "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
                                   "media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; "
                                   "object-src 'none'; base-uri 'none'; form-action 'none'; "
                                   f"frame-ancestors {ancestors}",
        "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self), geolocation=(), "
                              "payment=(), usb=()",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    if not frame_ancestors:
        headers["X-Frame-Options"] = "DENY"
    return headers


async def rtc(request: web.Request) -> web.StreamResponse:
    hub, gate = request.app[HUB], request.app[GATE]
    metrics = hub.metrics
    source = request.remote or ""
    ws = web.WebSocketResponse(max_msg_size=2 * p.MAX_FRAME_BYTES, heartbeat=20.0)
    released = let_go = False
    session: Session | None = None

    def on_let_go() -> None:  # the gate took this slot back for a newer socket
        nonlocal released, let_go
        released = let_go = True
        metrics.signaling_unjoined.dec()
        metrics.signaling_unjoined_let_go.inc()
        if session is not None:
            session.let_go()

    ticket, refused = gate.acquire(source, on_let_go)
    if refused:
        metrics.signaling_refused.labels(refused).inc()
        if refused == "per_source":
            return _refusal(429, "too_many_connections", "too many connections from your address are waiting to "
                                                         "join; try again shortly")
        return _refusal(503, "server_busy", "this server has too many connections waiting to join; try again shortly")
    metrics.signaling_unjoined.inc()

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            gate.release(ticket)
            metrics.signaling_unjoined.dec()

    try:
        await ws.prepare(request)
        if let_go:  # let go while the upgrade was being answered
            await ws.close(code=p.CLOSE_TRY_AGAIN, message=b"server_busy")
            return ws
        metrics.signaling_connections.inc()
        try:
            session = Session(hub, ws, source, on_first_message=release)
            await session.run()
        finally:
            metrics.signaling_connections.dec()
    finally:
        release()
    return ws


def _refusal(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers={"Retry-After": "1", "Connection": "close"})


async def join_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers=request.app[PAGE_HEADERS])


async def _static_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The page's files get its headers too (not no-store: their URLs carry a version)."""
    if request.path.startswith("/web/"):
        for k, v in request.app[PAGE_HEADERS].items():
            if k != "Cache-Control":
                response.headers[k] = v


def add_signaling(app: web.Application, node: Any) -> None:
    """Routes /v1/rtc, /join and /web/ on the node's app; the hub lives with the app."""
    app.router.add_get("/v1/rtc", rtc)
    app.router.add_get("/join", join_page)
    app.router.add_static("/web/", WEB_DIR, show_index=False, append_version=True)

    cfg = node.config.signaling
    app[GATE] = UnjoinedGate(cfg.max_unjoined_per_source, cfg.max_unjoined)
    app[PAGE_HEADERS] = page_headers(node.config.http.frame_ancestors)
    app.on_response_prepare.append(_static_headers)

    async def hub_ctx(app: web.Application) -> Any:
        app[HUB] = Hub(node)
        yield
        await app[HUB].close()

    app.cleanup_ctx.append(hub_ctx)
