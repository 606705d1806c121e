"""The daemon's loop in this process: ``Daemon.run`` in a thread, against the real RabbitMQ and
a SQLite database, with queue names of its own.

The end-to-end tests run the daemon as operators do, in a subprocess; these run the same loop
where the tests can see it (and where ``make mutate`` can reach it): what it serves, what it
dead-letters and how, the timers, schedules and outbox rows it finds at start and meets later,
the message ids it prunes, how it stops. Every wait is on a condition, with a deadline.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pika
import pytest

from bureaucrat.amqp import Broker, Delivery, QueueArguments
from bureaucrat.config import Config, load_config
from bureaucrat.daemon import BrokerPublisher, Daemon, setup_logging
from bureaucrat.messages import Outgoing
from bureaucrat.service import ACK, Service
from bureaucrat.store import Store
from tests.brokers import AMQP_URL
from tests.harness import Installation, dumps
from tests.test_metrics import free_port, scrape, value

WAIT = float(os.environ.get("BUREAUCRAT_TEST_WAIT", "30"))
"""Seconds a test waits for what it expects (the mutation re-checks shorten it: a mutant that
breaks the loop makes each test wait its deadline out)."""

WAITS = """<process>
  <sequence>
    <action participant="p"/>
    <await event="go"/>
    <delay duration="0.2"/>
    <assign property="done">True</assign>
  </sequence>
</process>"""


class Running:
    """A daemon serving ``install``'s queues from a thread of this process."""

    def __init__(self, install: Installation, config: Config | None = None) -> None:
        self.install = install
        self.daemon = Daemon(config or install.config)
        self.exit: list[int] = []
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    def _run(self) -> None:
        try:
            self.exit.append(self.daemon.run())
        except BaseException as error:  # shown by wait_for and stop
            self.failure.append(error)

    def start(self) -> Running:
        self.thread.start()
        return self

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if not self.thread.is_alive():
                raise AssertionError(f"the daemon ended ({self.exit or self.failure})")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def stop(self) -> int:
        """Stop it as SIGTERM does; its exit status."""
        self.daemon.request_stop(signal.SIGTERM)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.failure:
            raise self.failure[0]
        return self.exit[0]


@contextmanager
def running(install: Installation, config: Config | None = None) -> Iterator[Running]:
    daemon = Running(install, config).start()
    try:
        yield daemon
    finally:
        if daemon.thread.is_alive():
            daemon.daemon.stopping = True
            daemon.thread.join(30)


@contextmanager
def channel() -> Iterator[Any]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        yield connection.channel()
    finally:
        connection.close()


def take(install: Installation, queue: str, what: str) -> tuple[Any, bytes]:
    """The next message on ``queue`` (its properties and body), waiting for it."""
    found: list[tuple[Any, bytes]] = []
    with channel() as chan:

        def got_one() -> bool:
            method, props, body = chan.basic_get(queue, auto_ack=True)
            if method is not None:
                found.append((props, body))
            return bool(found)

        install.wait_for(got_one, WAIT, what)
    return found[0]


def waiting(install: Installation, participant: str) -> str:
    """Declare ``participant``'s queue as the daemon would, before anything is sent to it."""
    queue = install.config.worker_queue(participant)
    with channel() as chan:
        QueueArguments.from_config(install.config).declare(chan, queue)
    install.worker_queues.append(queue)
    return queue


def messages_in(queue: str) -> int:
    with channel() as chan:
        return int(chan.queue_declare(queue, passive=True).method.message_count)


def logged(caplog: pytest.LogCaptureFixture, logger: str = "bureaucrat.daemon") -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


# serving --------------------------------------------------------------------------------------


