"""Celery tasks routed and formatted the original bureaucrat's way: ``celery_routing = original``
sends a task with neither ``queue=`` nor a Celery route to the queue named by the first dotted
segment of its name, where a worker started with ``-Q <segment>`` reads; ``celery_protocol = 1``
sends Celery's message protocol 1. Checked with real Celery workers (prefork and solo pools)
that answer the engine's message queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pika
import pytest

from bureaucrat.amqp import Broker, Delivery
from bureaucrat.config import Config, load_config
from bureaucrat.daemon import BrokerPublisher
from bureaucrat.engine.commands import DispatchWorkitem
from bureaucrat.errors import ConfigError
from bureaucrat.participants.celery import celery_message
from tests.brokers import AMQP_URL, delete, require_rabbitmq, unique
from tests.harness import Installation
from tests.test_celery_participants import Answers, dispatch

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = 30.0
ORIGINAL = Config(celery_routing="original")


def route(participant: str, config: Config = ORIGINAL, queue: str | None = None) -> tuple[str, str]:
    """Where the engine publishes the task message of an action of ``participant``."""
    message = celery_message(dispatch(participant, {}, queue), config)
    return message.exchange, message.routing_key


# routing ------------------------------------------------------------------------------------


def test_the_first_segment_of_the_task_name_is_the_queue() -> None:
    assert route("webhook_launcher.tasks.handle_webhook") == ("", "webhook_launcher")
    assert route("undotted") == ("", "undotted")


def test_celery_routing_sends_to_celerys_default_queue() -> None:
    assert route("webhook_launcher.tasks.handle_webhook", Config()) == ("", "celery")


def test_the_actions_queue_wins() -> None:
    assert route("webhook_launcher.tasks.handle_webhook", queue="hooks") == ("", "hooks")


def test_a_celery_route_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "tests.celeryconfig")
    assert route("tests.routed.task") == ("", "routed_by_celery")
    assert route("tests.other.task") == ("", "tests")
    assert route("tests.routed.task", queue="mine") == ("", "mine")


@pytest.mark.parametrize("name", [".tasks.hook", "bureaucrat_msgs.tasks.hook", "bureaucrat.t"])
def test_a_segment_no_worker_reads_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=f"Celery participant {name}: the first part"):
        route(name)


# the message's protocol ---------------------------------------------------------------------


def test_protocol_1_has_the_originals_shape() -> None:
    command = dispatch("webhook_launcher.tasks.handle_webhook", {"hook": 1})
    message = celery_message(command, replace(ORIGINAL, celery_protocol=1))
    body = json.loads(message.body)
    assert body == {
        "task": "webhook_launcher.tasks.handle_webhook",
        "id": command.workitem_id,
        "args": [command.message],
        "kwargs": {},
        "retries": 0,
        "eta": None,
        "expires": None,
        "utc": True,
        "callbacks": None,
        "errbacks": None,
        "timelimit": [None, None],
        "taskset": None,
        "chord": None,
        "group": None,
        "group_index": None,
    }
    assert message.properties["headers"] == {}
    assert message.properties["content_type"] == "application/json"
    assert message.properties["content_encoding"] == "utf-8"
    assert message.properties["delivery_mode"] == 2
    assert message.message_id == message.properties["correlation_id"] == command.workitem_id


def test_protocol_2_is_the_default() -> None:
    message = celery_message(dispatch("shop.check_stock", {}), Config())
    assert isinstance(json.loads(message.body), list)
    assert message.properties["headers"]["task"] == "shop.check_stock"


# the config keys ----------------------------------------------------------------------------


def test_the_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "bureaucrat.conf"
    path.write_text("[bureaucrat]\ncelery_routing = original\ncelery_protocol = 1\n")
    config = load_config(path, environ={})
    assert (config.celery_routing, config.celery_protocol) == ("original", 1)
    assert (Config().celery_routing, Config().celery_protocol) == ("celery", 2)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("celery_routing = first", "[bureaucrat] celery_routing = 'first': must be one of"),
        ("celery_protocol = 3", "[bureaucrat] celery_protocol = 3: must be from 1 to 2"),
        ("celery_protocol = one", "[bureaucrat] celery_protocol = 'one' is not a valid int"),
    ],
)
def test_a_bad_value_is_refused_naming_its_key(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "bureaucrat.conf"
    path.write_text(f"[bureaucrat]\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert error in str(raised.value)


# real workers on the first segment's queue --------------------------------------------------


def start_worker(pool: str, segment: str, message_queue: str, log: Path) -> subprocess.Popen[bytes]:
    """``celery worker -Q <segment>`` serving ``<segment>.tasks.*``, answering ``message_queue``."""
    command = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"]
    command += [f"--pool={pool}", "-c", "2", "-Q", segment, "-n", f"{segment}@%h"]
    command += ["--loglevel=warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    env = {**os.environ, "TEST_MESSAGE_QUEUE": message_queue, "TEST_ORIGINAL_QUEUE": segment}
    env.pop("CELERY_CONFIG_MODULE", None)
    with log.open("wb") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class OriginalWorker(Answers):
    """A ``celery worker -Q <segment>`` whose tasks are named ``<segment>.tasks.*``, and the
    engine's publisher."""

    pool: str
    log: Path
    segment: str = field(default_factory=lambda: f"webhook_{uuid.uuid4().hex[:12]}")
    message_queue: str = field(default_factory=lambda: unique("bureaucrat_msgs_test"))
    answers: list[Delivery] = field(default_factory=list)

    def connect(self) -> None:
        self.broker = Broker(AMQP_URL)
        self.broker.ensure_queue(self.message_queue)
        self.broker.consume([self.message_queue], 10, self._on_answer)

    def start(self) -> None:
        self.process = start_worker(self.pool, self.segment, self.message_queue, self.log)

    def stop(self) -> None:
        try:
            if hasattr(self, "process"):
                stop_worker(self.process)
            self.broker.close()
        finally:
            delete(queues=[self.segment, self.message_queue], exchanges=[self.segment])

    def send(self, task: str, payload: dict[str, Any], protocol: int) -> DispatchWorkitem:
        """Publish a workitem for ``<segment>.tasks.<task>`` as the daemon does: the outbox's
        publisher, with publisher confirms, ``mandatory`` where it is routed by queue name."""
        command = dispatch(f"{self.segment}.tasks.{task}", payload)
        config = Config(
            amqp_url=AMQP_URL,
            message_queue=self.message_queue,
            celery_routing="original",
            celery_protocol=protocol,
        )
        message = celery_message(command, config)
        assert (message.exchange, message.routing_key) == ("", self.segment)
        assert isinstance(json.loads(message.body), dict) is (protocol == 1)  # 1: a dict, 2: a list
        assert BrokerPublisher(self.broker, config).publish_many([message]) == [None]
        return command


