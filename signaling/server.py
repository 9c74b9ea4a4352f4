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

# The page needs camera/microphone, its own scripts and a WebSocket to this origin; nothing else.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; "
                               "media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors *",
    "Permissions-Policy": "camera=(self), microphone=(self)",
    "Referrer-Policy": "no-referrer",
}


async def rtc(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    ws = web.WebSocketResponse(max_msg_size=2 * p.MAX_FRAME_BYTES, heartbeat=20.0)
    await ws.prepare(request)
    hub.metrics.signaling_connections.inc()
    try:
        await Session(hub, ws, request.remote or "").run()
    finally:
        hub.metrics.signaling_connections.dec()
    return ws


async def join_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers=_PAGE_HEADERS)


def add_signaling(app: web.Application, node: Any) -> None:
    """Routes /v1/rtc, /join and /web/ on the node's app; the hub lives with the app."""
    app.router.add_get("/v1/rtc", rtc)
    app.router.add_get("/join", join_page)
    app.router.add_static("/web/", WEB_DIR, show_index=False, append_version=True)

    async def hub_ctx(app: web.Application) -> Any:
        app[HUB] = Hub(node)
        yield
        await app[HUB].close()

    app.cleanup_ctx.append(hub_ctx)
