"""Prometheus metrics of a worker (``repmon worker --metrics-port N`` serves ``/metrics``, and
``/healthz``: 200 while every dependency answers, 503 naming the ones in an outage, for a load
balancer or an orchestrator's readiness probe).

What an operator watches: events in and where they went (enriched, dead-lettered, skipped as
redelivered), enrichment batch time (the part that could starve the loop if it ran on it), how
far event time lags the wall clock (the watermark), buckets judged, signals and incidents by
kind, notification outcomes, consumer lag per topic and partition, dead letters by stage and
reason kind, enriched texts per language, and which fleet model snapshot scores here. Each
worker has its own registry, so two pipelines in one process (tests) do not collide.

>>> m = Metrics()
>>> m.events.labels("enriched").inc(3)
>>> b"repmon_events_total" in m.exposition()
True
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from infra.health import dependency_health, serve_metrics

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lag_labels: set[tuple[str, int]] = set()
        r = self.registry
        self.events = Counter(
            "repmon_events", "Raw events read, by outcome (enriched, dead_letter).", ["outcome"], registry=r
        )
        self.counted = Counter("repmon_window_counts", "(event, entity) pairs counted into windows.", registry=r)
        self.duplicates = Counter(
            "repmon_window_duplicates", "Redelivered (event, entity) pairs skipped (already counted).", registry=r
        )
        self.batch_seconds = Histogram(
            "repmon_enrich_batch_seconds",
            "Time to enrich one batch (spaCy + sentiment, off the event loop).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.batch_size = Histogram(
            "repmon_enrich_batch_size",
            "Events per enrichment batch.",
            buckets=(1, 8, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.languages = Counter(
            "repmon_enriched_languages",
            "Enriched texts by language (ISO 639-1; 'none' for events without text): every language is scored.",
            ["lang"],
            registry=r,
        )
        self.watermark = Gauge("repmon_watermark_seconds", "Event-time watermark (epoch seconds).", registry=r)
        self.watermark_lag = Gauge(
            "repmon_watermark_lag_seconds", "Wall clock minus the event-time watermark.", registry=r
        )
        self.buckets = Counter("repmon_buckets_judged", "Closed buckets judged by the detectors.", registry=r)
        self.detect_tick = Gauge(
            "repmon_detect_tick_seconds", "Wall time of the last detection tick here (the leader ticks).", registry=r
        )
        self.signals = Counter("repmon_signals", "Signals emitted.", ["signal", "severity"], registry=r)
        self.incidents = Counter("repmon_incident_messages", "Incident messages emitted.", ["status"], registry=r)
        self.notifications = Counter(
            "repmon_notifications", "Notification deliveries by outcome.", ["route", "status"], registry=r
        )
        self.dead_letters = Counter(
            "repmon_dead_letters", "Messages dead-lettered, by stage and reason kind.", ["stage", "kind"], registry=r
        )
        self.dependency_up = Gauge(
            "repmon_dependency_up", "1 while the dependency answers, 0 during an outage.", ["dependency"], registry=r
        )
        self.dependency_errors = Counter(
            "repmon_dependency_errors", "Failed calls to a dependency (each retried).", ["dependency"], registry=r
        )

        self.consumer_lag = Gauge(
            "repmon_consumer_lag",
            "Messages behind the broker's high-water mark, per topic and partition this worker reads.",
            ["topic", "partition"],
            registry=r,
        )
        self.model_version = Gauge(
            "repmon_sentiment_model_version", "The fleet snapshot this worker scores with (0: none yet).", registry=r
        )
        self.learner = Gauge(
            "repmon_sentiment_learner", "1 on the worker that holds the fleet's learner lease.", registry=r
        )
        self.labels_learned = Counter(
            "repmon_sentiment_labels_learned", "Training examples learned by this worker as the learner.", registry=r
        )
        self.snapshots = Counter(
            "repmon_sentiment_snapshots", "Model snapshots this worker published as the learner.", registry=r
        )

    def set_lag(self, lags: dict[tuple[str, int], int]) -> None:
        """Set the lag of each (topic, partition) read here; drop the ones no longer assigned."""
        for labels in list(self._lag_labels - set(lags)):
            self.consumer_lag.remove(labels[0], str(labels[1]))
        for (topic, p), lag in lags.items():
            self.consumer_lag.labels(topic, str(p)).set(lag)
        self._lag_labels = set(lags)

    def set_watermark(self, wm: float | None) -> None:
        if wm is not None:
            self.watermark.set(wm)
            self.watermark_lag.set(max(0.0, time.time() - wm))

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether every dependency answered last time it was tried (``repmon_dependency_up``),
        and the document ``/healthz`` serves.

        >>> m = Metrics()
        >>> m.dependency_up.labels("redis").set(1); m.dependency_up.labels("kafka").set(0)
        >>> m.health()
        (False, {'status': 'outage', 'dependencies': {'kafka': 'down', 'redis': 'up'}})
        """
        return dependency_health(self.dependency_up)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` and ``/healthz`` on ``addr:port`` from a daemon thread; returns the
        port (``0`` picks a free one)."""
        return serve_metrics(self.registry, self.health, port, addr)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
