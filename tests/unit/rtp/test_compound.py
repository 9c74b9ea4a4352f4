"""Compound RTCP walking."""

from __future__ import annotations

from typing import SupportsBytes

from aiortc.rtp import (
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.rtcp.bye import Bye
from sfu.rtp.rtcp.compound import (
    ERR_BAD_PADDING,
    ERR_BAD_VERSION,
    ERR_EMPTY,
    ERR_MALFORMED,
    ERR_TRUNCATED,
    ERR_TRUNCATED_HEADER,
    UnknownRtcp,
    build_compound,
    iter_headers,
    parse_compound,
)
from sfu.rtp.rtcp.compound import (
    RtcpPacket as OurRtcpPacket,
)
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.remb import Remb
from sfu.rtp.rtcp.rr import ReceiverReport, ReportBlock
from sfu.rtp.rtcp.sdes import SourceDescription
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.rtcp.twcc import TransportFeedback

ALL: list[OurRtcpPacket] = [
    SenderReport(1, 0x1122334455667788, 3, 4, 5, [ReportBlock(6, 1, -1, 70000, 8, 9, 10)]),
    ReceiverReport(2, [ReportBlock(3)]),
    SourceDescription.with_cname(1, "user@host"),
    Nack.from_seqs(1, 2, [65535, 0, 3]),
    TransportFeedback(1, 2, 65534, 5, 6, [(65534, True, 250), (65535, False, 0), (0, True, -500)]),
    Pli(1, 2),
    Fir(1, [(2, 9)]),
    Remb(1, 2_000_000, [2, 3]),
    Bye([1]),
]


def test_every_type_round_trips_in_one_datagram() -> None:
    data = build_compound(ALL)
    packets, error = parse_compound(data)
    assert error is None
    assert packets == ALL
    assert [type(p) for p in packets] == [type(p) for p in ALL]
    assert [(pt, off) for pt, _, off, _ in iter_headers(data)][:3] == [
        (200, 0),
        (201, 52),
        (202, 84),
    ]


def test_unknown_types_are_kept_raw() -> None:
    app = bytes.fromhex("80cc0002000000016e616d65")  # APP "name"
    xr = bytes.fromhex("80cf000100000001")
    sli = bytes.fromhex("82ce0003000000010000000200000000")  # PSFB FMT 2
    afb = bytes.fromhex("8fce0003000000010000000241424344")  # AFB, not REMB
    packets, error = parse_compound(app + xr + sli + afb + Pli(5, 6).to_bytes())
    assert error is None
    assert [type(p) for p in packets] == [UnknownRtcp] * 4 + [Pli]
    first = packets[0]
    assert isinstance(first, UnknownRtcp) and first.packet_type == 204 and bytes(first) == app
    assert isinstance(packets[2], UnknownRtcp) and packets[2].count == 2


def test_reduced_size_single_feedback() -> None:
    packets, error = parse_compound(Pli(7, 8).to_bytes())
    assert error is None and packets == [Pli(7, 8)]


def test_stops_at_first_malformed_and_reports_reason() -> None:
    rr = ReceiverReport(2, [ReportBlock(3)]).to_bytes()
    pli = Pli(1, 2).to_bytes()
    bad_sr = bytes.fromhex("81c8000100000001")  # RC=1, no room for sender info
    cases = [
        (b"", [], ERR_EMPTY),
        (rr + b"\x81", [ReceiverReport(2, [ReportBlock(3)])], ERR_TRUNCATED_HEADER),
        (
            rr + bytes.fromhex("41c9000100000000"),
            [ReceiverReport(2, [ReportBlock(3)])],
            ERR_BAD_VERSION,
        ),
        (rr + pli[:-1], [ReceiverReport(2, [ReportBlock(3)])], ERR_TRUNCATED),
        (rr + bad_sr + pli, [ReceiverReport(2, [ReportBlock(3)])], ERR_MALFORMED),
        (bytes.fromhex("a1c9000100000000"), [], ERR_BAD_PADDING),
        (bytes.fromhex("a1c9000100000005"), [], ERR_BAD_PADDING),
    ]
    for data, expected, reason in cases:
        packets, error = parse_compound(data)
        assert (packets, error) == (expected, reason), data.hex()


def test_aiortc_compound_parses() -> None:
    theirs: list[SupportsBytes] = [
        RtcpSrPacket(
            ssrc=11,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1 << 40, rtp_timestamp=2, packet_count=3, octet_count=4
            ),
            reports=[
                RtcpReceiverInfo(
                    ssrc=5,
                    fraction_lost=6,
                    packets_lost=-7,
                    highest_sequence=8,
                    jitter=9,
                    lsr=10,
                    dlsr=11,
                )
            ],
        ),
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=11, items=[(1, b"{cname}")])]),
        RtcpRtpfbPacket(fmt=1, ssrc=11, media_ssrc=12, lost=[1, 2, 40]),
        RtcpPsfbPacket(fmt=1, ssrc=11, media_ssrc=12),
        RtcpRrPacket(ssrc=11, reports=[]),
    ]
    packets, error = parse_compound(b"".join(bytes(p) for p in theirs))
    assert error is None
    assert packets == [
        SenderReport(11, 1 << 40, 2, 3, 4, [ReportBlock(5, 6, -7, 8, 9, 10, 11)]),
        SourceDescription.with_cname(11, "{cname}"),
        Nack.from_seqs(11, 12, [1, 2, 40]),
        Pli(11, 12),
        ReceiverReport(11),
    ]


def test_aiortc_parses_our_compound() -> None:
    ours = [ALL[0], ALL[1], ALL[2], ALL[5], ALL[8]]
    theirs = RtcpPacket.parse(build_compound(ours))
    assert [type(p).__name__ for p in theirs] == [
        "RtcpSrPacket",
        "RtcpRrPacket",
        "RtcpSdesPacket",
        "RtcpPsfbPacket",
        "RtcpByePacket",
    ]


@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    packets, error = parse_compound(data)
    assert error is not None or sum(len(p.to_bytes()) for p in packets) <= len(data)
    list(iter_headers(data))


@given(
    picks=st.lists(st.integers(0, len(ALL) - 1), min_size=1, max_size=6),
    pos=st.integers(0, 400),
    value=st.integers(0, 255),
    cut=st.integers(0, 400),
)
def test_mutated_compound_never_raises(picks: list[int], pos: int, value: int, cut: int) -> None:
    data = bytearray(build_compound([ALL[i] for i in picks]))
    if pos < len(data):
        data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        packets, error = parse_compound(candidate)
        for p in packets:
            p.to_bytes()
        if error is None:
            assert len(packets) >= 1
