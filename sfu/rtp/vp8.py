"""VP8 RTP payload descriptor (RFC 7741 section 4.2) and PictureID continuity.

Descriptor layout::

    |X|R|N|S|R| PID |          first octet (PID: partition index, 3 bits)
    |I|L|T|K| RSV   |          if X
    |M| PictureID   |[PicID]   if I (M=1: 15-bit PictureID over two octets)
    |   TL0PICIDX   |          if L
    |TID|Y| KEYIDX  |          if T or K

A keyframe starts in the packet with S=1 and PID=0 whose first VP8 payload octet
(the frame tag) has P (inverse key frame flag, bit 0) equal to 0.
"""

from __future__ import annotations

import struct

from sfu.rtp.packet import Buffer
from sfu.rtp.seq import SeqMunger

PICTURE_ID_BITS_SHORT = 7
PICTURE_ID_BITS_LONG = 15
TL0PICIDX_BITS = 8
KEYIDX_BITS = 5

_U16 = struct.Struct("!H")
_LE16 = struct.Struct("<H")
_KEYFRAME_START_CODE = (0x9D, 0x01, 0x2A)


class Vp8Descriptor:
    """Parsed descriptor fields plus offsets of the rewritable ones.

    Absent optional fields are -1 (their offsets too).  ``size`` is the descriptor
    length; the VP8 payload starts at ``offset + size``.
    """

    __slots__ = (
        "offset",
        "size",
        "non_reference",
        "start",
        "partition_id",
        "picture_id",
        "picture_id_bits",
        "picture_id_offset",
        "tl0picidx",
        "tl0picidx_offset",
        "tid",
        "layer_sync",
        "keyidx",
        "keyframe",
    )

    def __init__(self) -> None:
        self.offset = 0
        self.size = 0
        self.non_reference = False
        self.start = False
        self.partition_id = 0
        self.picture_id = -1
        self.picture_id_bits = 0
        self.picture_id_offset = -1
        self.tl0picidx = -1
        self.tl0picidx_offset = -1
        self.tid = -1
        self.layer_sync = False
        self.keyidx = -1
        self.keyframe = False

    def load(self, buf: Buffer, offset: int = 0, end: int = -1) -> bool:
        """Parse the descriptor at ``buf[offset:end]``; False when malformed.

        A packet with no VP8 payload after the descriptor is malformed.
        """
        if end < 0 or end > len(buf):
            end = len(buf)
        pos = offset
        if pos >= end:
            return False
        b0 = buf[pos]
        pos += 1
        picture_id = -1
        picture_id_bits = 0
        picture_id_offset = -1
        tl0picidx = -1
        tl0picidx_offset = -1
        tid = -1
        layer_sync = False
        keyidx = -1
        if b0 & 0x80:
            if pos >= end:
                return False
            x = buf[pos]
            pos += 1
            if x & 0x80:
                if pos >= end:
                    return False
                picture_id_offset = pos
                if buf[pos] & 0x80:
                    if pos + 2 > end:
                        return False
                    picture_id = _U16.unpack_from(buf, pos)[0] & 0x7FFF
                    picture_id_bits = PICTURE_ID_BITS_LONG
                    pos += 2
                else:
                    picture_id = buf[pos]
                    picture_id_bits = PICTURE_ID_BITS_SHORT
                    pos += 1
            if x & 0x40:
                if pos >= end:
                    return False
                tl0picidx_offset = pos
                tl0picidx = buf[pos]
                pos += 1
            if x & 0x30:
                if pos >= end:
                    return False
                tk = buf[pos]
                pos += 1
                if x & 0x20:
                    tid = tk >> 6
                    layer_sync = bool(tk & 0x20)
                if x & 0x10:
                    keyidx = tk & 0x1F
        if pos >= end:
            return False
        start = bool(b0 & 0x10)
        partition_id = b0 & 0x07
        self.offset = offset
        self.size = pos - offset
        self.non_reference = bool(b0 & 0x20)
        self.start = start
        self.partition_id = partition_id
        self.picture_id = picture_id
        self.picture_id_bits = picture_id_bits
        self.picture_id_offset = picture_id_offset
        self.tl0picidx = tl0picidx
        self.tl0picidx_offset = tl0picidx_offset
        self.tid = tid
        self.layer_sync = layer_sync
        self.keyidx = keyidx
        self.keyframe = start and partition_id == 0 and not buf[pos] & 0x01
        return True

    @property
    def payload_offset(self) -> int:
        return self.offset + self.size

    def __repr__(self) -> str:
        return (
            f"Vp8Descriptor(S={int(self.start)}, PID={self.partition_id}, "
            f"picture_id={self.picture_id}/{self.picture_id_bits}, tl0={self.tl0picidx}, "
            f"tid={self.tid}, keyframe={self.keyframe})"
        )


def parse_vp8(buf: Buffer, offset: int = 0, end: int = -1) -> Vp8Descriptor | None:
    """New descriptor for the RTP payload at ``buf[offset:end]``, or None."""
    desc = Vp8Descriptor()
    return desc if desc.load(buf, offset, end) else None


