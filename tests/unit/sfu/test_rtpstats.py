"""ReceiveStats (RFC 3550 A.3/A.8), SendStats (RTT), translate_sr, quality_score."""

from __future__ import annotations

import random
from unittest import mock

import pytest
from aiortc import rtcrtpreceiver
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rtp.ntp import (
    compact_from_seconds,
    ntp_from_unix,
    ntp_middle32,
    rtt_from_report,
    unix_from_ntp,
)
from sfu.rtp.rtcp.rr import PACKETS_LOST_MAX, PACKETS_LOST_MIN, ReceiverReport, ReportBlock
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.seq import TimestampMunger
from sfu.rtpstats import (
    ReceiveStats,
    SendStats,
    quality_score,
    translate_sr,
)

# --- jitter (RFC 3550 A.8) -------------------------------------------------------------

# 8 kHz, 20 ms packets (160 units).  Arrival units 0, 160, 360, 480, 680 against
# timestamps 0, 160, 320, 480, 640: transit 0, 0, 40, 0, 40, so D = 0, 40, 40, 40 and
# J = 0, 0 + (40 - 0)/16 = 2.5, 2.5 + 37.5/16 = 4.84375, 4.84375 + 35.15625/16 = 7.041015625.
ARRIVAL_UNITS = [0, 160, 360, 480, 680]
JITTER_STEPS = [0.0, 0.0, 2.5, 4.84375, 7.041015625]


@pytest.mark.parametrize("ts_base", [1000, 2**32 - 320, 2**32 - 1])
def test_jitter_hand_computed(ts_base: int) -> None:
    stats = ReceiveStats()
    for i, units in enumerate(ARRIVAL_UNITS):
        stats.on_packet(100 + i, (ts_base + 160 * i) & 0xFFFFFFFF, 50.0 + units / 8000, 8000, 100)
        assert stats.jitter == pytest.approx(JITTER_STEPS[i], abs=1e-6)
    assert stats.jitter_ms == pytest.approx(7.041015625 / 8, abs=1e-6)
    block = stats.report_block(0x1234, 51.0)
    assert block.jitter == 7
    assert stats.bytes == 500


def test_jitter_ignores_reordered_and_duplicate_packets() -> None:
    stats = ReceiveStats()
    stats.on_packet(1, 0, 0.0, 8000)
    stats.on_packet(3, 320, 0.040, 8000)
    before = stats.jitter
    stats.on_packet(2, 160, 0.500, 8000)  # very late: would add a big D
    stats.on_packet(3, 320, 0.600, 8000)
    assert stats.jitter == before


def test_jitter_restarts_on_clock_rate_change() -> None:
    stats = ReceiveStats()
    stats.on_packet(1, 0, 0.0, 8000)
    stats.on_packet(2, 0, 10.0, 48000)  # would be a huge D at the new rate
    assert stats.jitter == 0.0
    assert stats.clock_rate == 48000


# --- sequence validity (RFC 3550 A.3) ------------------------------------------------


def test_ext_seq_across_wrap_and_reorder() -> None:
    stats = ReceiveStats()
    got = [stats.on_packet(s, 0, 0.0, 0) for s in [65534, 65535, 1, 0, 2, 65533]]
    assert got == [65534, 65535, 65537, 65536, 65538, 65533]
    assert stats.ext_highest_seq == 65538
    assert stats.cycles == 65536
    assert stats.expected == 5  # 65534 .. 65538
    assert stats.received == 6  # 65533 precedes the base: counted, not expected
    assert stats.lost == -1


def test_probation_min_sequential_two() -> None:
    stats = ReceiveStats(min_sequential=2)
    assert stats.on_packet(10, 0, 0.0, 0) == -1
    assert not stats.started
    assert stats.on_packet(11, 0, 0.0, 0) == 11
    assert stats.started
    assert (stats.base_seq, stats.received, stats.expected) == (11, 1, 1)


