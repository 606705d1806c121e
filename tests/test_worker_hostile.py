"""Hostile workitems at the participants: ``bureaucrat-worker`` and the Celery helper never crash
and never fail a task over one message. What cannot be a workitem is dead-lettered (the worker)
or answered ``critical`` (Celery, when it says which workitem it is); answers that cannot travel
become ``critical``; answer ids always fit in AMQP. In memory first, then with a real worker
process and a real Celery worker on the real broker."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bureaucrat import bounds, worker
from bureaucrat.amqp import Delivery
from bureaucrat.amqp.connection import properties
from bureaucrat.config import Config
from bureaucrat.engine.commands import DispatchWorkitem
from bureaucrat.errors import BrokerError, PublishError
from bureaucrat.messages import MessageError, check_value, decode_workitem
from bureaucrat.worker import Worker, answer
from tests.brokers import AMQP_URL, require_rabbitmq
from tests.harness import Installation
from tests.test_celery_participants import CeleryWorker
from tests.test_wire_limits import BODIES, IDS, OBJECTS, VALUES

CONFIG = Config(message_queue="msgs", dead_letter_queue="dead")
WORKITEM = {"name": "response", "target": "p_0_1", "workitem_id": "p_0_1.1", "payload": {"n": 1}}


def echo(payload: dict[str, Any]) -> None:
    return None


def not_json(payload: dict[str, Any]) -> dict[str, Any]:
    """A participant (served by the end-to-end test's worker) whose answer cannot travel."""
    return {**payload, "ratio": math.nan}


# the answer -----------------------------------------------------------------------------------


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (lambda p: {**p, "x": math.inf}, "the answer: inf is not a JSON number"),
        (lambda p: {**p, "x": {1, 2}}, "a value of type set is not JSON data"),
        (lambda p: None, None),  # the payload as it came: done
        (lambda p: {"deep": json.loads("[" * 99 + "]" * 99)}, "nests more than 100 levels deep"),
        (lambda p: {**p, "x": "\x00"}, "a string contains a NUL character"),
        (lambda p: [1, 2], "cannot convert dictionary update sequence"),
    ],
)
def test_an_answer_that_cannot_travel_is_critical(result: Any, error: str | None) -> None:
    response = answer(WORKITEM, result)
    payload = response["payload"]
    if error is None:
        assert payload["status"] == "done"
    else:
        assert payload == {"n": 1, "status": "critical", "error": payload["error"]}
        assert error in payload["error"]
    check_value(response, "answer")  # what goes back always can


def test_an_exception_text_is_made_fit_to_travel(caplog: pytest.LogCaptureFixture) -> None:
    # the worker logs the exception as it is (stderr writes a lone surrogate escaped); the
    # test's log capture is kept out of it, as a test report must be UTF-8 text
    caplog.set_level(logging.CRITICAL, logger="bureaucrat.worker")

    def raises(_: dict[str, Any]) -> None:
        raise ValueError("bad \ud800 and \x00 " + "x" * 10_000)

    error = answer(WORKITEM, raises)["payload"]["error"]
    assert error.startswith("bad ? and \ufffd x") and len(error) == worker.MAX_ERROR
    check_value(error, "error")

    def unprintable(_: dict[str, Any]) -> None:
        raise UnprintableError

    assert answer(WORKITEM, unprintable)["payload"]["error"] == "UnprintableError"


def test_an_answer_over_the_size_limit_is_critical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "MAX_BODY", 200)
    payload = answer(WORKITEM, lambda p: {**p, "big": "x" * 200})["payload"]
    assert payload["status"] == "critical" and "over the limit of 200" in payload["error"]


# the worker's handling of one delivery, in memory --------------------------------------------


class Wire:
    """The broker as the worker sees it, in memory: it keeps what is published (each message's
    properties encoded as pika encodes them, so an id too long for AMQP fails here as it would
    there) and what is acknowledged. ``refusal`` is raised for messages to ``refused``."""

    def __init__(self, refused: str = "", refusal: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []
        self.acked: list[int] = []
        self.refused, self.refusal = refused, refusal

    def ensure_queue(self, name: str) -> None:
        pass

    def publish(self, exchange: str, queue: str, body: bytes, fields: dict[str, Any]) -> None:
        properties(fields).encode()
        if queue == self.refused and self.refusal is not None:
            raise self.refusal
        self.sent.append((queue, body, fields))

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.delivery_tag)


def deliver(body: bytes, message_id: str | None = "m1", wire: Wire | None = None) -> Wire:
    wire = wire or Wire()
    delivery = Delivery("worker_echo", body, 7, False, message_id=message_id)
    Worker("echo", echo, CONFIG)._on_message(wire, delivery)  # type: ignore[arg-type]
    return wire


