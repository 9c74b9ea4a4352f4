"""The join page's security headers (framing refused unless configured) and /metrics on its own
listener or behind a bearer token, over real HTTP on loopback."""

from __future__ import annotations

import aiohttp
import pytest

from control.config import ConfigError
from tests.conftest import free_port
from tests.control_helpers import live_node, make_config
from tests.signaling_helpers import media_config, media_node


def csp(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    policy = str(headers["Content-Security-Policy"])  # type: ignore[index]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] if " " in d else "" for d in
            (x.strip() for x in policy.split(";")) if d}


async def get(http: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, aiohttp.typedefs.LooseHeaders, str]:
    async with http.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, resp.headers, await resp.text()


@pytest.mark.slow
async def test_the_join_page_may_not_be_framed_by_default():
    async with media_node() as ln:
        status, h, body = await get(ln.http, ln.url + "/join")
        assert status == 200 and "app.js" in body
        policy = csp(h)
        assert policy["frame-ancestors"] == "'none'" and h["X-Frame-Options"] == "DENY"
        assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
        assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"
        assert h["Referrer-Policy"] == "no-referrer"  # the token is in the fragment; nothing else leaks
        assert h["X-Content-Type-Options"] == "nosniff" and h["Cache-Control"] == "no-store"
        assert "camera=(self)" in h["Permissions-Policy"]
        # the page's own files carry the same framing rules (web/index.html is one of them)
        for path in ("/web/app.js", "/web/index.html"):
            status, h, _ = await get(ln.http, ln.url + path)
            assert status == 200 and h["X-Frame-Options"] == "DENY", path
            assert csp(h)["frame-ancestors"] == "'none'" and h["X-Content-Type-Options"] == "nosniff"
        # the API is not touched
        status, h, _ = await get(ln.http, ln.url + "/healthz")
        assert status == 200 and "Content-Security-Policy" not in h


@pytest.mark.slow
async def test_a_practice_portal_may_be_allowed_to_frame_the_page():
    portals = ["https://portal.example", "https://*.clinic.example:8443"]
    async with media_node(media_config(http={"frame_ancestors": portals})) as ln:
        status, h, _ = await get(ln.http, ln.url + "/join")
        assert status == 200
        assert csp(h)["frame-ancestors"] == "https://portal.example https://*.clinic.example:8443"
        assert "X-Frame-Options" not in h  # it has no allow-list: CSP alone decides


@pytest.mark.parametrize("origin", ["https://portal.example; script-src *", "https://portal.example/path", "*",
                                    "javascript:", "https://portal.example\r\nX-Evil: 1", ""])
def test_frame_ancestors_take_origins_only(origin):
    with pytest.raises(ConfigError) as e:
        make_config(http={"frame_ancestors": [origin]})
    assert e.value.key == "http.frame_ancestors"


async def test_metrics_on_their_own_listener():
    port = free_port()
    async with live_node(make_config(metrics={"port": port})) as ln:
        status, _, _ = await get(ln.http, ln.url + "/metrics")
        assert status == 404  # no longer on the public listener
        status, _, text = await get(ln.http, f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "telesfu_http_requests_total" in text
        status, _, _ = await get(ln.http, f"http://127.0.0.1:{port}/v1/rooms")
        assert status == 404  # and the metrics listener serves nothing else


@pytest.mark.parametrize("own_listener", [False, True])
async def test_metrics_behind_a_bearer_token(own_listener):
    token = "metrics-token-0123456789"
    port = free_port() if own_listener else 0
    async with live_node(make_config(metrics={"port": port, "bearer_token": token})) as ln:
        url = f"http://127.0.0.1:{port}/metrics" if own_listener else ln.url + "/metrics"
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {token}"}):
            status, h, _ = await get(ln.http, url, headers=headers)
            assert status == 401 and "Bearer" in h["WWW-Authenticate"], headers
        status, _, text = await get(ln.http, url, headers={"Authorization": f"Bearer {token}"})
        assert status == 200 and "telesfu_http_requests_total" in text


async def test_metrics_stay_open_by_default():
    async with live_node() as ln:
        status, _, text = await get(ln.http, ln.url + "/metrics")
        assert status == 200 and "telesfu_http_requests_total" in text