def test_probation_resets_on_non_sequential() -> None:
    stats = ReceiveStats(min_sequential=2)
    assert stats.on_packet(10, 0, 0.0, 0) == -1
    assert stats.on_packet(20, 0, 0.0, 0) == -1
    assert stats.on_packet(21, 0, 0.0, 0) == 21
    assert stats.base_seq == 21


def test_big_jump_needs_confirmation_then_restarts() -> None:
    stats = ReceiveStats()
    for s in range(100, 110):
        stats.on_packet(s, 0, 0.0, 0)
    assert stats.on_packet(40000, 0, 0.0, 0) == -1
    assert stats.bad_packets == 1
    assert stats.on_packet(110, 0, 0.0, 0) == 110  # the stream goes on
    assert stats.on_packet(50000, 0, 0.0, 0) == -1
    ext = stats.on_packet(50001, 0, 0.0, 0)
    assert stats.restarts == 1
    assert ext == 111  # continues after the old highest
    assert stats.on_packet(50002, 0, 0.0, 0) == 112
    assert (stats.base_seq, stats.received, stats.lost) == (50001, 2, 0)


def test_backward_jump_beyond_misorder_is_bad() -> None:
    stats = ReceiveStats()
    for s in range(1000, 1010):
        stats.on_packet(s, 0, 0.0, 0)
    assert stats.on_packet(1009 - 101, 0, 0.0, 0) == -1
    assert stats.on_packet(1009 - 99, 0, 0.0, 0) == 1009 - 99  # misordered, counted


def test_forward_jump_within_dropout_counts_as_loss() -> None:
    stats = ReceiveStats()
    stats.on_packet(1, 0, 0.0, 0)
    assert stats.on_packet(2999, 0, 0.0, 0) == 2999
    assert stats.lost == 2997


# --- report blocks --------------------------------------------------------------------


