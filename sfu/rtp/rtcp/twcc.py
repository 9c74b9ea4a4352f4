"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01 section 3.1): RTPFB, FMT 15.

Body after the two SSRCs: base sequence number (16), packet status count (16),
reference time (24, units of 64 ms, a wrapping counter), feedback packet count (8),
packet status chunks (16 bits each), then one receive delta per received packet
(1 byte unsigned for a "small delta" status, 2 bytes signed for "large or negative"),
in units of 250 us.  The first delta is relative to the reference time, each later
one to the previous received packet.

Chunks: run length ``0 | S(2) | run(13)``; status vector ``1 | 0 | 14 x 1 bit``
(0 not received, 1 small delta) or ``1 | 1 | 7 x 2 bits``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sfu.rtp.rtcp.common import FB_SSRCS, FMT_TWCC, PT_RTPFB, Buffer, body_end, pack_header

STATUS_NOT_RECEIVED = 0
STATUS_SMALL_DELTA = 1
STATUS_LARGE_DELTA = 2
STATUS_RESERVED = 3

DELTA_TICK_US = 250
REFERENCE_TICK_US = 64_000
REFERENCE_TIME_MASK = 0xFFFFFF
RUN_LENGTH_MAX = 0x1FFF

_HEAD = struct.Struct("!HHI")  # base seq, status count, reference time(24) | fb count(8)
_U16 = struct.Struct("!H")
_S16 = struct.Struct("!h")

TwccRecord = tuple[int, bool, int]  # (transport seq, received, delta_us; 0 if lost)


def _read_statuses(buf: Buffer, pos: int, end: int, count: int) -> tuple[list[int], int] | None:
    statuses: list[int] = []
    while len(statuses) < count:
        if pos + 2 > end:
            return None
        chunk = _U16.unpack_from(buf, pos)[0]
        pos += 2
        if chunk < 0x8000:
            symbol = (chunk >> 13) & 0x03
            run = min(chunk & RUN_LENGTH_MAX, count - len(statuses))
            if symbol == STATUS_RESERVED and run:
                return None
            statuses.extend([symbol] * run)
        elif chunk < 0xC000:
            for shift in range(13, -1, -1):
                statuses.append((chunk >> shift) & 0x01)
        else:
            for shift in range(12, -1, -2):
                statuses.append((chunk >> shift) & 0x03)
    del statuses[count:]
    if STATUS_RESERVED in statuses:
        return None
    return statuses, pos


class TransportFeedback:
    """TWCC feedback: per transport sequence number, received or not and its delta."""

    __slots__ = ("sender_ssrc", "media_ssrc", "base_seq", "reference_time", "fb_count", "packets")

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int,
        base_seq: int,
        reference_time: int,
        fb_count: int,
        packets: Sequence[TwccRecord] = (),
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.base_seq = base_seq
        self.reference_time = reference_time  # 24-bit, 64 ms units
        self.fb_count = fb_count  # 8-bit feedback packet counter
        self.packets: list[TwccRecord] = list(packets)

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> TransportFeedback | None:
        end = body_end(buf, offset, size, PT_RTPFB, FMT_TWCC)
        body = offset + 4
        if end < 0 or body + 16 > end:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, body)
        base_seq, count, word = _HEAD.unpack_from(buf, body + 8)
        found = _read_statuses(buf, body + 16, end, count)
        if found is None:
            return None
        statuses, pos = found
        packets: list[TwccRecord] = []
        append = packets.append
        for i, status in enumerate(statuses):
            seq = (base_seq + i) & 0xFFFF
            if status == STATUS_NOT_RECEIVED:
                append((seq, False, 0))
            elif status == STATUS_SMALL_DELTA:
                if pos >= end:
                    return None
                append((seq, True, buf[pos] * DELTA_TICK_US))
                pos += 1
            else:
                if pos + 2 > end:
                    return None
                append((seq, True, _S16.unpack_from(buf, pos)[0] * DELTA_TICK_US))
                pos += 2
        return cls(sender, media, base_seq, word >> 8, word & 0xFF, packets)

    def arrivals_us(self) -> list[tuple[int, int]]:
        """(seq, arrival time in us on the reference clock) of received packets."""
        t = self.reference_time * REFERENCE_TICK_US
        out: list[tuple[int, int]] = []
        for seq, received, delta in self.packets:
            if received:
                t += delta
                out.append((seq, t))
        return out

    def to_bytes(self) -> bytes:
        """Serialize; deltas are rounded to 250 us ticks.

        Raises ValueError when the records are not consecutive from ``base_seq`` or
        a delta does not fit 16 signed bits of ticks.
        """
        count = len(self.packets)
        if not 1 <= count <= 0xFFFF:
            raise ValueError("TWCC feedback needs 1..65535 packets")
        statuses: list[int] = []
        deltas = bytearray()
        for i, (seq, received, delta_us) in enumerate(self.packets):
            if seq != (self.base_seq + i) & 0xFFFF:
                raise ValueError("TWCC records must be consecutive from base_seq")
            if not received:
                statuses.append(STATUS_NOT_RECEIVED)
                continue
            ticks = round(delta_us / DELTA_TICK_US)
            if 0 <= ticks <= 0xFF:
                statuses.append(STATUS_SMALL_DELTA)
                deltas.append(ticks)
            elif -0x8000 <= ticks <= 0x7FFF:
                statuses.append(STATUS_LARGE_DELTA)
                deltas += _S16.pack(ticks)
            else:
                raise ValueError("TWCC delta out of range")
        chunks = _encode_chunks(statuses)
        unpadded = 20 + 2 * len(chunks) + len(deltas)
        pad = -unpadded % 4
        size = unpadded + pad
        out = bytearray(size)
        pack_header(out, 0, FMT_TWCC, PT_RTPFB, size)
        if pad:
            out[0] |= 0x20
            out[-1] = pad
        FB_SSRCS.pack_into(out, 4, self.sender_ssrc, self.media_ssrc)
        word = ((self.reference_time & REFERENCE_TIME_MASK) << 8) | (self.fb_count & 0xFF)
        _HEAD.pack_into(out, 12, self.base_seq & 0xFFFF, count, word)
        pos = 20
        for chunk in chunks:
            _U16.pack_into(out, pos, chunk)
            pos += 2
        out[pos : pos + len(deltas)] = deltas
        return bytes(out)

    __bytes__ = to_bytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransportFeedback):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return (
            f"TransportFeedback(sender={self.sender_ssrc}, media={self.media_ssrc}, "
            f"base_seq={self.base_seq}, ref={self.reference_time}, fb={self.fb_count}, "
            f"packets={len(self.packets)})"
        )


def _encode_chunks(statuses: list[int]) -> list[int]:
    """Greedy chunk choice: long runs as run length, else the densest vector."""
    chunks: list[int] = []
    n = len(statuses)
    i = 0
    while i < n:
        symbol = statuses[i]
        run = 1
        while i + run < n and statuses[i + run] == symbol and run < RUN_LENGTH_MAX:
            run += 1
        window = statuses[i : i + 14]
        if run >= 14 or i + run == n:
            chunks.append((symbol << 13) | run)
            i += run
        elif max(window) <= STATUS_SMALL_DELTA:
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            chunks.append(chunk)
            i += 14
        elif run >= 7:
            chunks.append((symbol << 13) | run)
            i += run
        else:
            chunk = 0xC000
            for k, s in enumerate(statuses[i : i + 7]):
                chunk |= s << (12 - 2 * k)
            chunks.append(chunk)
            i += 7
    return chunks
