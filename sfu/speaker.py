"""Active speaker detection for a room, from the RFC 6464 audio level of each packet.

Per packet (``on_audio_level``): one dict lookup and a few integer adds.  On a ticker
(``tick``, every ~300 ms): per participant, the share of loud packets in the interval
feeds a smoothed activity; a participant becomes active when the activity crosses
``enter`` and stays active until ``hold`` seconds pass without a voiced interval.
The dominant speaker (first in the list) changes only when another active speaker is
louder by ``switch_margin`` dB.  ``tick`` returns the list only when the active set or
the dominant speaker changed, so signaling sends ``active_speakers`` on change only.
"""

from __future__ import annotations

SILENCE = 127  # RFC 6464 level: -dBov, 0 loudest, 127 silence

DEFAULT_THRESHOLD = 50  # packets at -50 dBov or louder count as loud
DEFAULT_ENTER = 0.4  # smoothed loud share needed to become active
DEFAULT_KEEP = 0.2  # loud share that makes an interval "voiced"
DEFAULT_HOLD = 1.5  # s of unvoiced intervals before an active speaker drops out
DEFAULT_SMOOTHING = 0.5  # weight of the newest interval in the moving averages
DEFAULT_SWITCH_MARGIN = 5.0  # dB by which a speaker must beat the dominant one


class _Speaker:
    __slots__ = (
        "participant_id",
        "packets",
        "loud",
        "level_sum",
        "activity",
        "level",
        "last_voiced_at",
        "active",
    )

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        self.packets = 0  # in the current interval
        self.loud = 0
        self.level_sum = 0  # sum of -dBov over loud packets
        self.activity = 0.0  # smoothed loud share, 0..1
        self.level = float(SILENCE)  # smoothed -dBov
        self.last_voiced_at = 0.0
        self.active = False


class SpeakerDetector:
    """Active speakers of one room, on an injected clock."""

    __slots__ = (
        "threshold",
        "enter",
        "keep",
        "hold",
        "smoothing",
        "switch_margin",
        "trust_voice_flag",
        "_speakers",
        "_dominant",
        "_dirty",
        "_last",
    )

    def __init__(
        self,
        threshold: int = DEFAULT_THRESHOLD,
        enter: float = DEFAULT_ENTER,
        keep: float = DEFAULT_KEEP,
        hold: float = DEFAULT_HOLD,
        smoothing: float = DEFAULT_SMOOTHING,
        switch_margin: float = DEFAULT_SWITCH_MARGIN,
        trust_voice_flag: bool = False,
    ) -> None:
        """``trust_voice_flag``: also require the V bit (only if the client sets it)."""
        if not 0 <= threshold <= SILENCE or not 0.0 < smoothing <= 1.0:
            raise ValueError("bad threshold or smoothing")
        self.threshold = threshold
        self.enter = enter
        self.keep = keep
        self.hold = hold
        self.smoothing = smoothing
        self.switch_margin = switch_margin
        self.trust_voice_flag = trust_voice_flag
        self._speakers: dict[str, _Speaker] = {}
        self._dominant: _Speaker | None = None
        self._dirty = False
        self._last: list[str] = []

    def on_audio_level(self, participant_id: str, level: int, voice: bool, now: float) -> None:
        """One audio packet: ``level`` is the header's -dBov (0 loudest .. 127 silence).

        ``now`` is unused per packet; timing happens in ``tick``.
        """
        s = self._speakers.get(participant_id)
        if s is None:
            s = self._speakers[participant_id] = _Speaker(participant_id)
        s.packets += 1
        if level <= self.threshold and (voice or not self.trust_voice_flag):
            s.loud += 1
            s.level_sum += level

    def remove(self, participant_id: str) -> None:
        """The participant left or stopped publishing audio."""
        s = self._speakers.pop(participant_id, None)
        if s is None:
            return
        if s.active:
            self._dirty = True
        if s is self._dominant:
            self._dominant = None

    def tick(self, now: float) -> list[str] | None:
        """Close the interval; the ordered active speakers if they changed, else None."""
        alpha = self.smoothing
        changed = self._dirty
        self._dirty = False
        for s in self._speakers.values():
            if s.packets:
                share = s.loud / s.packets
                level = s.level_sum / s.loud if s.loud else float(SILENCE)
            else:
                share = 0.0
                level = float(SILENCE)
            s.packets = s.loud = s.level_sum = 0
            s.activity += (share - s.activity) * alpha
            s.level += (level - s.level) * alpha
            if s.active:
                if share >= self.keep:
                    s.last_voiced_at = now
                elif now - s.last_voiced_at > self.hold:
                    s.active = False
                    changed = True
            elif s.activity >= self.enter:
                s.active = True
                s.last_voiced_at = now
                changed = True
        active = [s for s in self._speakers.values() if s.active]
        active.sort(key=_loudness_key)
        dominant = self._dominant
        if dominant is not None and not dominant.active:
            dominant = None
        if active:
            loudest = active[0]
            if dominant is None or (
                loudest is not dominant and loudest.level + self.switch_margin <= dominant.level
            ):
                dominant = loudest
        if dominant is not self._dominant:
            self._dominant = dominant
            changed = True
        if not changed:
            return None
        ordered = [dominant.participant_id] if dominant is not None else []
        ordered.extend(s.participant_id for s in active if s is not dominant)
        if ordered == self._last:
            return None
        self._last = ordered
        return list(ordered)

    @property
    def active_speakers(self) -> list[str]:
        """The list returned by the last tick that reported a change."""
        return list(self._last)

    @property
    def dominant(self) -> str | None:
        return self._dominant.participant_id if self._dominant is not None else None


def _loudness_key(s: _Speaker) -> tuple[float, str]:
    return (s.level, s.participant_id)