@dataclass
class Started:
    worker: OriginalWorker
    early: DispatchWorkitem
    """Sent before the worker started."""


@pytest.fixture(scope="module", params=["prefork", "solo"])
def started(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Started]:
    require_rabbitmq()
    worker = OriginalWorker(request.param, tmp_path_factory.mktemp("celery") / "worker.log")
    worker.connect()
    try:
        early = worker.send("double", {"n": 4}, protocol=2)
        worker.start()
        yield Started(worker, early)
    finally:
        worker.stop()


def only_answer(worker: OriginalWorker, command: DispatchWorkitem) -> dict[str, Any]:
    answers = worker.answers_to(command)
    assert len(answers) == 1, answers
    assert {k: v for k, v in answers[0].items() if k != "payload"} == {
        k: v for k, v in command.message.items() if k != "payload"
    }
    return answers[0]["payload"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", [1, 2])
def test_a_worker_on_the_first_segment_answers(started: Started, protocol: int) -> None:
    command = started.worker.send("double", {"n": 21, "status": "done"}, protocol)
    assert only_answer(started.worker, command) == {"n": 42, "status": "done"}


@pytest.mark.parametrize("protocol", [1, 2])
def test_an_original_task_answers_through_its_handler(started: Started, protocol: int) -> None:
    command = started.worker.send("handle_webhook", {"hook": "push", "status": "done"}, protocol)
    payload = only_answer(started.worker, command)
    assert payload == {"hook": "push", "status": "done", "handled": "push"}


def test_a_task_sent_before_its_worker_started_waits_for_it(started: Started) -> None:
    assert only_answer(started.worker, started.early) == {"n": 8, "status": "done"}


def test_the_originals_own_message_reaches_the_same_worker(started: Started) -> None:
    """The original published a hand-made protocol 1 message to the exchange named by the
    first segment: the worker declares that exchange, bound to its queue, so both ways in
    reach it (``bureaucrat/channelwrapper.py`` of rojkov/bureaucrat, ``elaborate``)."""
    worker = started.worker
    command = dispatch(f"{worker.segment}.tasks.handle_webhook", {"hook": "tag", "status": "done"})
    celery_msg = {
        "task": command.participant,
        "id": str(uuid.uuid4()),
        "args": (command.message,),
        "kwargs": {},
        "retries": 0,
        "eta": None,
        "expires": None,
        "utc": True,
        "callbacks": None,
        "errbacks": None,
        "timelimit": (None, None),
        "taskset": None,
        "chord": None,
    }
    properties = {"delivery_mode": 2, "content_type": "application/json"}
    properties["content_encoding"] = "utf-8"
    body = json.dumps(celery_msg).encode()
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while not exchange_exists(worker.segment) and time.monotonic() < deadline:
        worker.broker.run(0.1)  # the worker declares it as it starts consuming
    worker.broker.publish(worker.segment, worker.segment, body, properties)  # mandatory
    payload = only_answer(worker, command)
    assert payload == {"hook": "tag", "status": "done", "handled": "tag"}


def exchange_exists(name: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()
    return True


# the daemon, end to end ---------------------------------------------------------------------

WEBHOOK = """<process name="webhook">
  <context><property name="hook" type="str">push</property></context>
  <action participant="{segment}.tasks.handle_webhook"/>
  <action participant="{segment}.tasks.double"/>
</process>"""


@pytest.mark.parametrize("protocol", [1, 2])
def test_the_daemon_runs_an_original_definition_with_original_workers(
    rabbitmq: None, tmp_path: Path, protocol: int
) -> None:
    segment = f"webhook_{uuid.uuid4().hex[:12]}"
    url = f"sqlite:///{tmp_path / 'bureaucrat.db'}"
    options = {"taskqueue_type": "celery", "celery_routing": "original"}
    with Installation(tmp_path, url, celery_protocol=protocol, **options) as install:
        process = start_worker("solo", segment, install.config.message_queue, tmp_path / "w.log")
        try:
            install.start_daemon()
            with install.launcher() as launcher:
                pid = launcher.launch(WEBHOOK.format(segment=segment), {"n": 5})
            record = install.wait_finished(pid, timeout=ANSWER_TIMEOUT)
        finally:
            stop_worker(process)
            delete(queues=[segment], exchanges=[segment])
    assert record.status == "completed", install.log_text()
    context = record.state["scopes"][""]
    assert (context["handled"], context["n"]) == ("push", 10)
