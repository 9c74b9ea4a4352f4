"""Helpers for control-plane tests: a live node on a real loopback port and an API client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from control.api.app import build_app, build_metrics_app
from control.config import Config
from control.domain.models import format_time, utcnow
from control.http_server import HttpServer
from control.node import Node

API_KEY = "test-api-key-0123"


def make_config(**sections: dict[str, Any]) -> Config:
    cfg = Config()
    cfg.auth.api_keys = [API_KEY]
    cfg.tokens.keys = {"k1": "test-signing-secret-0123456789abcdef"}
    cfg.http.port = 0
    for section, values in sections.items():
        for k, val in values.items():
            setattr(getattr(cfg, section), k, val)
    return cfg.check()


@dataclass
class LiveNode:
    node: Node
    url: str
    http: aiohttp.ClientSession
    app: Any = None

    @property
    def hub(self) -> Any:
        from signaling.server import HUB

        return self.app[HUB]

    async def call(self, method: str, path: str, json: Any = None, *, data: bytes | None = None,
                   headers: dict[str, str] | None = None, auth: bool = True) -> tuple[int, Any]:
        h = {"Authorization": f"Bearer {API_KEY}"} if auth else {}
        h.update(headers or {})
        async with self.http.request(method, self.url + path, json=json, data=data, headers=h) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json() if ctype.startswith("application/json") else await resp.text()
            return resp.status, body

    async def setup_appointment(self, apt_id: str = "apt-1", *, provider: str = "prov-1",
                                clients: tuple[str, ...] = ("client-1",), waiting_room: bool = False,
                                teletherapy: bool = True, portal: bool = True, telehealth: bool = True,
                                starts_at: datetime | None = None, minutes: int = 50,
                                status: str = "scheduled", max_participants: int | None = None) -> dict[str, Any]:
        s, _ = await self.call("PUT", f"/v1/providers/{provider}", {
            "name": "Dr. P", "teletherapy_enabled": teletherapy, "waiting_room_enabled": waiting_room})
        assert s in (200, 201)
        for c in clients:
            s, _ = await self.call("PUT", f"/v1/clients/{c}", {"name": f"Client {c}", "portal_account_active": portal})
            assert s in (200, 201)
        start = starts_at or utcnow().replace(microsecond=0)
        body: dict[str, Any] = {"provider_id": provider, "client_ids": list(clients), "telehealth": telehealth,
                                "starts_at": format_time(start), "ends_at": format_time(start + timedelta(minutes=minutes)),
                                "status": status}
        if max_participants is not None:
            body["max_participants"] = max_participants
        s, apt = await self.call("PUT", f"/v1/appointments/{apt_id}", body)
        assert s in (200, 201), apt
        return apt

    async def token(self, apt_id: str, participant_id: str) -> str:
        s, body = await self.call("POST", f"/v1/appointments/{apt_id}/tokens", {"participant_id": participant_id})
        assert s == 201, body
        return str(body["token"])


@asynccontextmanager
async def live_node(config: Config | None = None, store: Any = None, *, media: bool = False) -> AsyncIterator[LiveNode]:
    """A node serving the real app on a free loopback port (with media workers when asked)."""
    from control.store.memory import MemoryStore

    cfg = config or make_config()
    node = Node(cfg, store if store is not None else MemoryStore(), node_id="test-node", media=media)
    app = build_app(node)
    cfg.http.host, cfg.http.port = "127.0.0.1", 0
    server = HttpServer(cfg, node.metrics)  # the listener `telesfu serve` uses, with its limits
    await server.start(app, build_metrics_app(node))
    port = cfg.http.port = server.port
    async with aiohttp.ClientSession() as http:
        try:
            yield LiveNode(node, f"http://127.0.0.1:{port}", http, app)
        finally:
            await server.stop()
