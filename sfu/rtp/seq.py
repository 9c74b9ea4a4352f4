"""Wrap-around counter math for RTP sequence numbers, timestamps and picture ids.

Everything is generic over the counter width in bits: 16 for RTP sequence numbers,
32 for RTP timestamps, 15/7 for VP8 PictureID, 8 for TL0PICIDX, and tiny widths
(3 bits) in tests so wrap-around is reached within a few steps.

Terms:
- ``diff(a, b)`` is the signed shortest distance from ``b`` to ``a`` in
  ``(-2**(bits-1), 2**(bits-1)]``; a distance of exactly half the range counts as
  forward.
- an "ext" value is a counter unwrapped to an unbounded integer (LiveKit's ``ext_``
  naming); ``ext & mask`` is the wire value again.
"""

from __future__ import annotations

SEQ_BITS = 16
TS_BITS = 32


def mask_of(bits: int) -> int:
    """All-ones value of a ``bits``-wide counter."""
    return (1 << bits) - 1


def diff(a: int, b: int, bits: int = SEQ_BITS) -> int:
    """Signed shortest distance ``a - b`` on a ``bits``-wide circle."""
    size = 1 << bits
    d = (a - b) & (size - 1)
    if d > size >> 1:
        return d - size
    return d


def is_newer(a: int, b: int, bits: int = SEQ_BITS) -> bool:
    """True when ``a`` comes strictly after ``b`` on a ``bits``-wide circle."""
    size = 1 << bits
    d = (a - b) & (size - 1)
    return 0 < d <= size >> 1


def add(a: int, n: int, bits: int = SEQ_BITS) -> int:
    """``a + n`` wrapped to ``bits``."""
    return (a + n) & ((1 << bits) - 1)


class Unwrapper:
    """Extends a wrapping counter to a monotonic unbounded "ext" value.

    The first value maps to itself (cycle 0).  Later values are placed at the
    shortest distance from the highest ext value seen so far, so reordered and
    duplicated packets map to the ext value they had.  A packet older than the very
    first one that arrives across a wrap gets a negative ext value (its wire value is
    still ``ext & mask``).
    """

    __slots__ = ("bits", "mask", "_half", "_size", "highest", "started")

    def __init__(self, bits: int = SEQ_BITS) -> None:
        if bits < 2:
            raise ValueError("bits must be >= 2")
        self.bits = bits
        self._size = 1 << bits
        self.mask = self._size - 1
        self._half = self._size >> 1
        self.highest = 0
        self.started = False

    def reset(self) -> None:
        """Forget everything; the next value starts at cycle 0 again."""
        self.highest = 0
        self.started = False

    def unwrap(self, value: int) -> int:
        """Ext value of ``value``; updates the highest when it is newer."""
        if not self.started:
            self.started = True
            self.highest = value & self.mask
            return self.highest
        highest = self.highest
        d = (value - highest) & self.mask
        if d > self._half:
            return highest + d - self._size
        ext = highest + d
        self.highest = ext
        return ext

    def peek(self, value: int) -> int:
        """Ext value ``value`` would get, without changing state."""
        if not self.started:
            return value & self.mask
        d = (value - self.highest) & self.mask
        if d > self._half:
            d -= self._size
        return self.highest + d

    @property
    def cycles(self) -> int:
        """Number of wraps of the highest value (the RTCP "cycles" count)."""
        return self.highest >> self.bits


