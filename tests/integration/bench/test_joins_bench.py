"""`telesfu bench joins`: the pure helpers (VP8 keyframe detection, segments, percentiles) and a
smoke run against a real `telesfu serve` whose report must be consistent. No speed is asserted."""

from __future__ import annotations

import fractions
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.joins import (
    CHROMIUM,
    SEGMENTS,
    main,
    percentile,
    segments,
    summary_ms,
    vp8_keyframe_start,
)

# -- VP8 keyframe detection ---------------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "keyframe"), [
    (b"\x10\x00", True),  # S=1, partition 0, no extension; P=0
    (b"\x10\x01", False),  # P=1: an interframe
    (b"\x00\x00", False),  # not the start of a partition
    (b"\x11\x00", False),  # start of partition 1
    (b"\x90\x80\x05\x00", True),  # X, I with a 7-bit picture id
    (b"\x90\x80\x05\x01", False),
    (b"\x90\x80\x85\x05\x00", True),  # 15-bit picture id (M bit)
    (b"\x90\x80\x85\x05\x01", False),
    (b"\x90\xe0\x85\x05\x07\x20\x00", True),  # I (15 bit) + L (TL0PICIDX) + T (TID byte)
    (b"\x90\xe0\x85\x05\x07\x20\x01", False),
    (b"\x90\x10\x40\x00", True),  # K only: one TID/KEYIDX byte
    (b"", False),
    (b"\x10", False),  # no payload header
    (b"\x90", False),  # X without its byte
    (b"\x90\x80", False),  # I without the picture id
    (b"\x90\x80\x85", False),  # 15-bit picture id cut short
    (b"\x90\xe0\x85\x05\x07\x20", False),  # descriptor only
])
def test_vp8_keyframe_start_table(payload: bytes, keyframe: bool) -> None:
    assert vp8_keyframe_start(payload) is keyframe


def test_vp8_keyframe_start_on_aiortc_packets() -> None:
    """Golden packets from an independent packetizer: aiortc's VP8 encoder."""
    from aiortc.codecs.vpx import Vp8Encoder
    from av import VideoFrame

    enc = Vp8Encoder()

    def packets(n: int, force: bool) -> list[bytes]:
        img = np.full((240, 320, 3), 60 + 10 * n, np.uint8)
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = enc.encode(frame, force_keyframe=force)
        return list(payloads)

    first = packets(0, True)
    assert vp8_keyframe_start(first[0])
    assert not any(vp8_keyframe_start(p) for p in first[1:])
    delta = packets(1, False)
    assert not vp8_keyframe_start(delta[0])
    forced = packets(2, True)
    assert vp8_keyframe_start(forced[0])


@given(st.binary(max_size=40))
def test_vp8_keyframe_start_never_raises(payload: bytes) -> None:
    assert isinstance(vp8_keyframe_start(payload), bool)


# -- segments and percentiles ---------------------------------------------------------------------------

_ORDER = ("sent_join", "msg_joined", "msg_subscribe_offer", "sent_subscribe_answer", "sub_ice_connected",
          "sub_connected", "provider_pli", "video_rtp", "video_decoded")


def test_segments_split_an_ordered_join() -> None:
    rel = dict(zip(_ORDER, (0.0, 1.0, 3.0, 5.0, 25.0, 29.0, 35.0, 60.0, 93.0), strict=True))
    assert segments(rel, waiting_room=False) == {
        "admission": 1.0, "to subscribe offer": 2.0, "answer": 2.0, "ICE": 20.0, "DTLS": 4.0,
        "keyframe request": 6.0, "keyframe delivery": 25.0, "to first frame": 33.0}


def test_segments_with_the_waiting_room_start_at_admitted() -> None:
    rel = {"sent_join": 0.0, "msg_waiting": 1.0, "msg_admitted": 40.0, "msg_joined": 41.0,
           "msg_subscribe_offer": 43.0, "video_decoded": 100.0}
    seg = segments(rel, waiting_room=True)
    assert seg["admission"] == 40.0 and seg["to subscribe offer"] == 3.0
    assert seg["to first frame"] == 57.0 and seg["ICE"] == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=5000.0, allow_nan=False), min_size=len(_ORDER) - 1,
                max_size=len(_ORDER) - 1))
def test_segments_are_never_negative_and_add_up(times: list[float]) -> None:
    """Milestones may come in any order (ICE can finish before the answer is sent); the segments
    still never go negative and add up to the latest milestone reached."""
    rel = {"sent_join": 0.0, **dict(zip(_ORDER[1:], times, strict=True))}
    seg = segments(rel, waiting_room=False)
    assert list(seg) == [name for name, _, _ in SEGMENTS]
    assert all(v >= 0.0 for v in seg.values())
    assert math.isclose(sum(seg.values()), max(times), abs_tol=0.01 * len(seg))


