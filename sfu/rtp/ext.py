"""RTP header extension URIs and value codecs.

Readers take ``(buf, offset, length)`` as returned by ``RtpHeader.find_extension``
and return None (or -1 for int-valued ones) on a malformed value; they never raise.
Writers patch a value in place at an offset; encoders return bytes for builders.
"""

from __future__ import annotations

import struct

from sfu.rtp.packet import Buffer

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_TOFFSET = "urn:ietf:params:rtp-hdrext:toffset"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"

ABS_SEND_TIME_SIZE = 3
ABS_SEND_TIME_FRACTION_BITS = 18
ABS_SEND_TIME_MASK = 0xFFFFFF
AUDIO_LEVEL_SIZE = 1
AUDIO_LEVEL_MIN_DBOV = 127  # the level field is -dBov: 0 loudest, 127 silence
TWCC_SEQ_SIZE = 2
SDES_ID_MAX_LEN = 255

_U16 = struct.Struct("!H")
_U8U16 = struct.Struct("!BH")

# abs-send-time: 24-bit unsigned 6.18 fixed point seconds (wraps every 64 s).


def abs_send_time_from_seconds(seconds: float) -> int:
    """24-bit 6.18 value for a time in seconds (wrapped to 64 s)."""
    return int(seconds * (1 << ABS_SEND_TIME_FRACTION_BITS)) & ABS_SEND_TIME_MASK


def abs_send_time_to_seconds(value: int) -> float:
    """Seconds (0 <= s < 64) of a 24-bit abs-send-time value."""
    return (value & ABS_SEND_TIME_MASK) / (1 << ABS_SEND_TIME_FRACTION_BITS)


def read_abs_send_time(buf: Buffer, offset: int, length: int) -> int:
    """24-bit value, or -1 when the element is not 3 bytes or out of bounds."""
    if length != ABS_SEND_TIME_SIZE or offset < 0 or offset + 3 > len(buf):
        return -1
    hi, lo = _U8U16.unpack_from(buf, offset)
    return int((hi << 16) | lo)


def write_abs_send_time(buf: bytearray | memoryview, offset: int, value: int) -> None:
    value &= ABS_SEND_TIME_MASK
    _U8U16.pack_into(buf, offset, value >> 16, value & 0xFFFF)


def encode_abs_send_time(value: int) -> bytes:
    value &= ABS_SEND_TIME_MASK
    return _U8U16.pack(value >> 16, value & 0xFFFF)


# ssrc-audio-level (RFC 6464): |V| level(7)|, level in -dBov.


def read_audio_level(buf: Buffer, offset: int, length: int) -> tuple[bool, int] | None:
    """(voice activity, level in -dBov 0..127), or None when malformed.

    RFC 6464 allows a longer element (padding in two-byte form); only the first byte
    counts.
    """
    if length < AUDIO_LEVEL_SIZE or offset < 0 or offset >= len(buf):
        return None
    b = buf[offset]
    return b >= 0x80, b & 0x7F


def encode_audio_level(voice: bool, level: int) -> bytes:
    """One byte; ``level`` is -dBov in 0..127."""
    if not 0 <= level <= AUDIO_LEVEL_MIN_DBOV:
        raise ValueError("audio level out of range")
    return bytes(((0x80 if voice else 0) | level,))


def write_audio_level(buf: bytearray | memoryview, offset: int, voice: bool, level: int) -> None:
    buf[offset] = (0x80 if voice else 0) | (level & 0x7F)


# transport-wide-cc: 16-bit transport sequence number.


def read_twcc_seq(buf: Buffer, offset: int, length: int) -> int:
    """Transport-wide sequence number, or -1 when malformed."""
    if length != TWCC_SEQ_SIZE or offset < 0 or offset + 2 > len(buf):
        return -1
    return int(_U16.unpack_from(buf, offset)[0])


def write_twcc_seq(buf: bytearray | memoryview, offset: int, seq: int) -> None:
    _U16.pack_into(buf, offset, seq & 0xFFFF)


def encode_twcc_seq(seq: int) -> bytes:
    return _U16.pack(seq & 0xFFFF)


# sdes:mid, sdes:rtp-stream-id, sdes:repaired-rtp-stream-id: short ASCII strings.


def read_sdes_id(buf: Buffer, offset: int, length: int) -> str | None:
    """MID/RID string, or None when empty, out of bounds or not printable ASCII.

    A NUL byte ends the string (some senders pad); the remaining bytes are ignored.
    """
    if length < 1 or offset < 0 or offset + length > len(buf):
        return None
    end = offset + length
    chars = []
    for i in range(offset, end):
        b = buf[i]
        if b == 0:
            break
        if not 0x21 <= b <= 0x7E:
            return None
        chars.append(b)
    if not chars:
        return None
    return bytes(chars).decode("ascii")


def is_valid_rid(rid: str) -> bool:
    """RFC 8851 rid-id: 1..255 of ALPHA / DIGIT / "-" / "_"."""
    if not 1 <= len(rid) <= SDES_ID_MAX_LEN:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in rid)


def encode_sdes_id(value: str) -> bytes:
    """Bytes of a MID/RID string (printable ASCII, 1..255 characters)."""
    if not 1 <= len(value) <= SDES_ID_MAX_LEN:
        raise ValueError("MID/RID must be 1..255 characters")
    data = value.encode("ascii", errors="strict") if value.isascii() else b""
    if not data or any(not 0x21 <= b <= 0x7E for b in data):
        raise ValueError("MID/RID must be printable ASCII")
    return data
