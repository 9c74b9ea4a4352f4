"""Keyframe requests towards a publisher: one ``KeyframeRequester`` per video stream.

Many subscribers may need a keyframe at once (joins, layer switches, losses); the
publisher should see one PLI (or FIR) for all of them, a retry when no keyframe
follows, and no flood.
"""

from __future__ import annotations

KIND_PLI = "pli"
KIND_FIR = "fir"

DEFAULT_MIN_INTERVAL = 0.5  # s between two new requests
DEFAULT_RETRY_AFTER = 1.0  # s without a keyframe before a request is repeated
DEFAULT_MAX_RETRIES = 5  # repeats of one request before giving up

_NEVER = float("-inf")


class KeyframeRequester:
    """Rate-limits PLI/FIR for one published stream, on an injected clock.

    - ``request`` sends (returns True) when no request is outstanding and the last
      one was sent at least ``min_interval`` ago.
    - While a request is outstanding (no keyframe since), further requests are
      suppressed; if no keyframe arrives within ``retry_after`` the request is
      repeated (by ``request`` or ``tick``): ``max_retries`` times on its own, and
      again each time someone asked since the previous send.
    - A request suppressed only by ``min_interval`` is deferred: ``tick`` sends it
      once the interval has passed, unless a keyframe arrived meanwhile.
    - ``on_keyframe`` settles everything outstanding.

    With ``use_fir`` the owner sends FIR with command sequence number ``fir_seq``,
    which changes for each new request and stays the same for repeats (RFC 5104).
    """

    __slots__ = (
        "min_interval",
        "retry_after",
        "max_retries",
        "use_fir",
        "fir_seq",
        "last_reason",
        "last_keyframe_at",
        "_pending",
        "_deferred",
        "_asked",
        "_sent_at",
        "_retries",
        "requested",
        "sent",
        "suppressed",
        "retried",
        "gave_up",
        "keyframes",
    )

    def __init__(
        self,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        retry_after: float = DEFAULT_RETRY_AFTER,
        max_retries: int = DEFAULT_MAX_RETRIES,
        use_fir: bool = False,
    ) -> None:
        if min_interval < 0 or retry_after <= 0 or max_retries < 0:
            raise ValueError("bad keyframe request timing")
        self.min_interval = min_interval
        self.retry_after = retry_after
        self.max_retries = max_retries
        self.use_fir = use_fir
        self.fir_seq = 0
        self.last_reason = ""
        self.last_keyframe_at = _NEVER
        self._pending = False
        self._deferred = False
        self._asked = False  # a request was suppressed while one was outstanding
        self._sent_at = _NEVER
        self._retries = 0
        self.requested = 0  # request() calls
        self.sent = 0  # PLI/FIR to send, repeats included
        self.suppressed = 0
        self.retried = 0
        self.gave_up = 0
        self.keyframes = 0  # on_keyframe() calls

    @property
    def kind(self) -> str:
        return KIND_FIR if self.use_fir else KIND_PLI

    @property
    def pending(self) -> bool:
        """A request was sent and no keyframe has arrived since."""
        return self._pending

    def request(self, now: float, reason: str = "") -> bool:
        """Someone needs a keyframe; True when a PLI/FIR must be sent now."""
        self.requested += 1
        if self._pending:
            if now - self._sent_at >= self.retry_after:
                self.last_reason = reason
                return self._repeat(now)
            self._asked = True
            self.suppressed += 1
            return False
        if now - self._sent_at < self.min_interval and self.last_keyframe_at <= self._sent_at:
            # (a keyframe that arrived since the last request served that one, not this)
            self._deferred = True
            self.suppressed += 1
            return False
        self.last_reason = reason
        self._send_new(now)
        return True

    def tick(self, now: float) -> bool:
        """Ticker (e.g. every 100 ms): True when a repeat or a deferred request is due."""
        if self._pending:
            if now - self._sent_at < self.retry_after:
                return False
            if self._retries < self.max_retries or self._asked:
                return self._repeat(now)
            self._pending = False  # the publisher does not answer; wait for a new request
            self._deferred = False
            self.gave_up += 1
            return False
        if self._deferred and now - self._sent_at >= self.min_interval:
            self._send_new(now)
            return True
        return False

    def on_keyframe(self, now: float) -> None:
        """A keyframe arrived from the publisher (call per keyframe, or per packet of one)."""
        self._pending = False
        self._deferred = False
        self._asked = False
        self._retries = 0
        self.last_keyframe_at = now
        self.keyframes += 1

    def _send_new(self, now: float) -> None:
        self._pending = True
        self._deferred = False
        self._asked = False
        self._sent_at = now
        self._retries = 0
        self.fir_seq = (self.fir_seq + 1) & 0xFF
        self.sent += 1

    def _repeat(self, now: float) -> bool:
        self._asked = False
        self._sent_at = now
        self._retries += 1
        self.retried += 1
        self.sent += 1
        return True
