"""RTP stream statistics: receiver side (RR blocks), sender side (SR, RTT), quality score.

``ReceiveStats`` follows RFC 3550 appendix A.3 (sequence validity, cycles, probation,
restart after a large jump), A.3 again for expected/lost and the per-report fraction,
and A.8 for interarrival jitter.  ``SendStats`` keeps what a DownTrack sent and what its
subscriber reported back.  ``translate_sr`` rewrites a publisher SR for one DownTrack.
"""

from __future__ import annotations

from sfu.rtp.ntp import NTP_FRACTION, NTP_MASK, compact_from_seconds, ntp_middle32
from sfu.rtp.rtcp.rr import ReportBlock, clamp_packets_lost
from sfu.rtp.rtcp.sr import SenderReport

RTP_SEQ_MOD = 1 << 16
SEQ_MASK = RTP_SEQ_MOD - 1
TS_MOD = 1 << 32
TS_MASK = TS_MOD - 1
TS_HALF = 1 << 31

MAX_DROPOUT = 3000  # RFC 3550 A.1 defaults
MAX_MISORDER = 100
MIN_SEQUENTIAL = 1  # the RFC suggests 2; an SFU counts the very first packet

SR_HISTORY = 8  # SRs remembered by SendStats to match an RR's LSR


class ReceiveStats:
    """Reception statistics of one incoming RTP stream (one SSRC).

    ``on_packet`` returns the packet's ext seq, monotonic across sequence restarts,
    or -1 when the packet is not counted (still on probation, or the first packet
    after a jump larger than ``max_dropout`` / ``max_misorder`` which the next one
    may confirm as a restart).

    Jitter is updated only by packets that advance the highest sequence number:
    reordered packets and retransmissions would add their queueing delay to it.
    Duplicates count as received (RFC 3550: cumulative loss may go negative).
    """

    __slots__ = (
        "min_sequential",
        "max_dropout",
        "max_misorder",
        "max_seq",
        "cycles",
        "base_seq",
        "bad_seq",
        "probation",
        "received",
        "expected_prior",
        "received_prior",
        "bytes",
        "jitter",
        "clock_rate",
        "restarts",
        "bad_packets",
        "last_fraction_lost",
        "sr_ntp",
        "sr_rtp",
        "sr_at",
        "_lsr",
        "_transit",
        "_have_transit",
        "_started",
        "_epoch",
    )

    def __init__(
        self,
        min_sequential: int = MIN_SEQUENTIAL,
        max_dropout: int = MAX_DROPOUT,
        max_misorder: int = MAX_MISORDER,
    ) -> None:
        if min_sequential < 1:
            raise ValueError("min_sequential must be >= 1")
        if not 0 < max_dropout < RTP_SEQ_MOD - max_misorder or max_misorder < 1:
            raise ValueError("bad max_dropout / max_misorder")
        self.min_sequential = min_sequential
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.max_seq = 0
        self.cycles = 0  # count of wraps, shifted: a multiple of 65536
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.probation = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.bytes = 0
        self.jitter = 0.0  # RTP timestamp units
        self.clock_rate = 0
        self.restarts = 0
        self.bad_packets = 0  # packets not counted (probation, unconfirmed jumps)
        self.last_fraction_lost = 0  # 8-bit fraction of the last report block
        self.sr_ntp = 0  # the last SR received: 64-bit NTP, RTP ts, local arrival
        self.sr_rtp = 0
        self.sr_at = 0.0
        self._lsr = 0
        self._transit = 0.0
        self._have_transit = False
        self._started = False
        self._epoch = 0  # added to cycles + seq so ext stays monotonic over restarts

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0

    def on_packet(
        self, seq: int, rtp_ts: int, arrival: float, clock_rate: int, size: int = 0
    ) -> int:
        """Count one packet; ``arrival`` in seconds.  Returns its ext seq or -1."""
        seq &= SEQ_MASK
        max_seq = self.max_seq
        udelta = (seq - max_seq) & SEQ_MASK
        if 0 < udelta < self.max_dropout and self._started and not self.probation:
            # Fast path: the next packet(s) in order.
            if seq < max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self.received += 1
            self.bytes += size
            if clock_rate > 0:
                if clock_rate == self.clock_rate and self._have_transit:
                    transit = arrival * clock_rate - rtp_ts
                    d = transit - self._transit
                    if d >= TS_HALF:  # the RTP timestamp wrapped between the two packets
                        d -= TS_MOD
                    elif d < -TS_HALF:
                        d += TS_MOD
                    if d < 0:
                        d = -d
                    self.jitter += (d - self.jitter) / 16.0
                    self._transit = transit
                else:
                    self._update_jitter(rtp_ts, arrival, clock_rate)
            return self._epoch + self.cycles + seq
        if not self._started:
            self._started = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) & SEQ_MASK
            self.probation = self.min_sequential
        udelta = (seq - self.max_seq) & SEQ_MASK
        advanced = False
        if self.probation:
            if udelta == 1:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    advanced = True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            if not advanced:
                self.bad_packets += 1
                return -1
            ext = self._epoch + seq
        elif udelta < self.max_dropout:
            if udelta:
                if seq < self.max_seq:
                    self.cycles += RTP_SEQ_MOD
                self.max_seq = seq
                advanced = True
            ext = self._epoch + self.cycles + seq
        elif udelta <= RTP_SEQ_MOD - self.max_misorder:
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & SEQ_MASK
                self.bad_packets += 1
                return -1
            # Two sequential packets after a jump: the source restarted.
            self._epoch += self.cycles + self.max_seq + 1 - seq
            self._init_seq(seq)
            self._have_transit = False
            self.restarts += 1
            advanced = True
            ext = self._epoch + seq
        else:
            # Duplicate or reordered, at most max_misorder behind.
            ext = self._epoch + self.cycles + seq
            if seq > self.max_seq:
                ext -= RTP_SEQ_MOD
        self.received += 1
        self.bytes += size
        if advanced and clock_rate > 0:
            self._update_jitter(rtp_ts, arrival, clock_rate)
        return ext

    def _update_jitter(self, rtp_ts: int, arrival: float, clock_rate: int) -> None:
        if clock_rate != self.clock_rate:
            self.clock_rate = clock_rate
            self._have_transit = False
        transit = arrival * clock_rate - rtp_ts
        if self._have_transit:
            d = transit - self._transit
            if d >= TS_HALF:  # the RTP timestamp wrapped between the two packets
                d -= TS_MOD
            elif d < -TS_HALF:
                d += TS_MOD
            if d < 0:
                d = -d
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit
        self._have_transit = True

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        """Remember the publisher's SR (for LSR/DLSR and SR translation)."""
        self.sr_ntp = sr.ntp_timestamp
        self.sr_rtp = sr.rtp_timestamp
        self.sr_at = now
        self._lsr = ntp_middle32(sr.ntp_timestamp)

    # --- derived values --------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once a packet was counted."""
        return self._started and not self.probation

    @property
    def ext_highest_seq(self) -> int:
        """RFC 3550 extended highest sequence number (cycles << 16 | max seq)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if not self.started:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative with duplicates), unclamped."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        if self.clock_rate <= 0:
            return 0.0
        return self.jitter * 1000.0 / self.clock_rate

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """Reception report for ``ssrc``; starts a new fraction-lost interval."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = (lost_interval << 8) // expected_interval
            if fraction > 255:
                fraction = 255
        self.last_fraction_lost = fraction
        lsr = self._lsr
        dlsr = 0
        if lsr:
            delay = now - self.sr_at
            dlsr = compact_from_seconds(delay) if delay > 0 else 0
        return ReportBlock(
            ssrc,
            fraction,
            clamp_packets_lost(self.lost),
            self.ext_highest_seq & 0xFFFFFFFF if self.started else 0,
            int(self.jitter) & 0xFFFFFFFF,
            lsr,
            dlsr,
        )


