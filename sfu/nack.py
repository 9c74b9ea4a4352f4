"""NACK generation (receiver side) and retransmission storage (sender side).

``NackGenerator``: one per incoming publisher stream.  Per packet it unwraps the
sequence number and sets one byte in a ring; a gap adds the missing numbers to an
ordered dict (work proportional to the gap, once per lost packet).  NACK lists are
built on a ticker (``tick``, every ~20 ms) by walking only the missing numbers.

``RetransmissionBuffer``: one per published stream, shared by all its DownTracks.
Keeps a reference to the original packet bytes by incoming ext seq in a fixed ring.

``SeqMap``: one per DownTrack.  Remembers, for the last N packets sent, outgoing seq
-> incoming ext seq (plus outgoing timestamp and a caller slot), because the seq
munger cannot be inverted across source switches.
"""

from __future__ import annotations

from array import array

from sfu.rtp.seq import Unwrapper

SEQ_MASK = 0xFFFF

DEFAULT_WINDOW = 1024  # ring size of the generator, in packets
DEFAULT_MAX_RETRIES = 10  # NACKs per missing packet
DEFAULT_MAX_AGE = 1.0  # s: a missing packet older than this is given up
DEFAULT_RTT = 0.1  # s: retry spacing while no RTT is known
MIN_RETRY_INTERVAL = 0.02  # s: retry spacing floor
DEFAULT_REORDER_DELAY = 0.01  # s: a fresh gap waits this long for a reordered packet
DEFAULT_MAX_PER_TICK = 256  # sequence numbers returned by one tick

DEFAULT_BUFFER_SIZE = 1024  # retransmission ring, in packets
DEFAULT_BUFFER_MAX_AGE = 1.0  # s: older packets are not resent


def _check_pow2(size: int, low: int, high: int) -> None:
    if size < low or size > high or size & (size - 1):
        raise ValueError(f"size must be a power of two in [{low}, {high}]")


