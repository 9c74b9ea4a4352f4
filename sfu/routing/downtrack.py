"""DownTrack: one published track as one subscriber receives it.

Each subscriber sees one continuous stream per track: its own SSRC, a sequence number,
timestamp and VP8 PictureID/TL0PICIDX that continue across publisher reconnects, mutes and
keyframe waits, and the payload type the subscriber negotiated. Its Forwarder
(sfu.routing.forwarder) decides, per packet, drop or forward and the rewritten values (a
Translation); `write` puts them into the shared packet in place (a rewritten
PictureID/TL0PICIDX is put back after the send, for the next DownTrack), sends it and
remembers it; nothing else is copied. A ring of
recent outgoing seqs maps a subscriber's NACK back to the publisher stream's retransmission
buffer; a NACK is answered per ``sfu.nack.ResendPolicy`` (each packet once per RTT, a few
times in all, within the subscriber's byte budget), with the refusals counted by reason.
"""

from __future__ import annotations

import struct
from array import array
from typing import TYPE_CHECKING

from sfu.nack import (
    REFUSED_BUDGET,
    REFUSED_DUPLICATE,
    REFUSED_TOO_MANY,
    REFUSED_TOO_SOON,
    RESEND_OK,
    RESEND_TOO_SOON,
    ResendBudget,
    resend_verdict,
)
from sfu.routing.forwarder import Forwarder
from sfu.rtp.packet import RtpHeader
from sfu.rtp.rtcp.sdes import SourceDescription
from sfu.rtp.vp8 import Vp8Descriptor, set_picture_id, set_tl0picidx
from sfu.rtpstats import SendStats

if TYPE_CHECKING:
    from sfu.routing.counters import WorkerCounters
    from sfu.routing.stream import RecvStream
    from sfu.routing.track import PublishedTrack

_SEQ_TS_SSRC = struct.Struct("!HII")
_U16 = struct.Struct("!H")
# One subscriber's PLI/FIR for one DownTrack are honoured at most this often (s). The stream's
# KeyframeRequester lets a new request through at once when a keyframe arrived since the last
# one (a new subscriber missed it), so a publisher that answers quickly would otherwise be held
# to one keyframe per request by a single subscriber sending PLI after PLI.
KEYFRAME_REQUEST_INTERVAL = 0.5

_HISTORY = 512  # outgoing packets remembered for NACK answers (power of two; ~4 s of video)
_HMASK = _HISTORY - 1