class SendStats:
    """What one outgoing stream (a DownTrack) sent, and what its receiver reported.

    ``octets`` counts payload octets (RFC 3550 SR: no header, no padding).
    """

    __slots__ = (
        "clock_rate",
        "packets",
        "octets",
        "last_rtp_ts",
        "last_rtp_at",
        "rtt",
        "remote_fraction_lost",
        "remote_packets_lost",
        "remote_jitter",
        "remote_highest_seq",
        "reports",
        "_sr_lsr",
        "_sr_at",
        "_sr_next",
    )

    def __init__(self, clock_rate: int = 90000) -> None:
        self.clock_rate = clock_rate
        self.packets = 0
        self.octets = 0
        self.last_rtp_ts = 0
        self.last_rtp_at = 0.0
        self.rtt = -1.0  # s, from the last RR that matched an SR; -1: unknown
        self.remote_fraction_lost = 0  # 8-bit fraction from the last RR
        self.remote_packets_lost = 0
        self.remote_jitter = 0  # RTP units
        self.remote_highest_seq = 0
        self.reports = 0
        self._sr_lsr = [0] * SR_HISTORY  # compact NTP of SRs sent
        self._sr_at = [0.0] * SR_HISTORY  # and when
        self._sr_next = 0

    def on_packet(self, payload_size: int, rtp_ts: int, now: float) -> None:
        self.packets += 1
        self.octets += payload_size
        self.last_rtp_ts = rtp_ts
        self.last_rtp_at = now

    def on_sender_report_sent(self, ntp: int, now: float) -> None:
        """Remember an SR we sent so a later RR's LSR gives the RTT."""
        i = self._sr_next
        self._sr_lsr[i] = ntp_middle32(ntp)
        self._sr_at[i] = now
        self._sr_next = (i + 1) % SR_HISTORY

    def on_receiver_report(self, block: ReportBlock, now: float) -> float | None:
        """Keep the subscriber's report; returns the RTT in seconds when measurable.

        RFC 3550 6.4.1: RTT = arrival - LSR - DLSR.  The LSR is matched against the
        SRs we sent (newest first) and the RTT computed on our own clock, so the NTP
        values we put in SRs (the publisher's) need not agree with ``now``.
        """
        self.reports += 1
        self.remote_fraction_lost = block.fraction_lost
        self.remote_packets_lost = block.packets_lost
        self.remote_jitter = block.jitter
        self.remote_highest_seq = block.highest_seq
        lsr = block.lsr
        if lsr == 0:
            return None
        lsrs = self._sr_lsr
        i = self._sr_next
        for _ in range(SR_HISTORY):
            i = (i - 1) % SR_HISTORY
            if lsrs[i] == lsr:
                rtt = now - self._sr_at[i] - block.dlsr / 65536.0
                if rtt < 0.0:
                    if rtt < -0.001:  # more than DLSR rounding: bogus
                        return None
                    rtt = 0.0
                self.rtt = rtt
                return rtt
        return None

    @property
    def remote_loss(self) -> float:
        """Fraction lost (0..1) reported by the subscriber's last RR."""
        return self.remote_fraction_lost / 256.0

    @property
    def remote_jitter_ms(self) -> float:
        if self.clock_rate <= 0:
            return 0.0
        return self.remote_jitter * 1000.0 / self.clock_rate

    def sender_report(
        self,
        ssrc: int,
        publisher_sr_ntp: int,
        publisher_sr_rtp: int,
        publisher_sr_at: float,
        ts_offset: int,
        now: float,
    ) -> SenderReport:
        """This DownTrack's SR at ``now``, from the publisher's last SR; recorded for RTT.

        Both clocks are moved forward by the time since the publisher SR arrived.
        """
        sr = translate_sr(
            publisher_sr_ntp,
            publisher_sr_rtp,
            ts_offset,
            self.packets,
            self.octets,
            ssrc,
            elapsed=now - publisher_sr_at,
            clock_rate=self.clock_rate,
        )
        self.on_sender_report_sent(sr.ntp_timestamp, now)
        return sr


