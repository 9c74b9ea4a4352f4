"""Fixtures for browser tests: Debian's Chromium driven by Playwright, a static test page on
127.0.0.1, an in-process SFU worker on loopback, and the signaling glue between them.

A Chromium participant is one page (tests/e2e/pages/) with a publish and a subscribe peer
connection; `ChromiumParticipant` wraps it with the same signaling surface as the aiortc
test peer (`publish`, `answer_subscribe_offer`), so `E2eSfu.join` takes either.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiohttp import web
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from sfu.worker import Worker, WorkerConfig
from tests.media_helpers import AiortcParticipant, PublishOffer

CHROMIUM = Path("/usr/bin/chromium")
PAGES = Path(__file__).resolve().parent / "pages"
# See /work/shared/TESTING-REAL-PEERS.md. Playwright adds --headless itself; never add a
# --disable-features switch here (Chromium keeps only the last one and drops Playwright's).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
LOOPBACK = ["127.0.0.0/8"]
ROOM = "room-1"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice gathers host candidates from non-loopback interfaces only; keep aiortc peers on 127.0.0.1.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup.sh --test installs Debian's chromium)")
    return CHROMIUM


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page, served by a static aiohttp server on 127.0.0.1 (a secure context)."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/index.html"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(chromium_executable: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium_executable), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield b
        finally:
            await b.close()


class ChromiumParticipant:
    """One page of the test browser as a participant; the page holds both peer connections."""

    def __init__(self, participant_id: str, page: Page) -> None:
        self.id = participant_id
        self.page = page
        self.closed = False
        self.offers = 0
        self.track_info: dict[str, dict[str, Any]] = {}  # subscribe mid -> the SFU's description
        self.publish_offer_sdp = ""
        self.publish_answer_sdp = ""
        self.subscribe_offers: list[str] = []
        self.subscribe_answers: list[str] = []
        self.console: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        self.console.append(f"{msg.type}: {msg.text}")

    @classmethod
    async def open(cls, browser: Browser, url: str, participant_id: str) -> ChromiumParticipant:
        """A fresh browser context and page (its own fake camera and microphone)."""
        context = await browser.new_context(viewport={"width": 680, "height": 520})
        page = await context.new_page()
        peer = cls(participant_id, page)
        await page.goto(url)
        await page.wait_for_function("typeof window.answerSubscribe === 'function'")
        return peer

    async def publish(self, publish_offer: PublishOffer) -> None:
        self.publish_offer_sdp = str(await self.page.evaluate("startPublish()"))
        self.publish_answer_sdp = await publish_offer(self.id, self.publish_offer_sdp)
        await self.page.evaluate("sdp => setPublishAnswer(sdp)", self.publish_answer_sdp)

    async def answer_subscribe_offer(self, sdp: str, tracks: list[dict[str, Any]]) -> str:
        self.offers += 1
        for t in tracks:
            self.track_info[str(t["mid"])] = t
        self.subscribe_offers.append(sdp)
        answer = str(await self.page.evaluate("sdp => answerSubscribe(sdp)", sdp))
        self.subscribe_answers.append(answer)
        return answer

    def mid_of(self, publisher_id: str, kind: str) -> str | None:
        for mid, info in self.track_info.items():
            if info.get("participant_id") == publisher_id and info.get("kind") == kind:
                return mid
        return None

    async def stats(self) -> dict[str, Any]:
        """getStats flattened by the page: inbound, outbound (per mid) and transports."""
        return dict(await self.page.evaluate("stats()"))

    async def inbound_from(self, publisher_id: str, kind: str) -> dict[str, Any] | None:
        mid = self.mid_of(publisher_id, kind)
        if mid is None:
            return None
        for s in (await self.stats())["inbound"]:
            if s["pc"] == "subscribe" and s["mid"] == mid:
                return dict(s)
        return None

    async def video_sample(self, mid: str) -> dict[str, Any] | None:
        result = await self.page.evaluate("mid => videoSample(mid)", mid)
        return dict(result) if result is not None else None

    async def connection_states(self) -> dict[str, str]:
        return dict(await self.page.evaluate("connectionStates()"))

    async def events(self) -> list[str]:
        return list(await self.page.evaluate("events()"))

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.page.context.close()


Peer = ChromiumParticipant | AiortcParticipant


def _gone(peer: Peer) -> bool:
    if isinstance(peer, ChromiumParticipant):
        return peer.closed
    return peer.sub.signalingState == "closed"


class Relay:
    """Test signaling: the worker's subscribe offers go to the right peer, its answers come back.

    Offers to one participant are answered one at a time, in order, so a re-offer never
    overlaps the previous answer. Failures are kept in `errors` for the test to show.
    """

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.peers: dict[str, Peer] = {}
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "worker_stats":
            self.events.append(event)
        if event.get("type") == "subscribe_offer":
            peer = self.peers.get(str(event["participant_id"]))
            if peer is not None:
                task = asyncio.ensure_future(self._answer(peer, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _answer(self, peer: Peer, event: dict[str, Any]) -> None:
        async with self._locks.setdefault(peer.id, asyncio.Lock()):
            if _gone(peer):
                return
            try:
                sdp = await peer.answer_subscribe_offer(str(event["sdp"]), list(event["tracks"]))
                assert self.worker is not None
                self.worker.handle("subscribe_answer", {"room_id": ROOM, "participant_id": peer.id, "sdp": sdp})
            except Exception as e:  # shown by the test; a lost answer would otherwise be a silent timeout
                if not _gone(peer):
                    self.errors.append(f"{peer.id}: subscribe answer failed: {type(e).__name__}: {e}")

    def of_type(self, t: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == t]

    async def drain(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class E2eSfu:
    """An in-process Worker on 127.0.0.1 that drops datagrams from non-loopback sources."""

    def __init__(self, worker: Worker, relay: Relay) -> None:
        self.worker = worker
        self.relay = relay
        self.room = ROOM

    async def join(self, peer: Peer, *, publish: bool = True, subscribe: bool = True) -> None:
        self.relay.peers[peer.id] = peer
        self.worker.handle("add_participant", {"room_id": self.room, "participant_id": peer.id,
                                               "can_subscribe": subscribe})
        if publish:
            await peer.publish(self.publish_offer)

    async def publish_offer(self, pid: str, sdp: str) -> str:
        return str(self.worker.handle("publish_offer", {"room_id": self.room, "participant_id": pid,
                                                        "sdp": sdp})["sdp"])

    def stats(self) -> dict[str, Any]:
        return dict(self.worker.stats())

    def room_stats(self) -> dict[str, Any]:
        return dict(self.worker.handle("room_stats", {"room_id": self.room}))


@pytest.fixture
async def sfu() -> AsyncIterator[E2eSfu]:
    relay = Relay()
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1"], allowed_source_networks=LOOPBACK),
                    relay.on_event)
    relay.worker = worker
    await worker.start()
    worker.create_room(ROOM)
    try:
        yield E2eSfu(worker, relay)
    finally:
        await relay.drain()
        await worker.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str,
                     diagnose: Callable[[], Awaitable[str]] | None = None) -> None:
    """Poll an async condition every 100 ms; on timeout fail with `what` and a diagnosis."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            detail = await diagnose() if diagnose is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
        await asyncio.sleep(0.1)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