class DownTrack:
    __slots__ = (
        "track", "subscriber_id", "transport", "mid", "ssrc", "rtx_ssrc", "payload_type", "rtx_payload_type",
        "clock_rate", "is_video", "forwarder", "bound", "muted", "packets",
        "bytes", "rtx_seq", "retransmits", "stats", "cname", "counters", "_gen", "_h_seq", "_h_ext", "_h_ts",
        "_h_gen", "_h_resends", "_h_resent_at", "_h_mark", "_nack_epoch", "_last_in_ts", "_last_out_ts", "_hdr",
        "nack", "paused", "payload_bytes", "budget", "_pli_at", "_vp8",
    )

    def __init__(self, track: PublishedTrack, subscriber_id: str, transport: object, ssrc: int, rtx_ssrc: int,
                 cname: str, counters: WorkerCounters, budget: ResendBudget | None = None) -> None:
        self.track = track
        self.subscriber_id = subscriber_id
        self.transport = transport
        self.mid = ""
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.payload_type = track.codec.payload_type
        self.rtx_payload_type = 0
        self.clock_rate = track.codec.clock_rate
        self.is_video = track.kind == "video"
        self.forwarder = Forwarder(self.is_video, self.clock_rate, self.payload_type, transport, counters)
        self.bound = False  # the subscriber's answer accepted this track
        self.muted = False  # the publisher muted, or the provider muted them
        self.paused = False  # the subscriber asked not to receive it
        self.nack = False
        self.packets = 0
        self.bytes = 0
        self.payload_bytes = 0
        self.rtx_seq = 1
        self.retransmits = 0
        self.stats = SendStats(track.codec.clock_rate)
        self.cname = cname
        self.counters = counters
        self._gen = 0
        # compact rings (8 bytes a slot, no int objects kept alive)
        self._h_seq = array("q", [-1]) * _HISTORY
        self._h_ext = array("q", bytes(8 * _HISTORY))
        self._h_ts = array("q", bytes(8 * _HISTORY))
        self._h_gen = array("q", bytes(8 * _HISTORY))
        self._h_resends = bytearray(_HISTORY)  # times the slot's packet was resent
        self._h_resent_at = array("d", bytes(8 * _HISTORY))
        self._h_mark = array("I", bytes(4 * _HISTORY))  # the NACK (epoch, 32-bit, never 0) that last named the slot
        self._nack_epoch = 0
        self.budget = budget if budget is not None else ResendBudget()  # the subscriber's, shared
        self._last_in_ts = 0
        self._last_out_ts = 0
        self._hdr = RtpHeader()
        self._pli_at = float("-inf")
        self._vp8 = Vp8Descriptor() if track.codec.name.lower() == "vp8" else None  # retransmissions

    @property
    def waiting_keyframe(self) -> bool:
        return self.forwarder.waiting_keyframe

    # -- bind time ----------------------------------------------------------------------------

    def bind(self, mid: str, payload_type: int, rtx_payload_type: int | None, nack: bool) -> None:
        """The subscriber's answer accepted this track with these payload types."""
        self.mid = mid
        self.payload_type = payload_type
        self.forwarder.payload_type = payload_type
        self.rtx_payload_type = rtx_payload_type or 0
        self.nack = nack
        self.bound = True

    def switch_source(self) -> None:
        """The publisher's stream changed (reconnect): continue seamlessly from the next keyframe."""
        track = self.track
        old = track.source or track.ended  # the source being replaced (or the same: restart, unmute)
        pic = tl0 = -1
        fw = self.forwarder
        desc = self._vp8
        if old is not None and desc is not None and fw.seq.started and not fw.needs_sync:
            # The VP8 values this subscriber last got: from the packet it was last sent.
            last = fw.seq.last_out
            i = last & _HMASK
            item = old.buffer.get(self._h_ext[i]) if self._h_seq[i] == last and self._h_gen[i] == self._gen else None
            hdr = self._hdr
            if item is not None and hdr.load(item[0]) and desc.load(
                    item[0], hdr.payload_offset, hdr.payload_offset + hdr.payload_length):
                pic, tl0 = desc.picture_id, desc.tl0picidx
        if desc is not None:
            track.rewrite_vp8 = True
        fw.switch_source(pic, tl0)
        self._gen += 1

    # -- packet time ----------------------------------------------------------------------------

    def write(self, pkt: bytearray, hdr: RtpHeader, ext_seq: int, keyframe: bool, vp8: Vp8Descriptor | None,
              now: float) -> None:
        """Forward one packet of the track (shared by all its DownTracks; `vp8` its descriptor)."""
        if not self.bound or self.muted or self.paused:
            return
        tp = self.forwarder.translate(hdr, keyframe, vp8, now)
        if tp is None:
            return
        out_seq, out_ts, payload_type, picture_id, tl0picidx = tp
        _SEQ_TS_SSRC.pack_into(pkt, 2, out_seq, out_ts, self.ssrc)
        pkt[1] = (pkt[1] & 0x80) | payload_type
        i = out_seq & _HMASK
        self._h_seq[i] = out_seq
        self._h_ext[i] = ext_seq
        self._h_ts[i] = out_ts
        self._h_gen[i] = self._gen
        self._h_resends[i] = 0
        self._last_in_ts = hdr.timestamp
        self._last_out_ts = out_ts
        if (picture_id >= 0 or tl0picidx >= 0) and vp8 is not None:
            # Only after a source switch: rewrite, send, and put the publisher's values back.
            if picture_id >= 0:
                set_picture_id(pkt, vp8, picture_id)
            if tl0picidx >= 0:
                set_tl0picidx(pkt, vp8, tl0picidx)
            self.transport.send_rtp(pkt)  # type: ignore[attr-defined]
            set_picture_id(pkt, vp8, vp8.picture_id)
            set_tl0picidx(pkt, vp8, vp8.tl0picidx)
        else:
            self.transport.send_rtp(pkt)  # type: ignore[attr-defined]
        self.packets += 1
        self.bytes += hdr.size
        self.payload_bytes += hdr.payload_length

    # -- feedback from the subscriber ------------------------------------------------------------

    def on_nack(self, pairs: list[tuple[int, int]], now: float) -> None:
        """Resend what the subscriber lost, from the publisher stream's buffer (RTX if negotiated).

        ``pairs`` are the NACK's (PID, BLP). A sequence number named twice in one NACK is resent
        once; a packet at most once per resend interval (~RTT) and ``max_resends`` times; the
        bytes come out of the subscriber's budget. Work is one ring lookup per named number and
        nothing is allocated for a refused one; refusals are counted by reason once per NACK.
        """
        source = self.track.source
        if source is None or not self.bound:
            return
        budget = self.budget
        policy = budget.policy
        interval = policy.interval(self.stats.rtt)
        max_resends = policy.max_resends
        h_seq, h_gen, h_mark = self._h_seq, self._h_gen, self._h_mark
        h_resends, h_resent_at = self._h_resends, self._h_resent_at
        gen = self._gen
        self._nack_epoch = epoch = (self._nack_epoch & 0xFFFFFFFF) % 0xFFFFFFFF + 1
        extra = 2 if self.rtx_payload_type else 0  # the OSN an RTX packet adds
        duplicate = too_soon = too_many = over_budget = missing = sent = 0
        previous = (-1, -1)
        for pair in pairs:
            pid, blp = pair
            if pair == previous:  # the same pair again: everything it names is a duplicate
                duplicate += 1 + blp.bit_count()
                continue
            previous = pair
            bit = -1
            while True:
                out_seq = (pid + 1 + bit) & 0xFFFF
                i = out_seq & _HMASK
                if h_seq[i] != out_seq or h_gen[i] != gen:
                    missing += 1
                elif h_mark[i] == epoch:
                    duplicate += 1
                else:
                    h_mark[i] = epoch
                    verdict = resend_verdict(h_resends[i], h_resent_at[i], now, interval, max_resends)
                    if verdict != RESEND_OK:
                        if verdict == RESEND_TOO_SOON:
                            too_soon += 1
                        else:
                            too_many += 1
                    else:
                        item = source.buffer.get(self._h_ext[i], now)
                        if item is None:
                            missing += 1
                        elif not budget.take(len(item[0]) + extra, now):
                            over_budget += 1
                        else:
                            pkt = self._retransmission(source, item[0], out_seq, self._h_ts[i])
                            if pkt is not None:
                                h_resends[i] += 1
                                h_resent_at[i] = now
                                self.transport.send_rtp(pkt)  # type: ignore[attr-defined]
                                sent += 1
                            else:  # the stored packet no longer parses: nothing to resend
                                missing += 1
                # next bit of the BLP
                if not blp:
                    break
                low = (blp & -blp).bit_length()  # 1-based index of the lowest set bit
                bit += low
                blp >>= low
        c = self.counters
        if sent:
            self.retransmits += sent
            c.retransmits += sent
        if missing:
            c.retransmit_misses += missing
        if duplicate or too_soon or too_many or over_budget:
            refused = c.resends_refused
            if duplicate:
                refused[REFUSED_DUPLICATE] += duplicate
            if too_soon:
                refused[REFUSED_TOO_SOON] += too_soon
            if too_many:
                refused[REFUSED_TOO_MANY] += too_many
            if over_budget:
                refused[REFUSED_BUDGET] += over_budget

    def _retransmission(self, source: RecvStream, original: bytes, out_seq: int, out_ts: int) -> bytearray | None:
        hdr = self._hdr
        if not hdr.load(original):
            return None
        if source.translate_ext and hdr.extension:
            translated = bytearray(original)
            source.translate_ext_into(translated, hdr)
            original = bytes(translated)
            hdr.load(original)
        if not self.rtx_payload_type:
            pkt = bytearray(original)
            _SEQ_TS_SSRC.pack_into(pkt, 2, out_seq, out_ts, self.ssrc)
            pkt[1] = (pkt[1] & 0x80) | self.payload_type
            self._rewrite_vp8(pkt, hdr.payload_offset, hdr.payload_offset + hdr.payload_length)
            return pkt
        off, n = hdr.payload_offset, hdr.payload_length
        pkt = bytearray(off + 2 + n)
        pkt[:off] = original[:off]
        pkt[0] &= 0xDF  # no padding
        pkt[1] = (pkt[1] & 0x80) | self.rtx_payload_type
        _SEQ_TS_SSRC.pack_into(pkt, 2, self.rtx_seq, out_ts, self.rtx_ssrc)
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        _U16.pack_into(pkt, off, out_seq)
        pkt[off + 2:] = original[off: off + n]
        self._rewrite_vp8(pkt, off + 2, off + 2 + n)
        return pkt

    def _rewrite_vp8(self, pkt: bytearray, start: int, end: int) -> None:
        """A retransmission carries the PictureID/TL0PICIDX its original was sent with."""
        desc = self._vp8
        if desc is not None and desc.load(pkt, start, end):
            fw = self.forwarder
            if desc.picture_id >= 0:
                set_picture_id(pkt, desc, fw.picture_id_for(desc.picture_id))
            if desc.tl0picidx >= 0:
                set_tl0picidx(pkt, desc, fw.tl0picidx_for(desc.tl0picidx))

    def on_pli(self, now: float) -> None:
        """The subscriber's PLI or FIR: passed on at most once per KEYFRAME_REQUEST_INTERVAL."""
        if now - self._pli_at < KEYFRAME_REQUEST_INTERVAL:
            self.counters.drops["pli_rate_limited"] += 1
            return
        self._pli_at = now
        self.track.request_keyframe(now)

    # -- reports ---------------------------------------------------------------------------------

    def quality_inputs(self) -> dict[str, float]:
        st = self.stats
        return {"fraction_lost": st.remote_fraction_lost / 256.0,
                "jitter_ms": round(st.remote_jitter * 1000.0 / self.clock_rate, 3),
                "rtt_ms": round(st.rtt * 1000.0, 3) if st.rtt >= 0 else 0.0}

    def sender_report(self, source: RecvStream | None, now: float) -> bytes | None:
        """A Sender Report for this DownTrack, translated from the publisher's so lip sync holds.

        The publisher's (NTP, RTP) pair is moved forward to now on both clocks and shifted by
        this DownTrack's timestamp offset; SDES CNAME follows (a compound packet).
        """
        if not self.packets or source is None or not source.sr_ntp:
            return None
        self.stats.packets = self.packets
        self.stats.octets = self.payload_bytes
        offset = (self._last_in_ts - self._last_out_ts) & 0xFFFFFFFF
        sr = self.stats.sender_report(self.ssrc, source.sr_ntp, source.sr_rtp, source.sr_at, offset, now)
        return sr.to_bytes() + SourceDescription.with_cname(self.ssrc, self.cname).to_bytes()
