"""A publisher that offers simulcast by rid (no SSRCs in its SDP, as Chromium does): the SFU
learns each layer's SSRC from the mid and rid header extensions of its first packet,
forwards the highest layer, binds its RTX stream by repaired-rid, and ignores the others."""

from __future__ import annotations

from pathlib import Path

from sfu.rtp.packet import build_rtp
from sfu.rtp.vp8 import build_vp8_descriptor

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "sdp" / "chromium-simulcast-offer.sdp"
MID, RID, RRID = 4, 10, 11  # the ids Chromium's offer uses


def vp8_keyframe(seq: int, ssrc: int, rid: str, *, rtx: bool = False) -> bytes:
    payload = build_vp8_descriptor(start=True, partition_id=0, picture_id=seq & 0x7FFF) + b"\x10\x02\x00\x9d\x01\x2a" + b"\x00" * 40
    exts = [(MID, b"1"), (RRID if rtx else RID, rid.encode())]
    if rtx:
        payload = seq.to_bytes(2, "big") + payload
    return build_rtp(97 if rtx else 96, seq, seq * 3000, ssrc, payload, extensions=exts)


async def test_rid_layers_bind_on_their_first_packet(sfu):
    sfu.worker.handle("add_participant", {"room_id": "room-1", "participant_id": "pub"})
    answer = sfu.worker.handle("publish_offer", {"room_id": "room-1", "participant_id": "pub",
                                                 "sdp": FIXTURE.read_text()})["sdp"]
    assert "a=simulcast:recv q;h;f" in answer
    p = sfu.worker.rooms["room-1"].participants["pub"]
    video = p.tracks["video:0"]
    assert video.source is None  # nothing known until packets arrive
    for seq, (ssrc, rid) in enumerate([(111, "q"), (222, "h"), (333, "f")], start=100):
        p.publish.on_rtp(vp8_keyframe(seq, ssrc, rid))
    assert video.source is not None and video.source.ssrc == 333  # the highest layer is forwarded
    assert p.publish.ignored == {111, 222}
    p.publish.on_rtp(vp8_keyframe(7, 444, "f", rtx=True))  # its RTX stream, by repaired-rid
    assert video.source.rtx_ssrc == 444 and p.publish.streams[444] is video.source
    drops = sfu.stats()["counters"]["drops"]
    p.publish.on_rtp(vp8_keyframe(101, 111, "q"))
    assert sfu.stats()["counters"]["drops"]["simulcast_layer_not_forwarded"] == \
        drops.get("simulcast_layer_not_forwarded", 0) + 1
    assert video.source.packets >= 1
