"""The worker's loop-lag gauge shows a stall: the largest lag of the stats interval reaches
Prometheus, not a sample that decayed before anyone read it (issue 8: a 1.3 s stall read 0)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from control.media_metrics import MediaCollector
from sfu.worker import STATS_INTERVAL, Worker, WorkerConfig
from tests.media_helpers import wait_until


async def test_a_blocked_loop_shows_in_the_exported_loop_lag() -> None:
    events: list[dict[str, Any]] = []
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1"]), events.append)
    await worker.start()
    try:
        await wait_until(lambda: any(e.get("type") == "worker_stats" for e in events), 3 * STATS_INTERVAL,
                         "first worker stats")
        events.clear()
        # Block the worker's loop as a CPU-bound datagram would: every ticker due meanwhile runs late.
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)
        await wait_until(lambda: any(e.get("type") == "worker_stats" for e in events), 3 * STATS_INTERVAL,
                         "worker stats after the stall")
        stats = next(e for e in events if e.get("type") == "worker_stats")
        # The keyframe ticker (every 100 ms) was due at most 100 ms into the stall.
        assert stats["loop_lag_seconds"] >= 0.19

        plane = SimpleNamespace(workers=[SimpleNamespace(index=0, proc=None, restarts=0, last_stats=stats)])
        registry = CollectorRegistry()
        registry.register(MediaCollector(plane))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        line = next(row for row in text.splitlines()
                    if row.startswith('telesfu_media_worker_loop_lag_seconds{worker="0"}'))
        assert float(line.split()[-1]) >= 0.19
    finally:
        await worker.stop()
