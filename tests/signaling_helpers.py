"""A signaling client for tests (a real WebSocket), optionally driving a real aiortc peer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from control.config import Config
from tests.control_helpers import LiveNode, live_node, make_config
from tests.media_helpers import AiortcParticipant


class SignalingClient:
    def __init__(self, ln: LiveNode, token: str, peer: AiortcParticipant | None = None) -> None:
        self.ln = ln
        self.token = token
        self.peer = peer
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._answering: asyncio.Lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, join: bool = True) -> SignalingClient:
        self.ws = await self.ln.http.ws_connect(self.ln.url.replace("http", "ws") + "/v1/rtc")
        self._reader = asyncio.ensure_future(self._read())
        if join:
            await self.send({"type": "join", "token": self.token})
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type == aiohttp.WSMsgType.TEXT:
                d = json.loads(m.data)
                self.messages.append(d)
                if d["type"] == "subscribe_offer" and self.peer is not None:
                    t = asyncio.ensure_future(self._answer(d))
                    self._tasks.add(t)
                    t.add_done_callback(self._tasks.discard)
                self._arrived.set()
        self.close_code = self.ws.close_code
        self._arrived.set()

    async def _answer(self, d: dict[str, Any]) -> None:
        assert self.peer is not None
        async with self._answering:
            if self.peer.sub.signalingState == "closed":
                return
            sdp = await self.peer.answer_subscribe_offer(d["sdp"], d["tracks"])
            await self.send({"type": "subscribe_answer", "sdp": sdp})

    async def send(self, d: dict[str, Any] | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(d if isinstance(d, str) else json.dumps(d))

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == t]

    async def wait_for(self, t: str, timeout: float = 10.0, count: int = 1) -> dict[str, Any]:
        async def loop() -> dict[str, Any]:
            while len(self.of_type(t)) < count:
                if self.close_code is not None and self._reader is not None and self._reader.done():
                    raise AssertionError(f"closed ({self.close_code}) before {t}; got {self.types()}")
                self._arrived.clear()
                await self._arrived.wait()
            return self.of_type(t)[count - 1]
        return await asyncio.wait_for(loop(), timeout)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    async def publish(self) -> None:
        assert self.peer is not None

        async def offer(pid: str, sdp: str) -> str:
            n = len(self.of_type("publish_answer"))
            await self.send({"type": "publish_offer", "sdp": sdp})
            return str((await self.wait_for("publish_answer", count=n + 1))["sdp"])

        await self.peer.publish(offer)

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self.peer is not None:
            await self.peer.close()


def media_config(**sections: dict[str, Any]) -> Config:
    from tests.conftest import free_port

    media = {"workers": 1, "udp_port": free_port(), "allowed_source_networks": ["127.0.0.0/8"]}
    media.update(sections.pop("media", {}))
    return make_config(media=media, **sections)


@asynccontextmanager
async def media_node(config: Config | None = None) -> AsyncIterator[LiveNode]:
    async with live_node(config or media_config(), media=True) as ln:
        yield ln