def test_a_body_that_is_no_workitem_is_dead_lettered_with_the_reason() -> None:
    for body, reason in [
        (b"[" * 100_000, "nests more than 100 levels deep"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"payload": {"n": NaN}}', "NaN is not a JSON number"),
        (b'{"payload": 5}', "'payload' must be a JSON object"),
    ]:
        wire = deliver(body)
        ((queue, dead, fields),) = wire.sent
        assert (queue, dead, wire.acked) == ("dead", body, [7])
        assert reason in fields["headers"]["x-bureaucrat-error"]
        assert fields["headers"]["x-bureaucrat-queue"] == "worker_echo"


def test_answer_ids_fit_whatever_the_workitem_id() -> None:
    long_id = "w" * 250
    for message_id in (long_id, None):
        workitem = {**WORKITEM, "workitem_id": long_id, "target": "t" * 250}
        wire = deliver(json.dumps(workitem).encode(), message_id)
        ((queue, body, fields),) = wire.sent
        assert queue == "msgs" and json.loads(body)["payload"]["status"] == "done"
        assert bounds.utf8_length(fields["message_id"]) <= bounds.SHORT_STRING
        assert fields["message_id"].startswith("w" * 100) and fields["message_id"].endswith(
            ":answer"
        )
        again = deliver(json.dumps(workitem).encode(), message_id)  # redelivered: the same id
        assert fields["message_id"] == again.sent[0][2]["message_id"]
    anonymous = json.dumps({"payload": {}}).encode()
    assert deliver(anonymous, None).sent[0][2]["message_id"].startswith("sha256:")


@pytest.mark.parametrize(
    "refusal", [PublishError("RabbitMQ refused it: NackError"), ValueError("cannot encode")]
)
def test_an_answer_refused_dead_letters_the_workitem(refusal: Exception) -> None:
    wire = deliver(json.dumps(WORKITEM).encode(), wire=Wire("msgs", refusal))
    ((queue, body, fields),) = wire.sent
    assert queue == "dead" and json.loads(body) == WORKITEM and wire.acked == [7]
    assert (
        "cannot encode" in fields["headers"]["x-bureaucrat-error"]
        or "refused" in (fields["headers"]["x-bureaucrat-error"])
    )


def test_a_lost_connection_leaves_the_workitem_for_the_next_connection() -> None:
    wire = Wire("msgs", BrokerError("lost RabbitMQ"))
    with pytest.raises(BrokerError):
        deliver(json.dumps(WORKITEM).encode(), wire=wire)
    assert wire.sent == [] and wire.acked == []


WORKITEMS = st.fixed_dictionaries(
    {"payload": OBJECTS},
    optional={"name": VALUES, "target": IDS, "workitem_id": IDS, "origin": IDS | VALUES},
).map(lambda w: json.dumps(w).encode("utf-8", "surrogatepass"))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(BODIES | WORKITEMS, st.sampled_from([None, "m1", "m" * 255]))
def test_fuzz_every_delivery_is_answered_or_dead_lettered_and_acked(
    body: bytes, message_id: str | None
) -> None:
    try:
        workitem = decode_workitem(body)
    except MessageError:
        workitem = None
    wire = deliver(body, message_id)  # raises nothing
    ((queue, sent, fields),) = wire.sent
    assert wire.acked == [7]
    if workitem is not None:  # echoed, as the engine can read it
        expected = {**workitem, "payload": {"status": "done", **workitem["payload"]}}
        assert (queue, decode_workitem(sent)) == ("msgs", expected)
    else:
        assert (queue, sent) == ("dead", body)
        assert fields["headers"]["x-bureaucrat-error"].startswith("not a workitem: ")


# a real bureaucrat-worker ---------------------------------------------------------------------