@pytest.mark.parametrize(("values", "q", "want"), [
    ([], 0.5, 0.0), ([7.0], 0.95, 7.0), ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0), ([1.0, 2.0, 3.0, 4.0], 0.75, 3.0),
    ([float(i) for i in range(1, 101)], 0.99, 99.0), ([float(i) for i in range(1, 11)], 0.95, 10.0),
])
def test_percentile_nearest_rank(values: list[float], q: float, want: float) -> None:
    assert percentile(values, q) == want


def test_summary_ms() -> None:
    s = summary_ms([30.0, 10.0, 20.0])
    assert (s["count"], s["p50_ms"], s["max_ms"], s["min_ms"], s["mean_ms"]) == (3, 20.0, 30.0, 10.0, 20.0)
    assert summary_ms([])["count"] == 0


# -- the smoke run --------------------------------------------------------------------------------------

def _check_sample(s: dict[str, Any]) -> None:
    assert s["error"] is None, s
    m = s["milestones_ms"]
    total, after = s["total_ms"], s["after_admission_ms"]
    assert total is not None and after is not None
    assert 0 < after < total, s
    assert total == m["video_decoded"] and m["sent_join"] == 0.0
    assert 0 < m["msg_joined"] <= m["msg_subscribe_offer"] <= m["sent_subscribe_answer"] <= total
    assert m["video_rtp"] <= total and "sub_connected" in m
    assert math.isclose(sum(s["segments_ms"].values()), total, abs_tol=0.1)
    assert s["provider_plis_before_first_rtp"] >= 0
    if s["waiting_room"]:
        assert 0 < m["msg_waiting"] <= m["msg_admitted"] <= m["msg_joined"]  # (admitted and joined may share a read)
        if s["peer"] == "aiortc":  # same clock as the provider: admit went out before admitted came back
            assert m["provider_participant_waiting"] <= m["provider_sent_admit"] < m["msg_admitted"]
    else:
        assert "msg_waiting" not in m and "msg_admitted" not in m
    if s["peer"] == "aiortc":
        assert s["first_rtp_keyframe"] is True  # the SFU starts a subscriber on a keyframe
        assert m["video_keyframe_rtp"] == m["video_rtp"]
    else:
        assert s["telesfu_stats_frames_decoded"] > 0 and s["page_errors"] == []
        assert s["getstats_at_first_frame"]["keyFramesDecoded"] >= 1
        assert m["click"] < 0 < s["click_to_join_ms"]  # the click came first; join went out when the socket opened


@pytest.mark.slow
def test_smoke_run_reports_consistent_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "joins.json", tmp_path / "joins.png"
    chromium = 1 if CHROMIUM.exists() else 0
    rc = main(["--aiortc-samples", "2", "--chromium-samples", str(chromium), "--joins-seconds", "1",
               "--joins-max", "3000", "--provider-warmup", "0.6", "--metrics-settle", "0", "--sample-timeout", "15",
               "--workers", "1", "--json", str(out), "--plot", str(png)])
    report = json.loads(out.read_text())
    assert report["errors"] == [], report["errors"]
    assert rc == 0
    configs = {(c["peer"], c["waiting_room"]): c for c in report["latency"]}
    want = {("aiortc", False), ("aiortc", True)} | ({("chromium", False), ("chromium", True)} if chromium else set())
    assert set(configs) == want
    for key, c in configs.items():
        n = 2 if key[0] == "aiortc" else chromium
        assert c["summary"]["samples"] == c["summary"]["ok"] == len(c["samples"]) == n
        for s in c["samples"]:
            _check_sample(s)
        tot = c["summary"]["total"]
        assert tot["count"] == n and tot["min_ms"] <= tot["p50_ms"] <= tot["p95_ms"] <= tot["max_ms"]
        assert c["summary"]["after_admission"]["p50_ms"] < tot["max_ms"]
    r = report["joins_rate"]
    assert r["joins"] > 0 and r["joins_in_window"] > 0 and r["failed"] == 0 and r["errors"] == {}
    assert r["joins_per_second"] == pytest.approx(r["joins_in_window"] / r["seconds"], abs=0.1)
    assert sum(r["per_second"]) == r["joins_in_window"]
    tj = r["time_to_joined_ms"]
    assert tj["count"] == r["joins"] and 0 < tj["p50_ms"] <= tj["p99_ms"] <= tj["max_ms"]
    assert r["cpu"]["node_cores"] is not None and r["cpu"]["node_cores"] > 0
    assert report["node"]["owned"] and report["machine"]["nproc"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "Join latency" in printed and "Admitted joins per second" in printed
