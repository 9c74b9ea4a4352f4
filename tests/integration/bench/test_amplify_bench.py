"""`telesfu bench amplify` end to end on a few inputs: an embedded node, a 1:1 room joined through
its signaling, inputs from a plain socket, from the attacker's SRTP transports and from raw
WebSockets. Counts must be consistent; speed is not asserted, and neither are the rules the
table checks (they are what the bench measures)."""

from __future__ import annotations

import json

import pytest

from bench.amplify import markdown, nack_bomb, run_amplify, twcc_bomb
from bench.media_source import EncodedMedia
from sfu.rtp.rtcp.nack import Nack

pytestmark = pytest.mark.slow


def test_the_bombs_have_the_issues_shape() -> None:
    bomb = nack_bomb(1, 2, 100)
    assert len(bomb) == 12 + 4 * 465
    nack = Nack.parse(bomb)
    assert nack is not None and len(nack.seqs()) == 465 * 17
    twcc = twcc_bomb(1, 2)
    assert len(twcc) == 46 * 40  # ~1,854 bytes once SRTCP adds its index and tag
    assert int.from_bytes(twcc[14:16], "big") == 65_535


async def test_a_few_inputs_are_measured_and_counted(media: EncodedMedia) -> None:
    only = {"unknown ufrag", "random garbage", "before join: ping", "NACK, 20 distinct", "NACK bomb", "PLI burst",
            "TWCC, normal", "after join: ping"}
    r = await run_amplify(media, count=20, bomb_count=1, only=only, media_seconds=1.5)
    rows = {row["input"]: row for row in r["rows"]}
    assert r["node_alive_at_end"]
    assert len(rows) == 8 and all("error" not in row for row in rows.values()), rows
    for row in rows.values():
        assert row["sent"] > 0 and row["bytes_in"] >= row["sent"] * row["request_bytes"][0]
        assert row["bytes_out_to_attacker"] >= 0 and row["bytes_out_to_others"] >= 0
        assert row["cpu_us_per_datagram"] is not None and row["cpu_us_per_datagram"] >= 0
    # every unauthenticated datagram is dropped and counted by reason, and nothing answers it
    for name in ("STUN binding request, unknown ufrag", "random garbage (200 B)"):
        row = rows[name]
        assert row["sent"] == 20 and row["bytes_out_to_attacker"] == 0 and row["rule_ok"]
        drops = sum(v for k, v in row["counted"].items() if k.startswith("media_drops"))
        assert drops == 20, row["counted"]
    # a subscriber's NACK for packets it received lately is answered with retransmissions
    normal = next(row for name, row in rows.items() if name.startswith("NACK, 20 distinct"))
    assert 0 < normal["caused"]["retransmissions_received"] <= 20 and normal["rule_ok"]
    assert normal["bytes_out_to_attacker"] > 0
    bomb = rows["NACK bomb: (pid, blp=0xFFFF) x 465"]
    assert 0 < bomb["caused"]["retransmissions_received"] <= 465 * 17
    assert rows["PLI burst"]["caused"]["plis_at_publishers"] >= 1
    # the joined WebSocket gets its pongs
    assert rows["signaling after join: ping"]["datagrams_out_to_attacker"] > 0
    table = markdown(r)
    assert table.count("\n") == len(rows) + 1
    json.dumps(r)
