"""Join/leave churn leaves a worker as it found it (issue 13: the soak's worker RSS grew
67 -> 109 MB over 18 minutes of churn). The Python tables return to their starting size,
and what departed participants freed is handed back to the system by the heap ticker (the
growth was glibc keeping freed heap pages, not objects kept alive)."""

from __future__ import annotations

import gc
from typing import Any

from bench.synthetic import build_publish_offer
from sfu.worker import Worker, WorkerConfig

ROOM = "room-1"
FP = ":".join(["AB"] * 32)


def _offer(n: int) -> str:
    return build_publish_offer(ufrag=f"pub{n:05d}", pwd="pubPasswordpubPassword12", fingerprint=FP, host="127.0.0.1",
                               port=50000 + n, cname=f"cn{n}", stream_id=f"s{n}", audio_ssrc=1000 + 3 * n,
                               video_ssrc=1001 + 3 * n, rtx_ssrc=1002 + 3 * n, session_id=n + 1).to_text()


def _tables(worker: Worker) -> dict[str, int]:
    ep = worker.endpoint
    room = worker.rooms[ROOM]
    member = room.participants["member"]
    return {"rooms": len(worker.rooms), "participants": len(room.participants),
            "transports": len(ep._transports), "by_ufrag": len(ep.registry._by_ufrag),
            "by_address": len(ep.registry._by_address), "stun_hosts": len(ep.stun_limiter._hosts),
            "speakers": len(room.speakers._speakers), "downtracks": len(member.downtracks),
            "by_ssrc": len(member.subscribe.by_ssrc), "timers": len(worker._timers)}


def _live(kind: str) -> int:
    return sum(1 for o in gc.get_objects() if type(o).__name__ == kind)


async def test_join_leave_cycles_leave_the_tables_at_their_starting_size() -> None:
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1"],
                                 allowed_source_networks=["127.0.0.0/8"]), lambda _e: None)
    await worker.start()
    try:
        worker.create_room(ROOM)
        worker.add_participant(ROOM, "member")
        worker.publish_offer(ROOM, "member", _offer(0))

        def cycle(n: int) -> None:
            pid = f"guest-{n}"
            worker.add_participant(ROOM, pid)
            worker.publish_offer(ROOM, pid, _offer(n))
            worker.remove_participant(ROOM, pid)

        cycle(1)
        gc.collect()
        start = _tables(worker)
        objects = {k: _live(k) for k in ("Participant", "WebRtcTransport", "DtlsEndpoint", "DownTrack", "RecvStream")}
        for n in range(2, 42):
            cycle(n)
        gc.collect()
        assert _tables(worker) == start
        assert {k: _live(k) for k in objects} == objects
    finally:
        await worker.stop()


async def test_the_heap_is_trimmed_after_participants_leave_and_only_then() -> None:
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1"]), lambda _e: None)
    trims: list[Any] = []
    worker.trim_heap = lambda: trims.append(1) or True
    await worker.start()
    try:
        now = worker.clock()
        worker._tick_heap(now)
        assert trims == []  # nothing left yet: nothing to hand back
        worker.add_participant(ROOM, "a")
        worker.publish_offer(ROOM, "a", _offer(1))
        worker.remove_participant(ROOM, "a")
        worker._tick_heap(now + 30)
        assert trims == [1]
        worker._tick_heap(now + 60)
        assert trims == [1]
        worker.add_participant("room-2", "b")
        worker.close_room("room-2")
        worker._tick_heap(now + 90)
        assert trims == [1, 1]
        assert worker.stats()["heap_trims"] == 2
    finally:
        await worker.stop()
