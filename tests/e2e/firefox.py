"""Debian's firefox-esr for the browser tests, driven by tests/e2e/firefox_driver.mjs (Node,
puppeteer-core over WebDriver BiDi) as a subprocess speaking JSON lines.

`FirefoxDriver.start()` launches the browser (skips the test when firefox-esr, node or the
driver's node_modules are missing: scripts/setup.sh --test installs them); `open()` gives a
`FirefoxPage` in a browser context of its own. `stop()` ends the driver and kills the browser's
whole process group, whatever state it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

FIREFOX = Path("/usr/bin/firefox-esr")
HERE = Path(__file__).resolve().parent
DRIVER = HERE / "firefox_driver.mjs"
NODE_MODULES = HERE / "node" / "node_modules" / "puppeteer-core"
START_TIMEOUT = 60.0
CALL_TIMEOUT = 30.0


class FirefoxError(Exception):
    """The driver answered a request with an error (the page threw, or the browser is gone)."""


class FirefoxPage:
    def __init__(self, driver: FirefoxDriver, name: str) -> None:
        self.driver = driver
        self.name = name

    @property
    def console(self) -> list[str]:
        return self.driver.console.get(self.name, [])

    async def evaluate(self, expr: str, timeout: float = CALL_TIMEOUT) -> Any:
        return await self.driver.call({"op": "eval", "page": self.name, "expr": expr}, timeout)

    async def call(self, function: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """`function(args...)` in the page, the arguments passed as JSON."""
        return await self.evaluate(f"{function}({', '.join(json.dumps(a) for a in args)})", timeout)

    async def click(self, selector: str) -> None:
        await self.driver.call({"op": "click", "page": self.name, "selector": selector})

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.driver.call({"op": "shot", "page": self.name, "path": str(path)})

    async def wait_for(self, expr: str, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.evaluate(f"!!({expr})"):
            if loop.time() > deadline:
                raise AssertionError(f"firefox {self.name}: {what} not seen within {timeout}s; console: {self.console[-20:]}")
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        with contextlib.suppress(FirefoxError, asyncio.TimeoutError, ConnectionError):
            await self.driver.call({"op": "close", "page": self.name}, 10)


class FirefoxDriver:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.version = ""
        self.browser_pid: int | None = None
        self.console: dict[str, list[str]] = {}
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, stderr_path: Path | None = None) -> FirefoxDriver:
        """`stderr_path` keeps the driver's and (with FIREFOX_DUMPIO=1) the browser's stderr."""
        for need, why in ((FIREFOX, "apt firefox-esr"), (NODE_MODULES, "npm puppeteer-core in tests/e2e/node")):
            if not need.exists():
                pytest.skip(f"{need} is missing (scripts/setup.sh --test installs {why})")
        node = shutil.which("node")
        if node is None:
            pytest.skip("node is missing (scripts/setup.sh --test installs nodejs)")
        stderr: Any = asyncio.subprocess.DEVNULL
        if stderr_path is not None:
            stderr_path.parent.mkdir(parents=True, exist_ok=True)
            stderr = stderr_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            node, str(DRIVER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=stderr, env={**os.environ, "FIREFOX": str(FIREFOX)},
            start_new_session=True, limit=64 * 1024 * 1024)
        if stderr_path is not None:
            stderr.close()
        driver = cls(proc)
        try:
            ready = await asyncio.wait_for(asyncio.shield(driver._ready), START_TIMEOUT)
        except BaseException:
            await driver.stop()
            raise
        driver.version = str(ready.get("version", ""))
        driver.browser_pid = ready.get("pid")
        return driver

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:  # the browser's own stdout (FIREFOX_DUMPIO) is not ours
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("event") == "ready":
                    if not self._ready.done():
                        self._ready.set_result(msg)
                elif msg.get("event") == "console":
                    self.console.setdefault(str(msg["page"]), []).append(str(msg["text"]))
                elif (fut := self._waiting.pop(int(msg.get("id", -1)), None)) is not None and not fut.done():
                    fut.set_result(msg)
        finally:
            gone = ConnectionError("firefox driver exited")
            if not self._ready.done():
                self._ready.set_exception(gone)
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(gone)
            self._waiting.clear()

    async def call(self, request: dict[str, Any], timeout: float = CALL_TIMEOUT) -> Any:
        assert self.proc.stdin is not None
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self.proc.stdin.write((json.dumps({**request, "id": rid}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            msg = await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(rid, None)
        if not msg.get("ok"):
            raise FirefoxError(str(msg.get("error")))
        return msg.get("value", msg.get("page"))

    async def open(self, url: str, init: str = "") -> FirefoxPage:
        """A new page on `url`; `init` runs in each of its documents before the page's scripts."""
        return FirefoxPage(self, str(await self.call({"op": "open", "url": url, "init": init})))

    async def stop(self) -> None:
        """Closes the browser; kills the driver's process group (node, firefox and its content
        processes: all were started in the driver's session) whatever happened."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.browser_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.browser_pid, signal.SIGKILL)
        if self.proc.returncode is None:
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
