"""The HTTP listener against hostile clients, over real sockets on loopback: bodies and query
strings that used to give 500 get 400 with a code and change nothing; slow or silent
connections are closed by the keep-alive/header timeout; slow bodies get 408; connections
per source address are capped at accept."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest

from tests.control_helpers import live_node, make_config
from tests.integration.control.test_api import snapshot

TIMEOUT = 0.5  # http.keepalive_timeout_seconds and http.body_timeout_seconds here; waits are 10x longer


@pytest.fixture
async def live() -> AsyncIterator:
    cfg = make_config(http={"keepalive_timeout_seconds": TIMEOUT, "body_timeout_seconds": TIMEOUT,
                            "max_connections_per_source": 4})
    async with live_node(cfg) as ln:
        yield ln


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


PROVIDER = {"name": "Dr P", "teletherapy_enabled": True}


@pytest.mark.parametrize("raw,what", [
    (b'{"name": "Dr P", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deep nesting (RecursionError)"),
    (b'{"name": "Dr P", "x": ' + b"[" * 33 + b"]" * 33 + b"}", "nesting past 32"),
    (b'{"name": "Dr P", "teletherapy_enabled": ' + b"1" * 5000 + b"}", "5,000-digit integer (ValueError)"),
    (b'{"name": "Dr P", "teletherapy_enabled": NaN}', "NaN"),
    (b'{"name": "Dr \\ud800"}', "a lone surrogate (not text; cannot be encoded as UTF-8)"),
])
async def test_hostile_json_bodies_get_400_invalid_json(live, caplog, raw, what):
    before = await snapshot(live)
    s, b = await live.call("PUT", "/v1/providers/p1", data=raw, headers={"Content-Type": "application/json"})
    assert (s, b["error"]["code"]) == (400, "invalid_json"), (what, s, b)
    assert b["error"]["message"]
    assert await snapshot(live) == before
    no_tracebacks(caplog)


@pytest.mark.parametrize("query", ["limit=abc", "limit=%C2%B2", "limit=" + "9" * 5000, "limit=-1", "limit=0",
                                   "limit=10001", "limit=1.5", "limit=%EF%BC%91", "after=%C2%B2", "after=x", "after=",
                                   "after=" + "9" * 5000, "after=-1"])
async def test_a_bad_limit_or_after_gets_400_invalid_parameter(live, caplog, query):
    s, b = await live.call("GET", f"/v1/audit?appointment_id=a1&{query}")
    assert (s, b["error"]["code"]) == (400, "invalid_parameter"), (query, s, b)
    no_tracebacks(caplog)


async def test_times_that_overflow_get_422_and_ids_with_a_newline_400(live, caplog):
    await live.setup_appointment("a1")
    before = await snapshot(live)
    apt = (await live.call("GET", "/v1/appointments/a1"))[1]
    body = {k: apt[k] for k in ("provider_id", "client_ids", "telehealth", "starts_at", "ends_at")}
    for starts, ends in (("0001-01-01T00:00:00+01:00", apt["ends_at"]), (apt["starts_at"], "9999-12-31T23:59:59-01:00"),
                         ("0001-01-01T00:10:00Z", "0001-01-01T00:50:00Z")):
        s, b = await live.call("PUT", "/v1/appointments/a1", {**body, "starts_at": starts, "ends_at": ends})
        assert (s, b["error"]["code"]) == (422, "invalid_time_range"), (starts, ends, b)
    s, b = await live.call("PUT", "/v1/appointments/a1", {**body, "provider_id": "prov-1\n"})
    assert (s, b["error"]["code"]) == (400, "invalid_field")
    s, b = await live.call("GET", "/v1/audit?appointment_id=a1%0A")
    assert (s, b["error"]["code"]) == (400, "invalid_id")
    assert await snapshot(live) == before
    no_tracebacks(caplog)


async def _port(live) -> int:
    return int(live.url.rsplit(":", 1)[1])


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it does not within `within`)."""
    got = b""
    async with asyncio.timeout(within):
        while chunk := await reader.read(65536):
            got += chunk
    return got


async def test_a_silent_connection_is_closed_by_the_header_timeout(live):
    reader, writer = await asyncio.open_connection("127.0.0.1", await _port(live))
    try:
        assert await closed_by_server(reader, TIMEOUT * 10) == b""
    finally:
        writer.close()


