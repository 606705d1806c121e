"""Celery participants against the real broker: the task message ``celery_message`` builds is the
one Celery's ``send_task`` publishes, and real Celery workers (prefork and solo pools) running
``tests.celery_app`` answer the engine's message queue as the wire protocol says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from celery import Celery  # type: ignore[import-untyped]

from bureaucrat.amqp import Broker, Delivery
from bureaucrat.celery import Reporter, settings
from bureaucrat.config import Config
from bureaucrat.engine.commands import DispatchWorkitem
from bureaucrat.errors import ConfigError
from bureaucrat.participants.celery import celery_message, sender_app
from tests.brokers import AMQP_URL, delete, require_rabbitmq, unique

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TIMEOUT = 30.0


def dispatch(
    participant: str, payload: dict[str, Any], queue: str | None = None
) -> DispatchWorkitem:
    """The command the engine gives for an action of ``participant``."""
    target = f"{uuid.uuid4().hex[:12]}_0_1"
    workitem_id = f"{target}.1"
    message = {"name": "response", "target": target, "origin": target, "payload": payload}
    message["workitem_id"] = workitem_id
    return DispatchWorkitem(workitem_id, target, participant, "celery", queue, message)


# the message --------------------------------------------------------------------------------


def test_the_message_is_the_one_send_task_publishes() -> None:
    require_rabbitmq()
    queue = unique("celery_format")
    command = dispatch("shop.check_stock", {"quantity": 3, "status": "done"}, queue)
    ours = celery_message(command, Config(amqp_url=AMQP_URL))
    app = sender_app(AMQP_URL, None)  # the app celery_message used
    with app.connection_for_write() as connection:
        app.send_task(
            command.participant,
            args=[command.message],
            task_id=command.workitem_id,
            queue=queue,
            connection=connection,
        )
    try:
        method, properties, body = take_one(queue)
    finally:
        delete(queues=[queue], exchanges=[queue])
    assert (ours.exchange, ours.routing_key) == (method.exchange, method.routing_key) == ("", queue)
    assert ours.body == body
    for name in ("content_type", "content_encoding", "correlation_id", "delivery_mode", "priority"):
        assert ours.properties[name] == getattr(properties, name), name
    assert ours.properties["reply_to"] == properties.reply_to
    assert ours.properties["headers"] == properties.headers


def test_the_message_follows_protocol_2() -> None:
    command = dispatch("shop.check_stock", {"quantity": 3})
    message = celery_message(command, Config())
    assert json.loads(message.body) == [
        [command.message],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    headers = message.properties["headers"]
    assert headers["lang"] == "py"
    assert headers["task"] == "shop.check_stock"
    assert headers["id"] == headers["root_id"] == command.workitem_id
    assert headers["retries"] == 0
    assert headers["parent_id"] is headers["eta"] is headers["expires"] is None
    assert message.properties["content_type"] == "application/json"
    assert message.properties["content_encoding"] == "utf-8"
    assert message.properties["delivery_mode"] == 2


def test_the_message_is_identified_by_the_workitem() -> None:
    command = dispatch("shop.check_stock", {})
    message = celery_message(command, Config())
    assert message.message_id == command.workitem_id
    assert message.properties["message_id"] == command.workitem_id
    assert message.properties["correlation_id"] == command.workitem_id
    assert celery_message(command, Config()) == message


def test_routing_defaults_to_celerys_default_queue() -> None:
    message = celery_message(dispatch("shop.check_stock", {}), Config())
    assert (message.exchange, message.routing_key) == ("", "celery")


def test_routing_follows_a_shared_celery_config_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_CONFIG_MODULE", "tests.celeryconfig")
    routed = celery_message(dispatch("tests.routed.task", {}), Config())
    assert routed.routing_key == "routed_by_celery"
    chosen = celery_message(dispatch("tests.routed.task", {}, queue="mine"), Config())
    assert chosen.routing_key == "mine"


# where participants answer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker", "url"),
    [
        ("amqp://guest:guest@rabbit:5673//", "amqp://guest:guest@rabbit:5673/%2F"),
        ("pyamqp://shop:s%40cret@rabbit/orders", "amqp://shop:s%40cret@rabbit:5672/orders"),
        (None, "amqp://guest:guest@localhost:5672/%2F"),
    ],
)
def test_answers_go_to_the_celery_broker(
    broker: str | None, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUREAUCRAT_AMQP_URL", raising=False)
    app = Celery("shop", broker=broker, set_as_current=False)
    assert settings(app) == (url, "bureaucrat_msgs")


def test_answers_go_where_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    app = Celery("shop", broker="amqp://celery-broker//", set_as_current=False)
    monkeypatch.setenv("BUREAUCRAT_AMQP_URL", "amqp://engine-broker/%2F")
    app.conf.bureaucrat_message_queue = "engine_msgs"
    assert settings(app) == ("amqp://engine-broker/%2F", "engine_msgs")
    app.conf.bureaucrat_amqp_url = "amqp://configured/%2F"
    assert settings(app) == ("amqp://configured/%2F", "engine_msgs")


def test_answers_need_a_rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUREAUCRAT_AMQP_URL", raising=False)
    app = Celery("shop", broker="memory://", set_as_current=False)
    with pytest.raises(ConfigError, match="bureaucrat_amqp_url"):
        settings(app)


def test_the_reporter_reconnects_when_its_connection_was_lost() -> None:
    require_rabbitmq()
    queue = unique("bureaucrat_msgs_test")
    reporter = Reporter()
    try:
        reporter.publish(AMQP_URL, queue, b'{"n": 1}', {"delivery_mode": 2})
        (lost,) = reporter._brokers.values()
        lost.connection.close()
        reporter.publish(AMQP_URL, queue, b'{"n": 2}', {"delivery_mode": 2})
        assert [take_one(queue)[2], take_one(queue)[2]] == [b'{"n": 1}', b'{"n": 2}']
    finally:
        reporter.close()
        delete(queues=[queue])


# the participants, in real workers ----------------------------------------------------------


class Answers:
    """Collects a Celery worker's answers on the engine's message queue, and waits for them.

    Needs ``broker`` (consuming the answers into ``_on_answer``), ``process`` and ``log``."""

    broker: Broker
    process: subprocess.Popen[bytes]
    log: Path
    answers: list[Delivery]

    def answers_to(self, command: DispatchWorkitem, settle: float = 0.5) -> list[dict[str, Any]]:
        """The answers to ``command``: waits for the first, then ``settle`` s for any more."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not self._answered(command) and time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the Celery worker exited: {self.log.read_text()[-3000:]}")
            self.broker.run(0.1)
        self.broker.run(settle)
        return [json.loads(d.body) for d in self.answers if self._belongs(d, command)]

    def _on_answer(self, delivery: Delivery) -> None:
        self.answers.append(delivery)
        self.broker.ack(delivery)

    def _answered(self, command: DispatchWorkitem) -> bool:
        return any(self._belongs(delivery, command) for delivery in self.answers)

    @staticmethod
    def _belongs(delivery: Delivery, command: DispatchWorkitem) -> bool:
        return bool(json.loads(delivery.body).get("workitem_id") == command.workitem_id)


