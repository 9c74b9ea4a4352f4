"""Helpers for the reference web client's browser tests: a real `telesfu serve` subprocess on
loopback, the control API to register people and appointments and mint join links, and
Debian's Chromium (one browser, a context per participant) driving signaling/web/.

The fixtures here are module-scoped (one node and one browser for a whole test file); a test
module imports `telesfu_node_fixture` and `web_browser_fixture` and asks for `telesfu_node` and
`web_browser`. They run on the module's event loop, so the tests that use them
carry `pytest.mark.asyncio(loop_scope="module")`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
# See /work/shared/TESTING-REAL-PEERS.md. Playwright adds --headless; never add a --disable-features switch.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
API_KEY = "web-e2e-api-key-0123456789"
SIGNING_SECRET = "web-e2e-signing-secret-0123456789abcdef"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
START_TIMEOUT = 20.0


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def uid(prefix: str) -> str:
    """Ids of one test's own, so tests sharing a node never see each other's rooms."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def telesfu_executable() -> str:
    beside = Path(sys.executable).parent / "telesfu"
    if beside.exists():
        return str(beside)
    found = shutil.which("telesfu")
    if found is None:
        pytest.fail("the telesfu command is not installed in this environment (pip install -e .)")
    return found


class TelesfuNode:
    """A `telesfu serve` subprocess on 127.0.0.1 and a control-API client for it."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path, http: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path
        self.http = http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def _put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, out = await self.call("PUT", path, body)
        assert status in (200, 201), f"PUT {path} -> {status} {out}"
        return dict(out)

    async def provider(self, pid: str, name: str, *, teletherapy: bool = True, waiting_room: bool = False) -> None:
        await self._put(f"/v1/providers/{pid}", {"name": name, "teletherapy_enabled": teletherapy,
                                                 "waiting_room_enabled": waiting_room})

    async def client(self, pid: str, name: str, *, portal: bool = True) -> None:
        await self._put(f"/v1/clients/{pid}", {"name": name, "portal_account_active": portal})

    async def appointment(self, apt: str, provider: str, clients: list[str], *, starts_in: timedelta = timedelta(0),
                          minutes: int = 50, status: str = "scheduled", telehealth: bool = True) -> None:
        start = datetime.now(UTC) + starts_in
        await self._put(f"/v1/appointments/{apt}", {
            "provider_id": provider, "client_ids": clients, "telehealth": telehealth,
            "starts_at": rfc3339(start), "ends_at": rfc3339(start + timedelta(minutes=minutes)), "status": status})

    async def join_url(self, apt: str, participant_id: str) -> str:
        status, out = await self.call("POST", f"/v1/appointments/{apt}/tokens", {"participant_id": participant_id})
        assert status == 201, f"minting a token for {participant_id} in {apt} -> {status} {out}"
        url = str(out["join_url"])
        assert "#token=" in url, url
        return url

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _server_env(http_port: int, udp_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELESFU_")}
    env.update({
        "TELESFU_HTTP_HOST": "127.0.0.1",
        "TELESFU_HTTP_PORT": str(http_port),
        "TELESFU_MEDIA_UDP_PORT": str(udp_port),
        "TELESFU_MEDIA_WORKERS": "1",
        "TELESFU_MEDIA_LISTEN_IPS": "127.0.0.1",
        "TELESFU_MEDIA_ALLOWED_SOURCE_NETWORKS": "127.0.0.0/8",
        "TELESFU_AUTH_API_KEYS": API_KEY,
        "TELESFU_TOKENS_KEYS": f"k1={SIGNING_SECRET}",
        "TELESFU_STORE_URL": "memory://",
        "PYTHONUNBUFFERED": "1",
    })
    return env


async def _wait_until_serving(node: TelesfuNode) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if node.proc.poll() is not None:
            pytest.fail(f"telesfu serve exited with {node.proc.returncode}:\n{node.log_tail()}")
        try:
            async with node.http.get(node.url + "/healthz") as resp:
                if resp.status == 200:
                    async with node.http.get(node.url + "/join") as page:
                        last = f"/join -> {page.status}"
                        if page.status == 200:
                            return
        except aiohttp.ClientError as e:
            last = repr(e)
        await asyncio.sleep(0.1)
    pytest.fail(f"telesfu serve did not serve /healthz and /join within {START_TIMEOUT}s ({last}):\n{node.log_tail()}")


@pytest_asyncio.fixture(scope="module", loop_scope="module", name="telesfu_node")
async def telesfu_node_fixture(artifacts: Path) -> AsyncIterator[TelesfuNode]:
    """One real node for the whole module: in-memory store, one media worker, loopback only."""
    out = artifacts / "web"
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "telesfu-serve.log"
    http_port, udp_port = free_tcp_port(), free_udp_port()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen([telesfu_executable(), "serve"], env=_server_env(http_port, udp_port),
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    node = TelesfuNode(proc, f"http://127.0.0.1:{http_port}", log_path, http)
    try:
        await _wait_until_serving(node)
        yield node
    finally:
        await http.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest_asyncio.fixture(scope="module", loop_scope="module", name="web_browser")
async def web_browser_fixture() -> AsyncIterator[Browser]:
    """One headless Chromium for the module; each participant gets a context of its own."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup.sh --test installs Debian's chromium)")
    pw = await async_playwright().start()
    try:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await pw.stop()


