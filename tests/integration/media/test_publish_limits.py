"""A participant publishes one microphone, one camera and one screen at most (issue 8, item 11:
110 video m-sections were accepted, a 100 KB subscribe offer went to the others). An offer
over the cap is refused with too_many_tracks through the real worker and signaling paths, and
nothing about the participant changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from sfu.errors import SfuError
from sfu.sdp import publish
from tests.media_helpers import AiortcParticipant, ColourTrack, rtc_config, wait_until
from tests.signaling_helpers import SignalingClient, media_node

from .conftest import InProcessSfu

pytestmark = pytest.mark.slow

MAX_PUBLISH_SDP_SIZE = getattr(publish, "MAX_PUBLISH_SDP_SIZE", 64 * 1024)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sdp"


async def aiortc_offer(audio: int, video: int) -> str:
    pc = RTCPeerConnection(rtc_config())
    try:
        for _ in range(audio):
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        for _ in range(video):
            pc.addTransceiver(ColourTrack("red"), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def many_video_sections(n: int) -> str:
    """The Chromium publish offer with its video m-section repeated n times (mids 100...)."""
    text = (FIXTURES / "chromium-publish-offer.sdp").read_text().replace("\r\n", "\n")
    head, _, rest = text.partition("\nm=")
    sections = ("m=" + rest).split("\nm=")
    video = next("m=" + s if not s.startswith("m=") else s for s in sections if s.lstrip("m=").startswith("video"))
    body = [video.replace("a=mid:1", f"a=mid:{100 + i}") for i in range(n)]
    return (head + "\n" + "\n".join(body)).replace("\n", "\r\n")


def refused(sfu: InProcessSfu, pid: str, sdp: str) -> str:
    with pytest.raises(SfuError) as e:
        sfu.worker.handle("publish_offer", {"room_id": sfu.room, "participant_id": pid, "sdp": sdp})
    return e.value.code


async def test_offers_over_the_cap_are_refused_and_change_nothing(sfu: InProcessSfu) -> None:
    a, b = AiortcParticipant("a", "green"), AiortcParticipant("b", None, audio=False)
    try:
        await sfu.join(a)
        await sfu.join(b, publish=False)
        await wait_until(lambda: (v := b.video_from("a")) is not None and v.frames >= 5, 20, "b decodes a")
        participant = sfu.worker.rooms[sfu.room].participants["a"]
        transport, tracks = participant.publish_transport, dict(participant.tracks)
        offers_to_b = b.offers

        assert refused(sfu, "a", await aiortc_offer(audio=1, video=3)) == "too_many_tracks"
        assert refused(sfu, "a", await aiortc_offer(audio=2, video=1)) == "too_many_tracks"
        assert refused(sfu, "a", await aiortc_offer(audio=0, video=17)) == "too_many_tracks"  # m= lines, before parsing
        assert refused(sfu, "a", many_video_sections(110)) == "sdp_too_large"  # the offer: 449 KB
        assert refused(sfu, "a", "v=0\r\n" + "a=x:" + "y" * MAX_PUBLISH_SDP_SIZE + "\r\n") == "sdp_too_large"

        # Nothing changed: the same transport and tracks, no re-offer to b, and b still decodes a.
        assert participant.publish_transport is transport and participant.tracks == tracks
        frames = b.video_from("a").frames  # type: ignore[union-attr]
        await wait_until(lambda: b.video_from("a").frames >= frames + 5, 10, "b still decodes a")  # type: ignore[union-attr]
        assert b.offers == offers_to_b
    finally:
        await a.close()
        await b.close()


async def test_a_microphone_a_camera_and_a_screen_are_accepted(sfu: InProcessSfu) -> None:
    sfu.worker.handle("add_participant", {"room_id": sfu.room, "participant_id": "c"})
    answer = sfu.worker.handle("publish_offer", {"room_id": sfu.room, "participant_id": "c",
                                                 "sdp": await aiortc_offer(audio=1, video=2)})["sdp"]
    assert answer.count("a=recvonly") == 3


async def test_the_client_gets_error_too_many_tracks_through_signaling() -> None:
    async with media_node() as ln:
        await ln.setup_appointment("a1", provider="prov", clients=("cli",))
        pr = await SignalingClient(ln, await ln.token("a1", "prov")).connect()
        try:
            await pr.wait_for("joined")
            await pr.send({"type": "publish_offer", "sdp": await aiortc_offer(audio=1, video=3)})
            err: dict[str, Any] = await pr.wait_for("error")
            assert err["code"] == "too_many_tracks"
            assert "publish_answer" not in pr.types()
            room = (await ln.call("GET", "/v1/rooms/a1"))[1]
            assert [x["participant_id"] for x in room["participants"]] == ["prov"]  # still in the room
            await pr.send({"type": "ping"})
            await pr.wait_for("pong")
        finally:
            await pr.close()
