"""`telesfu bench media` end to end: a real MediaPlane (worker processes), synthetic participants
on loopback, and counts that must agree between the generator and the SFU. No speed is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.media import Scenario, fanout, one_to_one, plot, print_summary, run_scenario
from bench.media_source import EncodedMedia

pytestmark = pytest.mark.slow


def _close(a: int, b: int, rel: float = 0.02) -> bool:
    return abs(a - b) <= max(3, rel * max(a, b))


def _check(scenario: Scenario, r: dict[str, Any]) -> None:
    assert r["setup"]["not_ready"] == []
    assert r["errors"] == []
    c = r["consistency"]
    assert c["publishers_sent"] > 0
    assert _close(c["publishers_sent"], c["sfu_received"]), c
    assert _close(c["subscribers_received"], c["sfu_forwarded"]), c
    assert c["subscriber_srtp_drops"] == 0 and c["unknown_ssrc"] == 0
    # every subscriber got audio and video from every publisher of its room, with no loss
    got = {(s["room"], s["subscriber"], s["publisher"], s["kind"]) for s in r["streams"] if s["packets"] > 0}
    for room in range(scenario.rooms):
        for sub, want in scenario.expected(room).items():
            for pub, kind in want:
                assert (f"room-{room}", sub, pub, kind) in got
    assert len(got) == scenario.forwarded_streams
    assert all(s["lost"] <= 0 for s in r["streams"])
    d = r["delay_ms"]
    assert d["negative"] == 0 and d["without_abs_send_time"] == 0
    for kind in ("audio", "video"):
        assert d[kind]["count"] > 0
        assert 0 < d[kind]["p50_ms"] <= d[kind]["p99_ms"] < 1000 and math.isfinite(d[kind]["mean_ms"])
    sfu = r["sfu"]
    assert sfu["forwarded_packets"] > 0 and sfu["cpu_us_per_forwarded_packet"] > 0
    # in the window, the SFU forwarded each received packet once per subscriber of it
    fanout_ratio = scenario.forwarded_streams / (2 * scenario.rooms * scenario.publishers)
    assert sfu["forwarded_packets"] == pytest.approx(fanout_ratio * sfu["received_packets"], rel=0.05)
    assert r["generator"]["received_packets"] == pytest.approx(sfu["forwarded_packets"], rel=0.05)
    assert r["timeline"] and all(not e["warmup"] for e in r["timeline"][-2:])
    assert r["quiet"]["seconds"] <= len(r["timeline"])
    json.dumps(r)


async def test_one_to_one_room(media: EncodedMedia) -> None:
    scenario = one_to_one(1)
    r = await run_scenario(scenario, media, duration=3.0, warmup=1.0)
    _check(scenario, r)
    assert r["sfu"]["cores_per_1to1_session"] > 0
    assert r["quality"]["subscribers"]["keyframes_received"] >= 0


async def test_fanout_to_three(media: EncodedMedia, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = fanout(3)
    r = await run_scenario(scenario, media, duration=3.0, warmup=1.0)
    _check(scenario, r)
    assert r["sfu"]["cores_per_1to1_session"] is None
    assert {s["publisher"] for s in r["streams"]} == {"r0-p0"}
    report = {"command": "test", "machine": {"nproc": 2, "cpu_model": "x", "python": "3", "date": "d",
                                             "git_commit": ""},
              "media": media.summary(), "runs": [r]}
    print_summary(report)
    assert "SFU CPU us / forwarded packet" in capsys.readouterr().out
    png = tmp_path / "media.png"
    plot(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_simulated_loss_is_repaired_by_nack_and_rtx(media: EncodedMedia) -> None:
    r = await run_scenario(one_to_one(1), media, duration=3.0, warmup=1.0, loss=0.03)
    assert r["setup"]["not_ready"] == [] and r["errors"] == []
    q = r["quality"]
    assert q["simulated_loss"]["dropped_out"] > 0 and q["simulated_loss"]["dropped_in"] > 0
    # upstream: the SFU saw gaps, NACKed the publishers, which resent over RTX
    assert q["sfu"]["nacks_to_publishers"] > 0 and q["publishers"]["retransmissions_sent"] > 0
    # downstream: subscribers NACKed, the SFU resent from its buffer, RTX filled the gaps
    assert q["subscribers"]["nacks_sent"] > 0 and q["sfu"]["retransmissions"] > 0
    assert q["subscribers"]["retransmissions_received"] > 0 and q["subscribers"]["recovered"] > 0
    video = [s for s in r["streams"] if s["kind"] == "video"]
    audio = [s for s in r["streams"] if s["kind"] == "audio"]
    assert all(s["lost"] <= 1 and s["recovered"] > 0 for s in video)
    assert all(s["nacked_seqs"] == 0 for s in audio)  # Opus negotiated no NACK: its losses stay lost
    c = r["consistency"]
    assert _close(c["publishers_sent"] - c["simulated_loss_out"], c["sfu_received"])
    assert _close(c["sfu_forwarded"] - c["simulated_loss_in"], c["subscribers_received"])
