"""CI smoke of `telesfu bench fuzz`: every target under atheris for a short bounded run finds
nothing and really ran its inputs; a target that raises is reported as a finding (so the
harness can fail). The million-input run and the cost of single inputs are bench figures
(bench/RESULTS.md), not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parents[2]
SMOKE_RUNS = 2000

pytestmark = pytest.mark.slow


def bench_fuzz(tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, "-m", "bench.fuzz", "--workdir", str(tmp_path / "work"), "--json", str(out),
                           "--no-replay", "--seed", "20261201", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=280)
    return proc.returncode, json.loads(out.read_text()), proc.stdout + proc.stderr


@pytest.mark.timeout(300)  # ~40 s on a quiet machine (a process per target: ~1 s of instrumenting each)
def test_every_target_runs_its_inputs_and_finds_nothing(tmp_path: Path) -> None:
    rc, result, output = bench_fuzz(tmp_path, "--runs", str(SMOKE_RUNS))
    by_name = {r["target"]: r for r in result["targets"]}
    assert set(by_name) == set(TARGETS), output
    for name, r in by_name.items():
        assert r["outcome"] == "ok", (name, r["outcome"], output[-3000:])
        assert r["inputs_run"] == SMOKE_RUNS, (name, r)
        assert r["uncaught_exceptions"] == 0, (name, r["finding_signatures"], r["finding_examples"])
        assert r["coverage"] > 0 and r["corpus_size"] > 0, (name, r)
    assert rc == 0, output[-3000:]


def test_a_target_that_raises_is_a_finding(tmp_path: Path) -> None:
    rc, result, output = bench_fuzz(tmp_path, "--targets-module", "tests.fuzz.broken_targets", "--target", "broken",
                                    "--runs", "30000")
    [r] = result["targets"]
    assert r["uncaught_exceptions"] > 0, output[-3000:]
    [sig] = r["finding_signatures"]
    assert sig.startswith("IndexError at tests/fuzz/broken_targets.py:"), sig
    example = r["finding_examples"][sig][0]
    assert bytes.fromhex(example["input_hex"]).startswith(b"\xab\xcd")
    assert rc == 1  # the command fails when anything escaped