class NackGenerator:
    """Finds missing sequence numbers of one incoming stream and schedules NACKs.

    Per packet (``on_packet``): O(1) for in-order packets; a gap of g costs O(g) once.
    On the ticker (``tick``): O(number of missing packets).

    A missing packet is NACKed first ``reorder_delay`` after the gap was seen, then
    again every ``max(rtt, 20 ms)`` (``default_rtt`` while RTT is unknown), at most
    ``max_retries`` times.  It is given up ("lost for good") one retry interval after
    its last NACK, when it falls out of the window (``window`` packets behind the
    highest), or ``max_age`` seconds after the gap was seen.  A forward jump of more
    than ``window`` resets the state instead of NACKing thousands of packets; so do
    two consecutive packets far behind the window with nothing newer between
    them (a sequence restart).
    Every give-up or reset raises the keyframe flag (``take_keyframe_request``).
    """

    __slots__ = (
        "window",
        "max_retries",
        "max_age",
        "default_rtt",
        "reorder_delay",
        "max_per_tick",
        "_mask",
        "_unwrapper",
        "_ring",
        "_zeros",
        "_retries",
        "_nacked_at",
        "_missing",
        "_highest",
        "_started",
        "_bad_seq",
        "_bad_highest",
        "_keyframe",
        "duplicate",
        "nacks_sent",
        "packets_recovered",
        "packets_reordered",
        "packets_late",
        "packets_lost_for_good",
        "duplicates",
        "too_old",
        "resets",
    )

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_age: float = DEFAULT_MAX_AGE,
        default_rtt: float = DEFAULT_RTT,
        reorder_delay: float = DEFAULT_REORDER_DELAY,
        max_per_tick: int = DEFAULT_MAX_PER_TICK,
    ) -> None:
        _check_pow2(window, 16, 1 << 15)
        if not 1 <= max_retries <= 255:
            raise ValueError("max_retries must be in [1, 255]")
        if max_per_tick < 1:
            raise ValueError("max_per_tick must be >= 1")
        self.window = window
        self.max_retries = max_retries
        self.max_age = max_age
        self.default_rtt = default_rtt
        self.reorder_delay = reorder_delay
        self.max_per_tick = max_per_tick
        self._mask = window - 1
        self._unwrapper = Unwrapper(16)
        self._ring = bytearray(window)  # 1: received, by ext & mask
        self._zeros = memoryview(bytes(window))
        self._retries = bytearray(window)  # NACKs sent for a missing slot
        self._nacked_at = array("d", bytes(8 * window))  # last NACK time of a missing slot
        # ext seq -> time the gap was seen; keys ascend in insertion order.
        self._missing: dict[int, float] = {}
        self._highest = 0
        self._started = False
        self._bad_seq = -1
        self._bad_highest = 0
        self._keyframe = False
        self.duplicate = False  # the last on_packet call saw a duplicate
        self.nacks_sent = 0  # sequence numbers NACKed, retries included
        self.packets_recovered = 0  # missing packets that arrived after a NACK
        self.packets_reordered = 0  # missing packets that arrived before any NACK
        self.packets_late = 0  # packets that arrived after being given up
        self.packets_lost_for_good = 0
        self.duplicates = 0
        self.too_old = 0  # packets behind the window, ignored
        self.resets = 0

    # --- packet time -----------------------------------------------------------

    def on_packet(self, seq: int, now: float) -> bool:
        """Record wire ``seq``; True when it filled a hole (recovered, reordered or late).

        Sets ``duplicate`` when the packet was already received.
        """
        if not self._started:
            self._start(seq)
            self.duplicate = False
            return False
        ext = self._unwrapper.unwrap(seq)
        gap = ext - self._highest
        if gap == 1:
            self._ring[ext & self._mask] = 1
            self._highest = ext
            self.duplicate = False
            return False
        if gap > 1:
            self.duplicate = False
            if gap > self.window:
                self._reset(seq)
                return False
            self._mark_missing(ext, now)
            return False
        if gap <= -self.window:
            self.duplicate = False
            if (seq & SEQ_MASK) == self._bad_seq and self._highest == self._bad_highest:
                self._reset(seq)  # two in a row far behind: the sender restarted
                return False
            self._bad_seq = (seq + 1) & SEQ_MASK
            self._bad_highest = self._highest
            self.too_old += 1
            return False
        idx = ext & self._mask
        ring = self._ring
        if ring[idx]:
            self.duplicate = True
            self.duplicates += 1
            return False
        self.duplicate = False
        ring[idx] = 1
        if self._missing.pop(ext, None) is not None:
            if self._retries[idx]:
                self.packets_recovered += 1
            else:
                self.packets_reordered += 1
        else:
            self.packets_late += 1
        return True

    def _start(self, seq: int) -> None:
        self._started = True
        self._unwrapper.reset()
        ext = self._unwrapper.unwrap(seq)
        self._highest = ext
        self._ring[:] = self._zeros
        self._ring[ext & self._mask] = 1
        self._bad_seq = -1

    def _reset(self, seq: int) -> None:
        self.packets_lost_for_good += len(self._missing)
        self._missing.clear()
        self.resets += 1
        self._keyframe = True
        self._start(seq)

    def _mark_missing(self, ext: int, now: float) -> None:
        mask = self._mask
        ring = self._ring
        first = self._highest + 1
        # Clear the ring slots of the skipped numbers (they may hold old marks).
        lo = first & mask
        count = ext - first
        hi = lo + count
        if hi <= self.window:
            ring[lo:hi] = self._zeros[:count]
        else:
            ring[lo:] = self._zeros[: self.window - lo]
            ring[: hi - self.window] = self._zeros[: hi - self.window]
        ring[ext & mask] = 1
        missing = self._missing
        retries = self._retries
        for s in range(first, ext):
            missing[s] = now
            retries[s & mask] = 0
        self._highest = ext
        # Entries that fell out of the window are useless now.
        floor = ext - self.window
        if missing and next(iter(missing)) <= floor:
            self._drop_below(floor + 1)

    def _drop_below(self, ext: int) -> int:
        """Give up missing entries older than ``ext``; returns how many."""
        missing = self._missing
        old: list[int] = []
        for s in missing:  # keys ascend
            if s >= ext:
                break
            old.append(s)
        for s in old:
            del missing[s]
        if old:
            self.packets_lost_for_good += len(old)
            self._keyframe = True
        return len(old)

    # --- ticker ----------------------------------------------------------------

    def tick(self, now: float, rtt: float = -1.0) -> list[int]:
        """Wire sequence numbers to NACK now (at most ``max_per_tick``).

        First NACKs come first, then repeats, each group oldest first.

        ``rtt`` in seconds; <= 0 means unknown.  Also gives up expired entries.
        """
        missing = self._missing
        if not missing:
            return []
        interval = rtt if rtt > 0 else self.default_rtt
        if interval < MIN_RETRY_INTERVAL:
            interval = MIN_RETRY_INTERVAL
        mask = self._mask
        retries = self._retries
        nacked_at = self._nacked_at
        max_retries = self.max_retries
        fresh = now - self.reorder_delay
        expired_at = now - self.max_age
        floor = self._highest - self.window
        first: list[int] = []  # due for their first NACK
        again: list[int] = []  # due for a repeat
        dead: list[int] = []
        for ext, seen in missing.items():
            if ext <= floor or seen < expired_at:
                dead.append(ext)
                continue
            n = retries[ext & mask]
            if n:
                if now - nacked_at[ext & mask] < interval:
                    continue
                if n >= max_retries:
                    dead.append(ext)
                    continue
                again.append(ext)
            elif seen > fresh:
                break  # later entries were seen no earlier and not NACKed yet
            else:
                first.append(ext)
        for ext in dead:
            del missing[ext]
        if dead:
            self.packets_lost_for_good += len(dead)
            self._keyframe = True
        # Over the limit, first NACKs win over repeats; the rest wait for a tick.
        if again:
            first.extend(again)
        limit = self.max_per_tick
        if len(first) > limit:
            del first[limit:]
        for i, ext in enumerate(first):
            idx = ext & mask
            retries[idx] += 1
            nacked_at[idx] = now
            first[i] = ext & SEQ_MASK
        self.nacks_sent += len(first)
        return first

    # --- owner helpers ---------------------------------------------------------

    def on_keyframe(self, seq: int) -> int:
        """A keyframe starts at wire ``seq``: stop asking for older packets.

        Returns how many missing packets were given up.  Does not raise the
        keyframe flag for them.
        """
        if not self._started or not self._missing:
            return 0
        keep = self._keyframe
        n = self._drop_below(self._unwrapper.peek(seq))
        self._keyframe = keep
        return n

    def take_keyframe_request(self) -> bool:
        """True once after packets were given up or the stream reset (video: ask a PLI)."""
        flag = self._keyframe
        self._keyframe = False
        return flag

    def reset(self) -> None:
        """Forget the stream (new SSRC); missing packets are not counted as lost."""
        self._missing.clear()
        self._started = False
        self._unwrapper.reset()
        self._bad_seq = -1
        self._keyframe = False

    @property
    def missing_count(self) -> int:
        return len(self._missing)

    @property
    def ext_highest(self) -> int:
        """Highest ext seq received (0 before the first packet)."""
        return self._highest

    def missing(self) -> list[int]:
        """Wire sequence numbers currently missing, oldest first (for tests and debug)."""
        return [s & SEQ_MASK for s in self._missing]


