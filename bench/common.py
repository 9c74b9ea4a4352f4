"""What every benchmark does alike: the machine it ran on, percentiles, its command line, and
running quietly (progress bars, not log lines)."""

from __future__ import annotations

import math
import os
import platform
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """CPU model and count, Python, platform, date, git commit, host and load at the start."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = ""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {"nproc": usable, "cpu_count": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "platform": platform.platform(),
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_commit": commit,
            "hostname": socket.gethostname(), "loadavg_at_start": load}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence; 0.0 when empty."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    return float(sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))])


def bench_argv(name: str) -> list[str]:
    """This bench's own arguments: what follows `name` on the command line (all of it if absent)."""
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1:] if name in argv else argv


def command_line(name: str) -> str:
    """The command that reproduces this run, as a report records it."""
    return " ".join(shlex.quote(a) for a in ["telesfu", "bench", name, *bench_argv(name)])


def run_quietly(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a bench's coroutine on uvloop with the node's, aioice's and aiortc's logs at WARNING
    (their lines, and the workers' stderr, would break the progress bars); 130 on Ctrl-C."""
    import logging

    import uvloop

    for logger in ("telesfu", "aioice", "aiortc"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    os.environ.setdefault("TELESFU_LOG_LEVEL", "WARNING")
    try:
        return uvloop.run(main())
    except KeyboardInterrupt:
        return 130
