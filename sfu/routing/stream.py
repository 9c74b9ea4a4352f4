"""RecvStream: one incoming RTP stream (one SSRC) of a published track.

Bind time (when the publish offer is answered): SSRC, payload types, clock rate, extension
id translation, keyframe detector. Packet time (`receive`): parse the header into a reused
RtpHeader, undo RTX, update receive stats and the NACK generator, keep the packet for
retransmission, detect keyframes and audio level, then hand one shared bytearray to the
track's DownTracks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.keyframe import KeyframeRequester
from sfu.nack import NackGenerator, RetransmissionBuffer
from sfu.rtp.ext import read_audio_level
from sfu.rtp.h264 import is_h264_keyframe
from sfu.rtp.packet import RtpHeader, find_extension
from sfu.rtp.vp8 import Vp8Descriptor, is_vp8_keyframe
from sfu.rtpstats import ReceiveStats

if TYPE_CHECKING:
    from sfu.routing.track import PublishedTrack

_U16 = struct.Struct("!H")
_SEQ_TS_SSRC = struct.Struct("!HII")

KeyframeFn = Callable[[bytes, int, int], bool]


def keyframe_detector(codec_name: str) -> KeyframeFn | None:
    name = codec_name.lower()
    if name == "vp8":
        return is_vp8_keyframe
    if name == "h264":
        return is_h264_keyframe
    return None


def identity_ext_map(ext_map: bytes) -> bool:
    return all(ext_map[i] == i for i in range(len(ext_map)))


# Data length of the extensions whose size is fixed (others: any).
EXT_DATA_LENGTH = {
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 3,
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 1,
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": 2,
}


def build_ext_lengths(forwarded: dict[str, int]) -> bytes:
    """Subscribers' extension id -> required data length (0: any)."""
    lengths = bytearray(256)
    for uri, ext_id in forwarded.items():
        lengths[ext_id] = EXT_DATA_LENGTH.get(uri, 0)
    return bytes(lengths)


def build_ext_map(publisher_ids: dict[str, int], forwarded: dict[str, int]) -> bytes:
    """Publisher extension id -> the id subscribers know it by; 0 erases the element.

    Extensions that describe the publisher's own session (mid, rid, repaired-rid) must not
    reach subscribers, whose m-sections have other mids: they are erased (zeroed, which
    RFC 8285 parsers skip as padding), as is anything not forwarded.
    """
    m = bytearray(256)  # unknown ids erase
    for uri, pub_id in publisher_ids.items():
        if 0 < pub_id < 256 and uri in forwarded:
            m[pub_id] = forwarded[uri]
    return bytes(m)


