"""The node's HTTP listeners (control API, signaling, web client, /metrics), with the limits a
public listener needs. `telesfu serve`, the tests and the bench all start them through here.

- Request-header and idle timeout: aiohttp 3.14 arms its keep-alive timer when a connection
  is accepted and again after each response, and closes the connection if the timer fires
  while no complete request has arrived; bytes trickling in do not re-arm it. So
  `http.keepalive_timeout_seconds` bounds both how long a connection may take to send its
  request line and headers (slowloris) and how long an idle keep-alive connection is held.
  (aiohttp's own default is 3,630 s; ours is 20 s.) Bodies are read within `http.body_timeout_seconds`
  (control/api/app.py `read_json`).
- /metrics on its own listener when `metrics.port` is set (control/api/app.py build_metrics_app).
- Concurrent connections per source address: `http.max_connections_per_source`. A connection
  over the cap gets a fixed `429` response and is closed at accept, before aiohttp parses a
  byte of it; counted in telesfu_http_connections_refused_total.

Cost: one wrapper protocol per connection that forwards every callback (no copy, no task).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web

from control.config import Config
from control.metrics import Metrics

log = logging.getLogger("telesfu.http")

_REFUSED_BODY = (b'{"error": {"code": "too_many_connections", '
                 b'"message": "too many connections from your address; try again"}}')
_REFUSED = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSED_BODY), _REFUSED_BODY))


class SourceLimits:
    """Open connections per source address, shared by every listener of the node."""

    __slots__ = ("per_source", "by_source", "refused")

    def __init__(self, per_source: int, refused: Any) -> None:
        self.per_source = per_source  # 0: no cap
        self.by_source: dict[str, int] = {}
        self.refused = refused  # a prometheus counter child

    def acquire(self, source: str) -> bool:
        n = self.by_source.get(source, 0)
        if self.per_source and n >= self.per_source:
            self.refused.inc()
            return False
        self.by_source[source] = n + 1
        return True

    def release(self, source: str) -> None:
        n = self.by_source.get(source, 0)
        if n <= 1:
            self.by_source.pop(source, None)
        else:
            self.by_source[source] = n - 1


class _Guarded(asyncio.Protocol):
    """Counts a connection against its source's cap, then hands every callback to aiohttp's handler."""

    __slots__ = ("_server", "_limits", "_inner", "_source")

    def __init__(self, server: web.Server, limits: SourceLimits) -> None:
        self._server = server
        self._limits = limits
        self._inner: asyncio.Protocol | None = None
        self._source = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        if not self._limits.acquire(source):
            # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here
            cast(asyncio.Transport, transport).write(_REFUSED)
            transport.close()
            return
        self._source = source
        self._inner = self._server()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        inner, self._inner = self._inner, None
        if inner is not None:
            self._limits.release(self._source)
            inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections go through `_Guarded` (aiohttp's TCPSite otherwise)."""

    __slots__ = ("_host", "_port", "_limits")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limits: SourceLimits) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:  # type: ignore[attr-defined]
            return int(self._server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        limits = self._limits
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(server, limits), self._host, self._port, reuse_address=True)


class ListenError(Exception):
    """A listener could not bind its address."""


class HttpServer:
    """The node's listeners: the main one, and /metrics on its own when metrics.port is set."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.limits = SourceLimits(config.http.max_connections_per_source,
                                   metrics.http_connections_refused.labels("per_source"))
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.metrics_port = 0

    async def _listen(self, app: web.Application, host: str, port: int) -> int:
        http = self.config.http
        # lingering_time: how long aiohttp reads and drops an unread body after answering (10 s by default)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=http.keepalive_timeout_seconds,
                               lingering_time=min(2.0, http.body_timeout_seconds))
        await runner.setup()
        self._runners.append(runner)
        site = GuardedSite(runner, host, port, self.limits)
        try:
            await site.start()
        except OSError as e:
            raise ListenError(f"cannot listen on {host}:{port}: {e.strerror}") from e
        return site.port

    async def start(self, app: web.Application, metrics_app: web.Application | None = None) -> None:
        """Listen on http.host:http.port, and metrics.host:metrics.port for metrics_app. Raises ListenError."""
        try:
            self.port = await self._listen(app, self.config.http.host, self.config.http.port)
            if metrics_app is not None:
                m = self.config.metrics
                self.metrics_port = await self._listen(metrics_app, m.host, m.port)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
