"""A participant leaves and joins again at once (the soak's churn, issue 8 / h12): the others
still had its track ids, the rejoined publisher's new tracks have the same ids, and the old
mids belong to m-sections the subscribers' last offer stopped."""

from __future__ import annotations

import pytest

from tests.media_helpers import AiortcParticipant, wait_until

pytestmark = pytest.mark.slow


def _receiving(peer: AiortcParticipant, colour: str, frames: int) -> bool:
    return any(r.kind == "video" and r.frames >= frames and r.main_colour == colour for r in peer.received.values())


def _settled(sfu, peers: list[AiortcParticipant]) -> bool:
    """No subscribe offer waiting for its answer, none still to send."""
    room = sfu.worker.rooms[sfu.room]
    return all(not room.participants[p.id].subscribe.pending and not room.participants[p.id].subscribe.dirty
               for p in peers)


async def test_a_participant_who_leaves_and_rejoins_at_once_is_received_again(sfu):
    stay = [AiortcParticipant("p0", "red", fps=15), AiortcParticipant("p1", "green", fps=15)]
    gone = AiortcParticipant("p2", "blue", fps=15)
    back = AiortcParticipant("p2", "yellow", fps=15)  # the same person, a new page: new connections
    try:
        for p in [*stay, gone]:
            await sfu.join(p)
        await wait_until(lambda: all(_receiving(p, "blue", 5) for p in stay), 30, "p2's video at p0 and p1")

        sfu.leave("p2")
        await gone.close()
        # p0 and p1 answered the offer that stopped p2's sections (each still receives the other)
        await wait_until(lambda: _settled(sfu, stay), 10, "the offers stopping p2's tracks answered")

        await sfu.join(back)  # was internal_error: "mid '0' belongs to a stopped m-section"

        await wait_until(lambda: all(_receiving(p, "yellow", 10) for p in stay), 30,
                         "the rejoined p2's video at p0 and p1")
        await wait_until(lambda: _receiving(back, "red", 10) and _receiving(back, "green", 10), 30,
                         "p0's and p1's video at the rejoined p2")
        # the rejoined tracks are offered on new mids, never on a stopped one
        room = sfu.worker.rooms[sfu.room]
        for p in stay:
            sub = room.participants[p.id]
            assert set(sub.subscribe.mids) == set(sub.downtracks)
            live = {s.mid for s in sub.subscribe._offer.media if s.port != 0 or s.direction != "inactive"}
            assert set(sub.subscribe.mids.values()) <= live
    finally:
        for p in [*stay, gone, back]:
            await p.close()


async def test_in_a_one_to_one_room_the_rejoined_peer_is_received_on_its_old_sections(sfu):
    """The one left alone had no offer since (an offer of stopped sections only is not sent),
    so the rejoined tracks, same ids, take their still-active sections back with new SSRCs."""
    stay = AiortcParticipant("p0", "red", fps=15)
    gone = AiortcParticipant("p1", "blue", fps=15)
    back = AiortcParticipant("p1", "yellow", fps=15)
    try:
        await sfu.join(stay)
        await sfu.join(gone)
        await wait_until(lambda: _receiving(stay, "blue", 5), 30, "p1's video at p0")
        mids = dict(sfu.worker.rooms[sfu.room].participants["p0"].subscribe.mids)
        sfu.leave("p1")
        await gone.close()
        await sfu.join(back)
        await wait_until(lambda: _receiving(stay, "yellow", 10), 30, "the rejoined p1's video at p0")
        await wait_until(lambda: _receiving(back, "red", 10), 30, "p0's video at the rejoined p1")
        assert sfu.worker.rooms[sfu.room].participants["p0"].subscribe.mids == mids
    finally:
        for p in (stay, gone, back):
            await p.close()

async def test_a_subscribe_offer_that_cannot_be_built_fails_neither_the_publisher_nor_the_others(sfu, monkeypatch):
    """Fault injection: one subscriber's offer raises (a broken invariant of the SFU, as the
    stale mid was). The publisher still gets its answer, the other subscriber its offer and
    media, and the failure is counted; before, publish_offer raised (internal_error) and every
    later negotiation of the room raised again at the same subscriber."""
    ok = AiortcParticipant("ok", None, audio=False)
    broken = AiortcParticipant("broken", None, audio=False)
    pub = AiortcParticipant("pub", "magenta", fps=15)
    try:
        await sfu.join(ok, publish=False)
        await sfu.join(broken, publish=False)
        sub = sfu.worker.rooms[sfu.room].participants["broken"].subscribe
        real = type(sub).next_subscribe_offer

        def refuse(self):
            if self is sub and sub.dirty and not sub.pending:  # when its offer would be built
                raise ValueError("injected: offer cannot be built")
            return real(self)

        monkeypatch.setattr(type(sub), "next_subscribe_offer", refuse)
        await sfu.join(pub)  # before: ValueError out of publish_offer
        await wait_until(lambda: _receiving(ok, "magenta", 10), 30, "pub's video at the healthy subscriber")
        assert sfu.stats()["counters"]["subscribe_offer_failures"] == 1
        assert not sub.dirty  # not retried on every later change of the room
    finally:
        for p in (ok, broken, pub):
            await p.close()
