"""Inputs and results of negotiation: what the SFU offers, receives and sends per mid.

These are the bind-time facts the routing layer resolves once per stream: payload types,
header extension ids, SSRCs/rids, RTCP feedback, and the remote DTLS/ICE parameters.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field

from sfu.sdp.capabilities import (
    FB_CCM_FIR,
    FB_GOOG_REMB,
    FB_NACK,
    FB_NACK_PLI,
    FB_TRANSPORT_CC,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
)
from sfu.sdp.model import KIND_AUDIO, KIND_VIDEO, Candidate, Fingerprint, RtcpFb

DTLS_SERVER = "server"
DTLS_CLIENT = "client"

ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


@dataclass(frozen=True)
class LocalTransportParams:
    """The worker's side: ICE-lite credentials, DTLS certificate fingerprint, host candidates.

    `candidates` are (ip, port) pairs, one per listen ip (or the announced ip), all on the
    worker's port; `tcp_candidates` the same on the worker's ICE-TCP port (may be empty). `session_id` goes on the o= line; 0 derives a stable one from the ufrag.
    """

    ice_ufrag: str
    ice_pwd: str
    fingerprint: Fingerprint
    candidates: tuple[tuple[str, int], ...]
    session_id: int = 0
    # (ip, port) of passive ICE-TCP candidates (RFC 6544), written after the UDP ones.
    tcp_candidates: tuple[tuple[str, int], ...] = ()

    def validate(self) -> None:
        """Raise ValueError for arguments no peer would accept."""
        if not 4 <= len(self.ice_ufrag) <= 256 or not set(self.ice_ufrag) <= ICE_CHARS:
            raise ValueError("ice_ufrag must be 4..256 ice-chars")
        if not 22 <= len(self.ice_pwd) <= 256 or not set(self.ice_pwd) <= ICE_CHARS:
            raise ValueError("ice_pwd must be 22..256 ice-chars")
        if not self.fingerprint.algorithm or not self.fingerprint.value or " " in self.fingerprint.value:
            raise ValueError("fingerprint needs an algorithm and a value")
        if not self.candidates:
            raise ValueError("at least one candidate is needed")
        for ip, port in self.candidates + self.tcp_candidates:
            ipaddress.ip_address(ip)
            if not 1 <= port <= 65535:
                raise ValueError(f"candidate port {port} is outside 1..65535")

    def origin_session_id(self) -> int:
        if self.session_id:
            return self.session_id
        return zlib.crc32(self.ice_ufrag.encode()) << 20 | 1


@dataclass(frozen=True)
class NegotiatedCodec:
    """One negotiated codec on one m-section, with its RTX payload type if any."""

    kind: str
    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: tuple[tuple[str, str | None], ...] = ()
    rtcp_fb: tuple[RtcpFb, ...] = ()
    rtx_payload_type: int | None = None

    @property
    def mime_type(self) -> str:
        return f"{self.kind}/{self.name}"

    def fmtp_value(self, key: str) -> str | None:
        lower = key.lower()
        for k, v in self.fmtp:
            if k.lower() == lower:
                return v
        return None

    def has_feedback(self, fb: RtcpFb) -> bool:
        return fb in self.rtcp_fb

    @property
    def nack(self) -> bool:
        return FB_NACK in self.rtcp_fb

    @property
    def pli(self) -> bool:
        return FB_NACK_PLI in self.rtcp_fb

    @property
    def fir(self) -> bool:
        return FB_CCM_FIR in self.rtcp_fb

    @property
    def remb(self) -> bool:
        return FB_GOOG_REMB in self.rtcp_fb

    @property
    def transport_cc(self) -> bool:
        return FB_TRANSPORT_CC in self.rtcp_fb


@dataclass(frozen=True)
class ExtensionIds:
    """Negotiated header extension ids by role; 0 when not negotiated."""

    mid: int = 0
    rid: int = 0
    repaired_rid: int = 0
    abs_send_time: int = 0
    transport_cc: int = 0
    audio_level: int = 0

    @classmethod
    def from_map(cls, by_uri: dict[str, int]) -> ExtensionIds:
        return cls(
            mid=by_uri.get(URI_MID, 0),
            rid=by_uri.get(URI_RID, 0),
            repaired_rid=by_uri.get(URI_REPAIRED_RID, 0),
            abs_send_time=by_uri.get(URI_ABS_SEND_TIME, 0),
            transport_cc=by_uri.get(URI_TRANSPORT_CC, 0),
            audio_level=by_uri.get(URI_AUDIO_LEVEL, 0),
        )


@dataclass(frozen=True)
class Encoding:
    """One incoming stream of a track: by SSRC (with its RTX SSRC), or by rid (simulcast)."""

    ssrc: int | None = None
    rtx_ssrc: int | None = None
    rid: str | None = None
    paused: bool = False


@dataclass(frozen=True)
class RemoteTransportParams:
    """The peer's ICE and DTLS parameters, and the DTLS role the SFU takes."""

    ice_ufrag: str
    ice_pwd: str
    fingerprints: tuple[Fingerprint, ...]
    setup: str
    dtls_role: str
    ice_lite: bool = False
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class PublishTrack:
    """What the SFU receives on one publish m-section."""

    mid: str
    kind: str
    codec: NegotiatedCodec
    header_extensions: dict[str, int]
    extension_ids: ExtensionIds
    encodings: tuple[Encoding, ...]
    simulcast: bool = False
    stream_id: str | None = None
    track_id: str | None = None
    cname: str | None = None
    rtcp_rsize: bool = False


