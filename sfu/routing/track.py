"""PublishedTrack: one track a participant publishes, as a slot that outlives reconnects.

A slot is (publisher, kind, ordinal). When the publisher reconnects, a new RecvStream becomes
the slot's source and every DownTrack continues the same outgoing stream from the next
keyframe. The DownTrack list is copy-on-write: fan-out iterates a tuple that a join or
leave replaces, never mutates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.sdp import NegotiatedCodec

if TYPE_CHECKING:
    from sfu.routing.downtrack import DownTrack
    from sfu.routing.stream import RecvStream


class PublishedTrack:
    __slots__ = ("track_id", "publisher_id", "kind", "codec", "source", "downtracks", "muted", "stream_id",
                 "_send_keyframe_request", "_audio_level", "published_at", "ended", "rewrite_vp8")

    def __init__(self, track_id: str, publisher_id: str, kind: str, codec: NegotiatedCodec,
                 send_keyframe_request: Callable[[RecvStream], None],
                 audio_level: Callable[[str, int, bool, float], None] | None) -> None:
        self.track_id = track_id
        self.publisher_id = publisher_id
        self.stream_id = publisher_id
        self.kind = kind
        self.codec = codec
        self.source: RecvStream | None = None
        self.ended: RecvStream | None = None  # the source a reconnect ended, until the next one
        self.rewrite_vp8 = False  # a DownTrack switched source: its streams hand over VP8 descriptors
        self.downtracks: tuple[DownTrack, ...] = ()
        self.muted = False
        self._send_keyframe_request = send_keyframe_request
        self._audio_level = audio_level
        self.published_at = 0.0

    def set_source(self, stream: RecvStream, now: float) -> None:
        """A new incoming stream feeds this slot (first publish, reconnect, new page): every
        DownTrack continues its own sequence from the next keyframe."""
        previous = self.source
        if previous is not stream:
            for dt in self.downtracks:
                dt.switch_source()  # while self.source is still the one it replaces
        self.source = stream
        self.ended = None
        if self.kind == "video":
            self.request_keyframe(now)

    def end_source(self) -> None:
        """The publisher's connection is gone (a new page): no source until it publishes again."""
        if self.source is not None:
            self.ended = self.source
        self.source = None

    def add_downtrack(self, dt: DownTrack) -> None:
        self.downtracks = (*self.downtracks, dt)

    def remove_downtrack(self, dt: DownTrack) -> None:
        self.downtracks = tuple(d for d in self.downtracks if d is not dt)

    def set_muted(self, muted: bool) -> None:
        self.muted = muted
        for dt in self.downtracks:
            dt.muted = muted
            if not muted:
                dt.switch_source()  # resume at a keyframe, continuing the sequence

    def request_keyframe(self, now: float) -> None:
        source = self.source
        if source is None or self.kind != "video":
            return
        if source.request_keyframe(now):
            self._send_keyframe_request(source)

    def on_audio_level(self, level: int, voice: bool, now: float) -> None:
        if self._audio_level is not None and not self.muted:
            self._audio_level(self.publisher_id, level, voice, now)

    def info(self) -> dict[str, object]:
        return {"track_id": self.track_id, "participant_id": self.publisher_id, "kind": self.kind,
                "codec": self.codec.name, "muted": self.muted}
