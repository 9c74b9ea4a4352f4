"""Shared fixtures: a real Redis server, a live control API on a real loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def free_port() -> int:
    """A loopback port free for both TCP and UDP (a worker listens on both with one number)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no loopback port free for both TCP and UDP")


def _redis_reachable(url: str) -> bool:
    p = urlparse(url)
    try:
        with socket.create_connection((p.hostname or "127.0.0.1", p.port or 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ensure_redis_server() -> str:
    exe = shutil.which("redis-server")
    if exe is None:  # the project's own scripts install it; do it here too if someone skipped them
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed and could not be installed (run scripts/setup.sh --test)")
    return exe


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set and reachable, else a throwaway redis-server on a free loopback port."""
    env_url = os.environ.get("REDIS_URL")
    if env_url and _redis_reachable(env_url):
        yield env_url
        return
    exe = _ensure_redis_server()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="telesfu-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_reachable(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the throwaway redis-server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of one test's own, so tests never see each other's keys (nor a shared server's)."""
    return f"telesfu-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[object]:
    from control.store.redis import RedisStore

    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    yield store
    await cleanup_redis_store(store, redis_prefix)


async def cleanup_redis_store(store: object, prefix: str) -> None:
    """Delete one test's keys and close its connection."""
    r = store._r  # type: ignore[attr-defined]
    keys = [k async for k in r.scan_iter(match=prefix + "*", count=500)]
    if keys:
        await r.delete(*keys)
    await store.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