def translate_sr(
    publisher_sr_ntp: int,
    publisher_sr_rtp: int,
    ts_offset: int,
    packets_sent: int,
    octets_sent: int,
    ssrc: int,
    *,
    elapsed: float = 0.0,
    clock_rate: int = 0,
) -> SenderReport:
    """A publisher SR rewritten for a DownTrack.

    The NTP time is kept and the RTP time shifted into the DownTrack's timestamp
    space, where ``out_ts = (in_ts - ts_offset) mod 2**32`` (the TimestampMunger's
    offset), so the NTP <-> RTP mapping, hence lip sync, is preserved.  With
    ``elapsed`` seconds (and ``clock_rate``) both times are moved forward together,
    so periodic SRs built from one publisher SR carry distinct, current NTP times.
    Counts wrap to 32 bits.
    """
    ntp = publisher_sr_ntp & NTP_MASK
    rtp = publisher_sr_rtp - ts_offset
    if elapsed:
        if clock_rate <= 0:
            raise ValueError("clock_rate is needed to extrapolate")
        ntp = (ntp + round(elapsed * NTP_FRACTION)) & NTP_MASK
        rtp += round(elapsed * clock_rate)
    return SenderReport(
        ssrc & 0xFFFFFFFF,
        ntp,
        rtp & TS_MASK,
        packets_sent & 0xFFFFFFFF,
        octets_sent & 0xFFFFFFFF,
    )