class SeqMunger:
    """Maps an incoming sequence to a continuous outgoing one.

    Used by a DownTrack to rewrite sequence numbers (and, at other widths, VP8
    PictureID / TL0PICIDX) so a subscriber sees one gap-free stream across:

    - source switches (``sync``): the publisher reconnects with a new SSRC and a
      random sequence base, or the simulcast layer changes;
    - packets the SFU drops on purpose (``drop``): padding-only packets, packets
      before a keyframe, a filtered temporal layer;
    - packets the SFU inserts (``insert``): probe padding.

    Losses upstream stay gaps downstream (the subscriber NACKs them).  Reordered
    packets map to the value they would have had in order, as long as no more than
    ``window`` packets old.  Internally everything is unwrapped, so the only
    width-specific step is the final mask.

    ``munge`` returns the outgoing value, or None when the packet must not be sent:
    it was dropped earlier, it predates the last ``sync``, or it is older than the
    retained history.  A forward jump of more than half the range looks like an old
    packet and is refused: on a discontinuity without an SSRC change, call ``sync``.
    """

    __slots__ = (
        "bits",
        "mask",
        "window",
        "max_entries",
        "_unwrapper",
        "_start",
        "_started",
        "_offset",
        "_max_in",
        "_floor",
        "_last_out",
        "_entries",
    )

    def __init__(
        self,
        bits: int = SEQ_BITS,
        start: int | None = None,
        window: int | None = None,
        max_entries: int = 64,
    ) -> None:
        """``start``: first outgoing value (None: identity with the first input)."""
        self.bits = bits
        self.mask = mask_of(bits)
        half = 1 << (bits - 1)
        self.window = half - 1 if window is None else min(window, half - 1)
        self.max_entries = max_entries
        self._unwrapper = Unwrapper(bits)
        self._start = start
        self._started = False
        self._offset = 0  # ext_out = ext_in - offset, for inputs newer than max_in
        self._max_in = 0  # highest ext input handled (forwarded or dropped)
        self._floor = 0  # inputs with ext <= floor are refused
        self._last_out = 0  # highest ext output produced or reserved
        # History of changes to the offset, oldest first: [lo, hi, delta] means
        # inputs lo..hi (possibly empty, hi < lo) were dropped and inputs > hi are
        # shifted by ``delta`` relative to inputs < lo.
        self._entries: list[list[int]] = []

    @property
    def started(self) -> bool:
        return self._started

    @property
    def last_out(self) -> int:
        """Highest outgoing value produced so far (wire width)."""
        return self._last_out & self.mask

    @property
    def ext_last_out(self) -> int:
        return self._last_out

    @property
    def max_in(self) -> int:
        """Highest incoming value handled since the last sync (wire width)."""
        return self._max_in & self.mask

    def _begin(self, first_in: int, skip: int) -> int:
        unwrapper = self._unwrapper
        unwrapper.reset()
        ext = unwrapper.unwrap(first_in)
        if self._started:
            out = self._last_out + 1 + skip
        else:
            self._started = True
            out = (first_in if self._start is None else self._start) + skip
            # Start in a high cycle so outputs never go negative on reordering.
            out = (out & self.mask) + (1 << self.bits)
        self._offset = ext - out
        self._max_in = ext - 1
        self._floor = ext - 1
        self._last_out = out - 1
        self._entries.clear()
        return ext

    def sync(self, first_in: int, skip: int = 0) -> None:
        """Next input ``first_in`` (a new source) maps to ``last_out + 1 + skip``."""
        self._begin(first_in, skip)

    def munge(self, value: int) -> int | None:
        """Outgoing value for incoming ``value``, or None if it must not be sent."""
        if not self._started:
            ext = self._begin(value, 0)
        else:
            ext = self._unwrapper.unwrap(value)
        if ext > self._max_in:
            self._max_in = ext
            out = ext - self._offset
            if out > self._last_out:
                self._last_out = out
            return out & self.mask
        if ext <= self._floor or ext < self._max_in - self.window:
            return None
        # Entries are disjoint and ascending: walk back over those after ``ext``.
        offset = self._offset
        entries = self._entries
        i = len(entries) - 1
        while i >= 0:
            lo, hi, delta = entries[i]
            if lo <= ext:
                if ext <= hi:
                    return None
                break
            offset -= delta
            i -= 1
        return (ext - offset) & self.mask

    def drop(self, value: int) -> bool:
        """Drop incoming ``value`` without leaving a gap in the output.

        Only possible when ``value`` is newer than every input handled so far;
        returns False otherwise (the packet is simply not sent and its output slot,
        if later packets were already sent, stays a gap).
        """
        if not self._started:
            ext = self._begin(value, 0)
        else:
            ext = self._unwrapper.unwrap(value)
        if ext <= self._max_in:
            return False
        self._max_in = ext
        self._offset += 1
        entries = self._entries
        if entries:
            last = entries[-1]
            if last[1] + 1 == ext and last[2] == last[1] - last[0] + 1:
                last[1] = ext
                last[2] += 1
                return True
        entries.append([ext, ext, 1])
        self._prune()
        return True

    def insert(self, count: int = 1) -> int:
        """Reserve ``count`` outgoing values after the last one; returns the first.

        For packets the SFU generates itself (padding probes).  Later inputs are
        shifted up by ``count``.
        """
        if count < 1:
            raise ValueError("count must be >= 1")
        if not self._started:
            raise ValueError("insert before the first packet")
        # Slots up to head_out belong to inputs already handled or still missing
        # (a gap before a dropped head); reserve after both.
        head_out = self._max_in - self._offset
        first = (self._last_out if self._last_out > head_out else head_out) + 1
        self._last_out = first + count - 1
        shift = self._last_out - head_out
        if shift > 0:
            self._offset -= shift
            self._entries.append([self._max_in + 1, self._max_in, -shift])
            self._prune()
        return first & self.mask

    def _prune(self) -> None:
        entries = self._entries
        limit = self._max_in - self.window
        while entries and (entries[0][1] < limit or len(entries) > self.max_entries):
            lo, hi, _ = entries.pop(0)
            floor = hi if hi >= lo else lo - 1
            if floor > self._floor:
                self._floor = floor


