"""Walk a compound RTCP datagram (RFC 3550 section 6.1; RFC 5506 reduced size too).

``parse_compound`` returns the packets parsed before the first malformed one and a
reason string for it (None when the whole datagram was consumed), so the caller can
count drops by reason and still act on the good prefix.  Packet types without a
parser here (APP, XR, other feedback FMTs) come back as ``UnknownRtcp``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sfu.rtp.rtcp.bye import Bye
from sfu.rtp.rtcp.common import (
    FMT_AFB,
    FMT_FIR,
    FMT_NACK,
    FMT_PLI,
    FMT_TWCC,
    HEADER,
    HEADER_SIZE,
    PT_BYE,
    PT_PSFB,
    PT_RR,
    PT_RTPFB,
    PT_SDES,
    PT_SR,
    RTCP_VERSION,
    Buffer,
)
from sfu.rtp.rtcp.fir import Fir
from sfu.rtp.rtcp.nack import Nack
from sfu.rtp.rtcp.pli import Pli
from sfu.rtp.rtcp.remb import REMB_IDENTIFIER, Remb
from sfu.rtp.rtcp.rr import ReceiverReport
from sfu.rtp.rtcp.sdes import SourceDescription
from sfu.rtp.rtcp.sr import SenderReport
from sfu.rtp.rtcp.twcc import TransportFeedback

ERR_EMPTY = "empty"
ERR_TRUNCATED_HEADER = "truncated_header"
ERR_BAD_VERSION = "bad_version"
ERR_TRUNCATED = "truncated"
ERR_BAD_PADDING = "bad_padding"
ERR_MALFORMED = "malformed"  # a known type whose body did not parse


class UnknownRtcp:
    """A well-framed RTCP packet of a type or FMT not parsed here."""

    __slots__ = ("packet_type", "count", "data")

    def __init__(self, packet_type: int, count: int, data: bytes) -> None:
        self.packet_type = packet_type
        self.count = count  # the 5-bit count / FMT field
        self.data = data  # the whole packet, header included

    def to_bytes(self) -> bytes:
        return self.data

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnknownRtcp):
            return NotImplemented
        return self.data == other.data

    def __repr__(self) -> str:
        return f"UnknownRtcp(pt={self.packet_type}, count={self.count}, size={len(self.data)})"


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | Nack
    | TransportFeedback
    | Pli
    | Fir
    | Remb
    | UnknownRtcp
)


def _parse_one(buf: Buffer, offset: int, size: int, pt: int, fmt: int) -> RtcpPacket | None:
    if pt == PT_RTPFB:
        if fmt == FMT_NACK:
            return Nack.parse(buf, offset, size)
        if fmt == FMT_TWCC:
            return TransportFeedback.parse(buf, offset, size)
    elif pt == PT_PSFB:
        if fmt == FMT_PLI:
            return Pli.parse(buf, offset, size)
        if fmt == FMT_FIR:
            return Fir.parse(buf, offset, size)
        if (
            fmt == FMT_AFB
            and size >= 16
            and bytes(buf[offset + 12 : offset + 16]) == REMB_IDENTIFIER
        ):
            return Remb.parse(buf, offset, size)
    elif pt == PT_SR:
        return SenderReport.parse(buf, offset, size)
    elif pt == PT_RR:
        return ReceiverReport.parse(buf, offset, size)
    elif pt == PT_SDES:
        return SourceDescription.parse(buf, offset, size)
    elif pt == PT_BYE:
        return Bye.parse(buf, offset, size)
    return UnknownRtcp(pt, fmt, bytes(buf[offset : offset + size]))


def parse_compound(buf: Buffer) -> tuple[list[RtcpPacket], str | None]:
    """Parse every packet of an RTCP datagram; stop at the first malformed one.

    Returns (packets parsed so far, None) or (packets before the bad one, reason).
    """
    packets: list[RtcpPacket] = []
    n = len(buf)
    if n == 0:
        return packets, ERR_EMPTY
    offset = 0
    while offset < n:
        if offset + HEADER_SIZE > n:
            return packets, ERR_TRUNCATED_HEADER
        b0, pt, words = HEADER.unpack_from(buf, offset)
        if b0 >> 6 != RTCP_VERSION:
            return packets, ERR_BAD_VERSION
        size = 4 * (words + 1)
        if offset + size > n:
            return packets, ERR_TRUNCATED
        if b0 & 0x20:
            pad = buf[offset + size - 1]
            if pad == 0 or pad > size - HEADER_SIZE:
                return packets, ERR_BAD_PADDING
        packet = _parse_one(buf, offset, size, pt, b0 & 0x1F)
        if packet is None:
            return packets, ERR_MALFORMED
        packets.append(packet)
        offset += size
    return packets, None


def iter_headers(buf: Buffer) -> Iterable[tuple[int, int, int, int]]:
    """(packet type, count/FMT, offset, size) of each well-framed packet; stops at
    the first framing error.  For cheap routing without parsing bodies."""
    n = len(buf)
    offset = 0
    while offset + HEADER_SIZE <= n:
        b0, pt, words = HEADER.unpack_from(buf, offset)
        size = 4 * (words + 1)
        if b0 >> 6 != RTCP_VERSION or offset + size > n:
            return
        yield pt, b0 & 0x1F, offset, size
        offset += size


def build_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate serialized packets into one datagram."""
    return b"".join(p.to_bytes() for p in packets)
