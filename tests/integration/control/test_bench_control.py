"""Smoke test of `telesfu bench control`: a tiny budget, consistent counts; no speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control.domain.admission import Code

REPO = Path(__file__).resolve().parents[3]
CODES = {c.value for c in Code}


def run_bench(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "control.cli", "bench", "control", "--seconds", "0.5", "--appointments", "40",
         "--concurrency", "8", "--join-concurrency", "4", "--json", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def check_admission(adm: dict[str, Any]) -> None:
    for key, expect in (("waiting_room_off", "admitted"), ("waiting_room_on", "waiting")):
        phase = adm[key]
        assert phase["decisions"] > 0 and phase["rounds"] >= 1
        assert sum(phase["codes"].values()) == phase["decisions"]  # every decision has a code
        assert set(phase["codes"]) <= CODES
        assert phase["codes"].get(expect, 0) > 0
        # the refusal mix: every full round holds expired, tampered, off-roster and early tokens
        for refusal in ("token_expired", "token_invalid", "not_on_roster", "outside_join_window"):
            assert phase["codes"].get(refusal, 0) >= max(1, phase["rounds"] - 1), (key, refusal, phase["codes"])
        assert phase["leaves"] > 0
    assert adm["waiting_room_on"]["codes"].get("participant_denied", 0) > 0 or adm["waiting_room_on"]["rounds"] == 1
    assert adm["token_verify"]["verifies"] > 0
    assert adm["node_stop_recancels"] >= 0


def check_api(api: dict[str, Any]) -> None:
    for name in ("warmup", "peak", "half_peak"):
        phase = api[name]
        assert phase["sent"] > 0
        assert phase["responses"] == phase["sent"], (name, phase)  # every request was answered
        assert phase["errors"] == 0 and phase["skipped"] == 0
        assert sum(phase["statuses"].values()) == phase["responses"]
        assert phase["server_errors"] == 0 and all(int(s) < 500 for s in phase["statuses"]), phase["statuses"]
        assert sum(phase["by_kind"].values()) == phase["sent"]
        assert set(phase["by_kind"]) <= {"put_appointment", "post_token", "get_room"}
        assert phase["latency"]["count"] == phase["responses"]
        assert phase["latency"]["p50_ms"] <= phase["latency"]["p99_ms"] <= phase["latency"]["max_ms"]
    assert api["half_peak"]["target_rate"] == pytest.approx(api["peak"]["requests_per_second"] / 2)


def check_report(report: dict[str, Any], kinds: list[str]) -> None:
    assert list(report["stores"]) == kinds
    m = report["machine"]
    assert m["nproc"] >= 1 and m["python"].startswith("3.") and m["date"].endswith("Z")
    assert {a["aim"].split()[0] for a in report["aims"]} == set(kinds)
    assert all(isinstance(a["met"], bool) for a in report["aims"])


def test_bench_control_memory(tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    report = run_bench(tmp_path, "--store", "memory", "--plot", str(png))
    check_report(report, ["memory"])
    check_admission(report["stores"]["memory"]["admission"])
    check_api(report["stores"]["memory"]["api"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.redis
def test_bench_control_redis(tmp_path: Path, redis_url: str) -> None:
    report = run_bench(tmp_path, "--store", "redis", "--redis-url", redis_url)
    check_report(report, ["redis"])
    res = report["stores"]["redis"]
    check_admission(res["admission"])
    check_api(res["api"])
    # its keys lived under prefixes of its own and are gone
    assert res["admission"]["keys_removed"] > 0 and res["api"]["keys_removed"] > 0
    import redis

    r = redis.Redis.from_url(redis_url)
    try:
        for prefix in (res["admission"]["key_prefix"], res["api"]["key_prefix"]):
            assert prefix.startswith("telesfu-bench-")
            assert not list(r.scan_iter(match=prefix + "*", count=1000))
    finally:
        r.close()
