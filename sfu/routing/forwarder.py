"""Forwarder: what one DownTrack does with one packet of its track, as a translation.

For each packet the fan-out hands a DownTrack, `Forwarder.translate` decides drop or
forward and, when forwarding, returns a `Translation`: the rewritten sequence number,
timestamp, payload type, VP8 PictureID and TL0PICIDX (one small tuple, the only object a
forwarded packet costs here). The DownTrack writes them into the shared packet, sends it and
keeps its NACK history; the Forwarder holds the munging state:

- a keyframe wait: a DownTrack starts, and resumes after a source switch (reconnect,
  unmute), only at a keyframe its subscriber can receive (its transport is connected);
- sequence numbers continuous across source switches (`SeqMunger`), timestamps moved on by
  the time that passed (`TimestampMunger`), PictureID and TL0PICIDX continued likewise
  (`PictureIdMunger`, `Tl0PicIdxMunger`) so a decoder sees one picture sequence;
- the layer: `target_layer` is where layer choice will live. Today the track's source is
  one stream (its highest simulcast layer, or the only one), so every packet the track
  hands over is of the target layer.

Per packet: a method call and the two munges; for VP8 nothing more while PictureID and
TL0PICIDX pass unchanged (until the first source switch), else one munge per picture (cached
for the picture's other packets).
"""

from __future__ import annotations

from sfu.rtp.packet import RtpHeader
from sfu.rtp.seq import SeqMunger, TimestampMunger
from sfu.rtp.vp8 import PictureIdMunger, Tl0PicIdxMunger, Vp8Descriptor

LAYER_HIGHEST = -1  # forward the source as it is (no layer choice yet)


# LiveKit's "translation params": how a forwarded packet is rewritten, as one tuple
# (seq, timestamp, payload type, PictureID, TL0PICIDX). PictureID/TL0PICIDX -1: leave the
# packet's own (it has none, or they pass unchanged: no source switch yet).
Translation = tuple[int, int, int, int, int]