def test_report_block_fraction_and_cumulative() -> None:
    stats = ReceiveStats()
    for s in [1, 2, 4, 5, 8]:  # 8 expected, 5 received
        stats.on_packet(s, 0, 0.0, 0)
    b = stats.report_block(77, 1.0)
    assert (b.ssrc, b.fraction_lost, b.packets_lost, b.highest_seq) == (77, 3 * 256 // 8, 3, 8)
    for s in [9, 10, 3, 3]:  # 2 new expected, 4 received: negative interval loss
        stats.on_packet(s, 0, 0.0, 0)
    b = stats.report_block(77, 2.0)
    assert (b.fraction_lost, b.packets_lost) == (0, 1)
    b = stats.report_block(77, 3.0)  # nothing new
    assert (b.fraction_lost, b.packets_lost) == (0, 1)
    assert stats.last_fraction_lost == 0


def test_report_block_before_any_packet() -> None:
    b = ReceiveStats().report_block(5, 0.0)
    assert (b.fraction_lost, b.packets_lost, b.highest_seq, b.lsr, b.dlsr) == (0, 0, 0, 0, 0)


def test_cumulative_lost_is_clamped_to_24_bits() -> None:
    stats = ReceiveStats()
    stats.on_packet(1, 0, 0.0, 0)
    stats.received = 1 << 24  # as if that many duplicates arrived
    assert stats.report_block(1, 0.0).packets_lost == PACKETS_LOST_MIN
    stats.received = -(1 << 24)
    assert stats.report_block(1, 0.0).packets_lost == PACKETS_LOST_MAX


def test_lsr_dlsr_from_last_sender_report() -> None:
    stats = ReceiveStats()
    stats.on_packet(1, 0, 0.0, 0)
    ntp = ntp_from_unix(1_700_000_000.25)
    stats.on_sender_report(SenderReport(9, ntp, 1234, 10, 1000), 20.0)
    b = stats.report_block(9, 21.5)
    assert b.lsr == ntp_middle32(ntp)
    assert b.dlsr == 3 * 32768  # 1.5 s in 1/65536 s
    assert (stats.sr_ntp, stats.sr_rtp, stats.sr_at) == (ntp, 1234, 20.0)
    # Round trip through the wire format.
    rr = ReceiverReport(1, [b])
    parsed = ReceiverReport.parse(rr.to_bytes())
    assert parsed is not None and parsed.reports == [b]


def packets_strategy() -> st.SearchStrategy[tuple[int, list[int]]]:
    """(first seq, ext offsets in arrival order): drops, duplicates, reorder <= 50."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[int, list[int]]:
        start = draw(st.one_of(st.integers(65536 - 500, 65535), st.integers(0, 65535)))
        n = draw(st.integers(1, 600))
        seed = draw(st.integers(0, 2**32 - 1))
        loss = draw(st.floats(0.0, 0.6))
        dup = draw(st.floats(0.0, 0.1))
        reorder = draw(st.floats(0.0, 0.3))
        rng = random.Random(seed)
        offs = [i for i in range(n) if i == 0 or rng.random() >= loss]
        out: list[int] = []
        for o in offs:
            out.append(o)
            if rng.random() < dup:
                out.append(o)
        for i in range(1, len(out)):
            if rng.random() < reorder:
                j = max(1, i - rng.randint(1, 6))
                if out[i] - out[j] < 50:
                    out[i], out[j] = out[j], out[i]
        return start, out

    return build()


@settings(max_examples=150, deadline=None)
@given(packets_strategy(), st.lists(st.integers(0, 600), max_size=6))
def test_loss_matches_reference_model_and_aiortc(
    stream: tuple[int, list[int]], report_points: list[int]
) -> None:
    start, offs = stream
    stats = ReceiveStats()
    ref = rtcrtpreceiver.StreamStatistics(90000)
    points = set(report_points)
    exp_prior = rec_prior = 0
    highest = offs[0]
    received = 0
    fake_time = mock.Mock(return_value=0.0)
    with mock.patch.object(rtcrtpreceiver.time, "time", fake_time):
        for i, off in enumerate(offs):
            seq = (start + off) & 0xFFFF
            ext = stats.on_packet(seq, 0, 0.0, 90000)
            assert ext == start + off  # unwrapped against the first packet
            ref.add(RtpPacket(sequence_number=seq))
            received += 1
            highest = max(highest, off)
            if i in points:
                block = stats.report_block(1, 0.0)
                expected = highest - offs[0] + 1
                exp_i, rec_i = expected - exp_prior, received - rec_prior
                exp_prior, rec_prior = expected, received
                lost_i = exp_i - rec_i
                fraction = (lost_i * 256) // exp_i if exp_i > 0 and lost_i > 0 else 0
                assert block.fraction_lost == fraction
                assert block.packets_lost == expected - received
                assert block.highest_seq == (start + highest) & 0xFFFFFFFF
                assert block.fraction_lost == ref.fraction_lost
                assert block.packets_lost == ref.packets_lost
    assert stats.expected == ref.packets_expected
    assert stats.received == ref.packets_received


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 65535),
    # aiortc's StreamStatistics does not unwrap the RTP clock (a 2**32 jump in its transit), so
    # the comparison stays below the wrap; wrap-around is checked against a hand-computed series.
    st.integers(0, 2**32 - 1 - 100 * 3000),
    st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 400)), min_size=1, max_size=100),
)
def test_jitter_matches_aiortc(seq0: int, ts0: int, steps: list[tuple[int, int]]) -> None:
    """In-order packets with distinct timestamps: our float jitter vs aiortc's Q4 integer."""
    clock = 90000
    stats = ReceiveStats()
    ref = rtcrtpreceiver.StreamStatistics(clock)
    now = mock.Mock(return_value=0.0)
    seq, ts, units = seq0, ts0, 1_000_000
    with mock.patch.object(rtcrtpreceiver.time, "time", now):
        for i, (dts, dunits) in enumerate([(0, 0), *steps]):
            if i:
                seq = (seq + 1) & 0xFFFF
                ts = (ts + dts) & 0xFFFFFFFF
                units += dunits + dts // 2
            arrival = (units + 0.5) / clock
            now.return_value = arrival
            stats.on_packet(seq, ts, arrival, clock)
            ref.add(RtpPacket(sequence_number=seq, timestamp=ts))
    assert abs(int(stats.jitter) - ref.jitter) <= 1


# --- SendStats: RTT ---------------------------------------------------------------------


def test_rtt_from_constructed_rr_is_exact() -> None:
    send = SendStats(clock_rate=48000)
    ntp = ntp_from_unix(1_700_000_000.0)
    send.on_sender_report_sent(ntp, 10.0)
    block = ReportBlock(0xAA, 12, 3, 5000, 480, ntp_middle32(ntp), compact_from_seconds(0.25))
    rr = ReceiverReport.parse(ReceiverReport(0xBB, [block]).to_bytes())
    assert rr is not None
    rtt = send.on_receiver_report(rr.reports[0], 10.5)
    assert rtt == 0.25
    assert send.rtt == 0.25
    assert send.remote_fraction_lost == 12
    assert send.remote_loss == 12 / 256
    assert send.remote_packets_lost == 3
    assert send.remote_jitter_ms == 10.0
    # The same numbers on the NTP clock, computed by the independent helper.
    arrival = ntp_middle32(ntp_from_unix(1_700_000_000.5))
    assert rtt_from_report(arrival, block.lsr, block.dlsr) == pytest.approx(0.25, abs=2 / 65536)


def test_rtt_matches_older_sr_and_rejects_unknown() -> None:
    send = SendStats()
    ntps = [ntp_from_unix(1_700_000_000.0 + i) for i in range(3)]
    for i, ntp in enumerate(ntps):
        send.on_sender_report_sent(ntp, 100.0 + i)
    block = ReportBlock(1, lsr=ntp_middle32(ntps[0]), dlsr=compact_from_seconds(2.0))
    assert send.on_receiver_report(block, 102.125) == 0.125
    assert send.on_receiver_report(ReportBlock(1, lsr=0), 103.0) is None
    assert send.on_receiver_report(ReportBlock(1, lsr=12345, dlsr=0), 103.0) is None
    bogus = ReportBlock(1, lsr=ntp_middle32(ntps[2]), dlsr=compact_from_seconds(5.0))
    assert send.on_receiver_report(bogus, 103.0) is None
    assert send.rtt == 0.125
    assert send.reports == 4


def test_rtt_history_forgets_old_srs() -> None:
    send = SendStats()
    first = ntp_from_unix(1_700_000_000.0)
    send.on_sender_report_sent(first, 0.0)
    for i in range(1, 9):
        send.on_sender_report_sent(ntp_from_unix(1_700_000_000.0 + i), float(i))
    assert send.on_receiver_report(ReportBlock(1, lsr=ntp_middle32(first)), 9.0) is None


def test_send_stats_counts() -> None:
    send = SendStats()
    send.on_packet(1000, 3000, 1.0)
    send.on_packet(500, 6000, 1.033)
    assert (send.packets, send.octets, send.last_rtp_ts, send.last_rtp_at) == (2, 1500, 6000, 1.033)


# --- SR translation -----------------------------------------------------------------------


def test_translate_sr_table() -> None:
    sr = translate_sr(0x0123456789ABCDEF, 1000, 3000, 7, 8000, 0xCAFE)
    assert sr == SenderReport(0xCAFE, 0x0123456789ABCDEF, (1000 - 3000) & 0xFFFFFFFF, 7, 8000)
    sr = translate_sr(5 << 32, 2**32 - 10, 2**32 - 20, 2**32 + 3, 2**33 + 5, 1)
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (10, 3, 5)


def test_translate_sr_extrapolates_both_clocks() -> None:
    ntp = ntp_from_unix(1_700_000_000.0)
    sr = translate_sr(ntp, 90000, 0, 0, 0, 1, elapsed=0.5, clock_rate=90000)
    assert sr.rtp_timestamp == 135000
    assert unix_from_ntp(sr.ntp_timestamp) == pytest.approx(1_700_000_000.5, abs=1e-6)
    with pytest.raises(ValueError):
        translate_sr(ntp, 0, 0, 0, 0, 1, elapsed=0.5)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(-(2**20), 2**20),
)
def test_translate_sr_keeps_lip_sync(
    ntp: int, sr_rtp: int, first_in: int, first_out: int, pkt_delta: int
) -> None:
    """A packet's NTP time, derived from the SR, is the same upstream and downstream."""
    munger = TimestampMunger(start=first_out)
    munger.munge(first_in, 0.0)
    ts_offset = (first_in - first_out) & 0xFFFFFFFF
    pkt_in = (sr_rtp + pkt_delta) & 0xFFFFFFFF
    pkt_out = munger.munge(pkt_in, 0.0)
    sr = translate_sr(ntp, sr_rtp, ts_offset, 1, 2, 3)
    assert sr.ntp_timestamp == ntp
    assert (sr.rtp_timestamp + ts_offset) & 0xFFFFFFFF == sr_rtp  # round trip
    assert (pkt_out - sr.rtp_timestamp) & 0xFFFFFFFF == (pkt_in - sr_rtp) & 0xFFFFFFFF
    parsed = SenderReport.parse(sr.to_bytes())
    assert parsed == sr


