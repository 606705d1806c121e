"""Prometheus metrics: a real daemon and a real worker, each serving ``/metrics``, scraped over
HTTP after a run; every count must equal what was sent."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bureaucrat.config import load_config
from bureaucrat.daemon import Daemon
from bureaucrat.errors import ConfigError
from bureaucrat.metrics import DaemonMetrics
from bureaucrat.service import Disposition, Service
from bureaucrat.store import Store
from tests.harness import Installation
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import CONFIG, Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

N = 6
ONE_ACTION = '<process name="metered"><action participant="inc"/></process>'
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample at ``/metrics``, by name and labels; empty while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.mark.usefixtures("rabbitmq")
def test_the_daemon_and_a_worker_count_what_was_sent(installation: Installation) -> None:
    install = installation
    port, worker_port = free_port(), free_port()
    with install.config_path.open("a") as config:
        config.write(f"[metrics]\nport = {port}\n")
    launches, messages = install.config.launch_queue, install.config.message_queue
    install.start_daemon()
    install.start_worker(
        "inc", "tests.participants:inc", options=("--metrics-port", str(worker_port))
    )
    with install.launcher() as launcher:
        pids = [launcher.launch(ONE_ACTION) for _ in range(N)]
        launcher.launch(ONE_ACTION, process_id=pids[0])  # the same launch again: a duplicate
    install.publish_raw(launches, b"<process><unknown/></process>")  # refused: dead-lettered
    for pid in pids:
        assert install.wait_finished(pid).status == "completed"

    def settled(samples: Samples) -> bool:
        counted = sum(v for (name, _), v in samples.items() if name == "bureaucrat_messages_total")
        return counted == 2 * N + 2 and value(samples, "bureaucrat_outbox_backlog") == 0

    last: dict[str, Samples] = {}

    def scraped(port: int, condition: Callable[[Samples], bool]) -> Callable[[], bool]:
        def check() -> bool:
            last["samples"] = scrape(port)
            return condition(last["samples"])

        return check

    install.wait_for(scraped(port, settled), what="every message counted")
    samples = last["samples"]
    messages_total = "bureaucrat_messages_total"
    assert value(samples, messages_total, queue=launches, outcome="handled") == N
    assert value(samples, messages_total, queue=launches, outcome="duplicate") == 1
    assert value(samples, messages_total, queue=launches, outcome="dead_lettered") == 1
    assert value(samples, messages_total, queue=messages, outcome="handled") == N
    assert value(samples, "bureaucrat_steps_total", event="Start") == N
    assert value(samples, "bureaucrat_steps_total", event="ParticipantResponse") == N
    assert value(samples, "bureaucrat_step_seconds_count") == 2 * N
    assert value(samples, "bureaucrat_batch_size_sum") == 2 * N + 2
    assert value(samples, "bureaucrat_dead_letters_total") == 1
    assert value(samples, "bureaucrat_reconnects_total") == 0
    assert value(samples, "bureaucrat_instances", status="completed") == N
    assert value(samples, "bureaucrat_timer_lag_seconds") == 0
    assert len(install.dead_letters(1)) == 1

    def answered(samples: Samples) -> bool:
        return (
            value(samples, "bureaucrat_worker_workitems_total", participant="inc", status="done")
            == N
        )

    install.wait_for(scraped(worker_port, answered), what="the worker's count")
    worker = last["samples"]
    assert value(worker, "bureaucrat_worker_seconds_count", participant="inc") == N
    assert value(worker, "bureaucrat_worker_dead_letters_total", participant="inc") == 0


def test_each_message_says_what_became_of_it(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handled, a duplicate, dead-lettered, or set aside (a defect met on its instance), as the
    daemon counts them (``Verdict.disposition``); the service times every step it takes."""
    steps: list[str] = []

    class Meter:
        def step(self, event: str, seconds: float) -> None:
            steps.append(event)

    service = Service(store, CONFIG, Recorder(), meter=Meter())
    first = launch(ONE_ACTION, {}, "p1")
    assert service.handle(first).disposition is Disposition.HANDLED
    assert service.handle(first).disposition is Disposition.DUPLICATE
    again = json.dumps({"definition": ONE_ACTION, "process_id": "p1"}).encode()
    other_id = Message(CONFIG.launch_queue, again, "another message id")
    assert service.handle(other_id).disposition is Disposition.DUPLICATE
    bad = Message(CONFIG.launch_queue, b"<process><unknown/></process>", "p2", None)
    assert service.handle(bad).disposition is Disposition.DEAD_LETTERED
    assert service.handle(launch(ONE_ACTION, {}, "p3")).disposition is Disposition.HANDLED

    def defect(*args: object) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr("bureaucrat.service.encode", defect)
    terminate = b'{"name": "terminate", "process_id": "p3"}'
    verdict = service.handle(Message(CONFIG.message_queue, terminate, "t3"))
    assert verdict.disposition is Disposition.SET_ASIDE
    assert store.instance("p3").status == "broken"  # type: ignore[union-attr]
    assert steps == ["Start", "Start", "Terminate"]


def test_a_due_timer_not_yet_fired_shows_as_lag(tmp_path: Path) -> None:
    """The lag of the earliest due timer, read from the store at scrape time."""

    class Timers:
        def counts_by_status(self) -> dict[str, int]:
            return {"running": 2}

        def outbox_backlog(self) -> int:
            return 3

        def oldest_due_timer(self, now: float) -> float | None:
            return now - 7.5

        def close(self) -> None:
            closed.append(True)

    closed: list[bool] = []

    metrics = DaemonMetrics(Timers, clock=lambda: 1000.0)
    port = metrics.start(0, "127.0.0.1")
    try:
        samples = scrape(port)
    finally:
        metrics.stop()
    assert value(samples, "bureaucrat_timer_lag_seconds") == 7.5
    assert value(samples, "bureaucrat_outbox_backlog") == 3
    assert value(samples, "bureaucrat_instances", status="running") == 2
    assert closed == [True]  # the scrape's store is closed with the metrics


def test_a_metrics_port_already_taken_stops_the_daemon_at_start(tmp_path: Path) -> None:
    """An operator must choose another port: the daemon says so (exit 2), before connecting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = replace(load_config(None, environ={}), metrics_port=port)
        with pytest.raises(ConfigError, match=rf"\[metrics\] port = {port}: cannot listen on"):
            Daemon(config).run()


def test_metrics_settings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "b.conf"
    config.write_text("[metrics]\nport = 9464\nhost = 0.0.0.0\n")
    loaded = load_config(config, environ={})
    assert (loaded.metrics_port, loaded.metrics_host) == (9464, "0.0.0.0")
    assert load_config(None, environ={}).metrics_port == 0  # off unless asked for
    for bad, problem in (
        ("port = 70000", "[metrics] port = 70000: must be from 0 to 65535"),
        ("port = web", "[metrics] port = 'web' is not a valid int"),
        ("host = a b", "[metrics] host = 'a b': is not a host name or an IP address"),
    ):
        config.write_text(f"[metrics]\n{bad}\n")
        with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            load_config(config, environ={})