@dataclass
class CeleryWorker(Answers):
    """A ``celery worker`` process on a queue of its own, and the broker the engine would use."""

    pool: str
    log: Path
    queue: str = field(default_factory=lambda: unique("celery_test"))
    message_queue: str = field(default_factory=lambda: unique("bureaucrat_msgs_test"))
    answers: list[Delivery] = field(default_factory=list)

    def start(self) -> None:
        self.broker = Broker(AMQP_URL)
        self.broker.ensure_queue(self.message_queue)
        self.broker.consume([self.message_queue], 10, self._on_answer)
        concurrency = ["-c", "2"] if self.pool == "prefork" else []
        command = [sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"]
        command += [f"--pool={self.pool}", *concurrency, "-Q", self.queue, "-n", f"{self.queue}@%h"]
        command += ["--loglevel=warning", "--without-gossip", "--without-mingle"]
        command += ["--without-heartbeat"]
        env = {**os.environ, "TEST_MESSAGE_QUEUE": self.message_queue}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)

    def stop(self) -> None:
        # the tests are over: a solo worker (one process, no children to leave behind) is
        # killed at once, instead of waiting seconds for its warm shutdown
        self.process.send_signal(signal.SIGKILL if self.pool == "solo" else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.broker.close()
        delete(queues=[self.queue, self.message_queue], exchanges=[self.queue])

    def send(self, command: DispatchWorkitem) -> None:
        """Publish the command's task message as the engine's outbox publisher does."""
        message = celery_message(
            command, Config(amqp_url=AMQP_URL, message_queue=self.message_queue)
        )
        self.broker.ensure_queue(message.routing_key)
        self.broker.publish(message.exchange, message.routing_key, message.body, message.properties)


@pytest.fixture(scope="module", params=["prefork", "solo"])
def worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorker]:
    require_rabbitmq()
    celery_worker = CeleryWorker(request.param, tmp_path_factory.mktemp("celery") / "worker.log")
    celery_worker.start()
    try:
        yield celery_worker
    finally:
        celery_worker.stop()


def ask(worker: CeleryWorker, participant: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a workitem to ``participant``; its one answer."""
    command = dispatch(participant, payload, queue=worker.queue)
    worker.send(command)
    answers = worker.answers_to(command)
    assert len(answers) == 1, answers
    assert {k: v for k, v in answers[0].items() if k != "payload"} == {
        k: v for k, v in command.message.items() if k != "payload"
    }
    return answers[0]["payload"]  # type: ignore[no-any-return]


def test_a_participant_changes_the_payload(worker: CeleryWorker) -> None:
    assert ask(worker, "tests.double", {"n": 21, "status": "done"}) == {"n": 42, "status": "done"}


def test_a_participant_returning_none_leaves_the_payload(worker: CeleryWorker) -> None:
    assert ask(worker, "tests.look", {"n": 1}) == {"n": 1, "status": "done"}


def test_an_exception_answers_critical(worker: CeleryWorker) -> None:
    payload = ask(worker, "tests.broken", {"item": "pears", "status": "done"})
    assert payload == {"item": "pears", "status": "critical", "error": "no stock for pears"}


def test_a_retried_task_answers_once_when_it_succeeds(worker: CeleryWorker) -> None:
    assert ask(worker, "tests.flaky", {"n": 1}) == {"n": 1, "attempts": 3, "status": "done"}


def test_a_task_out_of_retries_answers_critical(worker: CeleryWorker) -> None:
    payload = ask(worker, "tests.hopeless", {"n": 1})
    assert payload == {"n": 1, "status": "critical", "error": "the supplier is closed"}


def test_a_task_retried_by_autoretry_answers_once(worker: CeleryWorker) -> None:
    payload = ask(worker, "tests.busy", {"n": 1})
    assert payload == {"n": 1, "status": "critical", "error": "the line is busy"}


def test_the_original_readme_way_keeps_working(worker: CeleryWorker) -> None:
    assert ask(worker, "tests.legacy", {"n": 1, "status": "done"}) == {
        "n": 1,
        "status": "done",
        "legacy": True,
    }


def take_one(queue: str) -> tuple[Any, Any, bytes]:
    """The one message on ``queue`` (method, properties, body)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        method, properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, f"no message on {queue}"
    return method, properties, body
