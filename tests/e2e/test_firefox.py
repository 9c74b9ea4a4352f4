"""Debian's firefox-esr through the reference web client and a real `telesfu serve` on loopback,
with Chromium on the other side (tests/e2e/firefox.py drives Firefox over WebDriver BiDi): a
Firefox client admitted by a Chromium provider, a Firefox provider admitting a Chromium client,
and a group of Chromium, Firefox and an aiortc peer on the node's signaling.

Assertions come from each page's getStats (window.telesfu.stats(): inbound-rtp framesDecoded
and packetsReceived per remote participant; an aiortc peer's decoded frames). Each Firefox
page's state, getStats, events and console are saved under test-artifacts/web/firefox-*.json;
the golden Firefox SDPs (tests/fixtures/sdp/firefox-*) came from tests/e2e/pages/ instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser

from tests.e2e.firefox import FIREFOX, FirefoxDriver, FirefoxPage
from tests.e2e.web_helpers import (  # noqa: F401 - the fixtures are used by their names
    CHROMIUM,
    DESKTOP,
    TelesfuNode,
    WebPeer,
    telesfu_node_fixture,
    uid,
    web_browser_fixture,
)
from tests.media_helpers import AiortcParticipant

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (scripts/setup.sh --test installs it)"),
    pytest.mark.skipif(not FIREFOX.exists(), reason=f"{FIREFOX} is missing (scripts/setup.sh --test installs it)"),
]

FRAMES = 30  # about one second of video: a flow, not one lucky keyframe
MEDIA_TIMEOUT = 30.0
# keeps the page's WebSockets in window.__sockets, so a test can drop the signaling connection
KEEP_SOCKETS = """(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__sockets.push(this); }
  };
})();"""


@pytest.fixture
def out(artifacts: Path) -> Path:
    d = artifacts / "web"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def firefox(artifacts: Path) -> AsyncIterator[FirefoxDriver]:
    """One headless firefox-esr for the module; each participant gets a browser context."""
    driver = await FirefoxDriver.start(artifacts / "web" / "firefox-driver.log")
    try:
        yield driver
    finally:
        await driver.stop()


class FirefoxWebPeer:
    """One participant in Firefox on the real join page; the same surface as WebPeer for the test."""

    def __init__(self, name: str, page: FirefoxPage) -> None:
        self.name = name
        self.page = page

    @classmethod
    async def open(cls, driver: FirefoxDriver, url: str, name: str, init: str = "") -> FirefoxWebPeer:
        peer = cls(name, await driver.open(url, init))
        await peer.wait_screen("prejoin")
        await peer.page.wait_for("document.querySelector('#join-btn') && !document.querySelector('#join-btn').disabled",
                                 15, "the Join button enabled")
        return peer

    async def join(self) -> None:
        await self.page.click("#join-btn")

    async def state(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.telesfu.state"))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.page.evaluate("window.telesfu.stats()"))

    async def wait_screen(self, screen: str, timeout: float = 15.0) -> None:
        try:
            await self.page.wait_for(f"window.telesfu && window.telesfu.state.screen === {json.dumps(screen)}",
                                     timeout, f"screen {screen!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{await self.diagnose()}") from e

    async def decoded_from(self) -> dict[str, dict[str, int]]:
        return _decoded(await self.stats())

    async def diagnose(self) -> str:
        try:
            state = await self.page.evaluate("window.telesfu ? window.telesfu.state : null")
            events = await self.page.evaluate("window.telesfu ? window.telesfu.events() : []")
            stats = await self.page.evaluate("window.telesfu ? window.telesfu.stats() : null")
        except Exception as e:  # a crashed page must not hide the original failure
            return f"{self.name}: page not readable: {e!r}; console: {self.page.console[-20:]}"
        return (f"{self.name} state: {json.dumps(state)}\n{self.name} events: {events[-40:]}\n"
                f"{self.name} stats: {json.dumps(stats)}\n{self.name} console: {self.page.console[-20:]}")

    async def close(self) -> None:
        await self.page.close()


def _decoded(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per remote participant: video frames decoded and audio packets received."""
    got: dict[str, dict[str, int]] = {}
    for s in stats["inbound"]:
        pid = s.get("participant_id")
        if not pid:
            continue
        entry = got.setdefault(str(pid), {"framesDecoded": 0, "audioPackets": 0})
        if s["kind"] == "video":
            entry["framesDecoded"] += int(s["framesDecoded"])
        else:
            entry["audioPackets"] += int(s["packetsReceived"])
    return got