# --- connection quality --------------------------------------------------------

QUALITY_EXCELLENT = "excellent"
QUALITY_GOOD = "good"
QUALITY_POOR = "poor"
QUALITY_LOST = "lost"

EXCELLENT_ABOVE = 80  # score > 80: excellent
GOOD_ABOVE = 40  # score > 40: good; otherwise poor
LOST_LOSS_FRACTION = 0.5  # half the packets gone (or nothing received): lost
DEFAULT_LOSS_WEIGHT = 4.0  # score points per percent of loss


def quality_score(
    loss_fraction: float,
    jitter_ms: float,
    rtt_ms: float,
    *,
    loss_weight: float = DEFAULT_LOSS_WEIGHT,
) -> tuple[str, int]:
    """``(label, score 0..100)`` from one stats window; a simplified E-model (R factor).

    effective delay = rtt/2 + 2 * jitter (ms); its penalty is delay/40 up to 160 ms
    and 4 + (delay - 160)/10 above (the knee where conversation suffers); the loss
    penalty is ``loss_weight`` points per percent lost.  score = 100 - penalties.

    Labels: score > 80 excellent (e.g. < 5 % loss on a quiet path), > 40 good (up to
    ~15 % loss, or ~0.5 s extra delay), otherwise poor; ``loss_fraction`` >= 0.5 is
    "lost" with score 0 (pass 1.0 when nothing arrived in the window).  Use a lower
    ``loss_weight`` for streams that conceal loss well (Opus with in-band FEC).
    """
    if not loss_fraction >= 0.0:  # also NaN
        loss_fraction = 0.0
    elif loss_fraction > 1.0:
        loss_fraction = 1.0
    if loss_fraction >= LOST_LOSS_FRACTION:
        return QUALITY_LOST, 0
    jitter_ms = jitter_ms if jitter_ms > 0.0 else 0.0
    rtt_ms = rtt_ms if rtt_ms > 0.0 else 0.0
    delay = rtt_ms / 2.0 + 2.0 * jitter_ms
    if delay <= 160.0:
        delay_penalty = delay / 40.0
    else:
        delay_penalty = 4.0 + (delay - 160.0) / 10.0
    score_f = 100.0 - delay_penalty - loss_fraction * 100.0 * loss_weight
    score = int(score_f + 0.5) if score_f > 0.0 else 0
    if score > 100:
        score = 100
    if score > EXCELLENT_ABOVE:
        return QUALITY_EXCELLENT, score
    if score > GOOD_ABOVE:
        return QUALITY_GOOD, score
    return QUALITY_POOR, score