class WebPeer:
    """One participant: a browser context with its own fake camera, on the real join page."""

    def __init__(self, name: str, context: BrowserContext, page: Page) -> None:
        self.name = name
        self.context = context
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.errors.append(str(err)))

    def _on_console(self, msg: ConsoleMessage) -> None:
        self.console.append(f"{msg.type}: {msg.text}")
        if msg.type == "error" and "favicon" not in msg.text:
            self.errors.append(msg.text)

    @classmethod
    async def open(cls, browser: Browser, url: str, name: str, viewport: ViewportSize | None = None) -> WebPeer:
        context = await browser.new_context(viewport=viewport or DESKTOP)
        page = await context.new_page()
        peer = cls(name, context, page)
        await page.goto(url)
        await peer.wait_screen("prejoin")
        # the preview is live (or the page gave up on the devices) before anyone presses Join
        await page.wait_for_function("() => document.querySelector('#join-btn') && !document.querySelector('#join-btn').disabled")
        return peer

    async def join(self) -> None:
        await self.page.click("#join-btn")

    async def state(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.telesfu.state"))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.telesfu.stats()"))

    async def events(self) -> list[str]:
        return list(await self.page.evaluate("window.telesfu.events()"))

    async def wait_screen(self, screen: str, timeout: float = 15.0) -> dict[str, Any]:
        try:
            await self.page.wait_for_function("s => window.telesfu && window.telesfu.state.screen === s", arg=screen,
                                              timeout=timeout * 1000)
        except Exception as e:
            raise AssertionError(f"{self.name}: screen {screen!r} not shown within {timeout}s\n{await self.diagnose()}") from e
        return await self.state()

    async def wait_for(self, expression: str, what: str, timeout: float = 15.0, arg: Any = None) -> None:
        try:
            await self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000)
        except Exception as e:
            raise AssertionError(f"{self.name}: {what} not seen within {timeout}s\n{await self.diagnose()}") from e

    async def decoded_from(self) -> dict[str, dict[str, int]]:
        """Per remote participant: video frames decoded and audio packets received."""
        got: dict[str, dict[str, int]] = {}
        for s in (await self.stats())["inbound"]:
            pid = s.get("participant_id")
            if not pid:
                continue
            entry = got.setdefault(str(pid), {"framesDecoded": 0, "audioPackets": 0})
            if s["kind"] == "video":
                entry["framesDecoded"] += int(s["framesDecoded"])
            else:
                entry["audioPackets"] += int(s["packetsReceived"])
        return got

    async def wait_media_from(self, pids: list[str], timeout: float = 20.0, frames: int = 5,
                              baseline: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, int]]:
        """Until video frames were decoded and audio packets received from every one of `pids`
        (beyond what `baseline`, an earlier `decoded_from()`, already counted)."""
        base = baseline or {}
        deadline = time.monotonic() + timeout
        got: dict[str, dict[str, int]] = {}

        def grew(p: str, key: str, by: int) -> bool:
            return got.get(p, {}).get(key, 0) - base.get(p, {}).get(key, 0) >= by

        while time.monotonic() < deadline:
            got = await self.decoded_from()
            if all(grew(p, "framesDecoded", frames) and grew(p, "audioPackets", 1) for p in pids):
                return got
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name}: no media from {pids} within {timeout}s: {got}\n{await self.diagnose()}")

    async def diagnose(self) -> str:
        try:
            state = await self.page.evaluate("window.telesfu ? window.telesfu.state : null")
            events = await self.page.evaluate("window.telesfu ? window.telesfu.events() : []")
            stats = await self.page.evaluate("window.telesfu ? window.telesfu.stats() : null")
            failed = await self.page.evaluate("window.telesfu ? window.telesfu.failedOffer() : ''")
        except Exception as e:  # a crashed page must not hide the original failure
            return f"{self.name}: page not readable: {e!r}; console: {self.console[-20:]}"
        return (f"{self.name} state: {json.dumps(state)}\n{self.name} events: {events[-40:]}\n"
                f"{self.name} stats: {json.dumps(stats)}\n{self.name} console: {self.console[-20:]}"
                + (f"\n{self.name} rejected subscribe offer:\n{failed}" if failed else ""))

    async def shot(self, path: Path, settle: float = 0.35) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.wait_for_timeout(settle * 1000)  # let toasts and popups finish their entrance
        await self.page.screenshot(path=str(path))

    async def close(self) -> None:
        await self.context.close()