class Forwarder:
    __slots__ = ("is_video", "clock_rate", "payload_type", "receiver", "counters", "target_layer",
                 "waiting_keyframe", "needs_sync", "seq", "ts", "picture_id", "tl0picidx", "_pic_in", "_pic_out",
                 "_tl0_in", "_tl0_out", "_vp8_mapped", "_last_pic", "_last_tl0")

    def __init__(self, is_video: bool, clock_rate: int, payload_type: int, receiver: object,
                 counters: object) -> None:
        self.is_video = is_video
        self.clock_rate = clock_rate
        self.payload_type = payload_type  # the subscriber's (set when it answers)
        self.receiver = receiver  # the subscriber's transport: `.connected` says a keyframe can start it
        self.counters = counters
        self.target_layer = LAYER_HIGHEST
        self.waiting_keyframe = is_video
        self.needs_sync = False
        self.seq = SeqMunger(16)
        self.ts = TimestampMunger(32)
        self.picture_id: SeqMunger | None = None  # made at the first PictureID, at its width
        self.tl0picidx: SeqMunger | None = None
        self._pic_in = -1  # the last picture munged (its packets share the value)
        self._pic_out = -1
        self._tl0_in = -1
        self._tl0_out = -1
        # PictureID and TL0PICIDX pass unchanged until the first source switch (nothing is done
        # per packet; the old source's last values come with the switch); after it, the mungers map them.
        self._vp8_mapped = False
        self._last_pic = -1
        self._last_tl0 = -1

    def switch_source(self, last_picture_id: int = -1, last_tl0picidx: int = -1) -> None:
        """The track's source changed (reconnect, restart, unmute): continue from the next keyframe.
        `last_*`: the VP8 values the old source last carried (-1 unknown: the new ones pass as they are)."""
        if not self._vp8_mapped and not self.needs_sync:  # a second switch before the keyframe: the first counts
            self._last_pic = last_picture_id
            self._last_tl0 = last_tl0picidx
        self.needs_sync = True
        if self.is_video:
            self.waiting_keyframe = True

    def translate(self, hdr: RtpHeader, keyframe: bool, vp8: Vp8Descriptor | None, now: float) -> Translation | None:
        """The rewrite of this packet for this DownTrack, or None: drop it."""
        seq = hdr.seq
        if self.waiting_keyframe:
            # Start (or resume) only at a keyframe the subscriber can actually receive: one
            # sent before its DTLS is up would be lost and leave it with undecodable deltas.
            if not keyframe or not self.receiver.connected:  # type: ignore[attr-defined]
                self.counters.keyframe_waits += 1  # type: ignore[attr-defined]
                if self.seq.started and not self.needs_sync:
                    self.seq.drop(seq)
                return None
            self.waiting_keyframe = False
        if self.needs_sync:
            self.needs_sync = False
            if self.seq.started:
                self.seq.sync(seq)
                self.ts.sync(hdr.timestamp, now, self.clock_rate)
                if vp8 is not None:
                    self._sync_vp8(vp8)
        out_seq = self.seq.munge(seq)
        if out_seq is None:
            return None
        out_ts = self.ts.munge(hdr.timestamp, now)
        if vp8 is None or not self._vp8_mapped:
            return out_seq, out_ts, self.payload_type, -1, -1
        pic = vp8.picture_id
        if pic >= 0:
            if pic == self._pic_in:
                pic = self._pic_out
            else:
                mapped = self._munge_picture_id(pic, vp8.picture_id_bits)
                if mapped is None:  # a picture from before the last sync
                    return None
                pic = mapped
        tl0 = vp8.tl0picidx
        if tl0 >= 0:
            if tl0 == self._tl0_in:
                tl0 = self._tl0_out
            else:
                munger = self.tl0picidx
                if munger is None:
                    munger = self.tl0picidx = Tl0PicIdxMunger()
                out = munger.munge(tl0)
                if out is None:
                    return None
                self._tl0_in, self._tl0_out = tl0, out
                tl0 = out
        return out_seq, out_ts, self.payload_type, pic, tl0

    def picture_id_for(self, picture_id: int) -> int:
        """The outgoing PictureID of an incoming one already forwarded (a retransmission)."""
        if not self._vp8_mapped or picture_id < 0 or picture_id == self._pic_in or self.picture_id is None:
            return self._pic_out if picture_id == self._pic_in else picture_id
        out = self.picture_id.munge(picture_id)
        return picture_id if out is None else out

    def tl0picidx_for(self, tl0picidx: int) -> int:
        if not self._vp8_mapped or tl0picidx < 0 or tl0picidx == self._tl0_in or self.tl0picidx is None:
            return self._tl0_out if tl0picidx == self._tl0_in else tl0picidx
        out = self.tl0picidx.munge(tl0picidx)
        return tl0picidx if out is None else out

    def _munge_picture_id(self, pic: int, bits: int) -> int | None:
        munger = self.picture_id
        if munger is None or munger.bits != bits:
            # The first PictureID, or its width changed (7 <-> 15 bits): continue after the last one.
            start = None if munger is None else (munger.last_out + 1) & ((1 << bits) - 1)
            munger = self.picture_id = PictureIdMunger(bits, start)
        out = munger.munge(pic)
        if out is not None:
            self._pic_in, self._pic_out = pic, out
        return out

    def _sync_vp8(self, vp8: Vp8Descriptor) -> None:
        """A new source at its keyframe: its first picture follows the last one sent."""
        if not self._vp8_mapped:  # the first switch: the mungers start after the last values sent
            self._vp8_mapped = True
            if self._last_pic >= 0 and vp8.picture_id >= 0:
                bits = vp8.picture_id_bits
                self.picture_id = PictureIdMunger(bits, (self._last_pic + 1) & ((1 << bits) - 1))
            if self._last_tl0 >= 0 and vp8.tl0picidx >= 0:
                self.tl0picidx = Tl0PicIdxMunger((self._last_tl0 + 1) & 0xFF)
            self._pic_in = self._tl0_in = -1
            return
        if vp8.picture_id >= 0 and self.picture_id is not None and self.picture_id.bits == vp8.picture_id_bits:
            self.picture_id.sync(vp8.picture_id)
        if vp8.tl0picidx >= 0 and self.tl0picidx is not None:
            self.tl0picidx.sync(vp8.tl0picidx)
        self._pic_in = self._tl0_in = -1
