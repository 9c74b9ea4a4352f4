"""5% packet loss between the SFU and a subscriber, recovered by NACK (RTX): the subscriber
decodes about as many frames as the publisher sent."""

from __future__ import annotations

import asyncio

import pytest

from tests.media_helpers import AiortcParticipant, LossyUdpProxy, wait_until

pytestmark = pytest.mark.slow


async def test_five_percent_loss_to_a_subscriber_is_recovered(sfu):
    pub = AiortcParticipant("pub", "cyan", audio=False, fps=30)
    sub = AiortcParticipant("sub", None, audio=False)
    proxy = LossyUdpProxy(("127.0.0.1", sfu.worker.endpoint.port), loss=0.05)
    await proxy.start()
    original = sub.answer_subscribe_offer

    async def through_proxy(sdp, tracks):
        return await original(proxy.rewrite_candidates(sdp), tracks)

    sub.answer_subscribe_offer = through_proxy  # the subscriber reaches the SFU only through the relay
    try:
        await sfu.join(pub)
        await sfu.join(sub, publish=False)
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames >= 5, 15, "first frames")
        rec = sub.video_from("pub")
        frames0, sent0 = rec.frames, pub.video.sent
        await asyncio.sleep(10.0)
        decoded, sent = rec.frames - frames0, pub.video.sent - sent0
        counters = sfu.stats()["counters"]
        assert proxy.dropped >= 8, proxy.dropped  # the loss really happened (seeded: same every run)
        assert counters["nacks_in"] > 0 and counters["retransmits"] > 0, counters
        print(f"decoded {decoded} of {sent} frames; relay dropped {proxy.dropped} of "
              f"{proxy.dropped + proxy.forwarded} datagrams; retransmits {counters['retransmits']}")
        assert decoded >= 0.9 * sent, f"decoded {decoded} of {sent} frames with {proxy.dropped} packets dropped"
        assert rec.main_colour == "cyan"
    finally:
        await pub.close()
        await sub.close()
        proxy.close()