def declare(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_declare(queue, durable=True)
    finally:
        connection.close()


def delete_queue(queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


def take_answers(
    install: Installation, until: str, timeout: float = 30
) -> list[tuple[dict[str, Any], str]]:
    """The answers on the message queue (body, message id) up to the one to workitem ``until``."""
    found: list[tuple[dict[str, Any], str]] = []
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while not any(body.get("workitem_id") == until for body, _ in found):
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer to {until}: {found}\n{install.log_text()}")
            method, props, body = channel.basic_get(install.config.message_queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            found.append((json.loads(body), props.message_id))
    finally:
        connection.close()
    return found


def normal(install: Installation, workitem_id: str) -> None:
    body = {**WORKITEM, "workitem_id": workitem_id}
    install.publish_raw(
        install.config.worker_queue("echo"), json.dumps(body).encode(), message_id=workitem_id
    )


@pytest.mark.usefixtures("rabbitmq")
def test_a_real_worker_survives_hostile_workitems(sqlite_installation: Installation) -> None:
    install = sqlite_installation
    queue = install.config.worker_queue("echo")
    declare(queue)
    long_id = "w" * 250
    hostile = [
        (b"[" * 100_000, "nests more than 100 levels deep"),
        (b'{"payload": {"s": "\xff\xfe"}}', "not UTF-8"),
        (b'{"target": "p_0", "payload": {"ratio": NaN}}', "NaN is not a JSON number"),
        (b'{"target": "p_0", "payload": {"\\u0000": 1}}', "NUL"),
    ]
    for number, (body, _) in enumerate(hostile):
        install.publish_raw(queue, body, message_id=f"hostile-{number}")
    long_workitem = {**WORKITEM, "workitem_id": long_id, "target": "t" * 250}
    install.publish_raw(queue, json.dumps(long_workitem).encode(), message_id=long_id)
    normal(install, "ok_0.1")
    install.start_worker("echo", "tests.participants:echo")

    answers = take_answers(install, "ok_0.1")
    assert [body["workitem_id"] for body, _ in answers] == [long_id, "ok_0.1"]
    assert answers[0][0]["target"] == "t" * 250
    assert len(answers[0][1]) <= 255 and answers[0][1].endswith(":answer")
    done = {**WORKITEM, "workitem_id": "ok_0.1", "payload": {"n": 1, "status": "done"}}
    assert answers[1] == (done, "ok_0.1:answer")
    letters = install.dead_letters(len(hostile))
    reasons = {body: headers["x-bureaucrat-error"] for body, headers in letters}
    for body, phrase in hostile:
        assert phrase in reasons[body], (body[:40], reasons.get(body))
    assert install.workers[0].poll() is None, install.log_text()

    # RabbitMQ refuses the answer (its queue is gone): the workitem is dead-lettered.
    delete_queue(install.config.message_queue)
    normal(install, "refused_0.1")
    ((body, headers),) = install.dead_letters(1)
    assert json.loads(body)["workitem_id"] == "refused_0.1"
    assert "refused" in headers["x-bureaucrat-error"]
    declare(install.config.message_queue)
    normal(install, "after_0.1")
    assert take_answers(install, "after_0.1")[-1][0]["workitem_id"] == "after_0.1"
    assert install.workers[0].poll() is None, install.log_text()


@pytest.mark.usefixtures("rabbitmq")
def test_a_real_worker_answers_critical_when_its_answer_cannot_travel(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation
    declare(install.config.worker_queue("nan"))
    install.publish_raw(
        install.config.worker_queue("nan"), json.dumps(WORKITEM).encode(), message_id="p_0_1.1"
    )
    install.start_worker("nan", "tests.test_worker_hostile:not_json")
    ((body, _),) = take_answers(install, "p_0_1.1")
    assert body["payload"] == {"n": 1, "status": "critical", "error": body["payload"]["error"]}
    assert "nan is not a JSON number" in body["payload"]["error"]


# a real Celery worker -------------------------------------------------------------------------


@pytest.fixture
def celery_worker(tmp_path: Path) -> Iterator[CeleryWorker]:
    require_rabbitmq()
    celery = CeleryWorker("solo", tmp_path / "celery.log")
    celery.start()
    try:
        yield celery
    finally:
        celery.stop()


def celery_workitem(
    celery: CeleryWorker, target: str, message: dict[str, Any], participant: str = "tests.double"
) -> DispatchWorkitem:
    command = DispatchWorkitem(f"{target}.1", target, participant, "celery", celery.queue, message)
    celery.send(command)
    return command


def test_celery_answers_whatever_the_workitem(celery_worker: CeleryWorker) -> None:
    target = "p" * 246 + "_0_1"
    message = {"name": "response", "target": target, "workitem_id": f"{target}.1"}
    long = celery_workitem(celery_worker, target, {**message, "payload": {"n": 21}})
    (answer,) = celery_worker.answers_to(long)
    assert answer == {**message, "payload": {"n": 42, "status": "done"}}
    (delivery,) = [d for d in celery_worker.answers if json.loads(d.body) == answer]
    assert delivery.message_id is not None and delivery.message_id.endswith(":answer")
    assert bounds.utf8_length(delivery.message_id) <= bounds.SHORT_STRING

    shapeless = celery_workitem(
        celery_worker, "q_0_1", {"target": "q_0_1", "workitem_id": "q_0_1.1", "payload": [1]}
    )
    (answer,) = celery_worker.answers_to(shapeless)
    assert answer["target"] == "q_0_1" and answer["payload"]["status"] == "critical"
    assert "'payload' must be a JSON object" in answer["payload"]["error"]

    celery_workitem(celery_worker, "r_0_1", {"payload": 5})  # says nothing of itself: dropped
    after = celery_workitem(celery_worker, "s_0_1", {**WORKITEM, "workitem_id": "s_0_1.1"})
    assert celery_worker.answers_to(after)[0]["payload"] == {"n": 2, "status": "done"}
    assert len(celery_worker.answers) == 3  # nothing for the one that said nothing
    assert "dropped a task message that is not a workitem" in celery_worker.log.read_text()
