"""Prometheus metrics of the control plane. Labels never carry ids, names, tokens or addresses."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.http_requests = Counter("telesfu_http_requests_total", "HTTP requests served",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("telesfu_http_request_duration_seconds", "HTTP request latency",
                                      ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.http_connections_refused = Counter("telesfu_http_connections_refused_total",
                                                "TCP connections refused at accept, by reason (per_source)",
                                                ["reason"], registry=r)
        self.admissions = Counter("telesfu_admission_decisions_total", "Admission decisions by code",
                                  ["code"], registry=r)
        self.waiting_actions = Counter("telesfu_waiting_room_actions_total",
                                       "Admit, deny, remove and mute actions by outcome",
                                       ["action", "outcome"], registry=r)
        self.waiting_participants = Gauge("telesfu_waiting_room_participants",
                                          "Participants in waiting rooms now", registry=r)
        self.admitted_participants = Gauge("telesfu_room_participants", "Admitted participants in rooms now",
                                           registry=r)
        self.open_rooms = Gauge("telesfu_rooms_open", "Open rooms", registry=r)
        self.wait_time = Histogram("telesfu_waiting_room_wait_seconds",
                                   "Time from entering the waiting room to being admitted",
                                   buckets=_WAIT_BUCKETS, registry=r)
        self.webhook_deliveries = Counter("telesfu_webhook_deliveries_total",
                                          "Webhook delivery attempts by event type and outcome",
                                          ["type", "outcome"], registry=r)
        self.webhook_latency = Histogram("telesfu_webhook_delivery_seconds", "Webhook delivery attempt time",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.webhook_queue = Gauge("telesfu_webhook_queue_depth", "Webhook events not yet delivered",
                                   registry=r)
        self.webhook_dropped = Counter("telesfu_webhook_dropped_total",
                                       "Webhook events not queued, by reason (queue_full, store_unavailable)",
                                       ["reason"], registry=r)
        self.store_latency = Histogram("telesfu_store_operation_seconds", "Store operation latency",
                                       ["backend", "op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("telesfu_store_errors_total", "Store operations that failed",
                                    ["backend", "op"], registry=r)
        self.tokens_minted = Counter("telesfu_tokens_minted_total", "Join tokens minted", registry=r)
        self.reminders = Counter("telesfu_reminders_total", "appointment.starting_soon events emitted",
                                 registry=r)
        self.signaling_connections = Gauge("telesfu_signaling_connections", "Open signaling WebSockets",
                                           registry=r)
        self.joins = Counter("telesfu_signaling_joins_total", "Joins by outcome (admitted, waiting, refused)",
                             ["outcome"], registry=r)
        self.resumes = Counter("telesfu_resumes_total", "Resumes by outcome (admitted, waiting, refused_<why>)",
                               ["outcome"], registry=r)
        self.signaling_errors = Counter("telesfu_signaling_errors_total",
                                        "Signaling messages refused, by error code", ["code"], registry=r)
        self.signaling_unjoined = Gauge("telesfu_signaling_unjoined_connections",
                                        "Open signaling WebSockets that have not joined yet", registry=r)
        self.signaling_unjoined_let_go = Counter(
            "telesfu_signaling_unjoined_let_go_total",
            "Unjoined WebSockets closed (1013) to make room for newer ones when the node held signaling.max_unjoined",
            registry=r)
        self.signaling_refused = Counter("telesfu_signaling_upgrades_refused_total",
                                         "WebSocket upgrades refused before accept, by cap (per_source, total)",
                                         ["reason"], registry=r)
        self.signaling_admitted_from_waiting = Counter("telesfu_signaling_admitted_from_waiting_total",
                                                       "Waiting participants let in while connected", registry=r)
        self.join_to_first_media = Histogram("telesfu_join_to_first_media_seconds",
                                             "From join to the first media forwarded to the participant",
                                             buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800),
                                             registry=r)


class InstrumentedStore:
    """Wraps a store and times every operation into telesfu_store_operation_seconds."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.kind: str = inner.kind

    @property
    def inner(self) -> Any:
        return self._inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        hist = self._metrics.store_latency.labels(self.kind, name)
        errors = self._metrics.store_errors.labels(self.kind, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                hist.observe(time.perf_counter() - t0)

        setattr(self, name, timed)  # cache: next lookups skip __getattr__
        return timed


AsyncFn = Callable[..., Awaitable[Any]]
