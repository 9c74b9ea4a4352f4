"""The node's media plane: worker processes on their own UDP ports, rooms placed on the least
loaded, a real 1:1 call through a worker process, and a crashed worker restarted with its
participants reported lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control.config import MediaConfig
from control.media import MediaError, MediaPlane, cpu_seconds_of
from tests.conftest import free_port
from tests.media_helpers import AiortcParticipant, Signaling, wait_until

pytestmark = pytest.mark.slow


def free_udp_range(n: int) -> int:
    import socket

    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


@pytest.fixture
async def plane():
    cfg = MediaConfig(workers=2, udp_port=free_udp_range(2), listen_ips=["127.0.0.1"],
                      allowed_source_networks=["127.0.0.0/8"])
    mp = MediaPlane(cfg)
    await mp.start()
    try:
        yield mp
    finally:
        await mp.stop()


async def test_rooms_are_spread_over_workers_and_a_call_goes_through_a_worker_process(plane):
    events: list[dict[str, Any]] = []
    plane.subscribe("*", events.append)
    await plane.add_participant("room-a", "x")
    await plane.add_participant("room-b", "y")
    assert {plane.placement["room-a"], plane.placement["room-b"]} == {0, 1}

    sig = Signaling(lambda pid, sdp: plane.subscribe_answer("call", pid, sdp))
    plane.subscribe("call", sig.on_event)
    a, b = AiortcParticipant("a", "green"), AiortcParticipant("b", "magenta")
    try:
        for p in (a, b):
            sig.peers[p.id] = p
            await plane.add_participant("call", p.id)
            await p.publish(lambda pid, sdp: plane.publish_offer("call", pid, sdp))
        await wait_until(lambda: all((v := p.video_from(q.id)) is not None and v.frames >= 10
                                     for p, q in ((a, b), (b, a))), 20, "both decoding")
        assert a.video_from("b").main_colour == "magenta" and b.video_from("a").main_colour == "green"
        stats = await plane.room_stats("call")
        assert {p["participant_id"] for p in stats["participants"]} == {"a", "b"}
        worker = plane.worker_for("call")
        assert cpu_seconds_of(worker.pid) > 0
        await wait_until(lambda: any(e.get("type") == "worker_stats" and e["worker"] == worker.index
                                     and e["counters"]["video_in"] > 0 for e in events), 10, "worker stats")
    finally:
        await a.close()
        await b.close()


async def test_errors_come_back_with_codes(plane):
    await plane.add_participant("r", "p")
    with pytest.raises(MediaError) as e:
        await plane.publish_offer("r", "p", "v=0 this is not sdp")
    assert e.value.code.startswith("sdp_")
    with pytest.raises(MediaError) as e:
        await plane.publish_offer("r", "nobody", "v=0\r\n")
    assert e.value.code in ("participant_not_found", "sdp_malformed", "no_media")
    with pytest.raises(MediaError) as e:
        await plane.subscribe_answer("no-such-room", "p", "")
    assert e.value.code == "room_not_found"


async def test_a_crashed_worker_is_restarted_and_its_participants_reported(plane):
    events: list[dict[str, Any]] = []
    plane.subscribe("*", events.append)
    await plane.add_participant("doomed", "p1")
    await plane.add_participant("doomed", "p2")
    worker = plane.worker_for("doomed")
    old_pid = worker.pid
    worker.kill()
    await wait_until(lambda: any(e.get("type") == "participants_lost" for e in events), 10, "loss report")
    lost = next(e for e in events if e.get("type") == "participants_lost")
    assert lost["room_id"] == "doomed" and lost["participant_ids"] == ["p1", "p2"]
    assert lost["reason"] == "worker_restarted"
    await wait_until(lambda: any(e.get("type") == "worker_restarted" for e in events), 20, "restart")
    assert worker.pid != old_pid and worker.restarts == 1
    assert plane.worker_for("doomed") is None  # the room is gone with its worker
    await plane.add_participant("doomed", "p1")  # and can be opened again
    assert plane.worker_for("doomed") is not None
    await asyncio.sleep(0)


async def test_worker_figures_reach_prometheus(plane):
    from prometheus_client import CollectorRegistry, generate_latest

    from control.media_metrics import MediaCollector

    registry = CollectorRegistry()
    registry.register(MediaCollector(plane))
    sig = Signaling(lambda pid, sdp: plane.subscribe_answer("m", pid, sdp))
    plane.subscribe("m", sig.on_event)
    a, b = AiortcParticipant("metrics-a", "red"), AiortcParticipant("metrics-b", None, audio=False)
    try:
        for p, publish in ((a, True), (b, False)):
            sig.peers[p.id] = p
            await plane.add_participant("m", p.id)
            if publish:
                await p.publish(lambda pid, sdp: plane.publish_offer("m", pid, sdp))
        await wait_until(lambda: (v := b.video_from("metrics-a")) is not None and v.frames > 10, 15, "video")
        w = plane.worker_for("m")
        await wait_until(lambda: w.last_stats.get("video_out", 0) > 0, 10, "stats with forwarded video")
        text = generate_latest(registry).decode()
        line = next(row for row in text.splitlines()
                    if row.startswith(f'telesfu_media_packets_total{{direction="out",kind="video",worker="{w.index}"}}'))
        assert float(line.split()[-1]) > 0
        assert f'telesfu_media_worker_up{{worker="{w.index}"}} 1.0' in text
        assert "metrics-a" not in text and "127.0.0.1" not in text  # no ids or addresses in labels
    finally:
        await a.close()
        await b.close()


async def test_workers_offer_ice_tcp_on_udp_port_numbers(plane):
    """ICE-TCP is on by default: worker i listens on TCP udp_port + i (tcp_port 0) and its
    answers carry that passive TCP candidate below the UDP one."""
    from pathlib import Path

    offer = (Path(__file__).resolve().parents[2] / "fixtures" / "sdp" / "chromium-sendonly-offer.sdp").read_text()
    await plane.add_participant("tcp-room", "p")
    answer = await plane.publish_offer("tcp-room", "p", offer)
    worker = plane.worker_for("tcp-room")
    port = plane.config.udp_port + worker.index
    lines = [line for line in answer.split("\r\n") if line.startswith("a=candidate:")]
    assert any(" udp " in line and f" {port} typ host" in line for line in lines)
    tcp = [line for line in lines if " tcp " in line]
    assert tcp and all(line.endswith(f"127.0.0.1 {port} typ host tcptype passive generation 0") for line in tcp)
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # the worker accepts on it
    writer.close()
