"""RTP header view (RFC 3550, RFC 8285 header extensions) and in-place field writers.

``RtpHeader`` reads a datagram without copying it: it records field values and the
offsets of the CSRC list, the extension block and the payload inside the caller's
buffer.  A receive path keeps one ``RtpHeader`` and calls ``load`` per datagram;
``parse_rtp`` is the allocating convenience.  Writers patch a ``bytearray`` (or a
writable memoryview) in place so one packet can be rewritten per subscriber.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

Buffer = bytes | bytearray | memoryview

RTP_VERSION = 2
RTP_HEADER_SIZE = 12
MAX_CSRC = 15

EXT_PROFILE_ONE_BYTE = 0xBEDE
EXT_PROFILE_TWO_BYTE = 0x1000  # low 4 bits are "appbits"
EXT_PROFILE_TWO_BYTE_MASK = 0xFFF0
EXT_ONE_BYTE_MAX_ID = 14
EXT_ONE_BYTE_MAX_LEN = 16
EXT_ONE_BYTE_STOP_ID = 15

RTCP_PT_MIN = 192
RTCP_PT_MAX = 223

_FIXED = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U16U16 = struct.Struct("!HH")
_SEQ_TS_SSRC = struct.Struct("!HII")


class RtpHeader:
    """Parsed RTP fixed header plus offsets into the buffer it was loaded from.

    Offsets are absolute indexes in ``buf``.  ``ext_offset``/``ext_length`` delimit
    the extension data after the 4-byte profile/length word (0/0 when X=0).
    ``payload_length`` excludes RTP padding.
    """

    __slots__ = (
        "buf",
        "padding",
        "extension",
        "csrc_count",
        "marker",
        "payload_type",
        "seq",
        "timestamp",
        "ssrc",
        "ext_profile",
        "ext_offset",
        "ext_length",
        "payload_offset",
        "payload_length",
        "padding_length",
        "size",
    )

    def __init__(self) -> None:
        self.buf: Buffer = b""
        self.padding = False
        self.extension = False
        self.csrc_count = 0
        self.marker = False
        self.payload_type = 0
        self.seq = 0
        self.timestamp = 0
        self.ssrc = 0
        self.ext_profile = 0
        self.ext_offset = 0
        self.ext_length = 0
        self.payload_offset = 0
        self.payload_length = 0
        self.padding_length = 0
        self.size = 0

    def load(self, buf: Buffer) -> bool:
        """Parse ``buf`` into this object; False (object unspecified) if malformed."""
        n = len(buf)
        if n < RTP_HEADER_SIZE:
            return False
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(buf, 0)
        if b0 >> 6 != RTP_VERSION:
            return False
        cc = b0 & 0x0F
        off = RTP_HEADER_SIZE + 4 * cc
        if off > n:
            return False
        if b0 & 0x10:
            if off + 4 > n:
                return False
            profile, words = _U16U16.unpack_from(buf, off)
            ext_off = off + 4
            off = ext_off + 4 * words
            if off > n:
                return False
            self.extension = True
            self.ext_profile = profile
            self.ext_offset = ext_off
            self.ext_length = 4 * words
        else:
            self.extension = False
            self.ext_profile = 0
            self.ext_offset = 0
            self.ext_length = 0
        pad = 0
        if b0 & 0x20:
            pad = buf[n - 1]
            if pad == 0 or off + pad > n:
                return False
        self.buf = buf
        self.padding = pad > 0
        self.csrc_count = cc
        self.marker = b1 >= 0x80
        self.payload_type = b1 & 0x7F
        self.seq = seq
        self.timestamp = ts
        self.ssrc = ssrc
        self.payload_offset = off
        self.payload_length = n - off - pad
        self.padding_length = pad
        self.size = n
        return True

    @property
    def header_size(self) -> int:
        return self.payload_offset

    def csrcs(self) -> list[int]:
        buf = self.buf
        return [_U32.unpack_from(buf, RTP_HEADER_SIZE + 4 * i)[0] for i in range(self.csrc_count)]

    def payload(self) -> memoryview:
        """Payload bytes (padding excluded) as a view, no copy."""
        start = self.payload_offset
        return memoryview(self.buf)[start : start + self.payload_length]

    def find_extension(self, ext_id: int) -> tuple[int, int] | None:
        """(offset, length) of RFC 8285 element ``ext_id``, or None if absent/malformed."""
        if not self.extension:
            return None
        return find_extension(self.buf, self.ext_profile, self.ext_offset, self.ext_length, ext_id)

    def extensions(self) -> Iterator[tuple[int, int, int]]:
        """(id, offset, length) of each RFC 8285 element; stops at a malformed one."""
        if self.extension:
            yield from iter_extensions(self.buf, self.ext_profile, self.ext_offset, self.ext_length)

    def __repr__(self) -> str:
        return (
            f"RtpHeader(pt={self.payload_type}, seq={self.seq}, ts={self.timestamp}, "
            f"ssrc={self.ssrc:#010x}, marker={self.marker}, payload={self.payload_length})"
        )


def parse_rtp(buf: Buffer) -> RtpHeader | None:
    """New ``RtpHeader`` for ``buf``, or None when malformed."""
    header = RtpHeader()
    return header if header.load(buf) else None


def is_rtcp(buf: Buffer) -> bool:
    """RFC 5761 demux of an RTP/RTCP datagram: second byte 192..223 means RTCP."""
    return len(buf) >= 2 and RTCP_PT_MIN <= buf[1] <= RTCP_PT_MAX


def iter_extensions(
    buf: Buffer, profile: int, offset: int, length: int
) -> Iterator[tuple[int, int, int]]:
    """(id, offset, length) of each element of an extension block."""
    i = offset
    end = offset + length
    if profile == EXT_PROFILE_ONE_BYTE:
        while i < end:
            b = buf[i]
            if b == 0:
                i += 1
                continue
            ext_id = b >> 4
            if ext_id == EXT_ONE_BYTE_STOP_ID:
                return
            size = (b & 0x0F) + 1
            i += 1
            if i + size > end:
                return
            yield ext_id, i, size
            i += size
    elif profile & EXT_PROFILE_TWO_BYTE_MASK == EXT_PROFILE_TWO_BYTE:
        while i < end:
            ext_id = buf[i]
            if ext_id == 0:
                i += 1
                continue
            if i + 2 > end:
                return
            size = buf[i + 1]
            i += 2
            if i + size > end:
                return
            yield ext_id, i, size
            i += size


def find_extension(
    buf: Buffer, profile: int, offset: int, length: int, ext_id: int
) -> tuple[int, int] | None:
    """(offset, length) of element ``ext_id`` in an extension block, or None."""
    i = offset
    end = offset + length
    if profile == EXT_PROFILE_ONE_BYTE:
        while i < end:
            b = buf[i]
            if b == 0:
                i += 1
                continue
            found = b >> 4
            if found == EXT_ONE_BYTE_STOP_ID:
                return None
            size = (b & 0x0F) + 1
            i += 1
            if i + size > end:
                return None
            if found == ext_id:
                return i, size
            i += size
    elif profile & EXT_PROFILE_TWO_BYTE_MASK == EXT_PROFILE_TWO_BYTE:
        while i < end:
            found = buf[i]
            if found == 0:
                i += 1
                continue
            if i + 2 > end:
                return None
            size = buf[i + 1]
            i += 2
            if i + size > end:
                return None
            if found == ext_id:
                return i, size
            i += size
    return None


# In-place writers.  Values are wrapped to the field width.


def set_seq(buf: bytearray | memoryview, seq: int) -> None:
    _U16.pack_into(buf, 2, seq & 0xFFFF)


def set_timestamp(buf: bytearray | memoryview, timestamp: int) -> None:
    _U32.pack_into(buf, 4, timestamp & 0xFFFFFFFF)


def set_ssrc(buf: bytearray | memoryview, ssrc: int) -> None:
    _U32.pack_into(buf, 8, ssrc & 0xFFFFFFFF)


def set_seq_ts_ssrc(buf: bytearray | memoryview, seq: int, timestamp: int, ssrc: int) -> None:
    """The three per-subscriber rewrites in one call."""
    _SEQ_TS_SSRC.pack_into(buf, 2, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)


def set_payload_type(buf: bytearray | memoryview, payload_type: int) -> None:
    buf[1] = (buf[1] & 0x80) | (payload_type & 0x7F)


def set_marker(buf: bytearray | memoryview, marker: bool) -> None:
    buf[1] = (buf[1] | 0x80) if marker else (buf[1] & 0x7F)


def set_extension_value(
    buf: bytearray | memoryview, header: RtpHeader, ext_id: int, value: Buffer
) -> bool:
    """Overwrite element ``ext_id`` with ``value`` of the same length; False if absent
    or of another length."""
    found = header.find_extension(ext_id)
    if found is None or found[1] != len(value):
        return False
    offset, size = found
    buf[offset : offset + size] = value
    return True


def rtx_original_seq(header: RtpHeader) -> int:
    """RFC 4588 OSN from an RTX payload, or -1 when the payload is shorter than 2."""
    if header.payload_length < 2:
        return -1
    return int(_U16.unpack_from(header.buf, header.payload_offset)[0])


# Builders (tests, bench, SFU-generated packets).


def _extension_block(
    extensions: Sequence[tuple[int, Buffer]], two_byte: bool | None
) -> tuple[int, bytes]:
    if two_byte is None:
        two_byte = any(
            not 1 <= i <= EXT_ONE_BYTE_MAX_ID or not 1 <= len(v) <= EXT_ONE_BYTE_MAX_LEN
            for i, v in extensions
        )
    out = bytearray()
    if two_byte:
        for ext_id, value in extensions:
            if not 1 <= ext_id <= 255 or len(value) > 255:
                raise ValueError(f"two-byte extension {ext_id} out of range")
            out.append(ext_id)
            out.append(len(value))
            out += value
        profile = EXT_PROFILE_TWO_BYTE
    else:
        for ext_id, value in extensions:
            if not 1 <= ext_id <= EXT_ONE_BYTE_MAX_ID or not 1 <= len(value) <= 16:
                raise ValueError(f"one-byte extension {ext_id} out of range")
            out.append((ext_id << 4) | (len(value) - 1))
            out += value
        profile = EXT_PROFILE_ONE_BYTE
    out += bytes(-len(out) % 4)
    return profile, bytes(out)


def build_rtp(
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: Buffer = b"",
    *,
    marker: bool = False,
    csrcs: Sequence[int] = (),
    extensions: Sequence[tuple[int, Buffer]] = (),
    two_byte: bool | None = None,
    raw_extension: tuple[int, Buffer] | None = None,
    padding: int = 0,
) -> bytes:
    """Serialize an RTP packet.

    ``extensions``: (id, value) pairs in RFC 8285 form; one-byte unless ``two_byte``
    or an element does not fit it.  ``raw_extension``: (profile, data) for any other
    profile (data length a multiple of 4).  ``padding``: total RTP padding bytes.
    """
    if not 0 <= payload_type <= 127:
        raise ValueError("payload_type out of range")
    if len(csrcs) > MAX_CSRC:
        raise ValueError("too many CSRCs")
    if not 0 <= padding <= 255:
        raise ValueError("padding out of range")
    if extensions and raw_extension is not None:
        raise ValueError("extensions and raw_extension are exclusive")
    ext: tuple[int, bytes] | None = None
    if extensions:
        ext = _extension_block(extensions, two_byte)
    elif raw_extension is not None:
        if len(raw_extension[1]) % 4:
            raise ValueError("raw extension length must be a multiple of 4")
        ext = (raw_extension[0], bytes(raw_extension[1]))
    size = RTP_HEADER_SIZE + 4 * len(csrcs) + (4 + len(ext[1]) if ext else 0)
    out = bytearray(size + len(payload) + padding)
    b0 = (RTP_VERSION << 6) | (0x20 if padding else 0) | (0x10 if ext else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | payload_type
    _FIXED.pack_into(out, 0, b0, b1, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    off = RTP_HEADER_SIZE
    for csrc in csrcs:
        _U32.pack_into(out, off, csrc)
        off += 4
    if ext:
        _U16U16.pack_into(out, off, ext[0], len(ext[1]) // 4)
        off += 4
        out[off : off + len(ext[1])] = ext[1]
        off += len(ext[1])
    out[off : off + len(payload)] = payload
    if padding:
        out[-1] = padding
    return bytes(out)
