"""RTCP common header (RFC 3550 section 6.4.1) shared by the per-type modules.

Every parser takes ``(buf, offset=0, size=-1)``: one RTCP packet starting at
``offset``, ``size`` bytes long (-1: read it from the header's length field).
"""

from __future__ import annotations

import struct

from sfu.rtp.packet import Buffer as Buffer

RTCP_VERSION = 2
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205  # transport layer feedback (RFC 4585)
PT_PSFB = 206  # payload-specific feedback (RFC 4585)
PT_XR = 207

FMT_NACK = 1  # RTPFB generic NACK
FMT_TWCC = 15  # RTPFB transport-wide congestion control feedback
FMT_PLI = 1  # PSFB picture loss indication
FMT_FIR = 4  # PSFB full intra request (RFC 5104)
FMT_AFB = 15  # PSFB application layer feedback (REMB)

HEADER = struct.Struct("!BBH")
HEADER_SIZE = 4
MAX_COUNT = 31
U32 = struct.Struct("!I")
FB_SSRCS = struct.Struct("!II")  # sender SSRC, media SSRC of a feedback message


def body_end(buf: Buffer, offset: int, size: int, packet_type: int, fmt: int = -1) -> int:
    """Validate the header at ``offset`` and return the end of the body.

    The end excludes RTCP padding.  Returns -1 when the buffer is short, the version
    or type (and ``fmt`` unless -1) do not match, ``size`` disagrees with the length
    field, or the padding count is invalid.  The body starts at ``offset + 4``.
    """
    n = len(buf)
    if offset < 0 or offset + HEADER_SIZE > n:
        return -1
    b0, pt, words = HEADER.unpack_from(buf, offset)
    length = 4 * (words + 1)
    if size < 0:
        size = length
    if b0 >> 6 != RTCP_VERSION or pt != packet_type or size != length or offset + size > n:
        return -1
    if fmt >= 0 and b0 & 0x1F != fmt:
        return -1
    end = offset + size
    if b0 & 0x20:
        pad = buf[end - 1]
        if pad == 0 or pad > size - HEADER_SIZE:
            return -1
        end -= pad
    return end


def count_of(buf: Buffer, offset: int) -> int:
    """The 5-bit count/FMT field of the header at ``offset``."""
    return buf[offset] & 0x1F


def pack_header(out: bytearray, offset: int, count: int, packet_type: int, size: int) -> None:
    """Write a header for a packet of ``size`` bytes (a multiple of 4)."""
    if size % 4 or not 0 <= count <= MAX_COUNT:
        raise ValueError("bad RTCP size or count")
    HEADER.pack_into(out, offset, (RTCP_VERSION << 6) | count, packet_type, size // 4 - 1)


def padded(size: int) -> int:
    """``size`` rounded up to a multiple of 4."""
    return (size + 3) & ~3