class RetransmissionBuffer:
    """Original packets of one stream by incoming ext seq, in a ring of ``size``.

    Stores a reference to ``packet``: pass an immutable ``bytes`` (or a buffer nobody
    mutates later), never the bytearray a DownTrack rewrites in place.  A slot holds
    ext seq ``e`` until ``e + size`` is stored; ``store`` refuses packets so old they
    would evict a newer one.  ``get`` with ``now`` also refuses packets older than
    ``max_age`` seconds.
    """

    __slots__ = (
        "size",
        "max_age",
        "_mask",
        "_packets",
        "_exts",
        "_times",
        "_highest",
        "_started",
        "stored",
        "refused",
        "hits",
        "misses",
    )

    def __init__(
        self, size: int = DEFAULT_BUFFER_SIZE, max_age: float = DEFAULT_BUFFER_MAX_AGE
    ) -> None:
        _check_pow2(size, 1, 1 << 16)
        self.size = size
        self.max_age = max_age
        self._mask = size - 1
        self._packets: list[bytes | None] = [None] * size
        self._exts: list[int] = [0] * size
        self._times = array("d", bytes(8 * size))
        self._highest = 0
        self._started = False
        self.stored = 0
        self.refused = 0
        self.hits = 0
        self.misses = 0

    def store(self, ext_seq: int, packet: bytes, now: float) -> bool:
        """Keep ``packet`` for ``ext_seq``; False when it is too old to keep."""
        if not self._started:
            self._started = True
            self._highest = ext_seq
        elif ext_seq > self._highest:
            self._highest = ext_seq
        elif ext_seq <= self._highest - self.size:
            self.refused += 1
            return False
        idx = ext_seq & self._mask
        self._packets[idx] = packet
        self._exts[idx] = ext_seq
        self._times[idx] = now
        self.stored += 1
        return True

    def get(self, ext_seq: int, now: float | None = None) -> tuple[bytes, float] | None:
        """``(packet, stored_at)`` for ``ext_seq``, or None if evicted or too old."""
        idx = ext_seq & self._mask
        packet = self._packets[idx]
        if packet is None or self._exts[idx] != ext_seq:
            self.misses += 1
            return None
        stored_at = self._times[idx]
        if now is not None and now - stored_at > self.max_age:
            self.misses += 1
            return None
        self.hits += 1
        return packet, stored_at

    def reset(self) -> None:
        """Drop everything (the publisher restarted its sequence)."""
        for i in range(self.size):
            self._packets[i] = None
        self._started = False

    @property
    def ext_highest(self) -> int:
        return self._highest


