"""Prometheus view of the media workers, from the stats each worker sends every 2 s.

Never per packet, never labelled by room, participant or address: only by worker index,
direction, kind and drop reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from control.media import MediaPlane


class MediaCollector(Collector):
    def __init__(self, plane: MediaPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterator[Any]:
        packets = CounterMetricFamily("telesfu_media_packets", "RTP packets by direction and kind",
                                      labels=["worker", "direction", "kind"])
        octets = CounterMetricFamily("telesfu_media_bytes", "RTP bytes by direction", labels=["worker", "direction"])
        rtcp = CounterMetricFamily("telesfu_media_rtcp_packets", "RTCP packets by direction",
                                   labels=["worker", "direction"])
        drops = CounterMetricFamily("telesfu_media_drops", "Datagrams and packets dropped, by reason",
                                    labels=["worker", "reason"])
        nacks = CounterMetricFamily("telesfu_media_nacks", "NACK packets: in from subscribers, out to publishers",
                                    labels=["worker", "direction"])
        rtx = CounterMetricFamily("telesfu_media_retransmissions", "Packets resent to subscribers",
                                  labels=["worker"])
        rtx_miss = CounterMetricFamily("telesfu_media_retransmission_misses",
                                       "NACKed packets no longer in the retransmission buffer", labels=["worker"])
        refused = CounterMetricFamily("telesfu_media_retransmissions_refused",
                                      "NACKed packets not resent, by reason (duplicate, too_soon, too_many, "
                                      "budget, not_in_buffer)", labels=["worker", "reason"])
        plis = CounterMetricFamily("telesfu_media_keyframe_requests",
                                   "PLI/FIR: in from subscribers, out to publishers", labels=["worker", "direction"])
        waits = CounterMetricFamily("telesfu_media_keyframe_waits",
                                    "Packets held back while a subscriber waited for a keyframe", labels=["worker"])
        offer_failures = CounterMetricFamily("telesfu_media_subscribe_offer_failures",
                                             "Subscribe offers the worker could not build (a bug; logged with ids)",
                                             labels=["worker"])
        cpu = CounterMetricFamily("telesfu_media_worker_cpu_seconds", "Worker process CPU time (user+system)",
                                  labels=["worker"])
        lag = GaugeMetricFamily("telesfu_media_worker_loop_lag_seconds", "Worker event-loop lag: the largest over the last stats interval (2 s)",
                                labels=["worker"])
        rss = GaugeMetricFamily("telesfu_media_worker_max_rss_bytes", "Worker peak resident memory",
                                labels=["worker"])
        rooms = GaugeMetricFamily("telesfu_media_rooms", "Rooms on the worker", labels=["worker"])
        parts = GaugeMetricFamily("telesfu_media_participants", "Participants on the worker", labels=["worker"])
        up = GaugeMetricFamily("telesfu_media_worker_up", "1 when the worker process runs", labels=["worker"])
        restarts = CounterMetricFamily("telesfu_media_worker_restarts", "Worker restarts after a crash",
                                       labels=["worker"])
        for w in self.plane.workers:
            idx = str(w.index)
            running = w.proc is not None and w.proc.returncode is None
            up.add_metric([idx], 1.0 if running else 0.0)
            restarts.add_metric([idx], float(w.restarts))
            s = w.last_stats
            if not s:
                continue
            c = s.get("counters", {})
            t = s.get("transport", {})
            packets.add_metric([idx, "in", "audio"], c.get("audio_in", 0))
            packets.add_metric([idx, "in", "video"], c.get("video_in", 0))
            packets.add_metric([idx, "out", "audio"], s.get("audio_out", 0))
            packets.add_metric([idx, "out", "video"], s.get("video_out", 0))
            octets.add_metric([idx, "in"], t.get("rtp_bytes_in", 0))
            octets.add_metric([idx, "out"], t.get("rtp_bytes_out", 0))
            rtcp.add_metric([idx, "in"], c.get("rtcp_in", 0))
            rtcp.add_metric([idx, "out"], c.get("rtcp_out", 0))
            reasons = dict(c.get("drops", {}))
            for name, value in t.items():
                if name in _TRANSPORT_DROPS and value:
                    reasons[name] = reasons.get(name, 0) + value
            for reason, value in sorted(reasons.items()):
                drops.add_metric([idx, reason], value)
            nacks.add_metric([idx, "in"], c.get("nacks_in", 0))
            nacks.add_metric([idx, "out"], c.get("nacks_out", 0))
            rtx.add_metric([idx], c.get("retransmits", 0))
            rtx_miss.add_metric([idx], c.get("retransmit_misses", 0))
            for reason, value in sorted(c.get("resends_refused", {}).items()):
                refused.add_metric([idx, reason], value)
            plis.add_metric([idx, "in"], c.get("plis_in", 0))
            plis.add_metric([idx, "out"], c.get("plis_out", 0))
            waits.add_metric([idx], c.get("keyframe_waits", 0))
            offer_failures.add_metric([idx], c.get("subscribe_offer_failures", 0))
            cpu.add_metric([idx], s.get("cpu_seconds", 0.0))
            lag.add_metric([idx], s.get("loop_lag_seconds", 0.0))
            rss.add_metric([idx], s.get("max_rss_kb", 0) * 1024.0)
            rooms.add_metric([idx], s.get("rooms", 0))
            parts.add_metric([idx], s.get("participants", 0))
        yield from (packets, octets, rtcp, drops, nacks, rtx, rtx_miss, refused, plis, waits, offer_failures, cpu, lag, rss, rooms, parts, up,
                    restarts)


# Transport-level counters that are drops (the rest are traffic totals).
_TRANSPORT_DROPS = frozenset({
    "too_short", "too_long", "unknown_first_byte", "source_not_allowed", "unknown_address", "send_buffer_full",
    "send_error", "send_no_socket", "internal_error", "stun_malformed", "stun_bad_fingerprint", "stun_not_request",
    "stun_bad_request", "stun_unknown_username", "stun_bad_integrity", "stun_unknown_attribute",
    "stun_role_conflict", "stun_unknown_address", "srtp_before_connected", "send_not_connected",
    "send_protect_failed", "srtp_auth_failed", "srtp_replay", "srtp_bad_packet", "dtls_bad_record",
    "dtls_out_of_state", "stun_unknown_ufrag", "stun_rate_limited", "stun_ufrag_rate_limited",
    # ICE-TCP (sfu.transport.tcp.TCP_DROP_NAMES)
    "tcp_refused_connection_cap", "tcp_refused_source_cap", "tcp_refused_source_not_allowed", "tcp_closed_garbage",
    "tcp_closed_idle", "tcp_frame_too_short", "tcp_frame_too_long", "tcp_unknown_first_byte", "tcp_stun_other_ufrag",
    "tcp_internal_error",
})
