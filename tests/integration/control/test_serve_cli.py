"""`telesfu serve` as a user runs it: prints its URLs, serves, stops cleanly on SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
