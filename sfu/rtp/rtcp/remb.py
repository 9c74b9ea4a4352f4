"""RTCP Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03).

PSFB FMT 15 (application layer feedback) whose FCI starts with "REMB", then the
number of SSRCs, a 6-bit exponent and an 18-bit mantissa (bitrate = mantissa <<
exponent bits per second), then the SSRCs the estimate applies to.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sfu.rtp.rtcp.common import (
    FB_SSRCS,
    FMT_AFB,
    PT_PSFB,
    U32,
    Buffer,
    body_end,
    pack_header,
)

REMB_IDENTIFIER = b"REMB"
REMB_MANTISSA_MAX = (1 << 18) - 1
REMB_EXPONENT_MAX = (1 << 6) - 1
REMB_MAX_SSRCS = 255

_FCI = struct.Struct("!4sBBH")  # "REMB", num ssrc, exp(6)|mantissa hi(2), mantissa lo(16)


def remb_encode_bitrate(bitrate: int) -> tuple[int, int]:
    """(exponent, mantissa) of the largest representable value <= ``bitrate``."""
    if bitrate < 0:
        raise ValueError("negative bitrate")
    exponent = 0
    mantissa = bitrate
    while mantissa > REMB_MANTISSA_MAX:
        mantissa >>= 1
        exponent += 1
    if exponent > REMB_EXPONENT_MAX:
        raise ValueError("bitrate too large for REMB")
    return exponent, mantissa


class Remb:
    """REMB: ``bitrate`` (bits per second) applying to ``ssrcs``."""

    __slots__ = ("sender_ssrc", "media_ssrc", "bitrate", "ssrcs")

    def __init__(
        self, sender_ssrc: int, bitrate: int, ssrcs: Sequence[int] = (), media_ssrc: int = 0
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.bitrate = bitrate
        self.ssrcs: list[int] = list(ssrcs)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> Remb | None:
        end = body_end(buf, offset, size, PT_PSFB, FMT_AFB)
        body = offset + 4
        if end < 0 or body + 16 > end:
            return None
        ident, num, b1, lo = _FCI.unpack_from(buf, body + 8)
        if ident != REMB_IDENTIFIER:
            return None
        pos = body + 16
        if pos + 4 * num > end:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, body)
        bitrate = (((b1 & 0x03) << 16) | lo) << (b1 >> 2)
        ssrcs = [U32.unpack_from(buf, pos + 4 * i)[0] for i in range(num)]
        return cls(sender, bitrate, ssrcs, media)

    def to_bytes(self) -> bytes:
        if len(self.ssrcs) > REMB_MAX_SSRCS:
            raise ValueError("too many SSRCs for REMB")
        exponent, mantissa = remb_encode_bitrate(self.bitrate)
        size = 20 + 4 * len(self.ssrcs)
        out = bytearray(size)
        pack_header(out, 0, FMT_AFB, PT_PSFB, size)
        FB_SSRCS.pack_into(out, 4, self.sender_ssrc, self.media_ssrc)
        _FCI.pack_into(
            out,
            12,
            REMB_IDENTIFIER,
            len(self.ssrcs),
            (exponent << 2) | (mantissa >> 16),
            mantissa & 0xFFFF,
        )
        for i, ssrc in enumerate(self.ssrcs):
            U32.pack_into(out, 20 + 4 * i, ssrc)
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Remb):
            return NotImplemented
        return (
            self.sender_ssrc == other.sender_ssrc
            and self.media_ssrc == other.media_ssrc
            and self.bitrate == other.bitrate
            and self.ssrcs == other.ssrcs
        )

    def __repr__(self) -> str:
        return f"Remb(sender={self.sender_ssrc}, bitrate={self.bitrate}, ssrcs={self.ssrcs})"
