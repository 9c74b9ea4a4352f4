"""Debian's Chromium through the SFU over loopback UDP: with an aiortc peer and with another
Chromium page, each side publishes audio+video and decodes what the other sends.

Assertions come from Chromium's getStats (inbound-rtp framesDecoded / packetsReceived),
from what the aiortc peer decodes, and, for aiortc -> Chromium, from the pixels the page's
<video> shows (the sender's colour and its moving frame-counter bar). Screenshots, SDPs,
getStats and worker stats are saved under test-artifacts/e2e/.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser

from tests.e2e.conftest import CHROMIUM, ChromiumParticipant, E2eSfu, eventually, write_json
from tests.media_helpers import AiortcParticipant, nearest_colour

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (scripts/setup.sh --test installs it)")]

CONNECT_TIMEOUT = 15.0  # seen: ~1 s on a 2-core machine
FRAMES = 30  # about one second of video each way: a flow, not one lucky keyframe


async def _diagnosis(sfu: E2eSfu, chromes: list[ChromiumParticipant]) -> str:
    lines = [f"relay errors: {sfu.relay.errors}", f"worker counters: {sfu.stats()['counters']}",
             f"transport totals: {sfu.stats()['transport']}",
             f"transport events: {sfu.relay.of_type('transport_state')}"]
    for c in chromes:
        if c.closed:
            continue
        lines += [f"{c.id} states: {await c.connection_states()}", f"{c.id} events: {await c.events()}",
                  f"{c.id} stats: {await c.stats()}", f"{c.id} console: {c.console[-20:]}"]
    return "\n".join(lines)


async def _save(out: Path, name: str, sfu: E2eSfu, chromes: list[ChromiumParticipant]) -> None:
    report: dict[str, Any] = {"worker": sfu.stats(), "room": sfu.room_stats(), "relay_errors": sfu.relay.errors}
    for c in chromes:
        try:
            report[c.id] = {"getStats": await c.stats(), "events": await c.events(), "console": c.console}
        except Exception as e:  # a crashed page must not hide the test's own failure
            report[c.id] = {"error": repr(e), "console": c.console}
        if c.publish_offer_sdp:
            (out / f"{name}-{c.id}-publish-offer.sdp").write_bytes(c.publish_offer_sdp.encode())
            (out / f"{name}-{c.id}-publish-answer.sdp").write_bytes(c.publish_answer_sdp.encode())
        if c.subscribe_offers:
            (out / f"{name}-{c.id}-subscribe-offer.sdp").write_bytes(c.subscribe_offers[-1].encode())
            (out / f"{name}-{c.id}-subscribe-answer.sdp").write_bytes(c.subscribe_answers[-1].encode())
    write_json(out / f"{name}-stats.json", report)


async def _receives(chrome: ChromiumParticipant, publisher: str, frames: int) -> bool:
    video = await chrome.inbound_from(publisher, "video")
    audio = await chrome.inbound_from(publisher, "audio")
    return bool(video and video["framesDecoded"] >= frames and audio and audio["packetsReceived"] > 0)


async def test_chromium_and_aiortc_decode_each_other(sfu: E2eSfu, browser: Browser, page_url: str,
                                                     artifacts: Path) -> None:
    out = artifacts / "e2e"
    out.mkdir(exist_ok=True)
    chrome = await ChromiumParticipant.open(browser, page_url, "chrome")
    peer = AiortcParticipant("aiortc", "red")
    started = time.monotonic()
    try:
        await sfu.join(chrome)
        await sfu.join(peer)

        async def diagnose() -> str:
            return await _diagnosis(sfu, [chrome])

        await eventually(lambda: _receives(chrome, "aiortc", FRAMES), CONNECT_TIMEOUT,
                         f"Chromium decoding {FRAMES} frames and receiving audio from aiortc", diagnose)
        connected_after = time.monotonic() - started

        async def aiortc_decodes() -> bool:
            video, audio = peer.video_from("chrome"), peer.audio_from("chrome")
            return bool(video and video.frames >= FRAMES and audio and audio.frames > 0)

        await eventually(aiortc_decodes, CONNECT_TIMEOUT,
                         f"aiortc decoding {FRAMES} frames and audio from Chromium", diagnose)

        # Chromium shows aiortc's live picture: its colour, and the counter bar moving.
        mid = chrome.mid_of("aiortc", "video")
        assert mid is not None
        samples: list[dict[str, Any]] = []
        for _ in range(10):
            s = await chrome.video_sample(mid)
            if s is not None and s.get("ready"):
                samples.append(s)
            await asyncio.sleep(0.1)
        await chrome.page.locator(f'video[data-mid="{mid}"]').screenshot(path=out / "chromium-sees-aiortc.png")
        await chrome.page.screenshot(path=out / "chromium-page-with-aiortc.png")
        assert len(samples) >= 5, f"the <video> of aiortc was not ready: {samples}"
        assert {(s["width"], s["height"]) for s in samples} == {(320, 240)}
        assert {nearest_colour(np.array(s["rgb"])) for s in samples} == {"red"}, samples
        assert len({s["slot"] for s in samples}) >= 4, f"the counter bar does not move: {samples}"

        stats = await chrome.stats()
        sent = {s["kind"]: s for s in stats["outbound"] if s["pc"] == "publish"}
        assert sent["audio"]["packetsSent"] > 0 and sent["video"]["packetsSent"] > 0
        assert sent["video"]["framesEncoded"] > 0
        for t in stats["transports"]:
            assert t["dtlsState"] == "connected", t
            assert t["local"].startswith("127.") and t["remote"] == f"127.0.0.1:{sfu.worker.config.port}", t
        counters = sfu.stats()["counters"]
        assert counters["video_in"] > 0 and counters["audio_in"] > 0
        forwarded = {p["participant_id"]: [d["packets"] for d in p["subscribed"]]
                     for p in sfu.room_stats()["participants"]}
        assert len(forwarded["chrome"]) == 2 and min(forwarded["chrome"]) > 0, forwarded
        assert len(forwarded["aiortc"]) == 2 and min(forwarded["aiortc"]) > 0, forwarded
        assert sfu.relay.errors == []
        audio_in = await chrome.inbound_from("aiortc", "audio")
        assert audio_in is not None and audio_in["codec"] == "audio/opus"
        assert peer.audio_from("chrome") is not None
        print(f"chromium<->aiortc: media both ways {connected_after:.2f}s after joining")
    finally:
        await _save(out, "chromium-aiortc", sfu, [chrome])
        await chrome.close()
        await peer.close()


async def test_two_chromium_pages_decode_each_other(sfu: E2eSfu, browser: Browser, page_url: str,
                                                    artifacts: Path) -> None:
    out = artifacts / "e2e"
    out.mkdir(exist_ok=True)
    a = await ChromiumParticipant.open(browser, page_url, "chrome-a")
    b = await ChromiumParticipant.open(browser, page_url, "chrome-b")
    try:
        await sfu.join(a)
        await sfu.join(b)

        async def diagnose() -> str:
            return await _diagnosis(sfu, [a, b])

        async def both() -> bool:
            return await _receives(a, "chrome-b", FRAMES) and await _receives(b, "chrome-a", FRAMES)

        await eventually(both, CONNECT_TIMEOUT,
                         f"both pages decoding {FRAMES} frames and receiving audio from each other", diagnose)
        for me, other in ((a, b), (b, a)):
            video = await me.inbound_from(other.id, "video")
            audio = await me.inbound_from(other.id, "audio")
            assert video is not None and audio is not None
            assert video["keyFramesDecoded"] >= 1
            assert (video["frameWidth"], video["frameHeight"]) == (320, 240), video
            assert audio["totalSamplesReceived"] > 0, audio
        await a.page.screenshot(path=out / "chromium-a-sees-b.png")
        assert sfu.relay.errors == []
    finally:
        await _save(out, "chromium-chromium", sfu, [a, b])
        await a.close()
        await b.close()


async def test_chromium_receives_two_publishers_each_on_its_own_mid(sfu: E2eSfu, browser: Browser, page_url: str,
                                                                   artifacts: Path) -> None:
    """Four subscribe m-sections, re-offered as the second publisher arrives: each <video>
    shows its own sender's colour (SSRC/mid demux in Chromium, per-subscriber rewriting)."""
    out = artifacts / "e2e"
    out.mkdir(exist_ok=True)
    chrome = await ChromiumParticipant.open(browser, page_url, "chrome")
    red = AiortcParticipant("red", "red")
    blue = AiortcParticipant("blue", "blue")
    try:
        await sfu.join(chrome, publish=False)
        await sfu.join(red, subscribe=False)
        await sfu.join(blue, subscribe=False)

        async def diagnose() -> str:
            return await _diagnosis(sfu, [chrome])

        async def both() -> bool:
            return await _receives(chrome, "red", FRAMES) and await _receives(chrome, "blue", FRAMES)

        await eventually(both, CONNECT_TIMEOUT, f"Chromium decoding {FRAMES} frames from each publisher", diagnose)
        mids = {c: chrome.mid_of(c, "video") for c in ("red", "blue")}
        assert None not in mids.values() and len(set(mids.values())) == 2, chrome.track_info
        assert len(chrome.track_info) == 4 and chrome.offers >= 2
        for colour, mid in mids.items():
            assert mid is not None
            sample = await chrome.video_sample(mid)
            assert sample is not None and sample["ready"], sample
            assert nearest_colour(np.array(sample["rgb"])) == colour, (mid, sample)
        await chrome.page.screenshot(path=out / "chromium-sees-red-and-blue.png")
        assert sfu.relay.errors == []
    finally:
        await _save(out, "chromium-two-publishers", sfu, [chrome])
        await chrome.close()
        await red.close()
        await blue.close()


async def test_chromium_decodes_from_the_first_forwarded_frame(sfu: E2eSfu, browser: Browser,
                                                               page_url: str) -> None:
    """A subscriber's first forwarded video frame is a keyframe it actually receives."""
    chrome = await ChromiumParticipant.open(browser, page_url, "chrome")
    peer = AiortcParticipant("aiortc", "red")
    try:
        await sfu.join(chrome)  # publishing first makes the aiortc keyframe race Chromium's subscribe DTLS
        await sfu.join(peer)
        await eventually(lambda: _receives(chrome, "aiortc", FRAMES), CONNECT_TIMEOUT,
                         "Chromium decoding aiortc's video", lambda: _diagnosis(sfu, [chrome]))
        video = await chrome.inbound_from("aiortc", "video")
        assert video is not None
        assert (video["framesDropped"], video["pliCount"]) == (0, 0), video
    finally:
        await chrome.close()
        await peer.close()
