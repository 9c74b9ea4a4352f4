"""RTCP Full Intra Request (RFC 5104 section 4.3.1): PSFB, FMT 4.

The common header's media SSRC is unused (0); each FCI entry names a media SSRC and
a command sequence number the sender increments per new request.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sfu.rtp.rtcp.common import FB_SSRCS, FMT_FIR, PT_PSFB, Buffer, body_end, pack_header

FIR_ENTRY_SIZE = 8

_ENTRY = struct.Struct("!IB3x")


class Fir:
    """FIR with (media SSRC, seq nr) entries."""

    __slots__ = ("sender_ssrc", "media_ssrc", "entries")

    def __init__(
        self, sender_ssrc: int, entries: Sequence[tuple[int, int]] = (), media_ssrc: int = 0
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.entries: list[tuple[int, int]] = list(entries)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> Fir | None:
        end = body_end(buf, offset, size, PT_PSFB, FMT_FIR)
        body = offset + 4
        if end < 0 or body + 8 > end:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, body)
        pos = body + 8
        count = (end - pos) // FIR_ENTRY_SIZE
        if count == 0:
            return None
        entries = [_ENTRY.unpack_from(buf, pos + FIR_ENTRY_SIZE * i) for i in range(count)]
        return cls(sender, entries, media)

    def to_bytes(self) -> bytes:
        if not self.entries:
            raise ValueError("FIR needs at least one entry")
        size = 12 + FIR_ENTRY_SIZE * len(self.entries)
        out = bytearray(size)
        pack_header(out, 0, FMT_FIR, PT_PSFB, size)
        FB_SSRCS.pack_into(out, 4, self.sender_ssrc, self.media_ssrc)
        for i, (ssrc, seq_nr) in enumerate(self.entries):
            _ENTRY.pack_into(out, 12 + FIR_ENTRY_SIZE * i, ssrc, seq_nr & 0xFF)
        return bytes(out)

    __bytes__ = to_bytes

    def seq_nr_for(self, ssrc: int) -> int:
        """Command sequence number addressed to ``ssrc``, or -1."""
        for entry_ssrc, seq_nr in self.entries:
            if entry_ssrc == ssrc:
                return seq_nr
        return -1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fir):
            return NotImplemented
        return (
            self.sender_ssrc == other.sender_ssrc
            and self.media_ssrc == other.media_ssrc
            and self.entries == other.entries
        )

    def __repr__(self) -> str:
        return f"Fir(sender={self.sender_ssrc}, entries={self.entries})"
