"""Per-worker counters: plain ints bumped on the packet path, exported periodically."""

from __future__ import annotations

from collections import Counter


class WorkerCounters:
    """Totals a worker reports to the node every stats period. Never labelled by id.

    Packets sent to subscribers are not counted here (that would be one more write per packet
    per subscriber): the worker sums its DownTracks' own counts when it reports.
    """

    __slots__ = (
        "rtp_in", "rtp_in_bytes", "rtcp_in", "rtcp_out", "audio_in", "video_in",
        "nacks_in", "nacks_out", "retransmits", "retransmit_misses", "plis_in", "plis_out",
        "keyframe_waits", "keyframes_in", "twcc_in", "subscribe_offer_failures", "resends_refused", "drops",
    )

    def __init__(self) -> None:
        self.rtp_in = 0
        self.rtp_in_bytes = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.audio_in = 0
        self.video_in = 0
        self.nacks_in = 0  # NACK packets from subscribers
        self.nacks_out = 0  # NACK packets we sent to publishers
        self.retransmits = 0  # packets resent to subscribers
        self.retransmit_misses = 0  # NACKed packets no longer buffered
        self.plis_in = 0
        self.plis_out = 0
        self.keyframe_waits = 0  # packets held back while a DownTrack waited for a keyframe
        self.keyframes_in = 0
        self.twcc_in = 0  # transport-cc feedback packets from subscribers
        self.subscribe_offer_failures = 0  # subscribe offers that could not be built (a bug: logged)
        # NACKed packets not resent, by reason (sfu.nack.REFUSED_*); "not_in_buffer" is retransmit_misses
        self.resends_refused: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()  # reason -> count

    def snapshot(self) -> dict[str, object]:
        d: dict[str, object] = {name: getattr(self, name) for name in self.__slots__
                                if name not in ("drops", "resends_refused")}
        d["drops"] = dict(self.drops)
        d["resends_refused"] = {**self.resends_refused, "not_in_buffer": self.retransmit_misses}
        return d
