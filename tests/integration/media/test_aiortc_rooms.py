"""Real aiortc peers through the SFU over loopback UDP: each side decodes the other's video
and checks its content (colour of the sender, frame counter), in 1:1 and group rooms."""

from __future__ import annotations

import asyncio

import pytest

from tests.media_helpers import AiortcParticipant, wait_until

pytestmark = pytest.mark.slow


async def test_one_to_one_both_sides_decode_each_other(sfu):
    a = AiortcParticipant("alice", "red")
    b = AiortcParticipant("bob", "blue")
    try:
        await sfu.join(a)
        await sfu.join(b)

        def both_decoding():
            va, vb = a.video_from("bob"), b.video_from("alice")
            return bool(va and vb and va.frames >= 20 and vb.frames >= 20)

        await wait_until(both_decoding, 20, "both peers decoding 20 frames")
        assert a.video_from("bob").main_colour == "blue"
        assert b.video_from("alice").main_colour == "red"
        # the counter bar advances: these are live, distinct frames in order
        counters = b.video_from("alice").counters[-10:]
        assert len(set(counters)) >= 5
        await wait_until(lambda: (a.audio_from("bob") or 0) and a.audio_from("bob").frames > 20, 10, "audio")
        assert b.audio_from("alice") is not None and b.audio_from("alice").frames > 0
        stats = sfu.stats()["counters"]
        assert stats["video_in"] > 0 and stats["audio_in"] > 0
    finally:
        await a.close()
        await b.close()


async def test_group_of_four_everyone_receives_everyone(sfu):
    colours = ["red", "green", "blue", "yellow"]
    peers = [AiortcParticipant(f"p{i}", c, fps=15) for i, c in enumerate(colours)]
    try:
        for p in peers:
            await sfu.join(p)

        def all_decoding():
            return all((r := p.video_from(q.id)) is not None and r.frames >= 10
                       for p in peers for q in peers if q is not p)

        await wait_until(all_decoding, 30, "every peer decoding every other peer")
        for p in peers:
            for q in peers:
                if q is not p:
                    assert p.video_from(q.id).main_colour == q.colour, (p.id, q.id)
                    assert p.audio_from(q.id) is not None
        # nobody receives their own media back
        assert all(info["participant_id"] != p.id for p in peers for info in p.track_info.values())
    finally:
        for p in peers:
            await p.close()


async def test_late_joiner_gets_video_within_a_second(sfu):
    a = AiortcParticipant("early", "magenta")
    late = AiortcParticipant("late", None, audio=False)  # subscribes only
    try:
        await sfu.join(a)
        await asyncio.sleep(2.0)  # the room runs for a while: the last keyframe is old
        t0 = asyncio.get_running_loop().time()
        import time as _t

        wall0 = _t.monotonic()
        await sfu.join(late, publish=False)
        await wait_until(lambda: (v := late.video_from("early")) is not None and v.frames > 0, 5, "first frame")
        first = late.video_from("early").first_at - wall0
        assert first < 1.0, f"first frame after {first:.2f}s"
        assert late.video_from("early").main_colour == "magenta"
        assert asyncio.get_running_loop().time() - t0 < 5
    finally:
        await a.close()
        await late.close()


async def test_publisher_reconnects_and_the_subscriber_stream_stays_continuous(sfu):
    """The publisher drops its peer connection and comes back on a new one (new ICE, DTLS,
    SSRCs): the subscriber keeps the same track, with no renegotiation and no gap in sequence
    numbers, and sees the new source's frames."""
    pub = AiortcParticipant("pub", "red")
    sub = AiortcParticipant("sub", None, audio=False)
    try:
        await sfu.join(pub)
        await sfu.join(sub, publish=False)
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames >= 15, 15, "red frames")
        offers_before = sub.offers
        video_mid = next(m for m, i in sub.track_info.items() if i["kind"] == "video")
        # reconnect: a brand-new publish peer connection sending another colour
        from tests.media_helpers import ColourTrack

        pub.video = ColourTrack("green")
        await pub.publish(sfu.publish_offer, new_connection=True)
        await wait_until(lambda: sub.video_from("pub").colours.get("green", 0) >= 15, 15, "green frames")
        assert sub.offers == offers_before  # the subscriber was not renegotiated
        assert next(m for m, i in sub.track_info.items() if i["kind"] == "video") == video_mid
        # sequence numbers continued: the subscriber lost (almost) nothing across the switch
        receiver = next(t.receiver for t in sub.sub.getTransceivers() if t.mid == video_mid)
        stats = await receiver.getStats()
        inbound = [s for s in stats.values() if s.type == "inbound-rtp"][0]
        assert inbound.packetsLost <= 2, inbound.packetsLost
        room = sfu.worker.room_stats("room-1")
        subscribed = {t["track_id"]: t for p in room["participants"] if p["participant_id"] == "sub"
                      for t in p["subscribed"]}
        assert subscribed["pub:video:0"]["packets"] > 0
    finally:
        await pub.close()
        await sub.close()


async def test_a_participant_back_on_a_new_page_keeps_everyone_receiving(sfu):
    """What signaling does when someone rejoins within the grace period from a new page:
    their transports are reset and they publish again on a new connection; the others keep
    their subscriptions (no new offer needed) and receive the new source."""
    pub = AiortcParticipant("pub", "red")
    sub = AiortcParticipant("sub", None, audio=False)
    try:
        await sfu.join(pub)
        await sfu.join(sub, publish=False)
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames >= 10, 15, "red")
        offers = sub.offers
        sfu.worker.handle("reset_participant", {"room_id": "room-1", "participant_id": "pub"})
        await pub.close()
        pub2 = AiortcParticipant("pub", "blue")
        sfu.signaling.peers["pub"] = pub2
        await pub2.publish(sfu.publish_offer)
        await wait_until(lambda: sub.video_from("pub").colours.get("blue", 0) >= 10, 15, "blue after the reset")
        assert sub.offers == offers
        await pub2.close()
    finally:
        await pub.close()
        await sub.close()


async def test_no_subscribe_offer_without_tracks(sfu):
    """When the last publisher leaves, the subscriber is not sent an offer whose every section
    is stopped (max-bundle browsers refuse one without a BUNDLE group)."""
    pub = AiortcParticipant("pub", "red")
    sub = AiortcParticipant("sub", None, audio=False)
    try:
        await sfu.join(pub)
        await sfu.join(sub, publish=False)
        await wait_until(lambda: (v := sub.video_from("pub")) is not None and v.frames > 3, 15, "video")
        offers = [e for e in sfu.signaling.of_type("subscribe_offer") if e["participant_id"] == "sub"]
        sfu.leave("pub")
        await asyncio.sleep(0.3)
        after = [e for e in sfu.signaling.of_type("subscribe_offer") if e["participant_id"] == "sub"]
        assert len(after) == len(offers)
        assert any(e["type"] == "track_unpublished" for e in sfu.signaling.events)
        # and when someone publishes again, the next offer works
        again = AiortcParticipant("pub2", "green")
        await sfu.join(again)
        await wait_until(lambda: (v := sub.video_from("pub2")) is not None and v.frames > 3, 15, "new video")
        await again.close()
    finally:
        await pub.close()
        await sub.close()
