"""Prometheus metrics of the daemon (``[metrics] port``) and of workers (``--metrics-port``).

Each daemon or worker has a registry of its own (not ``prometheus_client``'s global one), so
that several in one process, as in the tests, count apart. What happens is counted where it
happens: the daemon counts messages by what became of them once their batch is acknowledged,
the service times each step (``Service.meter``). What the database holds (instances by status,
the outbox's backlog, how late the due timers are) is read when Prometheus scrapes, by a
collector with a store of its own (the scrape runs in the HTTP server's thread), in three
small queries. The README's "Metrics" lists every metric.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bureaucrat.errors import BureaucratError

LOG = logging.getLogger(__name__)

STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: a step is tens of microseconds to a second (a step at its budget's end)."""
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100)
"""Messages: a batch takes what has arrived, up to ``daemon.BATCH`` (100)."""
WORK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds a participant's function takes: from nothing to minutes."""


class Exporter:
    """A registry and, once ``start``-ed, the HTTP server that serves it at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._server: Any = None

    def start(self, port: int, host: str) -> int:
        """Serve ``/metrics`` on ``host``:``port`` (0: any free port); the port."""
        self._server, _ = start_http_server(port, host, registry=self.registry)
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class DaemonMetrics(Exporter):
    """The daemon's metrics. ``store`` opens the store the scrape reads (None: nothing read
    from the database, for tests of the counters alone)."""

    def __init__(
        self, store: Callable[[], Any] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        registry = self.registry
        self.messages = Counter(
            "bureaucrat_messages",
            "Messages taken from the engine's queues, by queue and by what became of them",
            ["queue", "outcome"],
            registry=registry,
        )
        self.steps = Counter(
            "bureaucrat_steps",
            "Events applied to an instance (one step each), by kind of event",
            ["event"],
            registry=registry,
        )
        self.step_seconds = Histogram(
            "bureaucrat_step_seconds",
            "Seconds one step of the engine takes (the pure step, without the database)",
            buckets=STEP_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "bureaucrat_batch_size",
            "Messages handled in one transaction",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "bureaucrat_dead_letters",
            "Messages published to the dead-letter queue",
            registry=registry,
        )
        self.reconnects = Counter(
            "bureaucrat_reconnects",
            "Times the daemon connected again after losing RabbitMQ or the database",
            registry=registry,
        )
        self._collector = None if store is None else StoreCollector(store, clock)
        if self._collector is not None:
            registry.register(self._collector)

    def stop(self) -> None:
        super().stop()
        if self._collector is not None:
            self._collector.close()

    def step(self, event: str, seconds: float) -> None:
        """One step applied (``service.Meter``)."""
        self.steps.labels(event).inc()
        self.step_seconds.observe(seconds)

    def batch(self, queues: Sequence[str], outcomes: Sequence[str]) -> None:
        """A batch acknowledged: each message's queue and outcome."""
        self.batch_size.observe(len(queues))
        for queue, outcome in zip(queues, outcomes, strict=True):
            self.messages.labels(queue, outcome).inc()


class StoreCollector(Collector):
    """Read from the database on each scrape: instances by status, the outbox's backlog and
    the lag of the due timers. A database that does not answer leaves them out of that
    scrape (logged), rather than failing it."""

    def __init__(self, open_store: Callable[[], Any], clock: Callable[[], float]) -> None:
        self._open = open_store
        self._store: Any = None
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        try:
            if self._store is None:
                self._store = self._open()
            store = self._store
            now = self._clock()
            counts = store.counts_by_status()
            backlog = store.outbox_backlog()
            oldest = store.oldest_due_timer(now)
        except BureaucratError as error:  # StoreError, an outdated schema...: this scrape only
            LOG.warning("metrics: cannot read the database: %s", error)
            return
        instances = GaugeMetricFamily(
            "bureaucrat_instances", "Process instances by status", labels=["status"]
        )
        for status, count in sorted(counts.items()):
            instances.add_metric([status], count)
        yield instances
        yield GaugeMetricFamily(
            "bureaucrat_outbox_backlog",
            "Outbox messages written and not yet published",
            value=backlog,
        )
        yield GaugeMetricFamily(
            "bureaucrat_timer_lag_seconds",
            "How long ago the earliest due timer not yet fired came due (0: none is late)",
            value=0.0 if oldest is None else max(0.0, now - oldest),
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


class WorkerMetrics(Exporter):
    """A worker's metrics (``bureaucrat-worker --metrics-port``)."""

    def __init__(self, participant: str) -> None:
        super().__init__()
        registry = self.registry
        self.participant = participant
        self.workitems = Counter(
            "bureaucrat_worker_workitems",
            "Workitems answered, by participant and by the status of the answer",
            ["participant", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "bureaucrat_worker_seconds",
            "Seconds the participant's function took on one workitem",
            ["participant"],
            buckets=WORK_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            "bureaucrat_worker_dead_letters",
            "Messages the worker published to the dead-letter queue",
            ["participant"],
            registry=registry,
        )
        self.reconnects = Counter(
            "bureaucrat_worker_reconnects",
            "Times the worker connected again after losing RabbitMQ",
            ["participant"],
            registry=registry,
        )

        for labelled in (self.seconds, self.dead_letters, self.reconnects):
            labelled.labels(participant)  # shown at 0 from the start, not from the first one

    def answered(self, status: Any, seconds: float) -> None:
        shown = status if status in ("done", "critical", "error") else "other"
        self.workitems.labels(self.participant, shown).inc()
        self.seconds.labels(self.participant).observe(seconds)
