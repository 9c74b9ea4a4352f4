"""Ports of the routing package: what a participant's two sides need from outside.

`MediaTransport` is what a side sends through (a WebRtcTransport, or a fake in tests);
`TransportFactory` makes one for a side's handler. `RoomHooks` are the room's callbacks,
handed to a participant when it is made (never assigned later or fetched back from the
room): transport state changes, the audio level sink, and arming the NACK tick. Keyframe
requests go the other way, from a PublishedTrack to the publisher that feeds it
(`KeyframeSender`, given to the track when the publisher makes it).

Bound once per participant; on the packet path a hook is one attribute load and a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sfu.sdp import LocalTransportParams

if TYPE_CHECKING:
    from sfu.routing.stream import RecvStream


class MediaTransport(Protocol):
    """What routing needs of a WebRtcTransport (sfu.transport.webrtc_transport)."""

    def local_params(self) -> LocalTransportParams: ...
    def set_remote(self, ice_ufrag: str, ice_pwd: str, fingerprints: Any, dtls_role: str) -> None: ...
    def send_rtp(self, buf: bytes | bytearray) -> None: ...
    def send_rtcp(self, buf: bytes | bytearray) -> None: ...
    def close(self) -> None: ...


# make(handler, on_state(state, reason), label) -> transport
TransportFactory = Callable[[Any, Callable[[str, str], None], str], MediaTransport]

# Ask the publisher of a stream for a keyframe (PLI on its publish transport).
KeyframeSender = Callable[["RecvStream"], None]


def _nothing() -> None:
    pass


def _ignore_state(participant_id: str, which: str, state: str, reason: str) -> None:
    pass


def _ignore_level(participant_id: str, level: int, voice: bool, now: float) -> None:
    pass


@dataclass(frozen=True, slots=True)
class RoomHooks:
    """The room's side of a participant. Defaults do nothing (a participant alone in a test)."""

    # (participant id, "publish" | "subscribe", state, reason)
    on_transport_state: Callable[[str, str, str, str], None] = _ignore_state
    # (participant id, level in -dBov, voice activity, now): audio level extension values
    on_audio_level: Callable[[str, int, bool, float], None] = _ignore_level
    # a stream saw a gap: run the NACK tick soon
    arm_nack: Callable[[], None] = _nothing
