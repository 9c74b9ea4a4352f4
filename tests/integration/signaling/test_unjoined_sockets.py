"""WebSockets that never join, over real sockets against a node with a real media worker: the
join deadline holds whatever they send, nothing is answered before join, malformed frames are
typed errors that are counted and never logged as tracebacks, and unjoined sockets are capped
per source address and in total before the upgrade is accepted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from signaling import protocol as p
from tests.signaling_helpers import SignalingClient, media_config, media_node

pytestmark = pytest.mark.slow

DEADLINE = 0.5  # signaling.join_timeout_seconds in these tests; every wait below is several times longer


@pytest.fixture
async def ln() -> AsyncIterator:
    cfg = media_config(signaling={"join_timeout_seconds": DEADLINE, "max_unjoined_per_source": 2,
                                  "max_unjoined": 3})
    async with media_node(cfg) as node:
        yield node


def counter(metrics: str, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in metrics.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


async def metrics_text(ln) -> str:
    return str((await ln.call("GET", "/metrics", auth=False))[1])


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


async def test_ping_first_is_refused_without_a_pong_and_closed(ln):
    c = await SignalingClient(ln, "", None).connect(join=False)
    try:
        await c.send({"type": "ping"})
        assert await c.wait_closed(5) == p.CLOSE_CODES["protocol_error"]
        assert c.types() == ["error"] and c.messages[0]["code"] == "not_joined"
        assert counter(await metrics_text(ln), "telesfu_signaling_errors_total", code="not_joined") == 1
    finally:
        await c.close()


async def test_the_join_deadline_holds_whatever_is_sent(ln):
    """WebSocket pings (answered by the server's WebSocket layer) do not keep an unjoined socket open."""
    c = await SignalingClient(ln, "", None).connect(join=False)
    try:
        async def keep_pinging() -> None:
            assert c.ws is not None
            while not c.ws.closed:
                await c.ws.ping()
                await asyncio.sleep(DEADLINE / 10)

        pinger = asyncio.ensure_future(keep_pinging())
        try:
            assert await c.wait_closed(DEADLINE * 10) == p.CLOSE_CODES["join_timeout"]
        finally:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
        assert [m["code"] for m in c.of_type("error")] == ["join_timeout"]
        assert counter(await metrics_text(ln), "telesfu_signaling_errors_total", code="join_timeout") == 1
        assert ln.hub.sessions == {}
    finally:
        await c.close()


@pytest.mark.parametrize("frame,code", [
    ('{"type": "join", "token": 1' + "0" * 5000 + "}", "json_number_too_long"),
    ("[" * 5000 + "]" * 5000, "json_too_deep"),
    ('{"type": "join", "token": NaN}', "invalid_json"),
    ('{"type": "join", "token": 5}', "invalid_field"),
    ("\x00\x01", "invalid_json"),
    (json.dumps({"type": "join", "token": "x" * 20_000}), "frame_too_large"),  # a join is at most a few KB
])
async def test_a_malformed_first_frame_is_a_counted_error_and_a_close(ln, caplog, frame, code):
    caplog.set_level(logging.DEBUG)
    c = await SignalingClient(ln, "", None).connect(join=False)
    try:
        await c.send(frame)
        assert await c.wait_closed(5) == p.CLOSE_CODES["protocol_error"]
        assert c.types() == ["error"] and c.messages[0]["code"] == code
        assert counter(await metrics_text(ln), "telesfu_signaling_errors_total", code=code) == 1
        no_tracebacks(caplog)
    finally:
        await c.close()


async def test_huge_numbers_from_a_joined_client_are_counted_then_it_is_closed(ln, caplog):
    caplog.set_level(logging.DEBUG)
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    c = await SignalingClient(ln, await ln.token("a1", "cli")).connect()
    try:
        await c.wait_for("joined")
        huge = '{"type": "mute", "track_id": "audio", "muted": ' + "9" * 5000 + "}"
        for n in range(1, p.MAX_MALFORMED_FRAMES):
            await c.send(huge)
            assert (await c.wait_for("error", count=n))["code"] == "json_number_too_long"
        await c.send({"type": "ping"})  # still connected after MAX_MALFORMED_FRAMES - 1 of them
        await c.wait_for("pong")
        await c.send(huge)
        assert await c.wait_closed(5) == p.CLOSE_CODES["protocol_error"]
        assert counter(await metrics_text(ln), "telesfu_signaling_errors_total",
                       code="json_number_too_long") == p.MAX_MALFORMED_FRAMES
        no_tracebacks(caplog)
    finally:
        await c.close()


async def _open_unjoined(ln, stack: AsyncExitStack, source: str) -> aiohttp.ClientWebSocketResponse:
    http = await stack.enter_async_context(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0))))
    ws = await http.ws_connect(ln.url.replace("http", "ws") + "/v1/rtc")
    stack.push_async_callback(ws.close)
    return ws


async def _refused_status(ln, stack: AsyncExitStack, source: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _open_unjoined(ln, stack, source)
    return refused.value.status


async def test_unjoined_sockets_are_capped_per_source_and_in_total(ln):
    """Caps of 2 per source and 3 in all (the fixture): past the source's cap the upgrade is
    refused before accept (429); past the node's, the oldest unjoined socket is let go (1013)
    so that a new one, a legitimate join among them, still gets in."""
    await ln.setup_appointment("a1", provider="prov", clients=("cli",))
    async with AsyncExitStack() as stack:
        first = await _open_unjoined(ln, stack, "127.0.0.1")
        await _open_unjoined(ln, stack, "127.0.0.1")
        assert await _refused_status(ln, stack, "127.0.0.1") == 429
        await _open_unjoined(ln, stack, "127.0.0.2")  # another source still gets in: 3 in all
        metrics = await metrics_text(ln)
        assert counter(metrics, "telesfu_signaling_upgrades_refused_total", reason="per_source") == 1
        assert counter(metrics, "telesfu_signaling_unjoined_connections") == 3
        # The node is full: a legitimate join from a fourth source gets in, and the oldest
        # unjoined socket is the one let go.
        joiner = await _open_unjoined(ln, stack, "127.0.0.3")
        await joiner.send_json({"type": "join", "token": await ln.token("a1", "cli")})
        kinds = []
        while "joined" not in kinds:
            kinds.append(json.loads((await asyncio.wait_for(joiner.receive(), 10)).data)["type"])
        said = await asyncio.wait_for(first.receive(), 5)
        assert said.type == aiohttp.WSMsgType.TEXT and json.loads(said.data)["code"] == "server_busy"
        closed = await asyncio.wait_for(first.receive(), 5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert first.close_code == 1013
        metrics = await metrics_text(ln)
        assert counter(metrics, "telesfu_signaling_unjoined_let_go_total") == 1
        assert counter(metrics, "telesfu_signaling_upgrades_refused_total", reason="total") == 0
        for _ in range(100):  # the join is done once the participant is in the media room too
            if counter(await metrics_text(ln), "telesfu_signaling_unjoined_connections") == 2:
                break
            await asyncio.sleep(0.05)
        assert counter(await metrics_text(ln), "telesfu_signaling_unjoined_connections") == 2
        await _open_unjoined(ln, stack, "127.0.0.1")  # the let-go socket's slot is free again
    # the held sockets are gone: the node is back to no unjoined socket
    for _ in range(100):
        if counter(await metrics_text(ln), "telesfu_signaling_unjoined_connections") == 0:
            break
        await asyncio.sleep(0.05)
    assert counter(await metrics_text(ln), "telesfu_signaling_unjoined_connections") == 0
