"""RTCP generic NACK (RFC 4585 section 6.2.1): RTPFB, FMT 1, (PID, BLP) pairs."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from sfu.rtp.rtcp.common import (
    FB_SSRCS,
    FMT_NACK,
    PT_RTPFB,
    Buffer,
    body_end,
    pack_header,
)
from sfu.rtp.seq import diff

_PAIR = struct.Struct("!HH")

NACK_BLP_BITS = 16


def nack_pairs_from_seqs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Pack lost sequence numbers into (PID, BLP) pairs.

    Order and duplicates do not matter as long as all numbers lie within half the
    16-bit range of the first one; ordering is wrap-aware (65535 precedes 0).
    """
    values = [s & 0xFFFF for s in seqs]
    if not values:
        return []
    ref = values[0]
    ordered = sorted(set(values), key=lambda s: diff(s, ref))
    pairs: list[tuple[int, int]] = []
    pid = ordered[0]
    blp = 0
    for s in ordered[1:]:
        d = (s - pid - 1) & 0xFFFF
        if d < NACK_BLP_BITS:
            blp |= 1 << d
        else:
            pairs.append((pid, blp))
            pid = s
            blp = 0
    pairs.append((pid, blp))
    return pairs


def seqs_from_nack_pairs(pairs: Iterable[tuple[int, int]]) -> list[int]:
    """Sequence numbers named by (PID, BLP) pairs, in pair then bit order."""
    out: list[int] = []
    for pid, blp in pairs:
        out.append(pid)
        bit = 0
        while blp:
            if blp & 1:
                out.append((pid + 1 + bit) & 0xFFFF)
            blp >>= 1
            bit += 1
    return out


class Nack:
    """Generic NACK from ``sender_ssrc`` about ``media_ssrc``."""

    __slots__ = ("sender_ssrc", "media_ssrc", "pairs")

    def __init__(
        self, sender_ssrc: int, media_ssrc: int, pairs: Sequence[tuple[int, int]] = ()
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.pairs: list[tuple[int, int]] = list(pairs)

    @classmethod
    def from_seqs(cls, sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> Nack:
        return cls(sender_ssrc, media_ssrc, nack_pairs_from_seqs(seqs))

    def seqs(self) -> list[int]:
        return seqs_from_nack_pairs(self.pairs)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> Nack | None:
        end = body_end(buf, offset, size, PT_RTPFB, FMT_NACK)
        body = offset + 4
        if end < 0 or body + 8 > end:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, body)
        pos = body + 8
        count = (end - pos) // 4
        pairs = [_PAIR.unpack_from(buf, pos + 4 * i) for i in range(count)]
        return cls(sender, media, pairs)

    def to_bytes(self) -> bytes:
        size = 12 + 4 * len(self.pairs)
        out = bytearray(size)
        pack_header(out, 0, FMT_NACK, PT_RTPFB, size)
        FB_SSRCS.pack_into(out, 4, self.sender_ssrc, self.media_ssrc)
        for i, (pid, blp) in enumerate(self.pairs):
            _PAIR.pack_into(out, 12 + 4 * i, pid, blp)
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Nack):
            return NotImplemented
        return (
            self.sender_ssrc == other.sender_ssrc
            and self.media_ssrc == other.media_ssrc
            and self.pairs == other.pairs
        )

    def __repr__(self) -> str:
        return f"Nack(sender={self.sender_ssrc}, media={self.media_ssrc}, pairs={self.pairs})"