@dataclass(frozen=True)
class PublishParams:
    """Result of answering a publish offer."""

    transport: RemoteTransportParams
    tracks: tuple[PublishTrack, ...]
    rejected: tuple[tuple[str | None, str], ...] = ()
    bundle_mids: tuple[str, ...] = ()
    extmap_allow_mixed: bool = False

    def track(self, mid: str) -> PublishTrack | None:
        for t in self.tracks:
            if t.mid == mid:
                return t
        return None


@dataclass(frozen=True)
class OutTrack:
    """A track the SFU sends to a subscriber (one m-section of the subscribe offer).

    `codec` is the publisher's negotiated codec; its payload types are kept when they do not
    collide with another codec in the same BUNDLE group. `mid` pins the section (else it is
    found by track id or newly allocated). `cname` defaults to the stream id.
    """

    kind: str
    stream_id: str
    track_id: str
    ssrc: int
    codec: NegotiatedCodec
    rtx_ssrc: int | None = None
    mid: str | None = None
    cname: str | None = None

    def validate(self) -> None:
        if self.kind not in (KIND_AUDIO, KIND_VIDEO) or self.codec.kind != self.kind:
            raise ValueError(f"track {self.track_id!r}: kind {self.kind!r} / codec kind {self.codec.kind!r}")
        if not self.stream_id or not self.track_id or any(c.isspace() for c in self.stream_id + self.track_id):
            raise ValueError(f"track {self.track_id!r}: stream and track ids must be non-empty tokens")
        for s in (self.ssrc, self.rtx_ssrc):
            if s is not None and not 0 < s <= 0xFFFFFFFF:
                raise ValueError(f"track {self.track_id!r}: SSRC {s} out of range")


@dataclass(frozen=True)
class SubscribeTrack:
    """What the subscriber accepted on one subscribe m-section."""

    mid: str
    kind: str
    codec: NegotiatedCodec
    header_extensions: dict[str, int]
    extension_ids: ExtensionIds
    ssrc: int | None
    rtx_ssrc: int | None
    stream_id: str | None
    track_id: str | None
    direction: str
    rtcp_rsize: bool = False


@dataclass(frozen=True)
class SubscribeParams:
    """Result of applying a subscriber's answer to the SFU's subscribe offer."""

    transport: RemoteTransportParams
    tracks: tuple[SubscribeTrack, ...]
    rejected: tuple[tuple[str | None, str], ...] = ()
    extmap_allow_mixed: bool = False
    stopped_mids: tuple[str, ...] = field(default=())

    def track(self, mid: str) -> SubscribeTrack | None:
        for t in self.tracks:
            if t.mid == mid:
                return t
        return None