def test_send_stats_sender_report_is_recorded_for_rtt() -> None:
    send = SendStats(clock_rate=90000)
    for _ in range(3):
        send.on_packet(1200, 0, 0.0)
    pub_ntp = ntp_from_unix(1_700_000_000.0)
    sr = send.sender_report(0xD0, pub_ntp, 9000, 5.0, 1000, 5.25)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (0xD0, 3, 3600)
    assert sr.rtp_timestamp == 9000 + 22500 - 1000
    block = ReportBlock(0xD0, lsr=ntp_middle32(sr.ntp_timestamp), dlsr=compact_from_seconds(0.5))
    assert send.on_receiver_report(block, 5.875) == 0.125


# --- quality score ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss", "jitter_ms", "rtt_ms", "label", "score"),
    [
        (0.0, 0.0, 0.0, "excellent", 100),
        (0.0, 5.0, 40.0, "excellent", 99),  # delay 20 + 10 ms: penalty 0.75
        (0.03, 10.0, 100.0, "excellent", 86),  # 100 - 1.75 - 12
        (0.05, 0.0, 0.0, "good", 80),  # exactly 80 is not excellent
        (0.1, 30.0, 300.0, "good", 51),  # delay 210: 4 + 5; loss 40
        (0.0, 0.0, 1200.0, "good", 52),  # delay 600: 4 + 44
        (0.15, 0.0, 0.0, "poor", 40),
        (0.2, 20.0, 200.0, "poor", 17),  # 100 - 3.5 - 80 = 16.5, rounded half up
        (0.3, 0.0, 0.0, "poor", 0),
        (0.5, 0.0, 0.0, "lost", 0),
        (1.0, 0.0, 0.0, "lost", 0),
        (-0.1, -5.0, -1.0, "excellent", 100),  # nonsense inputs clamp
        (float("nan"), float("nan"), float("nan"), "excellent", 100),
    ],
)
def test_quality_score_table(
    loss: float, jitter_ms: float, rtt_ms: float, label: str, score: int
) -> None:
    assert quality_score(loss, jitter_ms, rtt_ms) == (label, score)


def test_quality_score_loss_weight() -> None:
    assert quality_score(0.1, 0.0, 0.0, loss_weight=1.0) == ("excellent", 90)


_RANK = {"excellent": 3, "good": 2, "poor": 1, "lost": 0}


@given(
    st.floats(0.0, 1.0),
    st.floats(0.0, 500.0),
    st.floats(0.0, 3000.0),
    st.floats(0.0, 0.5),
    st.floats(0.0, 100.0),
    st.floats(0.0, 500.0),
)
def test_quality_score_is_monotonic(
    loss: float, jitter: float, rtt: float, dloss: float, djitter: float, drtt: float
) -> None:
    label, score = quality_score(loss, jitter, rtt)
    assert 0 <= score <= 100
    worse_label, worse = quality_score(min(1.0, loss + dloss), jitter + djitter, rtt + drtt)
    assert worse <= score
    assert _RANK[worse_label] <= _RANK[label]