class TimestampMunger:
    """Keeps outgoing RTP timestamps continuous across source switches.

    Within one source the outgoing timestamp is ``incoming - offset``.  On ``sync``
    the new source's first timestamp is placed at the last outgoing timestamp plus
    the wall-clock time elapsed since that packet was sent, in clock-rate units
    (at least ``min_step``), so a receiver's jitter buffer sees real time pass.
    """

    __slots__ = ("bits", "mask", "_half", "_start", "_started", "_offset", "_last_out", "_last_at")

    def __init__(self, bits: int = TS_BITS, start: int | None = None) -> None:
        """``start``: first outgoing timestamp (None: identity with the first input)."""
        self.bits = bits
        self.mask = mask_of(bits)
        self._half = 1 << (bits - 1)
        self._start = start
        self._started = False
        self._offset = 0
        self._last_out = 0
        self._last_at = 0.0

    @property
    def started(self) -> bool:
        return self._started

    @property
    def last_out(self) -> int:
        """Newest outgoing timestamp so far."""
        return self._last_out

    @property
    def last_at(self) -> float:
        """Clock time (seconds) at which ``last_out`` was produced."""
        return self._last_at

    def sync(self, first_in: int, now: float, clock_rate: int, min_step: int = 1) -> int:
        """Map ``first_in`` after the last output by elapsed time; returns its output."""
        mask = self.mask
        if not self._started:
            self._started = True
            out = first_in if self._start is None else self._start
        else:
            step = round((now - self._last_at) * clock_rate)
            if step < min_step:
                step = min_step
            elif step >= self._half:
                step = self._half - 1
            out = self._last_out + step
        out &= mask
        self._offset = (first_in - out) & mask
        self._last_out = out
        self._last_at = now
        return out

    def munge(self, value: int, now: float) -> int:
        """Outgoing timestamp for ``value``; ``now`` records when the newest was sent."""
        if not self._started:
            self._started = True
            out = value if self._start is None else self._start
            out &= self.mask
            self._offset = (value - out) & self.mask
            self._last_out = out
            self._last_at = now
            return out
        out = (value - self._offset) & self.mask
        d = (out - self._last_out) & self.mask
        if 0 < d <= self._half:
            self._last_out = out
            self._last_at = now
        return out
