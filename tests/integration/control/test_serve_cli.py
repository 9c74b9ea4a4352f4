"""`telesfu serve` as a user runs it: prints its URLs, serves, stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

TELESFU = str(Path(sys.executable).parent / "telesfu")


def media_env() -> dict[str, str]:
    return {"TELESFU_MEDIA_UDP_PORT": str(free_port()), "TELESFU_MEDIA_WORKERS": "1"}


def start(env_extra: dict[str, str], *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **media_env(), **env_extra}
    return subprocess.Popen([TELESFU, "serve", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def wait_ready(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/readyz", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_demo_prints_urls_and_stops_cleanly(sig):
    port = free_port()
    proc = start({"TELESFU_HTTP_PORT": str(port)}, "--demo")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        req = urllib.request.Request(url + "/v1/appointments/demo-appointment",
                                     headers={"Authorization": "Bearer dev-api-key"})
        apt = json.load(urllib.request.urlopen(req, timeout=2))
        assert apt["telehealth"] is True and apt["provider_id"] == "demo-provider"
    finally:
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"{url}/v1/openapi.json" in out and f"{url}/metrics" in out
    assert "demo-provider" in out and "/join#token=" in out
    assert "development default" in out  # the dev secrets are called out
    assert "shutting down" in out and "Traceback" not in out
    assert "media        1 worker(s), UDP 127.0.0.1" in out


def test_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[http]\nprot = 80\n")
    proc = subprocess.run([TELESFU, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "http.prot" in proc.stderr and "unknown key" in proc.stderr
    proc = subprocess.run([TELESFU, "serve"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TELESFU_ROOMS_MAX_PARTICIPANTS": "many"})
    assert proc.returncode == 2 and "rooms.max_participants" in proc.stderr


def test_unreachable_redis_is_a_clear_error():
    proc = subprocess.run([TELESFU, "serve"], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TELESFU_STORE_URL": "redis://127.0.0.1:1/0",
                               "TELESFU_HTTP_PORT": str(free_port())})
    assert proc.returncode == 1 and "cannot reach the store" in proc.stderr


def test_serve_on_redis(redis_url):
    port = free_port()
    proc = start({"TELESFU_HTTP_PORT": str(port), "TELESFU_STORE_URL": redis_url})
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2))
        assert body == {"status": "ready", "store": "redis"}
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out


def test_serve_caps_connections_times_out_silent_ones_and_can_move_metrics():
    """The listener limits under `telesfu serve` itself (uvloop): a third connection from one
    address gets 429 at accept, silent connections are closed by the header timeout, and
    /metrics answers only on its own port, with its bearer token."""
    import socket

    port, metrics_port, token = free_port(), free_port(), "metrics-token-0123456789"
    proc = start({"TELESFU_HTTP_PORT": str(port), "TELESFU_HTTP_MAX_CONNECTIONS_PER_SOURCE": "2",
                  "TELESFU_HTTP_KEEPALIVE_TIMEOUT_SECONDS": "1", "TELESFU_METRICS_PORT": str(metrics_port),
                  "TELESFU_METRICS_BEARER_TOKEN": token})
    socks: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        time.sleep(1.5)  # wait_ready's connections are closed by now
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
        assert socks[2].recv(200).startswith(b"HTTP/1.1 429"), "the third connection is refused at accept"
        for s in socks[:2]:  # silent: closed by the header timeout (1 s here)
            assert s.recv(200) == b""
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/metrics", timeout=2)
        assert e.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
        assert e.value.code == 401
        req = urllib.request.Request(f"http://127.0.0.1:{metrics_port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        text = urllib.request.urlopen(req, timeout=2).read().decode()
        assert 'telesfu_http_connections_refused_total{reason="per_source"} 1.0' in text
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{metrics_port}/metrics   (Authorization: Bearer <metrics.bearer_token>)" in out
    assert "Traceback" not in out