def is_vp8_keyframe(buf: Buffer, offset: int = 0, end: int = -1) -> bool:
    """True when the payload at ``offset`` starts a keyframe; False if malformed.

    The per-packet check of a receive path: reads only the bytes it needs, allocates nothing.
    """
    if end < 0 or end > len(buf):
        end = len(buf)
    if offset >= end:
        return False
    b0 = buf[offset]
    if b0 & 0x17 != 0x10:  # S=1 and partition 0: the start of a frame
        return False
    pos = offset + 1
    if b0 & 0x80:  # X: extension fields
        if pos >= end:
            return False
        x = buf[pos]
        pos += 1
        if x & 0x80:  # I: PictureID, 7 or 15 bits
            if pos >= end:
                return False
            pos += 2 if buf[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K
            pos += 1
    return pos < end and not buf[pos] & 0x01  # P bit of the VP8 payload header: 0 = keyframe


def vp8_keyframe_size(buf: Buffer, payload_offset: int, end: int = -1) -> tuple[int, int] | None:
    """(width, height) from a keyframe's first bytes (RFC 6386 9.1), or None."""
    if end < 0 or end > len(buf):
        end = len(buf)
    p = payload_offset
    if p < 0 or p + 10 > end or buf[p] & 0x01:
        return None
    if (buf[p + 3], buf[p + 4], buf[p + 5]) != _KEYFRAME_START_CODE:
        return None
    width = _LE16.unpack_from(buf, p + 6)[0] & 0x3FFF
    height = _LE16.unpack_from(buf, p + 8)[0] & 0x3FFF
    return width, height


def set_picture_id(buf: bytearray | memoryview, desc: Vp8Descriptor, picture_id: int) -> bool:
    """Rewrite PictureID in place keeping its width (value wrapped to it)."""
    off = desc.picture_id_offset
    if off < 0:
        return False
    if desc.picture_id_bits == PICTURE_ID_BITS_LONG:
        _U16.pack_into(buf, off, 0x8000 | (picture_id & 0x7FFF))
    else:
        buf[off] = picture_id & 0x7F
    return True


def set_tl0picidx(buf: bytearray | memoryview, desc: Vp8Descriptor, tl0picidx: int) -> bool:
    """Rewrite TL0PICIDX in place (value wrapped to 8 bits)."""
    off = desc.tl0picidx_offset
    if off < 0:
        return False
    buf[off] = tl0picidx & 0xFF
    return True


def build_vp8_descriptor(
    *,
    start: bool = True,
    partition_id: int = 0,
    non_reference: bool = False,
    picture_id: int = -1,
    picture_id_bits: int = PICTURE_ID_BITS_LONG,
    tl0picidx: int = -1,
    tid: int = -1,
    layer_sync: bool = False,
    keyidx: int = -1,
) -> bytes:
    """Serialize a descriptor (tests, bench).  -1 leaves a field out."""
    if not 0 <= partition_id <= 7:
        raise ValueError("partition_id out of range")
    b0 = (0x20 if non_reference else 0) | (0x10 if start else 0) | partition_id
    x = (
        (0x80 if picture_id >= 0 else 0)
        | (0x40 if tl0picidx >= 0 else 0)
        | (0x20 if tid >= 0 else 0)
        | (0x10 if keyidx >= 0 else 0)
    )
    if not x:
        return bytes((b0,))
    out = bytearray((b0 | 0x80, x))
    if picture_id >= 0:
        if picture_id_bits == PICTURE_ID_BITS_LONG and picture_id <= 0x7FFF:
            out += _U16.pack(0x8000 | picture_id)
        elif picture_id_bits == PICTURE_ID_BITS_SHORT and picture_id <= 0x7F:
            out.append(picture_id)
        else:
            raise ValueError("picture_id does not fit its width")
    if tl0picidx >= 0:
        if tl0picidx > 0xFF:
            raise ValueError("tl0picidx out of range")
        out.append(tl0picidx)
    if tid >= 0 or keyidx >= 0:
        if tid > 3 or keyidx > 0x1F:
            raise ValueError("tid/keyidx out of range")
        out.append(
            ((tid if tid >= 0 else 0) << 6)
            | (0x20 if layer_sync else 0)
            | (keyidx if keyidx >= 0 else 0)
        )
    return bytes(out)


class PictureIdMunger(SeqMunger):
    """``SeqMunger`` at PictureID width (15 by default, 7 for short PictureIDs).

    All packets of one picture share a value, so repeated ``munge`` calls with the
    same input return the same output; ``drop`` a picture (e.g. a filtered temporal
    layer) on its first packet and later ones of that picture are refused too.
    """

    __slots__ = ()

    def __init__(self, bits: int = PICTURE_ID_BITS_LONG, start: int | None = None) -> None:
        super().__init__(bits, start)


class Tl0PicIdxMunger(SeqMunger):
    """``SeqMunger`` at TL0PICIDX width (8 bits)."""

    __slots__ = ()

    def __init__(self, start: int | None = None) -> None:
        super().__init__(TL0PICIDX_BITS, start)