class SentPacket:
    """One slot of a ``SeqMap``; reused, so read it before the next ``set``."""

    __slots__ = ("out_seq", "in_ext", "out_ts", "sent_at", "resent_at", "resends", "extra")

    def __init__(self) -> None:
        self.out_seq = -1  # wire seq sent; -1: empty
        self.in_ext = 0  # incoming ext seq: the RetransmissionBuffer key
        self.out_ts = 0  # outgoing RTP timestamp
        self.sent_at = 0.0
        self.resent_at = 0.0
        self.resends = 0
        self.extra: object = None  # caller data, e.g. the munged VP8 descriptor fields


class SeqMap:
    """Outgoing seq -> what was sent, for the last ``size`` packets of a DownTrack.

    ``set`` and ``get`` are O(1) and allocate nothing: slots are preallocated and
    indexed by the outgoing wire seq.
    """

    __slots__ = ("size", "_mask", "_slots")

    def __init__(self, size: int = DEFAULT_BUFFER_SIZE) -> None:
        _check_pow2(size, 1, 1 << 15)
        self.size = size
        self._mask = size - 1
        self._slots = [SentPacket() for _ in range(size)]

    def set(self, out_seq: int, in_ext: int, out_ts: int, now: float, extra: object = None) -> None:
        """Record that wire ``out_seq`` carried incoming ``in_ext`` at ``out_ts``."""
        out_seq &= SEQ_MASK
        slot = self._slots[out_seq & self._mask]
        slot.out_seq = out_seq
        slot.in_ext = in_ext
        slot.out_ts = out_ts
        slot.sent_at = now
        slot.resent_at = 0.0
        slot.resends = 0
        slot.extra = extra

    def get(self, out_seq: int) -> SentPacket | None:
        """The slot for wire ``out_seq``, or None if it was overwritten or never set."""
        out_seq &= SEQ_MASK
        slot = self._slots[out_seq & self._mask]
        if slot.out_seq != out_seq:
            return None
        return slot

    @staticmethod
    def claim_resend(
        slot: SentPacket, now: float, min_interval: float, max_resends: int = 10
    ) -> bool:
        """True (and recorded) when ``slot`` may be resent now.

        Refuses a resend within ``min_interval`` of the previous one (use ~RTT: a
        NACK repeated before our last resend could arrive is a duplicate request) and
        after ``max_resends``.
        """
        if slot.resends >= max_resends:
            return False
        if slot.resends and now - slot.resent_at < min_interval:
            return False
        slot.resends += 1
        slot.resent_at = now
        return True

    def clear(self) -> None:
        for slot in self._slots:
            slot.out_seq = -1
            slot.extra = None
