"""UDP blocked: Debian's Chromium in a network namespace of its own, where every UDP datagram
to the SFU is blackholed (`ip rule ... ipproto udp` + a blackhole route; there is no
iptables here), still joins over passive ICE-TCP and decodes an aiortc publisher's video.

The namespace is joined to the host by a veth pair with addresses from a private /24 the
test picks; the in-process worker listens on 127.0.0.1 (for the aiortc peer) and on the
host end of the veth, UDP and TCP. Chromium is started inside the namespace through a
wrapper around `ip netns exec`; it loads the test page from the host end of the veth
(treated as a secure origin by a flag). The namespace and the veth are removed however the
test ends. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from sfu.worker import Worker, WorkerConfig
from tests.e2e.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGES,
    ROOM,
    ChromiumParticipant,
    E2eSfu,
    Relay,
    eventually,
    write_json,
)
from tests.media_helpers import AiortcParticipant

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 (ip netns)"),
]

JOINS = 5
CONNECT_TIMEOUT = 20.0
FRAMES = 30


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)


class BlockedNetns:
    """A namespace `name` with only lo and one veth end (`client_ip`), UDP to `sfu_ip` blackholed."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{random.randrange(100, 1000)}"
        self.name = f"tsfu-udpblk-{tag}"
        self.host_if = f"tvh{tag}"[:15]
        self.ns_if = f"tvc{tag}"[:15]
        third = random.randrange(1, 254)
        self.sfu_ip = f"10.213.{third}.1"
        self.client_ip = f"10.213.{third}.2"
        self.network = f"10.213.{third}.0/24"

    def create(self) -> None:
        ns = ["netns", "exec", self.name, "ip"]
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.sfu_ip}/24", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip(*ns, "link", "set", "lo", "up")
        _ip(*ns, "addr", "add", f"{self.client_ip}/24", "dev", self.ns_if)
        _ip(*ns, "link", "set", self.ns_if, "up")
        # The firewall: every UDP datagram to the SFU goes nowhere; TCP is routed as usual.
        _ip(*ns, "route", "add", "blackhole", self.sfu_ip, "table", "100")
        _ip(*ns, "rule", "add", "ipproto", "udp", "to", self.sfu_ip, "lookup", "100")

    def remove(self) -> None:
        _ip("netns", "del", self.name, check=False)  # takes its veth end, and so the pair
        _ip("link", "del", self.host_if, check=False)

    def exists(self) -> bool:
        return self.name in _ip("netns", "list", check=False).stdout or \
            _ip("link", "show", self.host_if, check=False).returncode == 0


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[BlockedNetns]:
    ns = BlockedNetns()
    try:
        ns.create()
        yield ns
    finally:
        ns.remove()
        assert not ns.exists(), f"namespace {ns.name} or veth {ns.host_if} left behind"


@pytest.fixture
async def sfu(netns: BlockedNetns) -> AsyncIterator[E2eSfu]:
    relay = Relay()
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1", netns.sfu_ip], tcp_port=0,
                                 allowed_source_networks=["127.0.0.0/8", netns.network]), relay.on_event)
    relay.worker = worker
    await worker.start()
    worker.create_room(ROOM)
    try:
        yield E2eSfu(worker, relay)
    finally:
        await relay.drain()
        await worker.stop()


@pytest.fixture
async def page_url(netns: BlockedNetns) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, netns.sfu_ip, 0)
    await site.start()
    try:
        yield f"http://{netns.sfu_ip}:{runner.addresses[0][1]}/index.html"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(netns: BlockedNetns, page_url: str, tmp_path: Path) -> AsyncIterator[Browser]:
    wrapper = tmp_path / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    origin = page_url.rsplit("/", 1)[0]
    args = [a for a in CHROMIUM_ARGS if a != "--allow-loopback-in-peer-connection"]
    args.append(f"--unsafely-treat-insecure-origin-as-secure={origin}")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(wrapper), args=args, headless=True)
        try:
            yield b
        finally:
            await b.close()


