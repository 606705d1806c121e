"""The daemon's main loop: consume, handle, fire timers, reconnect, stop cleanly.

Signal handlers only set a flag; the loop does the work (huey's habit). On SIGTERM or SIGINT the
daemon stops consuming, finishes the message in hand, closes its connections and exits 0.
When RabbitMQ or the database goes away it logs, waits with growing back-off and carries on;
unacknowledged messages come back from RabbitMQ and are recognised if they were handled.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bureaucrat.amqp import Broker, Delivery, Publication, Topology, properties
from bureaucrat.amqp.consumer import serve_forever
from bureaucrat.config import Config
from bureaucrat.errors import BrokerError, ConfigError, StoreError, TopologyError
from bureaucrat.messages import Outgoing
from bureaucrat.metrics import DaemonMetrics
from bureaucrat.service import RELAY_AFTER, Outcome, Service
from bureaucrat.store import Store

LOG = logging.getLogger("bureaucrat.daemon")
BATCH = 100
"""Messages handled in one transaction at most."""
PRUNE_EVERY = 3600.0
"""Seconds between prunings of processed message ids and sent outbox rows."""


class BrokerPublisher:
    """Publishes outbox messages in batches with pipelined confirms, declaring workers' queues
    on demand."""

    def __init__(self, broker: Broker, config: Config) -> None:
        self.broker = broker
        self.routed = {config.exchange, ""}
        self.pipeline = broker.pipeline()

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        outcomes: list[str | None] = [None] * len(messages)
        publications: list[Publication] = []
        indexes: list[int] = []
        for index, message in enumerate(messages):
            try:
                if message.exchange == "":
                    self.broker.ensure_queue(message.routing_key)
                publication = Publication(
                    message.exchange,
                    message.routing_key,
                    message.body,
                    properties(message.properties),
                    mandatory=message.exchange in self.routed,
                )
            except ConfigError as error:  # a worker queue of another type: this message only
                outcomes[index] = str(error)
                continue
            except (TypeError, ValueError) as error:  # properties pika does not take
                outcomes[index] = f"{type(error).__name__}: {error}"
                continue
            publications.append(publication)
            indexes.append(index)
        for index, outcome in zip(indexes, self.pipeline.publish(publications), strict=True):
            outcomes[index] = outcome
        return outcomes


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = False
        self.deliveries: list[Delivery] = []
        """Messages delivered and not yet handled, in the order they came."""
        self.next_prune = 0.0
        self.next_relay = 0.0
        self.next_timers = 0.0
        self.metrics: DaemonMetrics | None = None
        """Its Prometheus metrics, when ``[metrics] port`` is set (from ``run``)."""

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        LOG.info("signal %s: stopping after the batch in hand", signal.Signals(signum).name)
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self) -> int:
        store: Store | None = None
        sessions = 0
        if self.config.metrics_port:
            self.metrics = self._start_metrics()

        def session() -> None:
            nonlocal store, sessions
            sessions += 1
            if sessions > 1 and self.metrics is not None:
                self.metrics.reconnects.inc()
            if store is None:
                store = Store(
                    self.config.database_url,
                    definition_cache_size=self.config.definition_cache_size,
                    sqlite_synchronous=self.config.sqlite_synchronous,
                )
            self._serve(store)

        try:
            serve_forever(session, lambda: self.stopping, (BrokerError, StoreError))
        except TopologyError as error:  # declaring again cannot help: an operator must act
            LOG.critical("stopping: %s", error)
            return 2
        finally:
            if store is not None:
                store.close()
            if self.metrics is not None:
                self.metrics.stop()
        LOG.info("stopped")
        return 0

    def _start_metrics(self) -> DaemonMetrics:
        """Serve the metrics (``[metrics]``); the scrape reads the database with a store of
        its own, opened at the first scrape."""
        config = self.config
        metrics = DaemonMetrics(
            lambda: Store(config.database_url, sqlite_synchronous=config.sqlite_synchronous)
        )
        try:
            port = metrics.start(config.metrics_port, config.metrics_host)
        except OSError as error:  # the port is taken: an operator must choose another
            raise ConfigError(
                f"[metrics] port = {config.metrics_port}: cannot listen on "
                f"{config.metrics_host}: {error.strerror}"
            ) from None
        LOG.info("metrics at http://%s:%d/metrics", config.metrics_host, port)
        return metrics

    def _serve(self, store: Store) -> None:
        config = self.config
        broker = Broker(
            config.amqp_url, heartbeat=config.heartbeat, topology=Topology.from_config(config)
        )
        try:
            service = Service(store, config, BrokerPublisher(broker, config), meter=self.metrics)
            self.deliveries.clear()
            sent = service.relay_outbox(everything=True)  # left by a crash or a lost connection
            fired = self._fire_timers(service)
            self._fire_schedules(service)
            LOG.info(
                "serving %s, %s, %s (published %d pending messages, fired %d due timers)",
                config.launch_queue,
                config.message_queue,
                config.event_queue,
                sent,
                fired,
            )
            queues = [config.launch_queue, config.message_queue, config.event_queue]
            broker.consume(queues, config.prefetch, self.deliveries.append)
            while not self.stopping:
                broker.run(config.timer_interval)
                if not self.deliveries:
                    service.mark_published()  # idle: no next transaction will do it soon
                self._drain(service, broker)
                if time.monotonic() >= self.next_timers:  # not after every batch: a look costs
                    self.next_timers = time.monotonic() + config.timer_interval  # a transaction
                    self._fire_timers(service)
                    self._fire_schedules(service)
                self._relay(service)
                self._prune(store)
            broker.cancel()
            service.mark_published()
        finally:
            broker.close()

    def _drain(self, service: Service, broker: Broker) -> None:
        """Handle the delivered messages in batches: one transaction each, then publish what
        the batch sends (pipelined confirms), then acknowledge the batch.

        Each batch takes what has arrived already, without waiting for more: a lone message
        goes through at once, a burst shares its transaction and its confirms. A message is
        still acknowledged only after everything it caused is committed and confirmed."""
        while self.deliveries and not self.stopping:
            broker.run(0)  # take in what has arrived meanwhile
            batch = self.deliveries[:BATCH]
            del self.deliveries[:BATCH]
            verdicts = service.handle_batch(batch)
            for delivery, verdict in zip(batch, verdicts, strict=True):
                if verdict.outcome is Outcome.DEAD:
                    LOG.warning(
                        "dead-lettered a message from %s: %s", delivery.queue, verdict.reason
                    )
                    self._dead_letter(broker, delivery, verdict.reason)
            service.publish_committed()
            broker.ack(batch[-1], multiple=True)  # every earlier delivery is in this batch
            if self.metrics is not None:
                outcomes = [verdict.disposition.value for verdict in verdicts]
                self.metrics.batch([delivery.queue for delivery in batch], outcomes)

    def _fire_timers(self, service: Service) -> int:
        fired = 0
        while not self.stopping:
            now_fired = service.fire_due_timers()
            service.publish_committed()
            fired += now_fired
            if not now_fired:
                return fired
        return fired

    def _fire_schedules(self, service: Service) -> int:
        """Launch what schedules have due (whichever daemon claims a schedule fires it), and
        publish what the new instances send."""
        launched = 0
        while not self.stopping:
            now_launched = service.fire_due_schedules()
            service.publish_committed()
            launched += now_launched
            if not now_launched:
                return launched
        return launched

    def _relay(self, service: Service) -> None:
        """Publish, every few seconds, outbox rows a lost connection left unsent."""
        now = time.time()
        if now >= self.next_relay:
            self.next_relay = now + RELAY_AFTER
            service.relay_outbox()

    def _prune(self, store: Store) -> None:
        """Forget, once an hour, message ids older than the dedupe window (the table of
        processed ids and the outbox would otherwise grow for ever)."""
        now = time.time()
        if now < self.next_prune:
            return
        self.next_prune = now + PRUNE_EVERY
        deleted = store.prune(now - self.config.dedupe_window)
        if deleted:
            LOG.info("pruned %d processed message ids and sent messages", deleted)

    def _dead_letter(self, broker: Broker, delivery: Delivery, reason: str) -> None:
        headers = dict(delivery.headers or {})
        headers["x-bureaucrat-error"] = reason[:4000]
        headers["x-bureaucrat-queue"] = delivery.queue
        fields: dict[str, Any] = {
            "content_type": delivery.content_type,
            "message_id": delivery.message_id,
            "correlation_id": delivery.correlation_id,
            "headers": headers,
            "delivery_mode": 2,
        }
        broker.publish("", self.config.dead_letter_queue, delivery.body, fields, mandatory=True)
        if self.metrics is not None:
            self.metrics.dead_letters.inc()


def setup_logging(config: Config, foreground: bool) -> list[Any]:
    """Configure the root logger; return the streams a daemon must keep open."""
    handlers: list[logging.Handler] = []
    if config.log_file:
        handlers.append(logging.handlers.WatchedFileHandler(config.log_file))
    if config.syslog:
        handlers.append(logging.handlers.SysLogHandler(address=_syslog_address()))
    if foreground and not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    if not handlers:  # a daemon with nowhere said: syslog when there is one, else a file
        if Path("/dev/log").exists():
            handlers.append(logging.handlers.SysLogHandler(address="/dev/log"))
        else:
            handlers.append(logging.handlers.WatchedFileHandler(os.path.abspath("bureaucrat.log")))
    formatter = logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    logging.getLogger("pika").setLevel(logging.WARNING)
    streams: list[Any] = []
    for handler in handlers:
        stream = getattr(handler, "stream", None) or getattr(handler, "socket", None)
        if stream is not None:
            streams.append(stream)
    return streams


def _syslog_address() -> str | tuple[str, int]:
    return "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
