"""NACK generation (receiver side) and retransmission storage (sender side).

``NackGenerator``: one per incoming publisher stream.  Per packet it unwraps the
sequence number and sets one byte in a ring; a gap adds the missing numbers to an
ordered dict (work proportional to the gap, once per lost packet).  NACK lists are
built on a ticker (``tick``, every ~20 ms) by walking only the missing numbers.

``RetransmissionBuffer``: one per published stream, shared by all its DownTracks.
Keeps a reference to the original packet bytes by incoming ext seq in a fixed ring.

``ResendPolicy`` / ``resend_verdict`` / ``ResendBudget``: when a DownTrack answers its
subscriber's NACK (once per RTT per packet, a few times in all, within a byte budget per
subscriber).  The DownTrack keeps its own ring of what it sent (outgoing seq -> incoming
ext seq, timestamp, resends), because the seq munger cannot be inverted across source
switches.
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


# -- answering a subscriber's NACK --------------------------------------------------------------

RESEND_OK = 0
RESEND_TOO_SOON = 1
RESEND_TOO_MANY = 2

# Reasons a NACKed packet is not resent (the labels of telesfu_media_retransmissions_refused).
REFUSED_DUPLICATE = "duplicate"  # listed again in the same NACK
REFUSED_TOO_SOON = "too_soon"  # resent less than one resend interval ago
REFUSED_TOO_MANY = "too_many"  # resent max_resends times already
REFUSED_BUDGET = "budget"  # the subscriber's retransmission byte budget is spent
REFUSED_NOT_IN_BUFFER = "not_in_buffer"  # no longer in the history or the retransmission buffer
REFUSED_REASONS = (REFUSED_DUPLICATE, REFUSED_TOO_SOON, REFUSED_TOO_MANY, REFUSED_BUDGET, REFUSED_NOT_IN_BUFFER)

DEFAULT_MAX_RESENDS = 4
DEFAULT_RESEND_INTERVAL = 0.1  # s, while the subscriber's RTT is unknown
RESEND_INTERVAL_FLOOR = 0.02  # s, however short the RTT
DEFAULT_RESEND_BYTES_PER_SECOND = 250_000
DEFAULT_RESEND_BURST_SECONDS = 0.5


class ResendPolicy:
    """How often the SFU answers a subscriber's NACK for one packet, and how many bytes a second.

    * A packet is resent at most once per *resend interval*: the subscriber's RTT when an RR
      has measured it (floored at ``RESEND_INTERVAL_FLOOR``), else ``DEFAULT_RESEND_INTERVAL``.
      A NACK that arrives less than one RTT after our resend was sent before the resend could
      have reached the subscriber: it asks again for what is already on its way.
    * At most ``max_resends`` times in all (4: a packet lost four times in a row at 10% loss is
      one in 10,000; after that a keyframe request is the better repair).
    * At most ``bytes_per_second`` of retransmissions per subscriber (all its DownTracks), with
      a burst of ``burst_seconds`` of it. The default, 250 kB/s (2 Mbit/s), is a fixed cap rather
      than a multiple of the forwarded rate: it covers 50% loss on 4 Mbit/s forwarded (a group
      room of four cameras), needs no rate estimate on the packet path, and bounds what one
      subscriber can make the worker send whatever it NACKs.
    """

    __slots__ = ("max_resends", "default_interval", "interval_floor", "bytes_per_second", "burst_bytes")

    def __init__(self, max_resends: int = DEFAULT_MAX_RESENDS, default_interval: float = DEFAULT_RESEND_INTERVAL,
                 interval_floor: float = RESEND_INTERVAL_FLOOR,
                 bytes_per_second: int = DEFAULT_RESEND_BYTES_PER_SECOND,
                 burst_seconds: float = DEFAULT_RESEND_BURST_SECONDS) -> None:
        if not 1 <= max_resends <= 255:
            raise ValueError("max_resends must be in [1, 255]")
        if bytes_per_second < 0 or burst_seconds <= 0:
            raise ValueError("bytes_per_second must be >= 0 and burst_seconds > 0")
        self.max_resends = max_resends
        self.default_interval = default_interval
        self.interval_floor = interval_floor
        self.bytes_per_second = bytes_per_second
        self.burst_bytes = bytes_per_second * burst_seconds

    def interval(self, rtt: float) -> float:
        """The resend interval for a subscriber whose RTT is ``rtt`` seconds (-1: unknown)."""
        if rtt < 0:
            return self.default_interval
        return rtt if rtt > self.interval_floor else self.interval_floor


DEFAULT_RESEND_POLICY = ResendPolicy()


def resend_verdict(resends: int, resent_at: float, now: float, interval: float, max_resends: int) -> int:
    """RESEND_OK, RESEND_TOO_SOON or RESEND_TOO_MANY for a packet resent ``resends`` times, last at ``resent_at``."""
    if resends >= max_resends:
        return RESEND_TOO_MANY
    if resends and now - resent_at < interval:
        return RESEND_TOO_SOON
    return RESEND_OK


class ResendBudget:
    """Token bucket of retransmission bytes for one subscriber (shared by its DownTracks).

    Starts full (``policy.burst_bytes``), refills at ``policy.bytes_per_second``. ``take`` is
    O(1) and allocates nothing.
    """

    __slots__ = ("policy", "rate", "burst", "_tokens", "_at")

    def __init__(self, policy: ResendPolicy = DEFAULT_RESEND_POLICY) -> None:
        self.policy = policy
        self.rate = float(policy.bytes_per_second)
        self.burst = float(policy.burst_bytes)
        self._tokens = self.burst
        self._at = 0.0

    def take(self, size: int, now: float) -> bool:
        """Spend ``size`` bytes at ``now`` if the bucket holds them."""
        elapsed = now - self._at
        tokens = self._tokens
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self._at = now
        if tokens < size:
            self._tokens = tokens
            return False
        self._tokens = tokens - size
        return True

    @property
    def tokens(self) -> float:
        return self._tokens