_SELECTED = """() => Promise.all([["publish", pub], ["subscribe", sub]].filter(([, pc]) => pc).map(
  async ([name, pc]) => {
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let out = {pc: name, protocol: null, local: null, remote: null, tcpType: null};
    report.forEach((s) => {
      if (s.type !== "transport" || !s.selectedCandidatePairId) return;
      const pair = byId.get(s.selectedCandidatePairId);
      const local = pair && byId.get(pair.localCandidateId);
      const remote = pair && byId.get(pair.remoteCandidateId);
      if (local) out = {pc: name, protocol: local.protocol, tcpType: local.tcpType ?? null,
                        local: `${local.address}:${local.port}`,
                        remote: remote ? `${remote.protocol} ${remote.address}:${remote.port}` : null};
    });
    return out;
  }))"""


async def test_chromium_with_udp_blackholed_joins_over_ice_tcp(
    sfu: E2eSfu, browser: Browser, page_url: str, netns: BlockedNetns, artifacts: Path
) -> None:
    out = artifacts / "e2e"
    out.mkdir(exist_ok=True)
    peer = AiortcParticipant("aiortc", "red")
    first_frames: list[float] = []
    report: dict[str, Any] = {"joins": []}
    try:
        await sfu.join(peer)
        for i in range(JOINS):
            chrome = await ChromiumParticipant.open(browser, page_url, f"chrome-{i}")
            try:
                started = time.monotonic()
                await sfu.join(chrome)

                async def decodes(chrome: ChromiumParticipant = chrome) -> bool:
                    video = await chrome.inbound_from("aiortc", "video")
                    return bool(video and video["framesDecoded"] > 0)

                async def diagnose(chrome: ChromiumParticipant = chrome) -> str:
                    return (f"selected: {await chrome.page.evaluate(_SELECTED)}\n"
                            f"states: {await chrome.connection_states()}\ntransport: {sfu.stats()['transport']}\n"
                            f"console: {chrome.console[-20:]}")

                await eventually(decodes, CONNECT_TIMEOUT, f"join {i}: Chromium decoding aiortc over ICE-TCP", diagnose)
                first_frames.append(time.monotonic() - started)
                async def flowing(chrome: ChromiumParticipant = chrome) -> bool:
                    video = await chrome.inbound_from("aiortc", "video")
                    return bool(video and video["framesDecoded"] >= FRAMES)

                await eventually(flowing, CONNECT_TIMEOUT, f"join {i}: {FRAMES} frames", diagnose)
                selected = await chrome.page.evaluate(_SELECTED)
                report["joins"].append({"first_frame_s": first_frames[-1], "selected": selected})
                # Both peer connections run over TCP, to the SFU's passive TCP candidate on the veth.
                assert len(selected) == 2, selected
                for s in selected:
                    assert s["protocol"] == "tcp", selected
                    assert s["remote"] == f"tcp {netns.sfu_ip}:{sfu.worker.config.tcp_port}", selected
                    assert s["local"].startswith(netns.client_ip + ":"), selected
            finally:
                await chrome.close()
        totals = sfu.stats()["transport"]
        report["transport"] = totals
        assert totals["tcp_connections_accepted"] >= 2 * JOINS
        assert totals["tcp_closed_garbage"] == 0 and totals["tcp_internal_error"] == 0
        ordered = sorted(first_frames)
        report["first_frame_p50_s"] = ordered[len(ordered) // 2]
        print(f"UDP blocked, over ICE-TCP: first frame after join {', '.join(f'{t:.2f}' for t in first_frames)} s; "
              f"p50 {report['first_frame_p50_s']:.2f} s over {JOINS} joins, 0 failures")
    finally:
        write_json(out / "ice-tcp-udp-blocked.json", report)
        await peer.close()

