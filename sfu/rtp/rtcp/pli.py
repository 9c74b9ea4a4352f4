"""RTCP Picture Loss Indication (RFC 4585 section 6.3.1): PSFB, FMT 1, no FCI."""

from __future__ import annotations

from sfu.rtp.rtcp.common import FB_SSRCS, FMT_PLI, PT_PSFB, Buffer, body_end, pack_header

PLI_SIZE = 12


class Pli:
    """PLI from ``sender_ssrc`` asking ``media_ssrc`` for a keyframe."""

    __slots__ = ("sender_ssrc", "media_ssrc")

    def __init__(self, sender_ssrc: int, media_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> Pli | None:
        end = body_end(buf, offset, size, PT_PSFB, FMT_PLI)
        if end < 0 or offset + PLI_SIZE > end:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, offset + 4)
        return cls(sender, media)

    def to_bytes(self) -> bytes:
        out = bytearray(PLI_SIZE)
        pack_header(out, 0, FMT_PLI, PT_PSFB, PLI_SIZE)
        FB_SSRCS.pack_into(out, 4, self.sender_ssrc, self.media_ssrc)
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pli):
            return NotImplemented
        return self.sender_ssrc == other.sender_ssrc and self.media_ssrc == other.media_ssrc

    def __repr__(self) -> str:
        return f"Pli(sender={self.sender_ssrc}, media={self.media_ssrc})"