def test_the_loop_serves_a_launch_its_answer_its_event_and_its_timer_then_stops_with_0(
    sqlite_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    install = sqlite_installation
    caplog.set_level(logging.INFO)
    queue = waiting(install, "p")
    with running(install) as daemon, install.launcher() as launcher:
        launcher.launch(WAITS, {"n": 1}, process_id="loop")
        _, body = take(install, queue, "the workitem")
        workitem = json.loads(body)
        assert workitem["payload"]["n"] == 1
        install.publish_raw(install.config.message_queue, body, message_id="answer-1")
        daemon.wait_for(lambda: install.awaits("loop") == ["go"], "the await")
        launcher.send_event("go")
        daemon.wait_for(lambda: install.status("loop") == "completed", "the end")
        assert daemon.stop() == 0
    record = install.store.instance("loop")
    assert record is not None and record.state is not None
    assert record.state["scopes"][""]["done"] is True
    config = install.config
    lines = logged(caplog)
    assert lines[0] == (
        f"serving {config.launch_queue}, {config.message_queue}, {config.event_queue} "
        "(published 0 pending messages, fired 0 due timers)"
    )
    assert lines[-2:] == ["signal SIGTERM: stopping after the batch in hand", "stopped"]
    for name in (config.launch_queue, config.message_queue, config.event_queue):
        assert messages_in(name) == 0, f"{name}: every message is acknowledged"


def test_a_burst_of_launches_is_served_in_batches_each_launch_once(
    sqlite_installation: Installation,
) -> None:
    """More launches than one batch takes (100), all waiting before the daemon starts."""
    install = sqlite_installation
    with install.launcher() as launcher:
        for n in range(250):
            launcher.launch('<process><assign property="x">1</assign></process>', {}, f"b{n}")
    with running(install) as daemon:
        ids = {f"b{n}" for n in range(250)}
        daemon.wait_for(
            lambda: all(install.status(pid) == "completed" for pid in ids), "250 launches"
        )
        assert daemon.stop() == 0
    assert messages_in(install.config.launch_queue) == 0
    kinds = {pid: [entry.kind for entry in install.store.journal(pid)] for pid in ids}
    assert all(journal == ["launched", "completed"] for journal in kinds.values())


# dead letters -----------------------------------------------------------------------------------


def test_a_bad_message_is_dead_lettered_with_its_reason_queue_and_properties(
    sqlite_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    install = sqlite_installation
    config = install.config
    caplog.set_level(logging.INFO)
    with running(install) as daemon, install.launcher() as launcher:
        install.publish_raw(
            config.launch_queue,
            b"{not json",
            message_id="bad-1",
            correlation_id="c-1",
            content_type="application/json",
            headers={"origin": "test"},
            delivery_mode=1,
        )
        launcher.launch('<process><assign property="x">1</assign></process>', {}, "after")
        daemon.wait_for(lambda: install.status("after") == "completed", "the next launch")
        props, body = take(install, config.dead_letter_queue, "the dead letter")
        assert daemon.stop() == 0
    assert body == b"{not json"
    assert (props.message_id, props.correlation_id) == ("bad-1", "c-1")
    assert (props.content_type, props.delivery_mode) == ("application/json", 2)
    reason = props.headers["x-bureaucrat-error"]
    assert "JSON" in reason or "json" in reason
    assert props.headers["x-bureaucrat-queue"] == config.launch_queue
    assert props.headers["origin"] == "test"
    assert set(props.headers) == {"x-bureaucrat-error", "x-bureaucrat-queue", "origin"}
    assert f"dead-lettered a message from {config.launch_queue}: {reason}" in logged(caplog)
    assert messages_in(config.launch_queue) == 0


def test_a_dead_letter_queue_deleted_under_the_loop_loses_no_dead_letter(
    sqlite_installation: Installation,
) -> None:
    """Dead letters are published ``mandatory``: with their queue gone, the publish fails, the
    loop connects again (declaring its queues) and the message, not acknowledged, comes back
    and is dead-lettered then, instead of vanishing."""
    install = sqlite_installation
    config = install.config
    with running(install) as daemon, install.launcher() as launcher:
        launcher.launch('<process><assign property="x">1</assign></process>', {}, "up")
        daemon.wait_for(lambda: install.status("up") == "completed", "the loop to serve")
        with channel() as chan:
            chan.queue_delete(config.dead_letter_queue)
        install.publish_raw(config.launch_queue, b"{not json", message_id="lost?")
        found: list[bytes] = []

        def dead_lettered() -> bool:
            with suppress(pika.exceptions.ChannelClosedByBroker), channel() as chan:
                method, _, body = chan.basic_get(config.dead_letter_queue, auto_ack=True)
                if method is not None:
                    found.append(body)
            return bool(found)

        daemon.wait_for(dead_lettered, "the dead letter, once the queue is declared again")
        assert daemon.stop() == 0
    assert found == [b"{not json"]
    assert messages_in(config.launch_queue) == 0


def test_a_dead_letters_reason_is_cut_to_4000_characters(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation
    config = install.config
    unknown = "<process><" + "z" * 5_000 + "/></process>"  # refused, and quoted in the reason
    with running(install) as daemon:
        install.publish_raw(
            config.launch_queue, dumps({"definition": unknown, "fields": {}}), message_id="long"
        )
        props, _ = take(install, config.dead_letter_queue, "the dead letter")
        assert daemon.stop() == 0
    assert len(props.headers["x-bureaucrat-error"]) == 4_000
    assert props.headers["x-bureaucrat-error"].startswith("invalid definition: line 1: unknown")
    assert props.headers["x-bureaucrat-queue"] == config.launch_queue


# what the daemon finds at start, and meets later --------------------------------------------------


def handled_without_publishing(install: Installation, definition: str, process_id: str) -> None:
    """Launch ``definition`` through a service that publishes nothing: its messages stay in the
    outbox, unsent, as a daemon killed between its commit and its publishing leaves them."""
    store = Store(install.database_url)
    try:
        service = Service(store, install.config)
        body = dumps({"definition": definition, "fields": {}})
        delivery = Delivery(
            install.config.launch_queue,
            body,
            delivery_tag=1,
            redelivered=False,
            content_type="application/json",
            message_id=process_id,  # as the Launcher sends it
        )
        assert service.handle_batch([delivery]) == [ACK]
    finally:
        store.close()


def test_outbox_rows_and_due_timers_left_behind_are_published_and_fired_at_start(
    sqlite_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    install = sqlite_installation
    caplog.set_level(logging.INFO)
    queue = waiting(install, "p")
    handled_without_publishing(install, '<process><action participant="p"/></process>', "left")
    handled_without_publishing(
        install, '<process><delay duration="0.01"/><assign property="x">1</assign></process>', "due"
    )
    time.sleep(0.05)  # the delay's timer falls due before the daemon starts
    with running(install) as daemon:
        _, body = take(install, queue, "the workitem left in the outbox")
        assert json.loads(body)["process_id"] == "left"
        daemon.wait_for(lambda: install.status("due") == "completed", "the due timer")
        daemon.wait_for(lambda: bool(logged(caplog)), "the start's line")  # said once done
        assert daemon.stop() == 0
    assert logged(caplog)[0].endswith("(published 1 pending messages, fired 1 due timers)")


def test_outbox_rows_left_unsent_while_serving_are_relayed(
    sqlite_installation: Installation,
) -> None:
    """Rows a lost connection left unsent while the daemon serves go out with its next relay."""
    install = sqlite_installation
    queue = waiting(install, "p")
    with running(install) as daemon:
        daemon.wait_for(lambda: daemon.daemon.next_relay > 0, "the first relay")
        handled_without_publishing(install, '<process><action participant="p"/></process>', "r")
        daemon.daemon.next_relay = 0.0  # its next relay is due now
        _, body = take(install, queue, "the relayed workitem")
        assert json.loads(body)["process_id"] == "r"
        assert daemon.stop() == 0


def test_a_schedule_fires_while_the_daemon_serves(sqlite_installation: Installation) -> None:
    install = sqlite_installation
    with running(install) as daemon, install.launcher() as launcher:
        launcher.schedule_add(
            "often", '<process><assign property="x">1</assign></process>', every=1
        )
        store = install.store
        daemon.wait_for(
            lambda: store.counts_by_status().get("completed", 0) >= 1,
            "an occurrence of the schedule",
            timeout=20,
        )
        assert daemon.stop() == 0


def test_processed_message_ids_past_the_dedupe_window_are_pruned(
    sqlite_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    install = sqlite_installation
    caplog.set_level(logging.INFO)
    with running(install) as daemon, install.launcher() as launcher:
        daemon.wait_for(lambda: daemon.daemon.next_prune > 0, "the first pruning")
        launcher.launch('<process><assign property="x">1</assign></process>', {}, "pruned")
        daemon.wait_for(lambda: install.status("pruned") == "completed", "the launch")
        daemon.wait_for(lambda: not install.store.unsent(), "its end's notice marked sent")
        daemon.daemon.config = replace(install.config, dedupe_window=-60.0)
        daemon.daemon.next_prune = 0.0  # the hour is up
        daemon.wait_for(
            lambda: any(line.startswith("pruned ") for line in logged(caplog)), "a pruning"
        )
        assert daemon.stop() == 0
    (line,) = [line for line in logged(caplog) if line.startswith("pruned ")]
    assert line == "pruned 2 processed message ids and sent messages"  # the launch's, its end's


# metrics ---------------------------------------------------------------------------------------


class Tracked(Broker):
    """The daemon's broker, kept where the test can reach it, with the options it was given."""

    made: ClassVar[list[Broker]] = []
    options: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Tracked.made.append(self)
        Tracked.options.append(kwargs)


class TrackedStore(Store):
    """The daemon's stores, with the options each was opened with."""

    options: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        TrackedStore.options.append(kwargs)


def test_the_loop_counts_its_messages_dead_letters_and_reconnections(
    sqlite_installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    install = sqlite_installation
    config = install.config
    port = free_port()
    Tracked.made.clear()
    Tracked.options.clear()
    TrackedStore.options.clear()
    monkeypatch.setattr("bureaucrat.daemon.Broker", Tracked)
    monkeypatch.setattr("bureaucrat.daemon.Store", TrackedStore)
    metered = replace(
        config,
        metrics_port=port,
        heartbeat=17,
        sqlite_synchronous="normal",
        definition_cache_size=1_000_000,
    )
    with running(install, metered) as daemon, install.launcher() as launcher:
        launcher.launch('<process><assign property="x">1</assign></process>', {}, "counted")
        install.publish_raw(config.launch_queue, b"{not json", message_id="bad")
        take(install, config.dead_letter_queue, "the dead letter")
        daemon.wait_for(lambda: install.status("counted") == "completed", "the launch")
        samples = scrape(port)
        assert value(samples, "bureaucrat_dead_letters_total") == 1
        assert value(samples, "bureaucrat_reconnects_total") == 0
        handled = value(
            samples, "bureaucrat_messages_total", queue=config.launch_queue, outcome="handled"
        )
        assert handled == 1
        assert value(samples, "bureaucrat_instances", status="completed") == 1  # from its store
        steps = [v for (name, _), v in samples.items() if name == "bureaucrat_steps_total"]
        assert sum(steps) >= 1  # the service's steps are metered
        first = Tracked.made[0]  # the network drops its connection: the loop connects again
        first.connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
        daemon.wait_for(lambda: len(Tracked.made) == 2, "a second connection")
        daemon.wait_for(
            lambda: value(scrape(port), "bureaucrat_reconnects_total") == 1, "the reconnection"
        )
        assert daemon.stop() == 0
    assert scrape(port) == {}  # the metrics stop with the daemon
    assert [options["heartbeat"] for options in Tracked.options] == [17, 17]
    serving, scraping = TrackedStore.options  # the loop's store, then the scrape's
    assert serving == {"definition_cache_size": 1_000_000, "sqlite_synchronous": "normal"}
    assert scraping == {"sqlite_synchronous": "normal"}


def test_the_metrics_listen_on_the_configured_host_only(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation
    port = free_port()
    config = replace(install.config, metrics_port=port, metrics_host="127.0.0.2")
    with running(install, config) as daemon:
        daemon.wait_for(lambda: bool(scrape(port, "127.0.0.2")), "the metrics")
        assert scrape(port) == {}  # 127.0.0.1: nothing listens there
        assert daemon.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_ask_the_loop_to_stop_after_the_batch_in_hand(
    signum: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    daemon = Daemon(load_config(None, environ={}))
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        daemon.install_signal_handlers()
        os.kill(os.getpid(), signum)  # handled in this, the main, thread
        deadline = time.monotonic() + 10
        while not daemon.stopping and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    assert daemon.stopping
    assert logged(caplog) == [f"signal {signum.name}: stopping after the batch in hand"]


# what stops it ----------------------------------------------------------------------------------


def test_a_queue_that_exists_with_other_arguments_stops_the_daemon_with_2(
    sqlite_installation: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    install = sqlite_installation
    config = replace(install.config, queue_type="quorum")  # the queues exist as classic ones
    daemon = Running(install, config).start()
    daemon.thread.join(30)
    assert daemon.exit == [2]
    (critical,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical.getMessage().startswith(f"stopping: queue {install.tag}.")
    assert "exists as a classic queue but queue_type = quorum" in critical.getMessage()


# publishing ------------------------------------------------------------------------------------


def test_the_publisher_reports_each_message_it_cannot_send_and_sends_the_rest(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation
    config = install.config
    quorum, unknown = config.worker_queue("quorum"), f"nowhere-{install.tag}"
    install.worker_queues += [quorum, unknown]
    with channel() as chan:  # a worker queue of another type than the daemon declares
        chan.queue_declare(quorum, durable=True, arguments={"x-queue-type": "quorum"})
    plain = waiting(install, "plain")
    broker = Broker(config.amqp_url, queues=QueueArguments.from_config(config))
    try:
        publisher = BrokerPublisher(broker, config)
        outcomes = publisher.publish_many(
            [
                Outgoing("1", "", quorum, b"a", {"delivery_mode": 2}),
                Outgoing("2", "", plain, b"b", {"colour": "red"}),  # not a property at all
                Outgoing("5", "", plain, b"e", {"priority": "high"}),  # pika cannot encode it
                Outgoing("3", "", plain, b"c", {"delivery_mode": 2}),
                Outgoing("4", "", unknown, b"d", {}),
            ]
        )
    finally:
        broker.close()
    assert outcomes[0] is not None and quorum in outcomes[0]
    assert outcomes[1] is not None and outcomes[1].startswith("TypeError: ")
    assert outcomes[2] is not None and outcomes[2].startswith("error: ")
    assert outcomes[3:] == [None, None]  # a queue of its own is declared for an unknown worker
    _, body = take(install, plain, "the message that could be sent")
    assert body == b"c"
    assert messages_in(plain) == 0


def test_the_publisher_declares_no_queue_for_what_goes_through_an_exchange(
    sqlite_installation: Installation,
) -> None:
    """A message to an exchange is published as it is (no queue is made for its routing key);
    unroutable, it is refused (mandatory), not dropped."""
    install = sqlite_installation
    config = install.config
    key = f"no-binding-{install.tag}"
    install.worker_queues.append(key)  # deleted afterwards, should it be made after all
    broker = Broker(config.amqp_url, queues=QueueArguments.from_config(config))
    try:
        publisher = BrokerPublisher(broker, config)
        (outcome,) = publisher.publish_many(
            [Outgoing("1", config.exchange, key, b"x", {"message_id": "1"})]
        )
    finally:
        broker.close()
    assert outcome == f"RabbitMQ could not route a message for {config.exchange}/{key}: no queue"
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        messages_in(key)


def test_a_worker_queue_deleted_after_its_first_message_fails_the_next_instead_of_losing_it(
    sqlite_installation: Installation,
) -> None:
    """The publisher declares a worker's queue once per connection; a message to it after an
    operator deleted it is refused (mandatory, on the default exchange too), not dropped."""
    install = sqlite_installation
    config = install.config
    queue = config.worker_queue("gone")
    install.worker_queues.append(queue)  # made by the publisher
    broker = Broker(config.amqp_url, queues=QueueArguments.from_config(config))
    try:
        publisher = BrokerPublisher(broker, config)
        first = publisher.publish_many([Outgoing("1", "", queue, b"a", {"message_id": "1"})])
        with channel() as chan:
            chan.queue_delete(queue)
        second = publisher.publish_many([Outgoing("2", "", queue, b"b", {"message_id": "2"})])
    finally:
        broker.close()
    assert first == [None]
    assert second == [f"RabbitMQ could not route a message for (default)/{queue}: no queue"]


# logging ---------------------------------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    pika_level = logging.getLogger("pika").level
    try:
        yield root
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("pika").setLevel(pika_level)


def added(root: logging.Logger, before: list[logging.Handler]) -> list[logging.Handler]:
    return [handler for handler in root.handlers if handler not in before]


def test_logging_goes_to_the_log_file_at_the_configured_level(
    root_logger: logging.Logger, tmp_path: Path, sqlite_installation: Installation
) -> None:
    before = list(root_logger.handlers)
    log = tmp_path / "daemon.log"
    config = replace(sqlite_installation.config, log_file=str(log), log_level="warning")
    streams = setup_logging(config, foreground=True)
    (handler,) = added(root_logger, before)
    assert isinstance(handler, logging.handlers.WatchedFileHandler)
    assert streams == [handler.stream]
    assert root_logger.level == logging.WARNING
    assert logging.getLogger("pika").level == logging.WARNING
    logging.getLogger("bureaucrat.x").warning("kept %d", 1)
    logging.getLogger("bureaucrat.x").info("below the level")
    handler.flush()
    (line,) = log.read_text().splitlines()
    assert line.endswith(" bureaucrat.x WARNING kept 1")


def test_logging_in_the_foreground_goes_to_stderr_and_to_syslog_when_asked(
    root_logger: logging.Logger, sqlite_installation: Installation
) -> None:
    before = list(root_logger.handlers)
    config = sqlite_installation.config
    setup_logging(config, foreground=True)
    (stderr,) = added(root_logger, before)
    assert isinstance(stderr, logging.StreamHandler) and stderr.stream is not None
    root_logger.handlers[:] = before
    streams = setup_logging(replace(config, syslog=True), foreground=True)
    (syslog,) = added(root_logger, before)
    assert isinstance(syslog, logging.handlers.SysLogHandler)  # syslog alone: no stderr
    local = "/dev/log" if Path("/dev/log").exists() else ("localhost", 514)
    assert syslog.address == local
    assert streams == [syslog.socket]  # type: ignore[attr-defined]


def test_a_daemon_told_nowhere_to_log_logs_to_syslog_or_to_a_file(
    root_logger: logging.Logger,
    tmp_path: Path,
    sqlite_installation: Installation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = list(root_logger.handlers)
    monkeypatch.chdir(tmp_path)
    setup_logging(sqlite_installation.config, foreground=False)
    (handler,) = added(root_logger, before)
    if Path("/dev/log").exists():
        assert isinstance(handler, logging.handlers.SysLogHandler)
    else:
        assert isinstance(handler, logging.handlers.WatchedFileHandler)
        assert handler.baseFilename == str(tmp_path / "bureaucrat.log")
