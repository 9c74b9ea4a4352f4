"""Walk a compound RTCP datagram (RFC 3550 section 6.1; RFC 5506 reduced size too).

``CompoundReader`` yields the packets one at a time up to the first malformed one and
then holds a reason string for it (None when the whole datagram was consumed), so the
caller can count drops by reason and still act on the good prefix; ``parse_compound``
is the same as a list.  Packet types without a
parser here (APP, XR, other feedback FMTs) come back as ``UnknownRtcp``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


class CompoundReader:
    """The packets of one RTCP datagram, each parsed only when the loop reaches it.

    ``for packet in CompoundReader(buf)`` yields the well-formed packets in order and
    stops at the first malformed one; ``error`` then holds the reason (None when the
    whole datagram was consumed).  Nothing is kept between packets, so a datagram costs
    the caller one packet at a time and never a list of everything it claims.
    """

    __slots__ = ("buf", "error")

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.error: str | None = None

    def __iter__(self) -> Iterator[RtcpPacket]:
        buf = self.buf
        n = len(buf)
        if n == 0:
            self.error = ERR_EMPTY
            return
        offset = 0
        while offset < n:
            if offset + HEADER_SIZE > n:
                self.error = ERR_TRUNCATED_HEADER
                return
            b0, pt, words = HEADER.unpack_from(buf, offset)
            if b0 >> 6 != RTCP_VERSION:
                self.error = ERR_BAD_VERSION
                return
            size = 4 * (words + 1)
            if offset + size > n:
                self.error = ERR_TRUNCATED
                return
            if b0 & 0x20:
                pad = buf[offset + size - 1]
                if pad == 0 or pad > size - HEADER_SIZE:
                    self.error = ERR_BAD_PADDING
                    return
            packet = _parse_one(buf, offset, size, pt, b0 & 0x1F)
            if packet is None:
                self.error = ERR_MALFORMED
                return
            yield packet
            offset += size


def parse_compound(buf: Buffer) -> tuple[list[RtcpPacket], str | None]:
    """Every packet of an RTCP datagram as a list (tests, tools); stop at the first malformed one.

    Returns (packets parsed so far, None) or (packets before the bad one, reason).  The
    packet path iterates a ``CompoundReader`` instead.
    """
    reader = CompoundReader(buf)
    packets = list(reader)
    return packets, reader.error


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
