"""`telesfu bench media` end to end: an embedded node (`telesfu serve`, worker processes) joined
through its signaling with tokens minted by its API, or a MediaPlane commanded directly;
synthetic participants on loopback, and counts that must agree between the generator and the
SFU. No speed is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.media import (
    Scenario,
    fanout,
    one_to_one,
    parse_metrics,
    plot,
    plot_ramp,
    print_ramp,
    print_summary,
    run_ramp,
    run_scenario,
    waiting_room,
)
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
    assert r["join_ms"]["count"] == scenario.participants and 0 < r["join_ms"]["p50"] <= r["join_ms"]["p95"]
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
    assert r["timeline"] and not r["timeline"][-1]["warmup"]
    assert r["quiet"]["seconds"] <= len(r["timeline"])
    json.dumps(r)


async def test_one_to_one_room_through_the_waiting_room(media: EncodedMedia) -> None:
    scenario = waiting_room(1, 2)
    r = await run_scenario(scenario, media, duration=2.0, warmup=0.0)
    assert r["params"]["mode"] == "embedded"
    _check(scenario, r)
    assert r["sfu"]["cores_per_1to1_session"] > 0
    # the client waited, the scripted provider admitted it, and the wait was timed
    a = r["admission"]
    assert a["waited"] == 1 and 0 < a["wait_ms"]["p50"] <= a["wait_ms"]["p95"] < 10_000
    assert a["messages"]["waiting"] == 1 and a["messages"]["joined"] == 2
    assert a["messages"]["subscribe_offer"] >= 2 and a["messages"]["publish_answer"] == 2


async def test_fanout_to_three(media: EncodedMedia, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = fanout(3)
    r = await run_scenario(scenario, media, duration=2.0, warmup=0.0)
    _check(scenario, r)
    assert r["admission"]["waited"] == 0
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
    r = await run_scenario(one_to_one(1), media, duration=2.5, warmup=0.5, loss=0.03, direct=True)
    assert r["params"]["mode"] == "direct"
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


async def test_ramp_of_two_steps(media: EncodedMedia, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = await run_ramp(one_to_one(1), media, step_seconds=1.0, max_rooms=2, direct=True)
    ramp = r["ramp"]
    assert ramp["mode"] == "direct"
    assert ramp["stopped_by"] == "max_rooms"
    steps = ramp["steps"]
    assert [s["rooms"] for s in steps] == [1, 2] and [s["participants"] for s in steps] == [2, 4]
    for s in steps:
        assert s["not_ready"] == 0 and s["forwarded_pps"] > 0 and s["sfu_cores"] > 0
        # a 1:1 room forwards each received packet once: to the other participant
        assert s["forwarded_pps"] == pytest.approx(s["received_pps"], rel=0.1)
    assert ramp["capacity"] == steps[-1]
    report = {"machine": {"nproc": 2, "cpu_model": "x", "python": "3", "date": "d", "git_commit": ""}, "runs": [r]}
    print_ramp(report)
    assert "capacity: 2 rooms, 4 participants" in capsys.readouterr().out
    png = tmp_path / "ramp.png"
    plot_ramp(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


METRICS = """# HELP telesfu_media_packets_total RTP packets by direction and kind
telesfu_media_packets_total{direction="in",kind="audio",worker="0"} 50.0
telesfu_media_packets_total{direction="in",kind="video",worker="0"} 100.0
telesfu_media_packets_total{direction="out",kind="audio",worker="0"} 45.0
telesfu_media_packets_total{direction="out",kind="video",worker="0"} 90.0
telesfu_media_packets_total{direction="in",kind="video",worker="1"} 7.0
telesfu_media_bytes_total{direction="out",worker="0"} 123456.0
telesfu_media_retransmissions_total{worker="0"} 5.0
telesfu_media_nacks_total{direction="in",worker="0"} 3.0
telesfu_media_keyframe_requests_total{direction="out",worker="0"} 2.0
telesfu_media_drops_total{reason="srtp_replay",worker="0"} 4.0
telesfu_media_worker_cpu_seconds_total{worker="0"} 1.25
telesfu_media_worker_loop_lag_seconds{worker="0"} 0.002
telesfu_media_worker_up{worker="0"} 1.0
telesfu_media_worker_up{worker="1"} 0.0
telesfu_http_requests_total{route="/metrics"} 9.0
telesfu_media_packets_total{worker="0" garbage
"""


def test_parse_metrics_reads_the_worker_families() -> None:
    w0, w1 = parse_metrics(METRICS)
    assert w0["worker"] == 0 and w1["worker"] == 1
    assert w0["counters"]["rtp_in"] == 150 and w0["counters"]["video_in"] == 100
    assert w0["transport"]["rtp_packets_out"] == 45 + 90 + 5  # retransmissions count as forwarded
    assert w0["transport"]["rtp_bytes_out"] == 123456
    assert w0["counters"]["nacks_in"] == 3 and w0["counters"]["plis_out"] == 2
    assert w0["counters"]["drops"] == {"srtp_replay": 4}
    assert w0["cpu_seconds"] == 1.25 and w0["loop_lag_seconds"] == 0.002 and w0["up"] == 1.0
    assert w1["counters"]["rtp_in"] == 7 and w1["up"] == 0.0
    assert parse_metrics("") == [] and parse_metrics("telesfu_media_x{worker=0} nan-ish") == []
