"""SpeakerDetector hysteresis on a fake clock (ticks every 300 ms, 20 ms packets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.speaker import SpeakerDetector

TICK = 0.3
PACKETS_PER_TICK = 15


class Room:
    def __init__(self, det: SpeakerDetector) -> None:
        self.det = det
        self.now = 0.0

    def interval(self, talk: dict[str, tuple[int, float]]) -> list[str] | None:
        """One tick interval; ``talk``: participant -> (level -dBov, share of loud packets)."""
        for i in range(PACKETS_PER_TICK):
            for pid, (level, share) in talk.items():
                loud = i < round(share * PACKETS_PER_TICK)
                self.det.on_audio_level(pid, level if loud else 127, loud, self.now)
        self.now = round(self.now + TICK, 6)
        return self.det.tick(self.now)


def test_speaker_enters_and_leaves_with_hold() -> None:
    room = Room(SpeakerDetector(hold=1.5))
    assert room.interval({"a": (20, 1.0)}) == ["a"]
    assert room.interval({"a": (20, 1.0)}) is None  # no change, no message
    # Silence shorter than the hold: still active.
    for _ in range(5):  # 1.5 s
        assert room.interval({"a": (127, 0.0)}) is None
    assert room.interval({"a": (127, 0.0)}) == []  # 1.8 s > hold
    assert room.det.active_speakers == []


def test_pauses_between_words_do_not_flap() -> None:
    room = Room(SpeakerDetector())
    results = [room.interval({"a": (25, 1.0 if i % 4 else 0.0)}) for i in range(1, 40)]
    assert [r for r in results if r is not None] == [["a"]]


def test_short_blip_does_not_activate() -> None:
    room = Room(SpeakerDetector())
    assert room.interval({"a": (10, 0.4)}) is None  # activity 0.2 < 0.4
    assert room.interval({"a": (127, 0.0)}) is None
    assert room.interval({"a": (10, 1.0)}) == ["a"]


def test_quiet_background_is_not_a_speaker() -> None:
    room = Room(SpeakerDetector(threshold=50))
    for _ in range(10):
        assert room.interval({"a": (60, 1.0)}) is None  # -60 dBov: below the threshold


def test_dominant_switch_needs_margin() -> None:
    room = Room(SpeakerDetector(switch_margin=5.0))
    assert room.interval({"a": (30, 1.0)}) == ["a"]
    assert room.interval({"a": (30, 1.0), "b": (27, 1.0)}) == ["a", "b"]
    for _ in range(5):  # b is 3 dB louder: not enough to take over
        assert room.interval({"a": (30, 1.0), "b": (27, 1.0)}) is None
    assert room.det.dominant == "a"
    got = [room.interval({"a": (30, 1.0), "b": (15, 1.0)}) for _ in range(4)]
    assert [g for g in got if g is not None] == [["b", "a"]]
    assert room.det.dominant == "b"


def test_dominant_leaving_hands_over() -> None:
    room = Room(SpeakerDetector(hold=0.6))
    room.interval({"a": (20, 1.0)})
    assert room.interval({"a": (20, 1.0), "b": (40, 1.0)}) == ["a", "b"]
    outs = [room.interval({"b": (40, 1.0)}) for _ in range(4)]
    # a's level fades at once, so b leads; a leaves the list after the hold.
    assert [o for o in outs if o is not None] == [["b", "a"], ["b"]]


def test_remove_reports_change() -> None:
    room = Room(SpeakerDetector())
    room.interval({"a": (20, 1.0), "b": (30, 1.0)})
    room.det.remove("a")
    room.det.remove("nobody")
    assert room.det.tick(room.now + TICK) == ["b"]


def test_trust_voice_flag() -> None:
    det = SpeakerDetector(trust_voice_flag=True)
    for _ in range(PACKETS_PER_TICK):
        det.on_audio_level("a", 10, False, 0.0)
    assert det.tick(0.3) is None
    for _ in range(PACKETS_PER_TICK):
        det.on_audio_level("a", 10, True, 0.3)
    assert det.tick(0.6) == ["a"]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SpeakerDetector(threshold=200)
    with pytest.raises(ValueError):
        SpeakerDetector(smoothing=0.0)


PATTERN = st.lists(
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.tuples(st.integers(0, 127), st.sampled_from([0.0, 0.2, 0.5, 1.0])),
        max_size=4,
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(PATTERN)
def test_emissions_are_changes_of_plausible_speakers(
    pattern: list[dict[str, tuple[int, float]]],
) -> None:
    det = SpeakerDetector(hold=1.5)
    room = Room(det)
    last: list[str] = []
    loud_at: dict[str, list[float]] = {}
    for talk in pattern:
        start = room.now
        for pid, (level, share) in talk.items():
            if level <= det.threshold and round(share * PACKETS_PER_TICK):
                loud_at.setdefault(pid, []).append(start)
        out = room.interval(talk)
        if out is None:
            continue
        assert out != last  # only changes are reported
        assert len(out) == len(set(out))
        for pid in out:
            # A speaker was loud recently (within the hold plus smoothing slack).
            assert any(room.now - t <= det.hold + 3 * TICK for t in loud_at.get(pid, []))
        last = out
    assert det.active_speakers == last
    # Steady state: the same pattern forever makes no further messages.
    steady = pattern[-1]
    for _ in range(20):
        room.interval(steady)
    assert all(room.interval(steady) is None for _ in range(5))
