"""RTCP packet types: round trips, hand-written and aiortc-made golden packets,
malformed input."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import (
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)
from hypothesis import given
from hypothesis import strategies as st

from sfu.rtp.rtcp.bye import Bye
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack, nack_pairs_from_seqs, seqs_from_nack_pairs
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.remb import Remb, remb_encode_bitrate
from sfu.rtp.rtcp.rr import ReceiverReport, ReportBlock, clamp_packets_lost
from sfu.rtp.rtcp.sdes import SDES_CNAME, SDES_TOOL, SdesChunk, SourceDescription
from sfu.rtp.rtcp.sr import SenderReport, rtp_timestamp_at

u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_seq=u32,
    jitter=u32,
    lsr=u32,
    dlsr=u32,
)


def their_block(b: ReportBlock) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=b.ssrc,
        fraction_lost=b.fraction_lost,
        packets_lost=b.packets_lost,
        highest_sequence=b.highest_seq,
        jitter=b.jitter,
        lsr=b.lsr,
        dlsr=b.dlsr,
    )


def same_block(ours: ReportBlock, theirs: RtcpReceiverInfo) -> bool:
    return (
        ours.ssrc,
        ours.fraction_lost,
        ours.packets_lost,
        ours.highest_seq,
        ours.jitter,
        ours.lsr,
        ours.dlsr,
    ) == (
        theirs.ssrc,
        theirs.fraction_lost,
        theirs.packets_lost,
        theirs.highest_sequence,
        theirs.jitter,
        theirs.lsr,
        theirs.dlsr,
    )


# --- SR / RR ------------------------------------------------------------------------

RR_GOLDEN = bytes.fromhex(
    "81c90007"  # V=2 RC=1 PT=201 length 7
    "11223344"  # reporter
    "55667788"  # source
    "19fffffe"  # fraction 25, cumulative lost -2
    "0001ffff"  # one cycle, highest 0xffff
    "00000010"  # jitter 16
    "aabbccdd"  # LSR
    "00010000"  # DLSR 1 s
)


def test_rr_hand_written_golden() -> None:
    rr = ReceiverReport.parse(RR_GOLDEN)
    assert rr is not None and rr.ssrc == 0x11223344
    assert rr.reports == [ReportBlock(0x55667788, 25, -2, 0x1FFFF, 16, 0xAABBCCDD, 0x10000)]
    assert rr.to_bytes() == RR_GOLDEN


@given(ssrc=u32, reports=st.lists(blocks, max_size=31))
def test_rr_round_trip_and_aiortc(ssrc: int, reports: list[ReportBlock]) -> None:
    rr = ReceiverReport(ssrc, reports)
    data = bytes(rr)
    assert ReceiverReport.parse(data) == rr
    (theirs,) = RtcpPacket.parse(data)
    assert isinstance(theirs, RtcpRrPacket) and theirs.ssrc == ssrc
    assert all(same_block(a, b) for a, b in zip(reports, theirs.reports, strict=True))
    # and the other way round
    ours = ReceiverReport.parse(
        bytes(RtcpRrPacket(ssrc=ssrc, reports=[their_block(b) for b in reports]))
    )
    assert ours == rr


@given(
    ssrc=u32,
    ntp=st.integers(0, (1 << 64) - 1),
    rtp=u32,
    packets=u32,
    octets=u32,
    reports=st.lists(blocks, max_size=4),
)
def test_sr_round_trip_and_aiortc(
    ssrc: int, ntp: int, rtp: int, packets: int, octets: int, reports: list[ReportBlock]
) -> None:
    sr = SenderReport(ssrc, ntp, rtp, packets, octets, reports)
    data = sr.to_bytes()
    assert SenderReport.parse(data) == sr
    (theirs,) = RtcpPacket.parse(data)
    assert isinstance(theirs, RtcpSrPacket)
    info = theirs.sender_info
    assert (
        theirs.ssrc,
        info.ntp_timestamp,
        info.rtp_timestamp,
        info.packet_count,
        info.octet_count,
    ) == (
        ssrc,
        ntp,
        rtp,
        packets,
        octets,
    )
    assert all(same_block(a, b) for a, b in zip(reports, theirs.reports, strict=True))
    their_sr = RtcpSrPacket(
        ssrc=ssrc,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp, packet_count=packets, octet_count=octets
        ),
        reports=[their_block(b) for b in reports],
    )
    assert SenderReport.parse(bytes(their_sr)) == sr


def test_sr_tolerates_profile_extension_and_padding() -> None:
    sr = SenderReport(1, 2, 3, 4, 5, [ReportBlock(9)])
    data = bytearray(sr.to_bytes() + b"EXT!" + b"\x00\x00\x00\x04")
    data[0] |= 0x20  # padding bit, last byte counts 4
    struct.pack_into("!H", data, 2, len(data) // 4 - 1)
    assert SenderReport.parse(bytes(data)) == sr


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-4],  # length field now disagrees with the size
        lambda d: bytes((0x41,)) + d[1:],  # version 1
        lambda d: d[:1] + bytes((201,)) + d[2:],  # wrong type
        lambda d: bytes((d[0] + 1,)) + d[1:],  # RC=2 but only one block
        lambda d: d[:2] + b"\x00\x01" + d[4:8],  # length 1 word: no sender info
    ],
)
def test_sr_malformed(mutate: object) -> None:
    data = SenderReport(1, 2, 3, 4, 5, [ReportBlock(9)]).to_bytes()
    assert SenderReport.parse(mutate(data)) is None  # type: ignore[operator]


def test_report_block_limits() -> None:
    assert clamp_packets_lost(1 << 30) == (1 << 23) - 1
    assert clamp_packets_lost(-(1 << 30)) == -(1 << 23)
    assert clamp_packets_lost(5) == 5
    with pytest.raises(ValueError):
        ReceiverReport(1, [ReportBlock(1, packets_lost=1 << 23)]).to_bytes()
    with pytest.raises(ValueError):
        ReceiverReport(1, [ReportBlock(1, fraction_lost=256)]).to_bytes()
    with pytest.raises(ValueError):
        ReceiverReport(1, [ReportBlock(1)] * 32).to_bytes()


def test_rtp_timestamp_at() -> None:
    assert rtp_timestamp_at(1000, 10.0, 10.5, 90000) == 46000
    assert rtp_timestamp_at(0xFFFFFFF0, 10.0, 11.0, 48000) == 48000 - 16


# --- SDES / BYE ---------------------------------------------------------------------


def test_sdes_hand_written_golden() -> None:
    golden = bytes.fromhex(
        "81ca0003"  # SC=1, length 3
        "01020304"
        "0103616263"  # CNAME "abc"
        "000000"  # END + pad
    )
    sdes = SourceDescription.parse(golden)
    assert sdes is not None and sdes.cname_of(0x01020304) == b"abc"
    assert sdes.to_bytes() == golden
    assert SourceDescription.with_cname(0x01020304, "abc").to_bytes() == golden


def test_sdes_multi_chunk_round_trip() -> None:
    sdes = SourceDescription(
        [
            SdesChunk(1, [(SDES_CNAME, b"a"), (SDES_TOOL, b"telesfu")]),
            SdesChunk(2, [(SDES_CNAME, b"bb")]),
            SdesChunk(3, []),
        ]
    )
    data = sdes.to_bytes()
    assert len(data) % 4 == 0
    assert SourceDescription.parse(data) == sdes
    assert sdes.cname_of(2) == b"bb" and sdes.cname_of(3) is None and sdes.cname_of(9) is None


@given(ssrc=u32, cname=st.binary(min_size=1, max_size=255))
def test_sdes_aiortc_both_ways(ssrc: int, cname: bytes) -> None:
    ours = SourceDescription.with_cname(ssrc, cname)
    (theirs,) = RtcpPacket.parse(ours.to_bytes())
    assert isinstance(theirs, RtcpSdesPacket)
    assert theirs.chunks[0].ssrc == ssrc and theirs.chunks[0].items == [(SDES_CNAME, cname)]
    their_bytes = bytes(
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(SDES_CNAME, cname)])])
    )
    parsed = SourceDescription.parse(their_bytes)
    assert parsed is not None and parsed.cname_of(ssrc) == cname


def test_sdes_malformed() -> None:
    good = SourceDescription.with_cname(7, "x").to_bytes()
    bad_len = bytearray(good)
    bad_len[9] = 200  # item length past the packet
    assert SourceDescription.parse(bytes(bad_len)) is None
    more_chunks = bytearray(good)
    more_chunks[0] = 0x82  # SC=2, only one chunk present
    assert SourceDescription.parse(bytes(more_chunks)) is None


@given(ssrcs=st.lists(u32, max_size=31), reason=st.one_of(st.none(), st.binary(max_size=255)))
def test_bye_round_trip_and_aiortc(ssrcs: list[int], reason: bytes | None) -> None:
    bye = Bye(ssrcs, reason)
    data = bye.to_bytes()
    assert len(data) % 4 == 0
    assert Bye.parse(data) == bye
    (theirs,) = RtcpPacket.parse(data)
    assert isinstance(theirs, RtcpByePacket) and theirs.sources == ssrcs
    assert Bye.parse(bytes(RtcpByePacket(sources=ssrcs))) == Bye(ssrcs)


def test_bye_malformed() -> None:
    data = bytearray(Bye([1], b"bye").to_bytes())
    data[8] = 50  # reason length past the end
    assert Bye.parse(bytes(data)) is None
    assert Bye.parse(bytes.fromhex("82cb000100000001")) is None  # SC=2, one SSRC


# --- NACK ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seqs", "pairs"),
    [
        ([], []),
        ([100], [(100, 0)]),
        ([100, 101, 103], [(100, 0b101)]),
        ([100, 116], [(100, 0x8000)]),
        ([100, 117], [(100, 0), (117, 0)]),
        ([65534, 65535, 0, 1], [(65534, 0b111)]),  # across the wrap
        ([1, 0, 65535, 1], [(65535, 0b11)]),  # unordered, duplicate
        ([65535, 15], [(65535, 0x8000)]),
    ],
)
def test_nack_pairs_table(seqs: list[int], pairs: list[tuple[int, int]]) -> None:
    assert nack_pairs_from_seqs(seqs) == pairs


@given(first=st.integers(0, 0xFFFF), offsets=st.lists(st.integers(0, 2000), max_size=80))
def test_nack_pairs_round_trip(first: int, offsets: list[int]) -> None:
    seqs = [(first + o) & 0xFFFF for o in offsets]
    pairs = nack_pairs_from_seqs(seqs)
    back = seqs_from_nack_pairs(pairs)
    assert sorted(set(back)) == sorted(set(seqs))
    assert len(back) == len(set(seqs))
    assert back == sorted(back, key=lambda s: (s - first) & 0xFFFF)
    nack = Nack.from_seqs(1, 2, seqs)
    parsed = Nack.parse(nack.to_bytes())
    assert parsed == nack and parsed.seqs() == back


def test_nack_golden_and_aiortc() -> None:
    golden = bytes.fromhex("81cd0003000000010000000200640005")
    nack = Nack.parse(golden)
    assert nack is not None and nack.pairs == [(100, 5)] and nack.seqs() == [100, 101, 103]
    assert Nack.from_seqs(1, 2, [100, 101, 103]).to_bytes() == golden
    (theirs,) = RtcpPacket.parse(golden)
    assert isinstance(theirs, RtcpRtpfbPacket) and theirs.lost == [100, 101, 103]
    lost = [5, 6, 7, 30, 31, 100, 115, 116, 200]
    ours = Nack.parse(bytes(RtcpRtpfbPacket(fmt=1, ssrc=9, media_ssrc=8, lost=lost)))
    assert (
        ours is not None and ours.seqs() == lost and (ours.sender_ssrc, ours.media_ssrc) == (9, 8)
    )


def test_nack_malformed() -> None:
    assert Nack.parse(bytes.fromhex("81cd000100000001")) is None  # no media SSRC
    assert Nack.parse(bytes.fromhex("8fcd00020000000100000002")) is None  # FMT 15


# --- PLI / FIR / REMB ---------------------------------------------------------------


def test_pli_golden_and_aiortc() -> None:
    golden = bytes.fromhex("81ce00020000000a0000000b")
    assert Pli.parse(golden) == Pli(10, 11)
    assert Pli(10, 11).to_bytes() == golden
    assert bytes(RtcpPsfbPacket(fmt=1, ssrc=10, media_ssrc=11)) == golden
    assert Pli.parse(golden[:-4]) is None
    assert Pli.parse(bytes.fromhex("84ce00020000000a0000000b")) is None  # that is FIR


def test_fir_golden_and_aiortc() -> None:
    golden = bytes.fromhex("84ce00060000000a000000000000000b070000000000000cff000000")
    fir = Fir.parse(golden)
    assert fir == Fir(10, [(11, 7), (12, 255)])
    assert fir is not None and fir.seq_nr_for(12) == 255 and fir.seq_nr_for(13) == -1
    assert fir.to_bytes() == golden
    (theirs,) = RtcpPacket.parse(golden)
    assert isinstance(theirs, RtcpPsfbPacket) and theirs.fmt == 4 and theirs.fci == golden[12:]
    assert Fir.parse(bytes(RtcpPsfbPacket(fmt=4, ssrc=10, media_ssrc=0, fci=golden[12:]))) == fir
    assert Fir.parse(bytes.fromhex("84ce00020000000a00000000")) is None  # no entry
    with pytest.raises(ValueError):
        Fir(1).to_bytes()


@pytest.mark.parametrize(
    ("bitrate", "exp_mant"),
    [
        (0, (0, 0)),
        (0x3FFFF, (0, 0x3FFFF)),
        (0x40000, (1, 0x20000)),
        (1_000_000, (2, 250_000)),
        (30_000_000, (7, 234375)),
    ],
)
def test_remb_encoding(bitrate: int, exp_mant: tuple[int, int]) -> None:
    assert remb_encode_bitrate(bitrate) == exp_mant


@given(bitrate=st.integers(0, 10**12), ssrcs=st.lists(u32, max_size=8), sender=u32)
def test_remb_round_trip_and_aiortc(bitrate: int, ssrcs: list[int], sender: int) -> None:
    data = Remb(sender, bitrate, ssrcs).to_bytes()
    parsed = Remb.parse(data)
    assert parsed is not None and parsed.ssrcs == ssrcs and parsed.sender_ssrc == sender
    exp, mant = remb_encode_bitrate(bitrate)
    assert parsed.bitrate == mant << exp and parsed.bitrate <= bitrate
    assert bitrate - parsed.bitrate < max(1, bitrate >> 17)
    (theirs,) = RtcpPacket.parse(data)
    assert isinstance(theirs, RtcpPsfbPacket)
    assert unpack_remb_fci(theirs.fci) == (parsed.bitrate, ssrcs)
    their_bytes = bytes(
        RtcpPsfbPacket(fmt=15, ssrc=sender, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
    )
    assert Remb.parse(their_bytes) == parsed


def test_remb_malformed() -> None:
    good = Remb(1, 500_000, [5, 6]).to_bytes()
    not_remb = good[:12] + b"XXXX" + good[16:]
    assert Remb.parse(not_remb) is None
    too_many = bytearray(good)
    too_many[16] = 3  # three SSRCs announced, two present
    assert Remb.parse(bytes(too_many)) is None
    with pytest.raises(ValueError):
        Remb(1, -1).to_bytes()
    with pytest.raises(ValueError):
        Remb(1, 1 << 90).to_bytes()


# --- never raise --------------------------------------------------------------------

PARSERS = [SenderReport, ReceiverReport, SourceDescription, Bye, Nack, Pli, Fir, Remb]


@given(st.binary(max_size=96))
def test_random_bytes_never_raise(data: bytes) -> None:
    for cls in PARSERS:
        cls.parse(data)  # type: ignore[attr-defined]
        cls.parse(data, 4)  # type: ignore[attr-defined]
        cls.parse(data, 0, len(data))  # type: ignore[attr-defined]


GOOD = [
    RR_GOLDEN,
    SenderReport(1, 2, 3, 4, 5, [ReportBlock(6)]).to_bytes(),
    SourceDescription.with_cname(1, "cname").to_bytes(),
    Bye([1, 2], b"why").to_bytes(),
    Nack.from_seqs(1, 2, [1, 3, 50]).to_bytes(),
    Pli(1, 2).to_bytes(),
    Fir(1, [(2, 3)]).to_bytes(),
    Remb(1, 123456, [7, 8]).to_bytes(),
]


@given(
    index=st.integers(0, len(GOOD) - 1),
    pos=st.integers(0, 60),
    value=st.integers(0, 255),
    cut=st.integers(0, 60),
)
def test_mutated_packets_never_raise(index: int, pos: int, value: int, cut: int) -> None:
    data = bytearray(GOOD[index])
    if pos < len(data):
        data[pos] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        for cls in PARSERS:
            result = cls.parse(candidate)  # type: ignore[attr-defined]
            if result is not None:
                result.to_bytes()