class AiortcSignalingPeer:
    """An aiortc participant on the node's real signaling (/v1/rtc), joined with a join link's token."""

    def __init__(self, name: str, participant_id: str, colour: str) -> None:
        self.name = name
        self.peer = AiortcParticipant(participant_id, colour)
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.types: list[str] = []
        self.errors: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._answers = asyncio.Lock()
        self._publish_answer: asyncio.Future[str] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def join(self, node: TelesfuNode, join_url: str) -> None:
        token = join_url.split("#token=", 1)[1]
        self.ws = await node.http.ws_connect(node.url.replace("http", "ws", 1) + "/v1/rtc", heartbeat=None)
        self._reader = asyncio.ensure_future(self._read())
        await self.ws.send_str(json.dumps({"type": "join", "token": token}))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type != aiohttp.WSMsgType.TEXT:
                continue
            d = json.loads(m.data)
            t = str(d.get("type", ""))
            self.types.append(t)
            if t == "joined":
                self._spawn(self._publish())
            elif t == "publish_answer" and self._publish_answer is not None and not self._publish_answer.done():
                self._publish_answer.set_result(str(d["sdp"]))
            elif t == "subscribe_offer":
                self._spawn(self._answer(str(d["sdp"]), list(d.get("tracks") or [])))
            elif t == "error":
                self.errors.append(f"{d.get('code')}: {d.get('message')}")

    async def _send(self, d: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(d))

    async def _publish(self) -> None:
        async def offer_answer(pid: str, sdp: str) -> str:
            self._publish_answer = asyncio.get_running_loop().create_future()
            await self._send({"type": "publish_offer", "sdp": sdp})
            return await asyncio.wait_for(self._publish_answer, 10)

        try:
            await self.peer.publish(offer_answer)
        except Exception as e:  # shown by the test; a lost publish would be a silent timeout
            self.errors.append(f"publish failed: {type(e).__name__}: {e}")

    async def _answer(self, sdp: str, tracks: list[dict[str, Any]]) -> None:
        async with self._answers:
            try:
                answer = await self.peer.answer_subscribe_offer(sdp, tracks)
                await self._send({"type": "subscribe_answer", "sdp": answer})
            except Exception as e:
                self.errors.append(f"subscribe answer failed: {type(e).__name__}: {e}")

    async def decoded_from(self) -> dict[str, dict[str, int]]:
        got: dict[str, dict[str, int]] = {}
        for mid, info in self.peer.track_info.items():
            rec = self.peer.received.get(mid)
            entry = got.setdefault(str(info.get("participant_id")), {"framesDecoded": 0, "audioPackets": 0})
            if rec is not None:
                # aiortc counts decoded frames: video frames, and audio frames (20 ms each) for packets
                entry["framesDecoded" if info.get("kind") == "video" else "audioPackets"] += rec.frames
        return got

    async def diagnose(self) -> str:
        return f"{self.name}: messages {self.types[-30:]}, errors {self.errors}, tracks {self.peer.track_info}"

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await self._send({"type": "leave"})
            finally:
                await self.ws.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.peer.close()


