"""H.264 RTP payload (RFC 6184): NAL unit types and keyframe detection.

Only the payload's first bytes are read: the NAL header (``F|NRI(2)|type(5)``), the
FU header (``S|E|R|type(5)``) of a fragment, the length-prefixed NALs of an STAP-A.
Every function returns -1/None/False on malformed input and never raises.
"""

from __future__ import annotations

import struct

from sfu.rtp.packet import Buffer

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_STAP_B = 25
NAL_MTAP16 = 26
NAL_MTAP24 = 27
NAL_FU_A = 28
NAL_FU_B = 29

KEYFRAME_NAL_TYPES = frozenset((NAL_IDR, NAL_SPS, NAL_PPS))

_FORBIDDEN = 0x80
_TYPE = 0x1F
_FU_START = 0x80
_FU_END = 0x40
_U16 = struct.Struct("!H")


def _end(buf: Buffer, end: int) -> int:
    return len(buf) if end < 0 or end > len(buf) else end


def nal_type(buf: Buffer, offset: int = 0, end: int = -1) -> int:
    """Type of the payload's NAL header (24 STAP-A, 28 FU-A, 1..23 single NAL), or -1."""
    if offset < 0 or offset >= _end(buf, end):
        return -1
    b = buf[offset]
    if b & _FORBIDDEN:
        return -1
    return b & _TYPE


def fu_a_header(buf: Buffer, offset: int = 0, end: int = -1) -> tuple[bool, bool, int] | None:
    """(start, end, original NAL type) of an FU-A payload, or None."""
    if nal_type(buf, offset, end) != NAL_FU_A or offset + 2 > _end(buf, end):
        return None
    fu = buf[offset + 1]
    if fu & _FU_START and fu & _FU_END:
        return None  # a fragment cannot both start and end a NAL
    return bool(fu & _FU_START), bool(fu & _FU_END), fu & _TYPE


def stap_a_nal_types(buf: Buffer, offset: int = 0, end: int = -1) -> list[int] | None:
    """NAL types aggregated in an STAP-A payload, or None if malformed."""
    stop = _end(buf, end)
    if nal_type(buf, offset, stop) != NAL_STAP_A:
        return None
    pos = offset + 1
    types: list[int] = []
    while pos < stop:
        if pos + 2 > stop:
            return None
        size = _U16.unpack_from(buf, pos)[0]
        pos += 2
        if size == 0 or pos + size > stop:
            return None
        b = buf[pos]
        if b & _FORBIDDEN:
            return None
        types.append(b & _TYPE)
        pos += size
    return types if types else None


def is_h264_keyframe(buf: Buffer, offset: int = 0, end: int = -1) -> bool:
    """True when the payload starts (part of) a keyframe: an IDR slice, SPS or PPS,
    alone, inside an STAP-A, or as the first fragment of an FU-A."""
    kind = nal_type(buf, offset, end)
    if kind < 0:
        return False
    if kind == NAL_STAP_A:
        types = stap_a_nal_types(buf, offset, end)
        return types is not None and any(t in KEYFRAME_NAL_TYPES for t in types)
    if kind == NAL_FU_A:
        fu = fu_a_header(buf, offset, end)
        return fu is not None and fu[0] and fu[2] in KEYFRAME_NAL_TYPES
    return kind in KEYFRAME_NAL_TYPES


def build_stap_a(nals: list[bytes]) -> bytes:
    """STAP-A payload aggregating ``nals`` (tests, bench); NRI is the max of theirs."""
    if not nals or any(not 1 <= len(n) <= 0xFFFF for n in nals):
        raise ValueError("STAP-A needs NAL units of 1..65535 bytes")
    nri = max(n[0] & 0x60 for n in nals)
    out = bytearray((nri | NAL_STAP_A,))
    for nal in nals:
        out += _U16.pack(len(nal))
        out += nal
    return bytes(out)


def build_fu_a(nal: bytes, max_size: int) -> list[bytes]:
    """FU-A fragments of one NAL unit, each payload at most ``max_size`` bytes."""
    if len(nal) < 2 or max_size < 3:
        raise ValueError("NAL too short or max_size too small")
    header = nal[0]
    indicator = (header & 0xE0) | NAL_FU_A
    body = nal[1:]
    step = max_size - 2
    if len(body) <= step:
        raise ValueError("NAL fits one packet: send it as a single NAL unit")
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    out = []
    for i, chunk in enumerate(chunks):
        fu = header & _TYPE
        if i == 0:
            fu |= _FU_START
        if i == len(chunks) - 1:
            fu |= _FU_END
        out.append(bytes((indicator, fu)) + chunk)
    return out
