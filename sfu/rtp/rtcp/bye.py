"""RTCP Goodbye (RFC 3550 section 6.6)."""

from __future__ import annotations

from collections.abc import Sequence

from sfu.rtp.rtcp.common import PT_BYE, U32, Buffer, body_end, count_of, pack_header, padded


class Bye:
    """BYE: the SSRCs leaving and an optional reason."""

    __slots__ = ("ssrcs", "reason")

    def __init__(self, ssrcs: Sequence[int] = (), reason: bytes | None = None) -> None:
        self.ssrcs: list[int] = list(ssrcs)
        self.reason = reason

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> Bye | None:
        end = body_end(buf, offset, size, PT_BYE)
        if end < 0:
            return None
        count = count_of(buf, offset)
        pos = offset + 4
        if pos + 4 * count > end:
            return None
        ssrcs = [U32.unpack_from(buf, pos + 4 * i)[0] for i in range(count)]
        pos += 4 * count
        reason = None
        if pos < end:
            length = buf[pos]
            if pos + 1 + length > end:
                return None
            reason = bytes(buf[pos + 1 : pos + 1 + length])
        return cls(ssrcs, reason)

    def to_bytes(self) -> bytes:
        reason = self.reason
        if reason is not None and len(reason) > 255:
            raise ValueError("BYE reason longer than 255 bytes")
        size = 4 + 4 * len(self.ssrcs) + (padded(1 + len(reason)) if reason is not None else 0)
        out = bytearray(size)
        pack_header(out, 0, len(self.ssrcs), PT_BYE, size)
        pos = 4
        for ssrc in self.ssrcs:
            U32.pack_into(out, pos, ssrc)
            pos += 4
        if reason is not None:
            out[pos] = len(reason)
            out[pos + 1 : pos + 1 + len(reason)] = reason
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bye):
            return NotImplemented
        return self.ssrcs == other.ssrcs and self.reason == other.reason

    def __repr__(self) -> str:
        return f"Bye(ssrcs={self.ssrcs}, reason={self.reason!r})"
