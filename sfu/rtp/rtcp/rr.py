"""RTCP Receiver Report (RFC 3550 section 6.4.2) and the report block shared with SR."""

from __future__ import annotations

import struct

from sfu.rtp.rtcp.common import PT_RR, U32, Buffer, body_end, count_of, pack_header

REPORT_BLOCK_SIZE = 24
PACKETS_LOST_MIN = -(1 << 23)
PACKETS_LOST_MAX = (1 << 23) - 1

_BLOCK = struct.Struct("!IIIIII")


def clamp_packets_lost(count: int) -> int:
    """Clamp a cumulative loss count to the signed 24-bit field."""
    if count > PACKETS_LOST_MAX:
        return PACKETS_LOST_MAX
    if count < PACKETS_LOST_MIN:
        return PACKETS_LOST_MIN
    return count


class ReportBlock:
    """One reception report block."""

    __slots__ = ("ssrc", "fraction_lost", "packets_lost", "highest_seq", "jitter", "lsr", "dlsr")

    def __init__(
        self,
        ssrc: int,
        fraction_lost: int = 0,
        packets_lost: int = 0,
        highest_seq: int = 0,
        jitter: int = 0,
        lsr: int = 0,
        dlsr: int = 0,
    ) -> None:
        self.ssrc = ssrc
        self.fraction_lost = fraction_lost  # 8-bit fixed point, lost/expected * 256
        self.packets_lost = packets_lost  # cumulative, signed 24-bit
        self.highest_seq = highest_seq  # extended: cycles << 16 | highest seq
        self.jitter = jitter  # RTP timestamp units
        self.lsr = lsr  # middle 32 bits of the last SR's NTP time
        self.dlsr = dlsr  # delay since that SR, 1/65536 s

    @classmethod
    def parse(cls, buf: Buffer, offset: int) -> ReportBlock:
        """Read a block; the caller has checked 24 bytes are available."""
        ssrc, word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(buf, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)

    def pack_into(self, out: bytearray, offset: int) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("fraction_lost out of range")
        if not PACKETS_LOST_MIN <= self.packets_lost <= PACKETS_LOST_MAX:
            raise ValueError("packets_lost out of range (see clamp_packets_lost)")
        word = (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF)
        _BLOCK.pack_into(
            out, offset, self.ssrc, word, self.highest_seq, self.jitter, self.lsr, self.dlsr
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReportBlock):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__)
        return f"ReportBlock({fields})"


def parse_report_blocks(buf: Buffer, offset: int, count: int, end: int) -> list[ReportBlock] | None:
    """``count`` blocks from ``offset``; None if they do not fit before ``end``."""
    if offset + REPORT_BLOCK_SIZE * count > end:
        return None
    return [ReportBlock.parse(buf, offset + REPORT_BLOCK_SIZE * i) for i in range(count)]


class ReceiverReport:
    """RR: reporter SSRC and up to 31 report blocks (profile extensions ignored)."""

    __slots__ = ("ssrc", "reports")

    def __init__(self, ssrc: int, reports: list[ReportBlock] | None = None) -> None:
        self.ssrc = ssrc
        self.reports: list[ReportBlock] = reports if reports is not None else []

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> ReceiverReport | None:
        end = body_end(buf, offset, size, PT_RR)
        if end < 0 or offset + 8 > end:
            return None
        reports = parse_report_blocks(buf, offset + 8, count_of(buf, offset), end)
        if reports is None:
            return None
        return cls(U32.unpack_from(buf, offset + 4)[0], reports)

    def to_bytes(self) -> bytes:
        size = 8 + REPORT_BLOCK_SIZE * len(self.reports)
        out = bytearray(size)
        pack_header(out, 0, len(self.reports), PT_RR, size)
        U32.pack_into(out, 4, self.ssrc)
        for i, block in enumerate(self.reports):
            block.pack_into(out, 8 + REPORT_BLOCK_SIZE * i)
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReceiverReport):
            return NotImplemented
        return self.ssrc == other.ssrc and self.reports == other.reports

    def __repr__(self) -> str:
        return f"ReceiverReport(ssrc={self.ssrc}, reports={self.reports})"
