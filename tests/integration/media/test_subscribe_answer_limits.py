"""A subscriber's answer longer than its offer can need is refused with sdp_too_large before it
is parsed, through the real worker, and the real answer after it still connects (found by
tests/fuzz: a 200 KB answer, which the signaling frame limit admits, cost 10-20 ms to parse)."""

from __future__ import annotations

import pytest

from sfu.errors import SfuError
from tests.media_helpers import AiortcParticipant, wait_until

from .conftest import InProcessSfu

pytestmark = pytest.mark.slow


async def test_an_oversized_subscribe_answer_is_refused_and_the_real_one_connects(sfu: InProcessSfu) -> None:
    pub, sub = AiortcParticipant("pub", "green"), AiortcParticipant("sub", None, audio=False)
    try:
        await sfu.join(pub)
        sfu.worker.handle("add_participant", {"room_id": sfu.room, "participant_id": "sub"})  # answered by hand
        await wait_until(lambda: any(e["participant_id"] == "sub" for e in sfu.signaling.of_type("subscribe_offer")),
                         10, "the subscribe offer")
        offer = [e for e in sfu.signaling.of_type("subscribe_offer") if e["participant_id"] == "sub"][-1]
        answer = await sub.answer_subscribe_offer(offer["sdp"], offer["tracks"])
        padded = answer + "a=x-pad:" + "y" * 150_000 + "\r\n"  # under the 200 KB signaling limit
        with pytest.raises(SfuError) as e:
            await sfu.subscribe_answer("sub", padded)
        assert e.value.code == "sdp_too_large"
        await sfu.subscribe_answer("sub", answer)
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames > 3, 15, "video after the answer")
    finally:
        await pub.close()
        await sub.close()
