"""A participant told to reconnect after its media worker died may come back before the new
worker is ready: its join waits for the worker (bounded) instead of bouncing with another 1012."""

from __future__ import annotations

import pytest

from signaling import protocol as p
from tests.media_helpers import wait_until
from tests.signaling_helpers import SignalingClient, media_node

pytestmark = pytest.mark.slow


async def test_a_rejoin_during_the_worker_restart_waits_for_the_worker():
    async with media_node() as ln:
        await ln.setup_appointment("a1", provider="prov", clients=("cli",))
        c = await SignalingClient(ln, await ln.token("a1", "cli")).connect()
        c2 = None
        try:
            await c.wait_for("joined")
            await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 5, "in the media room")
            worker = ln.node.media.worker_for("a1")
            worker.kill()
            assert await c.wait_closed() == p.CLOSE_SERVICE_RESTART
            token = await ln.token("a1", "cli")
            c2 = await SignalingClient(ln, token).connect()  # at once: the new worker is still starting
            await c2.wait_for("joined")
            await wait_until(lambda: ln.node.media.has_participant("a1", "cli"), 20, "back in the media room")
            assert "error" not in c2.types() and c2.close_code is None, c2.messages
            assert worker.restarts == 1
        finally:
            await c.close()
            if c2 is not None:
                await c2.close()


async def test_a_join_that_meets_a_dying_worker_waits_for_its_restart():
    async with media_node() as ln:
        media = ln.node.media
        await media.add_participant("r1", "p1")
        worker = media.worker_for("r1")
        worker.kill()  # the node has not noticed yet: the next request reaches a dead process
        await media.add_participant("r2", "p2")  # was MediaError(worker_lost) -> 1012 for the joiner
        assert worker.restarts == 1 and media.has_participant("r2", "p2")
        assert not media.has_participant("r1", "p1")  # r1's participants were lost (and told: 1012)
        assert (await media.room_stats("r2")) is not None
