"""HTTP side of signaling: the WebSocket endpoint and the reference web client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from signaling import protocol as p
from signaling.hub import Hub
from signaling.session import Session

WEB_DIR = Path(__file__).resolve().parent / "web"
HUB = web.AppKey("signaling_hub", Hub)


class UnjoinedGate:
    """Counts WebSockets that have not joined yet, per source address and in total, and caps them.

    A slot is taken before the upgrade is accepted and given back once the first message was
    handled (joined, waiting, refused) or the connection ended, so a source cannot hold more
    than `per_source` sockets (and the node more than `total`) without a join behind them.
    """

    __slots__ = ("per_source", "total", "count", "by_source")

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self.count = 0
        self.by_source: dict[str, int] = {}

    def acquire(self, source: str) -> str:
        """Take a slot for `source`: "" when taken, else the cap that refused it ("per_source", "total")."""
        if self.count >= self.total:
            return "total"
        n = self.by_source.get(source, 0)
        if n >= self.per_source:
            return "per_source"
        self.by_source[source] = n + 1
        self.count += 1
        return ""

    def release(self, source: str) -> None:
        n = self.by_source.get(source, 0)
        if n <= 0:
            return
        self.count -= 1
        if n == 1:
            del self.by_source[source]
        else:
            self.by_source[source] = n - 1


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
    source = request.remote or ""
    refused = gate.acquire(source)
    if refused:
        hub.metrics.signaling_refused.labels(refused).inc()
        if refused == "per_source":
            return _refusal(429, "too_many_connections", "too many connections from your address are waiting to "
                                                         "join; try again shortly")
        return _refusal(503, "server_busy", "this server has too many connections waiting to join; try again shortly")
    metrics = hub.metrics
    metrics.signaling_unjoined.inc()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            gate.release(source)
            metrics.signaling_unjoined.dec()

    try:
        ws = web.WebSocketResponse(max_msg_size=2 * p.MAX_FRAME_BYTES, heartbeat=20.0)
        await ws.prepare(request)
        metrics.signaling_connections.inc()
        try:
            await Session(hub, ws, source, on_first_message=release).run()
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
