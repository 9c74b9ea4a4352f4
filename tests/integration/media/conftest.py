"""Fixtures for media-plane tests: aiortc peers on loopback only, an in-process worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aioice.ice
import pytest

from sfu.worker import Worker, WorkerConfig
from tests.media_helpers import AiortcParticipant, Signaling


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice gathers host candidates from non-loopback interfaces only; keep every peer on 127.0.0.1.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


class InProcessSfu:
    """A Worker in this process, with a test signaling loop around it."""

    def __init__(self, worker: Worker, signaling: Signaling) -> None:
        self.worker = worker
        self.signaling = signaling
        self.room = "room-1"

    async def join(self, peer: AiortcParticipant, *, publish: bool = True) -> None:
        self.signaling.peers[peer.id] = peer
        self.worker.handle("add_participant", {"room_id": self.room, "participant_id": peer.id})
        if publish:
            await peer.publish(self.publish_offer)

    async def publish_offer(self, pid: str, sdp: str) -> str:
        return str(self.worker.handle("publish_offer", {"room_id": self.room, "participant_id": pid,
                                                        "sdp": sdp})["sdp"])

    async def subscribe_answer(self, pid: str, sdp: str) -> None:
        self.worker.handle("subscribe_answer", {"room_id": self.room, "participant_id": pid, "sdp": sdp})

    def leave(self, pid: str) -> None:
        self.worker.handle("remove_participant", {"room_id": self.room, "participant_id": pid})

    def stats(self) -> dict[str, Any]:
        return self.worker.stats()


@pytest.fixture
async def sfu() -> AsyncIterator[InProcessSfu]:
    holder: dict[str, InProcessSfu] = {}
    signaling = Signaling(lambda pid, sdp: holder["sfu"].subscribe_answer(pid, sdp))
    worker = Worker(WorkerConfig(index=0, port=0, listen_ips=["127.0.0.1"],
                                 allowed_source_networks=["127.0.0.0/8"]), signaling.on_event)
    await worker.start()
    holder["sfu"] = InProcessSfu(worker, signaling)
    worker.create_room("room-1")
    try:
        yield holder["sfu"]
    finally:
        await worker.stop()
