"""The service one message at a time, on the real store (SQLite and PostgreSQL) with a recording
publisher: orderings of messages that the broker may produce but an end-to-end test cannot force."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from bureaucrat.config import Config
from bureaucrat.engine import step
from bureaucrat.errors import BrokerError, PublishError
from bureaucrat.service import Service
from bureaucrat.store import Outgoing, Store
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

CONFIG = Config()


@dataclass(frozen=True)
class Message:
    queue: str
    body: bytes
    message_id: str | None = None
    content_type: str | None = "application/json"
    redelivered: bool = False


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def publish(self, message: Outgoing) -> None:
        self.sent.append(message)

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """As the daemon's publisher: a refusal per message, ``BrokerError`` for a lost
        connection (then the rest is not published)."""
        outcomes: list[str | None] = []
        for message in messages:
            try:
                self.publish(message)
            except BrokerError as error:
                if not isinstance(error, PublishError):
                    raise
                outcomes.append(str(error))
            except Exception as error:
                outcomes.append(f"{type(error).__name__}: {error}")
            else:
                outcomes.append(None)
        return outcomes

    def take(self, routing_key: str) -> Message:
        """The first message sent to ``routing_key`` (removed), as the daemon would get it."""
        found = next(m for m in self.sent if m.routing_key == routing_key)
        self.sent.remove(found)
        return Message(
            found.routing_key, found.body, found.message_id, found.properties.get("content_type")
        )


def launch(source: str, fields: dict[str, Any], process_id: str) -> Message:
    body = json.dumps({"definition": source, "fields": fields}).encode()
    return Message(CONFIG.launch_queue, body, process_id)


def control(name: str, process_id: str) -> Message:
    body = json.dumps({"name": name, "process_id": process_id}).encode()
    return Message(CONFIG.message_queue, body, f"{name}-{process_id}")


CALLER = '<process><call process="$child"/></process>'
CHILD = '<process><await event="never"/></process>'


def test_a_subprocess_launch_that_arrives_after_its_caller_ended_starts_nothing(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    service.handle(control("terminate", "caller"))
    assert store.instance("caller").status == "terminated"  # type: ignore[union-attr]
    # The terminate for the subprocess overtakes its launch (they travel on different queues).
    service.handle(publisher.take(CONFIG.message_queue))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(child_launch)
    assert store.instance(child_launch.message_id or "") is None
    assert [r.id for r in store.list_instances()] == ["caller"]


def test_a_launch_naming_a_caller_that_does_not_wait_for_it_starts_nothing(store: Store) -> None:
    service = Service(store, CONFIG, Recorder())
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    body = {"definition": CHILD, "parent": {"process_id": "caller", "activity": "caller_0"}}
    service.handle(Message(CONFIG.launch_queue, json.dumps(body).encode(), "impostor"))
    assert store.instance("impostor") is None


def test_a_subprocess_starts_while_its_caller_waits(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    service.handle(child_launch)
    child = store.instance(child_launch.message_id or "")
    assert child is not None and child.parent_id == "caller" and child.status == "running"


def test_a_defect_while_firing_a_timer_sets_the_instance_aside_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000.0]
    service = Service(store, CONFIG, Recorder(), clock=lambda: now[0])
    service.handle(launch('<process><delay duration="1"/></process>', {}, "sleeper"))
    service.handle(launch('<process><delay duration="1"/></process>', {}, "healthy"))

    def broken_step(definition: Any, state: Any, event: Any, at: float, *rest: Any) -> Any:
        if state["id"] == "sleeper":
            raise RuntimeError("a defect")
        return step(definition, state, event, at, *rest)

    monkeypatch.setattr("bureaucrat.service.step", broken_step)
    now[0] += 2
    assert service.fire_due_timers() == 2  # both handled: one fired, one set aside
    record = store.instance("sleeper")
    assert record is not None and record.status == "broken"
    assert record.error is not None and "a defect" in record.error
    assert store.instance("healthy").status == "completed"  # type: ignore[union-attr]
    assert store.next_timer_due() is None  # the broken instance's timer does not come back
    assert service.fire_due_timers() == 0


def test_a_defect_on_a_response_sets_only_that_instance_aside(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    for pid in ("victim", "bystander"):
        service.handle(launch('<process><action participant="p"/></process>', {}, pid))
    sent = [publisher.take("worker_p"), publisher.take("worker_p")]
    workitems = {json.loads(message.body)["process_id"]: message for message in sent}

    def broken_step(definition: Any, state: Any, event: Any, at: float, *rest: Any) -> Any:
        if state["id"] == "victim":
            raise KeyError("a defect")
        return step(definition, state, event, at, *rest)

    monkeypatch.setattr("bureaucrat.service.step", broken_step)
    for pid in ("victim", "bystander"):
        answer = workitems[pid]
        assert service.handle(Message(CONFIG.message_queue, answer.body)).outcome.value == "ack"
    victim = store.instance("victim")
    assert victim is not None and victim.status == "broken" and "KeyError" in (victim.error or "")
    assert store.instance("bystander").status == "completed"  # type: ignore[union-attr]