async def test_a_slowloris_request_is_closed_by_the_header_timeout(live):
    """The request line and headers trickle in a byte at a time and never end: trickling does not re-arm it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", await _port(live))
    try:
        async def trickle() -> None:
            for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000:
                writer.write(bytes([b]))
                await asyncio.sleep(TIMEOUT / 20)

        sender = asyncio.ensure_future(trickle())
        try:
            assert await closed_by_server(reader, TIMEOUT * 10) == b""
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(live):
    reader, writer = await asyncio.open_connection("127.0.0.1", await _port(live))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = await closed_by_server(reader, TIMEOUT * 10)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b'{"status": "ok"}')
    finally:
        writer.close()


async def test_a_body_that_does_not_arrive_gets_408(live):
    reader, writer = await asyncio.open_connection("127.0.0.1", await _port(live))
    try:
        writer.write(b"PUT /v1/providers/p1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-api-key-0123\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\": ")
        got = await closed_by_server(reader, TIMEOUT * 30)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"
    finally:
        writer.close()
    assert await live.node.store.get_provider("p1") is None


async def test_connections_per_source_are_capped_at_accept(live):
    """A cap of 4 (the fixture): the fifth connection from 127.0.0.1 gets 429 and is closed; others are served."""
    port = await _port(live)
    async with AsyncExitStack() as stack:
        held = []
        for _ in range(4):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            stack.callback(w.close)
            held.append((r, w))
        # the four are open: the server has accepted them (a request on one is answered)
        held[0][1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await held[0][0].readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
        r, w = await asyncio.open_connection("127.0.0.1", port)
        stack.callback(w.close)
        refused = await closed_by_server(r, 5)
        assert refused.startswith(b"HTTP/1.1 429"), refused
        assert json.loads(refused.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "too_many_connections"
        # another source address is not affected
        other = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))))
        async with other.get(live.url + "/healthz") as resp:
            assert resp.status == 200
        metrics = await (await other.get(live.url + "/metrics")).text()
        assert 'telesfu_http_connections_refused_total{reason="per_source"} 1.0' in metrics
        held[1][1].close()  # one goes away: 127.0.0.1 is served again
        await closed_by_server(held[1][0], 5)
        for _ in range(100):  # once the server has seen the close
            async with aiohttp.ClientSession() as again, again.get(live.url + "/healthz") as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("127.0.0.1 was not served again after one of its connections closed")


_HOSTILE_BODIES = [
    b"[" * 5000 + b"]" * 5000, b"1" * 5000, b'{"a": ' + b"9" * 5000 + b"}", b"NaN", b'{"x": -Infinity}',
    b"\xed\xa0\x80", b'"\\ud800"', b'{"name": "\\ud800", "participant_id": "\\udfff"}', b"\x00", b"{}" * 100,
    b'{"name": {"a": [1]}, "provider_id": [], "client_ids": {"a": 1}, "telehealth": "yes", "starts_at": 5, '
    b'"ends_at": null, "status": ["scheduled"], "max_participants": 1e400, "participant_id": 12, '
    b'"reason": {}, "kind": [], "muted": "no"}',
    b'{"starts_at": "0001-01-01T00:00:00+23:59", "ends_at": "9999-12-31T23:59:59-23:59", "provider_id": "p", '
    b'"client_ids": ["c"], "telehealth": true}',
    b'{"client_ids": ["' + b'", "'.join(b"c%d" % i for i in range(5000)) + b'"]}',
]
_ROUTES = [("PUT", "/v1/providers/p1"), ("PUT", "/v1/clients/c1"), ("PUT", "/v1/appointments/a1"),
           ("POST", "/v1/appointments/a1/tokens"), ("POST", "/v1/rooms/a1/participants/c1/admit"),
           ("POST", "/v1/rooms/a1/participants/c1/deny"), ("POST", "/v1/rooms/a1/participants/c1/mute"),
           ("POST", "/v1/rooms/a1/participants/c1/remove"), ("POST", "/v1/rooms/a1/admit_all")]


async def test_no_route_answers_a_hostile_body_with_500(live, caplog):
    await live.setup_appointment("a1", provider="p1", clients=("c1",))
    for method, path in _ROUTES:
        for raw in _HOSTILE_BODIES:
            s, b = await live.call(method, path, data=raw, headers={"Content-Type": "application/json"})
            assert s < 500, (method, path, raw[:60], s, b)
            assert isinstance(b, dict) and b.get("error", {}).get("code") or s < 300, (method, path, raw[:60], b)
    no_tracebacks(caplog)