async def _media_from(peer: WebPeer | FirefoxWebPeer | AiortcSignalingPeer, pids: list[str], frames: int = FRAMES,
                      timeout: float = MEDIA_TIMEOUT,
                      baseline: dict[str, dict[str, int]] | None = None,
                      node: TelesfuNode | None = None) -> dict[str, dict[str, int]]:
    """Until more than `frames` video frames and some audio from each of `pids`, beyond `baseline`."""
    base = baseline or {}
    deadline = time.monotonic() + timeout
    got: dict[str, dict[str, int]] = {}

    def grew(p: str, key: str, by: int) -> bool:
        return got.get(p, {}).get(key, 0) - base.get(p, {}).get(key, 0) > by

    while time.monotonic() < deadline:
        got = await peer.decoded_from()
        if all(grew(p, "framesDecoded", frames) and grew(p, "audioPackets", 0) for p in pids):
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"{peer.name}: not {frames} frames and audio from {pids} within {timeout}s: {got}\n"
                         f"{await peer.diagnose()}" + (await _metrics(node) if node is not None else ""))


async def _metrics(node: TelesfuNode) -> str:
    """The node's non-zero media counters (drops by reason, transport events), for a failure."""
    try:
        async with node.http.get(node.url + "/metrics") as resp:
            text = await resp.text()
    except Exception as e:  # the diagnosis must not hide the failure
        return f"\n/metrics not readable: {e!r}"
    keep = [line for line in text.splitlines() if line.startswith("telesfu_") and not line.endswith(" 0")
            and not line.endswith(" 0.0") and any(w in line for w in ("drop", "transport", "stun", "dtls", "srtp", "keyframe", "send"))]
    return "\nnode metrics:\n" + "\n".join(keep[:80])


async def _save(out: Path, name: str, peer: FirefoxWebPeer) -> None:
    try:
        report = {"state": await peer.state(), "stats": await peer.stats(),
                  "events": await peer.page.evaluate("window.telesfu.events()"), "console": peer.page.console}
    except Exception as e:  # a crashed page must not hide the test's own failure
        report = {"error": repr(e), "console": peer.page.console}
    (out / f"firefox-{name}.json").write_text(json.dumps(report, indent=2, default=str))


async def test_firefox_client_and_chromium_provider_through_the_waiting_room(
        telesfu_node: TelesfuNode, web_browser: Browser, firefox: FirefoxDriver, out: Path) -> None:
    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Iris Vogel", waiting_room=True)
    await node.client(cl, "Jo Park")
    await node.appointment(apt, prov, [cl])
    client: FirefoxWebPeer | None = None
    provider: WebPeer | None = None
    try:
        client = await FirefoxWebPeer.open(firefox, await node.join_url(apt, cl), "firefox-client", KEEP_SOCKETS)
        await client.join()
        await client.wait_screen("waiting")
        provider = await WebPeer.open(web_browser, await node.join_url(apt, prov), "chromium-provider", DESKTOP)
        await provider.join()
        await provider.wait_screen("call")
        popup = provider.page.locator(f'.popup[data-pid="{cl}"]')
        await popup.wait_for(timeout=10_000)
        await popup.get_by_role("button", name="Admit Jo Park").click()
        await client.wait_screen("call")

        got_client = await _media_from(client, [prov], node=node)
        got_provider = await _media_from(provider, [cl], node=node)
        assert got_client[prov]["framesDecoded"] > FRAMES and got_client[prov]["audioPackets"] > 0
        assert got_provider[cl]["framesDecoded"] > FRAMES and got_provider[cl]["audioPackets"] > 0
        state = await client.state()
        assert not state.get("reconnecting"), state
        await client.page.screenshot(out / "firefox-client-in-call.png")

        # the signaling socket drops: the page sees a 1006 close (dispatched: a script cannot make
        # one, and a close() of its own is answered 1000, which ends the session), then the socket
        # really closes. Firefox resumes with its credential and new peer connections, and is
        # not sent back to the waiting room
        n_events = len(await client.page.evaluate("window.telesfu.events()"))
        await client.page.evaluate("(() => { const ws = window.__sockets[window.__sockets.length - 1];"
                                   " ws.dispatchEvent(new CloseEvent('close', {code: 1006})); ws.close(); })()")
        await client.page.wait_for("window.telesfu.state.reconnecting", 5, "the reconnecting overlay")
        await client.page.wait_for("window.telesfu.state.phase === 'joined' && !window.telesfu.state.reconnecting",
                                   15, "the client back in the call")
        assert await client.page.evaluate("window.__sockets.length") == 2
        await _media_from(client, [prov], baseline=got_client, node=node)
        await _media_from(provider, [cl], baseline=await provider.decoded_from(), node=node)
        after = (await client.page.evaluate("window.telesfu.events()"))[n_events:]
        assert [e for e in after if e.endswith("send resume")], after
        assert not [e for e in after if e.endswith("screen waiting")], after
    finally:
        if client is not None:
            await _save(out, "client-1to1", client)
            await client.close()
        if provider is not None:
            await provider.close()


