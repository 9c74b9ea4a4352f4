"""RTCP Source Description (RFC 3550 section 6.5)."""

from __future__ import annotations

from collections.abc import Sequence

from sfu.rtp.rtcp.common import PT_SDES, U32, Buffer, body_end, count_of, pack_header, padded

SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8


class SdesChunk:
    """One SSRC and its (item type, value) list."""

    __slots__ = ("ssrc", "items")

    def __init__(self, ssrc: int, items: list[tuple[int, bytes]] | None = None) -> None:
        self.ssrc = ssrc
        self.items: list[tuple[int, bytes]] = items if items is not None else []

    @property
    def cname(self) -> bytes | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value
        return None

    def size(self) -> int:
        """Bytes on the wire: SSRC, items, at least one END octet, aligned to 4."""
        return padded(4 + sum(2 + len(v) for _, v in self.items) + 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SdesChunk):
            return NotImplemented
        return self.ssrc == other.ssrc and self.items == other.items

    def __repr__(self) -> str:
        return f"SdesChunk(ssrc={self.ssrc}, items={self.items})"


class SourceDescription:
    """SDES packet: a list of chunks (at most 31)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: Sequence[SdesChunk] = ()) -> None:
        self.chunks: list[SdesChunk] = list(chunks)

    @classmethod
    def with_cname(cls, ssrc: int, cname: str | bytes) -> SourceDescription:
        value = cname.encode() if isinstance(cname, str) else cname
        return cls([SdesChunk(ssrc, [(SDES_CNAME, value)])])

    def cname_of(self, ssrc: int) -> bytes | None:
        for chunk in self.chunks:
            if chunk.ssrc == ssrc:
                return chunk.cname
        return None

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> SourceDescription | None:
        end = body_end(buf, offset, size, PT_SDES)
        if end < 0:
            return None
        count = count_of(buf, offset)
        body = offset + 4
        pos = body
        chunks: list[SdesChunk] = []
        for _ in range(count):
            if pos + 4 > end:
                return None
            ssrc = U32.unpack_from(buf, pos)[0]
            pos += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if pos >= end:
                    return None
                item_type = buf[pos]
                if item_type == SDES_END:
                    pos += 1
                    break
                if pos + 2 > end:
                    return None
                length = buf[pos + 1]
                pos += 2
                if pos + length > end:
                    return None
                items.append((item_type, bytes(buf[pos : pos + length])))
                pos += length
            # The null octets after END pad the chunk to a 32-bit boundary.
            pos = body + padded(pos - body)
            chunks.append(SdesChunk(ssrc, items))
        if pos > end:
            return None
        return cls(chunks)

    def to_bytes(self) -> bytes:
        size = 4 + sum(chunk.size() for chunk in self.chunks)
        out = bytearray(size)
        pack_header(out, 0, len(self.chunks), PT_SDES, size)
        pos = 4
        for chunk in self.chunks:
            start = pos
            U32.pack_into(out, pos, chunk.ssrc)
            pos += 4
            for item_type, value in chunk.items:
                if not 1 <= item_type <= 255 or len(value) > 255:
                    raise ValueError("bad SDES item")
                out[pos] = item_type
                out[pos + 1] = len(value)
                out[pos + 2 : pos + 2 + len(value)] = value
                pos += 2 + len(value)
            pos = start + chunk.size()  # END and padding are already zero
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SourceDescription):
            return NotImplemented
        return self.chunks == other.chunks

    def __repr__(self) -> str:
        return f"SourceDescription(chunks={self.chunks})"