class RecvStream:
    __slots__ = (
        "track", "ssrc", "rtx_ssrc", "payload_type", "rtx_payload_type", "clock_rate", "is_video",
        "keyframe_fn", "nack", "stats", "buffer", "restarts", "ext_map", "ext_lengths", "translate_ext",
        "audio_level_id", "keyframes", "packets", "bytes", "rtx_packets", "padding_packets",
        "sr_ntp", "sr_rtp", "sr_at", "keyframe_requester", "_hdr", "counters", "nack_enabled",
        "fraction_lost", "arm_nack", "_vp8",
    )

    def __init__(self, track: PublishedTrack, ssrc: int, rtx_ssrc: int | None, payload_type: int,
                 rtx_payload_type: int | None, clock_rate: int, codec_name: str, ext_map: bytes,
                 audio_level_id: int, nack_enabled: bool, counters: object, ext_lengths: bytes = bytes(256),
                 arm_nack: Callable[[], None] | None = None) -> None:
        self.track = track
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type
        self.clock_rate = clock_rate
        self.is_video = track.kind == "video"
        self.keyframe_fn = keyframe_detector(codec_name) if self.is_video else None
        # VP8: once a DownTrack of the track switched source (its PictureIDs may be rewritten), the
        # descriptor is read once a packet for all of them; until then only the keyframe bit is.
        self._vp8 = Vp8Descriptor() if self.is_video and codec_name.lower() == "vp8" else None
        self.nack_enabled = nack_enabled
        self.nack = NackGenerator()
        # RFC 3550 A.1 probation: a jump of more than max_dropout is forwarded only once the
        # next packet confirms it (a restarted source), so one forged seq cannot stall the
        # stream; late retransmissions up to max_misorder behind are still accepted.
        self.stats = ReceiveStats(max_misorder=512)
        # NACKs come within a round trip or two: 128 video packets are ~1.1 s at 1 Mbps
        # (~110 packets/s) and ~0.45 s at 2.5 Mbps; a larger ring only costs memory, ~1 KB a slot.
        self.buffer = RetransmissionBuffer(128 if self.is_video else 64)
        self.restarts = 0
        self.ext_map = ext_map  # publisher ext id -> subscribers' id, 0: erase (256 entries)
        self.ext_lengths = ext_lengths
        self.translate_ext = not identity_ext_map(ext_map)
        self.audio_level_id = audio_level_id  # in the SFU's numbering
        self.keyframe_requester = KeyframeRequester()
        self.keyframes = 0
        self.packets = 0
        self.bytes = 0
        self.rtx_packets = 0
        self.padding_packets = 0
        self.sr_ntp = 0  # the publisher's last SR: NTP time (64 bit) and RTP time
        self.sr_rtp = 0
        self.sr_at = 0.0
        self.fraction_lost = 0.0  # in the last report interval
        self.arm_nack = arm_nack or _nothing  # asks the worker to run its NACK tick soon (RoomHooks.arm_nack)
        self._hdr = RtpHeader()
        self.counters = counters

    def receive(self, data: bytes, now: float) -> None:
        """One decrypted RTP packet of this stream (or of its RTX stream)."""
        hdr = self._hdr
        if not hdr.load(data):
            self.counters.drops["rtp_malformed"] += 1  # type: ignore[attr-defined]
            return
        if hdr.ssrc == self.rtx_ssrc or (hdr.payload_type == self.rtx_payload_type and self.rtx_payload_type):
            if hdr.payload_length < 2:  # RTX padding (bandwidth probes): nothing to recover
                self.padding_packets += 1
                return
            data = self._unwrap_rtx(hdr)
            self.rtx_packets += 1
            if not hdr.load(data):
                return
        elif hdr.payload_type != self.payload_type:
            self.counters.drops["rtp_unknown_payload_type"] += 1  # type: ignore[attr-defined]
            return
        if hdr.payload_length == 0:  # padding-only: probes, never forwarded
            self.padding_packets += 1
            return
        seq = hdr.seq
        stats = self.stats
        ext_seq = stats.on_packet(seq, hdr.timestamp, now, self.clock_rate, hdr.size)
        if ext_seq < 0:
            self.counters.drops["rtp_seq_jump"] += 1  # type: ignore[attr-defined]
            return
        if stats.restarts != self.restarts:  # the publisher restarted its sequence
            self.restarts = stats.restarts
            self.nack.reset()
            if self.track.source is self:
                for dt in self.track.downtracks:
                    dt.switch_source()
                self.track.request_keyframe(now)
        nack = self.nack
        nack.on_packet(seq, now)
        if nack.duplicate:  # e.g. an RTX probe repeating a packet that already arrived
            self.counters.drops["rtp_duplicate"] += 1  # type: ignore[attr-defined]
            return
        if self.nack_enabled and nack.missing_count:  # a gap: NACK it soon (no ticker runs otherwise)
            self.arm_nack()
        self.packets += 1
        self.bytes += hdr.size
        self.buffer.store(ext_seq, data, now)
        keyframe = False
        vp8 = self._vp8 if self.track.rewrite_vp8 else None
        if vp8 is not None:
            if vp8.load(data, hdr.payload_offset, hdr.payload_offset + hdr.payload_length):
                keyframe = vp8.keyframe
            else:
                vp8 = None
        elif self.keyframe_fn is not None:
            keyframe = self.keyframe_fn(data, hdr.payload_offset, hdr.payload_offset + hdr.payload_length)
        if keyframe:
            self.keyframes += 1
            self.counters.keyframes_in += 1  # type: ignore[attr-defined]
            self.keyframe_requester.on_keyframe(now)
        pkt = bytearray(data)
        if self.translate_ext and hdr.extension:
            self.translate_ext_into(pkt, hdr)
        track = self.track
        if self.audio_level_id and hdr.extension:
            loc = _find_one_byte(pkt, hdr, self.audio_level_id)
            if loc is not None:
                level = read_audio_level(pkt, loc[0], loc[1])
                if level is not None:
                    track.on_audio_level(level[1], level[0], now)
        if track.source is self:
            for dt in track.downtracks:
                dt.write(pkt, hdr, ext_seq, keyframe, vp8, now)

    def _unwrap_rtx(self, hdr: RtpHeader) -> bytes:
        """RFC 4588: the original packet is the RTX payload minus its 2-byte OSN."""
        buf = hdr.buf
        off = hdr.payload_offset
        osn = _U16.unpack_from(buf, off)[0]
        out = bytearray(off + hdr.payload_length - 2)
        out[:off] = buf[:off]
        out[off:] = buf[off + 2: off + hdr.payload_length]
        out[0] &= 0xDF  # padding stripped
        out[1] = (out[1] & 0x80) | self.payload_type
        _SEQ_TS_SSRC.pack_into(out, 2, osn, hdr.timestamp, self.ssrc)
        return bytes(out)

    def translate_ext_into(self, pkt: bytearray, hdr: RtpHeader) -> None:
        """Renumber header extensions for subscribers, erasing what must not reach them, in place."""
        i, end, m, lengths = hdr.ext_offset, hdr.ext_offset + hdr.ext_length, self.ext_map, self.ext_lengths
        if hdr.ext_profile == 0xBEDE:  # one-byte form
            while i < end:
                b = pkt[i]
                if b == 0:
                    i += 1
                    continue
                ext_id = b >> 4
                if ext_id == 15:
                    return
                size = 2 + (b & 0x0F)
                if i + size > end:  # runs past the block: malformed, erased to the block's end
                    pkt[i:end] = bytes(end - i)
                    return
                new_id = m[ext_id]
                need = lengths[new_id]
                if new_id == 0 or new_id > 14 or (need and need != size - 1):  # erase: unknown or malformed
                    pkt[i:i + size] = bytes(size)
                else:
                    pkt[i] = (new_id << 4) | (b & 0x0F)
                i += size
        elif hdr.ext_profile & 0xFFF0 == 0x1000:  # two-byte form
            while i < end:
                ext_id = pkt[i]
                if ext_id == 0:
                    i += 1
                    continue
                if i + 1 >= end:  # an id without its length: erased
                    pkt[i] = 0
                    return
                size = 2 + pkt[i + 1]
                if i + size > end:
                    pkt[i:end] = bytes(end - i)
                    return
                new_id = m[ext_id]
                need = lengths[new_id]
                if new_id == 0 or (need and need != size - 2):
                    pkt[i:i + size] = bytes(size)
                else:
                    pkt[i] = new_id
                i += size

    def request_keyframe(self, now: float) -> bool:
        return self.keyframe_requester.request(now, "subscriber")

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.sr_ntp, self.sr_rtp, self.sr_at = ntp, rtp_ts, now

    def report_block(self, now: float) -> object:
        """The RR block for this stream; remembers the interval's loss for quality."""
        block = self.stats.report_block(self.ssrc, now)
        self.fraction_lost = block.fraction_lost / 256.0
        return block

    def quality_inputs(self) -> dict[str, float]:
        return {"fraction_lost": self.fraction_lost, "jitter_ms": round(self.stats.jitter_ms, 3), "rtt_ms": 0.0}


def _nothing() -> None:
    pass


def _find_one_byte(pkt: bytearray, hdr: RtpHeader, want: int) -> tuple[int, int] | None:
    """Find an extension in the translated packet (hdr still describes its layout)."""
    return find_extension(pkt, hdr.ext_profile, hdr.ext_offset, hdr.ext_length, want)
