"""What the SFU can route: codecs, RTCP feedback, header extensions; and codec matching.

The SFU never decodes, so "support" means it can parse the payload descriptor (VP8, H.264
NAL type) and forward the stream to a subscriber that negotiated the same codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.sdp.model import KIND_AUDIO, KIND_VIDEO, Codec, RtcpFb

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

CODEC_OPUS = "opus"
CODEC_VP8 = "VP8"
CODEC_H264 = "H264"
CODEC_RTX = "rtx"

FB_NACK = RtcpFb("nack")
FB_NACK_PLI = RtcpFb("nack", "pli")
FB_CCM_FIR = RtcpFb("ccm", "fir")
FB_GOOG_REMB = RtcpFb("goog-remb")
FB_TRANSPORT_CC = RtcpFb("transport-cc")

VIDEO_FEEDBACK = (FB_GOOG_REMB, FB_TRANSPORT_CC, FB_CCM_FIR, FB_NACK, FB_NACK_PLI)

H264_CONSTRAINED_BASELINE = 1
H264_BASELINE = 2
H264_MAIN = 3
H264_HIGH = 4
H264_OTHER = 5

H264_PREFERRED_PROFILE_LEVEL_ID = "42e01f"


@dataclass(frozen=True)
class CodecCapability:
    """A codec the SFU routes; `fmtp` is what it writes in answers and offers."""

    kind: str
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: tuple[tuple[str, str | None], ...] = ()
    rtcp_fb: tuple[RtcpFb, ...] = ()
    rtx: bool = False

    def fmtp_value(self, key: str) -> str | None:
        for k, v in self.fmtp:
            if k == key:
                return v
        return None


@dataclass(frozen=True)
class HeaderExtensionCapability:
    """A header extension kept in answers; `id` is used in the SFU's own offers.

    `downstream` False keeps it out of subscribe offers (rid/repaired-rid: the SFU sends
    one layer per subscriber).
    """

    uri: str
    kinds: tuple[str, ...]
    id: int
    downstream: bool = True


@dataclass(frozen=True)
class MediaCapabilities:
    """Codecs in preference order, header extensions, simulcast and offer options.

    `recycle_stopped_sections` lets a new subscribe track take the m-line of a stopped
    section (with a new mid). Chromium handles that; aiortc 1.16 does not (it re-labels the
    old transceiver), so it is off by default and stopped sections accumulate instead.
    """

    codecs: tuple[CodecCapability, ...]
    header_extensions: tuple[HeaderExtensionCapability, ...]
    simulcast: bool = True
    max_simulcast_layers: int = 3
    extmap_allow_mixed: bool = True
    rtcp_rsize: bool = True
    recycle_stopped_sections: bool = False

    def codecs_for(self, kind: str) -> tuple[CodecCapability, ...]:
        return tuple(c for c in self.codecs if c.kind == kind)

    def extensions_for(self, kind: str) -> tuple[HeaderExtensionCapability, ...]:
        return tuple(e for e in self.header_extensions if kind in e.kinds)

    def codec_named(self, kind: str, name: str) -> CodecCapability | None:
        lower = name.lower()
        for c in self.codecs:
            if c.kind == kind and c.name.lower() == lower:
                return c
        return None


OPUS = CodecCapability(
    kind=KIND_AUDIO,
    name=CODEC_OPUS,
    clock_rate=48000,
    channels=2,
    fmtp=(("minptime", "10"), ("useinbandfec", "1")),
    rtcp_fb=(FB_TRANSPORT_CC,),
)
VP8 = CodecCapability(kind=KIND_VIDEO, name=CODEC_VP8, clock_rate=90000, rtcp_fb=VIDEO_FEEDBACK, rtx=True)
H264 = CodecCapability(
    kind=KIND_VIDEO,
    name=CODEC_H264,
    clock_rate=90000,
    fmtp=(
        ("level-asymmetry-allowed", "1"),
        ("packetization-mode", "1"),
        ("profile-level-id", H264_PREFERRED_PROFILE_LEVEL_ID),
    ),
    rtcp_fb=VIDEO_FEEDBACK,
    rtx=True,
)

BOTH = (KIND_AUDIO, KIND_VIDEO)
DEFAULT_HEADER_EXTENSIONS = (
    HeaderExtensionCapability(URI_AUDIO_LEVEL, (KIND_AUDIO,), 1),
    HeaderExtensionCapability(URI_ABS_SEND_TIME, BOTH, 2),
    HeaderExtensionCapability(URI_TRANSPORT_CC, BOTH, 3),
    HeaderExtensionCapability(URI_MID, BOTH, 4),
    HeaderExtensionCapability(URI_RID, (KIND_VIDEO,), 10, downstream=False),
    HeaderExtensionCapability(URI_REPAIRED_RID, (KIND_VIDEO,), 11, downstream=False),
)

DEFAULT_CAPABILITIES = MediaCapabilities(codecs=(OPUS, VP8, H264), header_extensions=DEFAULT_HEADER_EXTENSIONS)


def h264_profile(profile_level_id: str) -> int:
    """Profile class of an H.264 profile-level-id (RFC 6184 profile_idc + profile-iop)."""
    if len(profile_level_id) != 6:
        return H264_OTHER
    try:
        idc = int(profile_level_id[0:2], 16)
        iop = int(profile_level_id[2:4], 16)
        int(profile_level_id[4:6], 16)
    except ValueError:
        return H264_OTHER
    if idc == 0x64:
        return H264_HIGH
    if iop & 0x0F:  # constraint_set4/5 and the reserved bits are zero for these profiles
        return H264_OTHER
    if idc == 0x42:
        return H264_CONSTRAINED_BASELINE if iop & 0x40 else H264_BASELINE
    if idc == 0x4D:
        return H264_CONSTRAINED_BASELINE if iop & 0x80 else H264_MAIN
    if idc == 0x58:
        return H264_CONSTRAINED_BASELINE if iop & 0xC0 == 0xC0 else H264_OTHER
    return H264_OTHER


def h264_rank(codec: Codec, capability: CodecCapability) -> int | None:
    """Preference of an offered H.264 payload type (lower is better), None when unusable.

    Packetization mode must equal the capability's; the profile must be constrained
    baseline (0: the preferred profile-level-id exactly, 1: another constrained baseline)
    or the 0x42 baseline class (2), which WebRTC encoders fill with constrained baseline.
    """
    if (codec.fmtp_value("packetization-mode") or "0") != (capability.fmtp_value("packetization-mode") or "0"):
        return None
    plid = (codec.fmtp_value("profile-level-id") or "42000a").lower()
    wanted = (capability.fmtp_value("profile-level-id") or H264_PREFERRED_PROFILE_LEVEL_ID).lower()
    if plid == wanted:
        return 0
    profile = h264_profile(plid)
    if profile == H264_CONSTRAINED_BASELINE:
        return 1
    if profile == H264_BASELINE and plid.startswith("42"):
        return 2
    return None


def codec_rank(codec: Codec, kind: str, capability: CodecCapability) -> int | None:
    """Preference of an offered codec for a capability (lower is better), None when no match."""
    if codec.name is None or codec.name.lower() != capability.name.lower():
        return None
    if capability.kind != kind or codec.clock_rate != capability.clock_rate:
        return None
    if (codec.channels or 1) != capability.channels:
        return None
    if capability.name.lower() == CODEC_H264.lower():
        return h264_rank(codec, capability)
    return 0


def is_rtx(codec: Codec) -> bool:
    return codec.name is not None and codec.name.lower() == CODEC_RTX
