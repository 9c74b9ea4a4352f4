"""A `telesfu serve` process SIGTERMed with participants in a room drains: new joins are refused
(`node_draining`, close 1001), /readyz answers 503, the participants are told, and the process
exits 0 with its media workers gone."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from bench.joins import OwnedNode
from bench.media import worker_pids_of
from signaling import protocol as p
from tests.conftest import free_port
from tests.control_helpers import API_KEY, LiveNode
from tests.integration.control.test_webhooks import SECRET, receiver
from tests.signaling_helpers import SignalingClient

pytestmark = pytest.mark.slow


@asynccontextmanager
async def served(drain_seconds: float, **env: str) -> AsyncIterator[tuple[OwnedNode, LiveNode]]:
    """A real `telesfu serve` child (one worker, memory store) and an API client for it."""
    node = OwnedNode(1, {"TELESFU_AUTH_API_KEYS": API_KEY, "TELESFU_NODE_DRAIN_SECONDS": str(drain_seconds), **env})
    async with aiohttp.ClientSession() as http:
        try:
            await node.start(http)
            yield node, LiveNode(None, node.url, http)  # type: ignore[arg-type]
        finally:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(5)
            node.cleanup()


async def joined_pair(ln: LiveNode) -> tuple[SignalingClient, SignalingClient]:
    await ln.setup_appointment("a1", provider="prov", clients=("cli", "late"))
    pr = await SignalingClient(ln, await ln.token("a1", "prov")).connect()
    c = await SignalingClient(ln, await ln.token("a1", "cli")).connect()
    await pr.wait_for("joined")
    await c.wait_for("joined")
    return pr, c


async def exit_code(node: OwnedNode, timeout: float) -> int:
    assert node.proc is not None
    return await asyncio.wait_for(asyncio.to_thread(node.proc.wait), timeout)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def readyz(ln: LiveNode) -> tuple[int, dict]:
    async with ln.http.get(ln.url + "/readyz") as resp:
        return resp.status, await resp.json()


async def test_sigterm_drains_refuses_joins_tells_participants_and_exits_cleanly():
    async with served(drain_seconds=4) as (node, ln):
        assert node.proc is not None
        workers = worker_pids_of(node.proc.pid)
        assert len(workers) == 1
        pr, c = await joined_pair(ln)
        late_token = await ln.token("a1", "late")
        try:
            node.proc.send_signal(signal.SIGTERM)
            for x in (pr, c):  # told at once how long the session may go on
                assert (await x.wait_for("node_draining"))["seconds"] == 4
            assert await readyz(ln) == (503, {"error": {
                "code": "node_draining", "message": "the node is shutting down and takes no new sessions"}})
            late = await SignalingClient(ln, late_token).connect()
            assert (await late.wait_for("error"))["code"] == "node_draining"
            assert await late.wait_closed() == p.CLOSE_GOING_AWAY
            s, room = await ln.call("GET", "/v1/rooms/a1")  # the refused join changed nothing
            assert s == 200 and sorted(m["participant_id"] for m in room["participants"]) == ["cli", "prov"]
            for x in (pr, c):  # the deadline: everybody still in hears why the session ends
                assert (await x.wait_for("room_closed", timeout=15))["reason"] == "node_shutdown"
                assert await x.wait_closed() == p.CLOSE_GOING_AWAY
            assert await exit_code(node, 20) == 0
        finally:
            for x in (pr, c):
                await x.close()
        out = node.log_tail(200)
        assert "draining" in out and "shutting down" in out and "Traceback" not in out
        assert not any(alive(w) for w in workers), "a media worker outlived its node"


async def test_a_drained_node_exits_as_soon_as_the_last_session_ends():
    async with served(drain_seconds=600) as (node, ln):
        assert node.proc is not None
        pr, c = await joined_pair(ln)
        try:
            node.proc.send_signal(signal.SIGTERM)
            await pr.wait_for("node_draining")
            await c.wait_for("node_draining")
            for x in (c, pr):  # the session ends on its own, long before the deadline
                await x.send({"type": "leave"})
                assert await x.wait_closed() == p.CLOSE_LEFT
            assert await exit_code(node, 30) == 0
        finally:
            for x in (pr, c):
                await x.close()
        assert "drained" in node.log_tail(200) and "idle" in node.log_tail(200)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_ends_the_drain_at_once(second):
    async with served(drain_seconds=600) as (node, ln):
        assert node.proc is not None
        workers = worker_pids_of(node.proc.pid)
        pr, c = await joined_pair(ln)
        try:
            node.proc.send_signal(signal.SIGTERM)
            await pr.wait_for("node_draining")
            node.proc.send_signal(second)
            for x in (pr, c):
                assert (await x.wait_for("room_closed", timeout=15))["reason"] == "node_shutdown"
            assert await exit_code(node, 30) == 0
        finally:
            for x in (pr, c):
                await x.close()
        assert not any(alive(w) for w in workers)
        assert os.path.exists(f"/proc/{node.proc.pid}") is False or not alive(node.proc.pid)


async def test_the_drain_delivers_the_webhooks_of_the_participants_it_let_go():
    async with receiver() as rec, served(drain_seconds=1, TELESFU_WEBHOOKS_URL=rec.url,
                                         TELESFU_WEBHOOKS_SECRET=SECRET) as (node, ln):
        assert node.proc is not None
        pr, c = await joined_pair(ln)
        await ln.setup_appointment("a2", provider="prov2", clients=("cli2",))
        pr2 = await SignalingClient(ln, await ln.token("a2", "prov2")).connect()
        try:
            await pr2.wait_for("joined")
            node.proc.send_signal(signal.SIGTERM)
            for x in (pr, c, pr2):  # every room on the node
                assert (await x.wait_for("room_closed", timeout=15))["reason"] == "node_shutdown"
            assert await exit_code(node, 30) == 0
        finally:
            for x in (pr, c, pr2):
                await x.close()
        left = {e["data"]["participant_id"]: e["data"]["reason"] for e in rec.of_type("participant.left")}
        assert left == {"prov": "node_shutdown", "cli": "node_shutdown", "prov2": "node_shutdown"}
        assert sorted(e["data"]["appointment_id"] for e in rec.of_type("room.finished")) == ["a1", "a2"]


async def test_with_redis_undelivered_webhooks_stay_queued_for_the_next_node(redis_url):
    from control.store.redis import RedisStore

    url = redis_url.rsplit("/", 1)[0] + "/11"  # a database of this test's own
    unreachable = f"http://127.0.0.1:{free_port()}/hooks"
    async with served(drain_seconds=1, TELESFU_STORE_URL=url, TELESFU_WEBHOOKS_URL=unreachable,
                      TELESFU_WEBHOOKS_SECRET=SECRET) as (node, ln):
        store = RedisStore.from_url(url)
        try:
            await store._r.flushdb()
            assert node.proc is not None
            pr, c = await joined_pair(ln)
            try:
                node.proc.send_signal(signal.SIGTERM)
                assert await exit_code(node, 30) == 0
            finally:
                for x in (pr, c):
                    await x.close()
            assert "stay queued in the redis store" in node.log_tail(200)
            pending = await store.claim_webhooks(1e12, 60, 100)
            left = sorted((e.event.data["participant_id"], e.event.data["reason"]) for e in pending
                          if e.event.type == "participant.left")
            assert left == [("cli", "node_shutdown"), ("prov", "node_shutdown")]
            room = await store.get_room("a1")
            assert room is not None and not room.members  # nobody left behind as admitted
        finally:
            await store._r.flushdb()
            await store.close()


async def test_a_participant_who_drops_during_the_drain_resumes_and_is_told():
    async with served(drain_seconds=8) as (node, ln):
        assert node.proc is not None
        pr, c = await joined_pair(ln)
        credential = (await c.wait_for("joined"))["resume"]
        c2 = None
        try:
            node.proc.send_signal(signal.SIGTERM)
            await c.wait_for("node_draining")
            await c.ws.close()  # the client's network drops mid-drain
            await pr.wait_for("participant_reconnecting")
            c2 = await SignalingClient(ln, "").connect(join=False)
            await c2.send({"type": "resume", "credential": credential})  # not a new join: let back in
            await c2.wait_for("joined")
            assert 0 < (await c2.wait_for("node_draining"))["seconds"] <= 8
            for x in (pr, c2):
                assert (await x.wait_for("room_closed", timeout=20))["reason"] == "node_shutdown"
            assert await exit_code(node, 30) == 0
        finally:
            for x in (pr, c, c2):
                if x is not None:
                    await x.close()
