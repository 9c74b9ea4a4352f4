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
from collections.abc import Iterator, Sequence

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


def _check_chunks(buf: Buffer, pos: int, end: int, count: int) -> tuple[int, int, int] | None:
    """Walk the status chunks of ``count`` statuses without expanding them.

    Returns (chunks end, received statuses, delta bytes they need) or None when a chunk
    is missing, a counted status is the reserved symbol, or the deltas the statuses need
    do not fit the bytes left.  One step per chunk (at most 7 for a 2-bit vector), so the
    work is bounded by the packet's length, not by its 16-bit status count; the received
    count is bounded too (each received status needs a delta byte that is present).
    """
    covered = received = need = 0
    while covered < count:
        if pos + 2 > end:
            return None
        chunk = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if chunk < 0x8000:  # run length: 0 | S(2) | run(13)
            symbol = chunk >> 13
            run = min(chunk & RUN_LENGTH_MAX, count - covered)
            if symbol == STATUS_RESERVED and run:
                return None
            if symbol:
                received += run
                need += run * symbol  # 1 byte a small delta, 2 a large one
            covered += run
        elif chunk < 0xC000:  # 1-bit vector of 14
            n = min(14, count - covered)
            bits = ((chunk & 0x3FFF) >> (14 - n)).bit_count()
            received += bits
            need += bits
            covered += n
        else:  # 2-bit vector of 7
            n = min(7, count - covered)
            for shift in range(12, 12 - 2 * n, -2):
                symbol = (chunk >> shift) & 0x03
                if symbol == STATUS_RESERVED:
                    return None
                if symbol:
                    received += 1
                    need += symbol
            covered += n
        if need > end - pos:
            return None
    return pos, received, need


def _iter_statuses(buf: Buffer, pos: int, count: int) -> Iterator[int]:
    """The statuses of already-checked chunks, one at a time (nothing materialised)."""
    left = count
    while left > 0:
        chunk = (buf[pos] << 8) | buf[pos + 1]
        pos += 2
        if chunk < 0x8000:
            symbol = chunk >> 13
            run = min(chunk & RUN_LENGTH_MAX, left)
            left -= run
            for _ in range(run):
                yield symbol
        elif chunk < 0xC000:
            n = min(14, left)
            left -= n
            for shift in range(13, 13 - n, -1):
                yield (chunk >> shift) & 0x01
        else:
            n = min(7, left)
            left -= n
            for shift in range(12, 12 - 2 * n, -2):
                yield (chunk >> shift) & 0x03


class TransportFeedback:
    """TWCC feedback: per transport sequence number, received or not and its delta.

    A parsed packet is checked in one pass over its chunks (see ``_check_chunks``) and
    keeps only its header fields, two counts and its own bytes: the per-packet records
    are produced on demand by ``records()``.  A packet may legally claim 65,535 statuses
    with 16 bytes of "not received" runs, so nothing here is ever expanded per status
    unless a caller iterates.
    """

    __slots__ = ("sender_ssrc", "media_ssrc", "base_seq", "reference_time", "fb_count", "status_count",
                 "received_count", "_records", "_data", "_chunks")

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
        self._records: list[TwccRecord] | None = list(packets)  # built here; None when parsed
        self.status_count = len(self._records)
        self.received_count = sum(1 for r in self._records if r[1])
        self._data = b""  # parsed: the packet's bytes, the records are read from them
        self._chunks = 0  # parsed: offset of the first chunk in _data

    @classmethod
    def parse(cls, buf: Buffer, offset: int = 0, size: int = -1) -> TransportFeedback | None:
        end = body_end(buf, offset, size, PT_RTPFB, FMT_TWCC)
        body = offset + 4
        if end < 0 or body + 16 > end:
            return None
        base_seq, count, word = _HEAD.unpack_from(buf, body + 8)
        checked = _check_chunks(buf, body + 16, end, count)
        if checked is None:
            return None
        sender, media = FB_SSRCS.unpack_from(buf, body)
        fb = cls.__new__(cls)
        fb.sender_ssrc = sender
        fb.media_ssrc = media
        fb.base_seq = base_seq
        fb.reference_time = word >> 8
        fb.fb_count = word & 0xFF
        fb.status_count = count
        fb.received_count = checked[1]
        fb._records = None
        fb._data = bytes(buf[offset:end])
        fb._chunks = 20
        return fb

    def records(self) -> Iterator[TwccRecord]:
        """(seq, received, delta_us) per status, in order; O(status_count), lazily."""
        if self._records is not None:
            yield from self._records
            return
        data = self._data
        checked = _check_chunks(data, self._chunks, len(data), self.status_count)
        assert checked is not None  # parse checked these very bytes
        pos = checked[0]
        seq = self.base_seq
        for status in _iter_statuses(data, self._chunks, self.status_count):
            if status == STATUS_NOT_RECEIVED:
                yield seq, False, 0
            elif status == STATUS_SMALL_DELTA:
                yield seq, True, data[pos] * DELTA_TICK_US
                pos += 1
            else:
                yield seq, True, _S16.unpack_from(data, pos)[0] * DELTA_TICK_US
                pos += 2
            seq = (seq + 1) & 0xFFFF

    def arrivals_us(self) -> list[tuple[int, int]]:
        """(seq, arrival time in us on the reference clock) of received packets."""
        t = self.reference_time * REFERENCE_TICK_US
        out: list[tuple[int, int]] = []
        for seq, received, delta in self.records():
            if received:
                t += delta
                out.append((seq, t))
        return out

    def to_bytes(self) -> bytes:
        """Serialize; deltas are rounded to 250 us ticks.

        Raises ValueError when the records are not consecutive from ``base_seq`` or
        a delta does not fit 16 signed bits of ticks.
        """
        records = list(self.records())
        count = len(records)
        if not 1 <= count <= 0xFFFF:
            raise ValueError("TWCC feedback needs 1..65535 packets")
        statuses: list[int] = []
        deltas = bytearray()
        for i, (seq, received, delta_us) in enumerate(records):
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
        head = ("sender_ssrc", "media_ssrc", "base_seq", "reference_time", "fb_count", "status_count")
        return (all(getattr(self, k) == getattr(other, k) for k in head)
                and list(self.records()) == list(other.records()))

    def __repr__(self) -> str:
        return (
            f"TransportFeedback(sender={self.sender_ssrc}, media={self.media_ssrc}, "
            f"base_seq={self.base_seq}, ref={self.reference_time}, fb={self.fb_count}, "
            f"statuses={self.status_count}, received={self.received_count})"
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
