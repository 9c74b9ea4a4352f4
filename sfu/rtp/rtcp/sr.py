"""RTCP Sender Report (RFC 3550 section 6.4.1)."""

from __future__ import annotations

import struct

from sfu.rtp.rtcp.common import PT_SR, Buffer, body_end, count_of, pack_header
from sfu.rtp.rtcp.rr import REPORT_BLOCK_SIZE, ReportBlock, parse_report_blocks

SENDER_INFO_SIZE = 24  # SSRC + sender info

_SENDER = struct.Struct("!IQIII")  # ssrc, ntp, rtp ts, packet count, octet count


class SenderReport:
    """SR: sender info and report blocks (profile-specific extensions ignored)."""

    __slots__ = ("ssrc", "ntp_timestamp", "rtp_timestamp", "packet_count", "octet_count", "reports")

    def __init__(
        self,
        ssrc: int,
        ntp_timestamp: int = 0,
        rtp_timestamp: int = 0,
        packet_count: int = 0,
        octet_count: int = 0,
        reports: list[ReportBlock] | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.ntp_timestamp = ntp_timestamp  # 64-bit NTP, see sfu.rtp.ntp
        self.rtp_timestamp = rtp_timestamp  # same instant in RTP clock units
        self.packet_count = packet_count
        self.octet_count = octet_count
        self.reports: list[ReportBlock] = reports if reports is not None else []

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> SenderReport | None:
        end = body_end(buf, offset, size, PT_SR)
        body = offset + 4
        if end < 0 or body + SENDER_INFO_SIZE > end:
            return None
        reports = parse_report_blocks(buf, body + SENDER_INFO_SIZE, count_of(buf, offset), end)
        if reports is None:
            return None
        ssrc, ntp, rtp_ts, packets, octets = _SENDER.unpack_from(buf, body)
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports)

    def to_bytes(self) -> bytes:
        size = 4 + SENDER_INFO_SIZE + REPORT_BLOCK_SIZE * len(self.reports)
        out = bytearray(size)
        pack_header(out, 0, len(self.reports), PT_SR, size)
        _SENDER.pack_into(
            out,
            4,
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        for i, block in enumerate(self.reports):
            block.pack_into(out, 4 + SENDER_INFO_SIZE + REPORT_BLOCK_SIZE * i)
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SenderReport):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return (
            f"SenderReport(ssrc={self.ssrc}, ntp={self.ntp_timestamp:#x}, "
            f"rtp={self.rtp_timestamp}, packets={self.packet_count}, "
            f"octets={self.octet_count}, reports={self.reports})"
        )


def rtp_timestamp_at(
    sr_rtp_timestamp: int, sr_ntp_seconds: float, at_seconds: float, clock_rate: int
) -> int:
    """RTP timestamp of another instant, extrapolated from an SR (wrapped to 32 bits).

    Used to translate a publisher SR into a DownTrack SR: both the NTP and RTP
    times are moved together by the same elapsed time.
    """
    delta = round((at_seconds - sr_ntp_seconds) * clock_rate)
    return (sr_rtp_timestamp + delta) & 0xFFFFFFFF