async def test_firefox_provider_admits_a_chromium_client(
        telesfu_node: TelesfuNode, web_browser: Browser, firefox: FirefoxDriver, out: Path) -> None:
    node = telesfu_node
    prov, cl, apt = uid("prov"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Lena Moss", waiting_room=True)
    await node.client(cl, "Ravi Shah")
    await node.appointment(apt, prov, [cl])
    client: WebPeer | None = None
    provider: FirefoxWebPeer | None = None
    try:
        provider = await FirefoxWebPeer.open(firefox, await node.join_url(apt, prov), "firefox-provider")
        await provider.join()
        await provider.wait_screen("call")
        client = await WebPeer.open(web_browser, await node.join_url(apt, cl), "chromium-client", DESKTOP)
        await client.join()
        await client.wait_screen("waiting")
        admit = f'.popup[data-pid="{cl}"] .popup-admit'
        await provider.page.wait_for(f"document.querySelector({json.dumps(admit)})", 10, "the admit popup")
        assert await provider.page.evaluate(f"document.querySelector({json.dumps(admit)}).getAttribute('aria-label')") \
            == "Admit Ravi Shah"
        await provider.page.click(admit)
        await client.wait_screen("call")
        got_provider = await _media_from(provider, [cl], node=node)
        got_client = await _media_from(client, [prov], node=node)
        assert got_provider[cl]["framesDecoded"] > FRAMES and got_provider[cl]["audioPackets"] > 0
        assert got_client[prov]["framesDecoded"] > FRAMES and got_client[prov]["audioPackets"] > 0
    finally:
        if provider is not None:
            await _save(out, "provider-1to1", provider)
            await provider.close()
        if client is not None:
            await client.close()


async def test_group_of_firefox_chromium_and_aiortc_each_decodes_the_others(
        telesfu_node: TelesfuNode, web_browser: Browser, firefox: FirefoxDriver, out: Path) -> None:
    node = telesfu_node
    prov, ff, bot, apt = uid("prov"), uid("client"), uid("client"), uid("apt")
    await node.provider(prov, "Dr. Omar Haddad", waiting_room=False)
    await node.client(ff, "Kim Lee")
    await node.client(bot, "Ana Cruz")
    await node.appointment(apt, prov, [ff, bot])
    chromium: WebPeer | None = None
    firefox_peer: FirefoxWebPeer | None = None
    aiortc_peer = AiortcSignalingPeer("aiortc-client", bot, "blue")
    try:
        chromium = await WebPeer.open(web_browser, await node.join_url(apt, prov), "chromium-provider", DESKTOP)
        await chromium.join()
        await chromium.wait_screen("call")
        firefox_peer = await FirefoxWebPeer.open(firefox, await node.join_url(apt, ff), "firefox-client")
        await firefox_peer.join()
        await firefox_peer.wait_screen("call")
        await aiortc_peer.join(node, await node.join_url(apt, bot))
        everyone: dict[str, WebPeer | FirefoxWebPeer | AiortcSignalingPeer] = {
            prov: chromium, ff: firefox_peer, bot: aiortc_peer}
        for pid, peer in everyone.items():
            others = [p for p in everyone if p != pid]
            got = await _media_from(peer, others, node=node)
            for o in others:
                assert got[o]["framesDecoded"] > FRAMES and got[o]["audioPackets"] > 0, (peer.name, got)
    finally:
        if firefox_peer is not None:
            await _save(out, "client-group", firefox_peer)
            await firefox_peer.close()
        await aiortc_peer.close()
        if chromium is not None:
            await chromium.close()
