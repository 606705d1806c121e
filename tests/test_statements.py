"""The statements one message costs, counted, so that they cannot creep back: on the happy path
an answer costs one statement each to remember its id, write the state, the workitems (the one
answered, the one dispatched), the journal and the outbox; a batch adds one to lock its
instances and one to mark sent what the batch before it published."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from bureaucrat import service as service_module
from bureaucrat.service import Outcome, Service
from bureaucrat.store import Store
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import CONFIG, Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

TWO = '<process><action participant="p"/><action participant="p"/></process>'
PER_ANSWER = 6  # processed id, state, workitem answered, workitem dispatched, journal, outbox
PER_BATCH = 4  # begin, lock, mark the previous batch's messages sent, commit


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split()[0].upper())

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def answers(publisher: Recorder, count: int) -> list[Message]:
    found = []
    for _ in range(count):
        workitem = json.loads(publisher.take("worker_p").body)
        workitem["payload"]["status"] = "done"
        body = json.dumps(workitem).encode()
        found.append(Message(CONFIG.message_queue, body, f"{workitem['workitem_id']}:answer"))
    return found


def test_a_batch_writes_each_table_once_and_a_lone_answer_costs_a_handful(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    for n in range(10):
        service.handle(launch(TWO, {}, f"p{n}"))
    batch = answers(publisher, 10)
    with counting(store) as statements:
        service.handle_batch(batch)
        service.publish_committed()
    # lock, processed ids read and written, states, workitems twice, journal, outbox
    assert len(statements) <= PER_BATCH + 7, statements
    assert "SAVEPOINT" not in statements
    for n in range(10):
        record = store.instance(f"p{n}")
        assert record is not None and record.state is not None and record.state["workitems"]
    [alone] = answers(publisher, 1)
    with counting(store) as statements:
        service.handle_batch([alone])
        service.publish_committed()
    assert len(statements) <= PER_BATCH + PER_ANSWER, statements  # a batch of one: no savepoint


def test_a_batch_mixing_good_poisonous_and_duplicate_messages_commits_exactly_the_good(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    for n in range(6):
        service.handle(launch(TWO, {}, f"p{n}"))
    good = answers(publisher, 6)
    service.handle(good[0])  # processed before: its copy in the batch is a duplicate
    poisoned = json.loads(good[3].body)["workitem_id"]
    real_route = service_module._route

    def defect_on_one(tx: Any, response: Any) -> str | None:
        if response.workitem_id == poisoned:
            raise RuntimeError("a defect on this message only")
        return real_route(tx, response)

    monkeypatch.setattr(service_module, "_route", defect_on_one)
    batch = [good[0], good[1], good[2], good[3], good[4], good[4], good[5]]
    with counting(store) as statements:
        verdicts = service.handle_batch(batch)
    assert "SAVEPOINT" in statements  # the batch was handled again, a savepoint a message
    assert [v.outcome for v in verdicts] == [Outcome.ACK] * 3 + [Outcome.DEAD] + [Outcome.ACK] * 3
    assert "a defect on this message only" in verdicts[3].reason
    for n in range(6):
        kinds = [entry.kind for entry in store.journal(f"p{n}")]
        assert kinds.count("answered") == (0 if n == 3 else 1), (n, kinds)
    service.publish_committed()
    assert len([m for m in publisher.sent if m.routing_key == "worker_p"]) == 5  # one each


def test_several_messages_for_one_instance_in_a_batch_apply_in_order(store: Store) -> None:
    """Two answers to one instance's parallel actions, then a terminate after them, in one
    batch: each step starts from what the one before it left."""
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    branches = '<all><action participant="p"/><action participant="p"/></all>'
    service.handle(launch(f'<process>{branches}<action participant="p"/></process>', {}, "one"))
    first, second = answers(publisher, 2)
    terminate = Message(
        CONFIG.message_queue, json.dumps({"name": "terminate", "process_id": "one"}).encode(), "t"
    )
    verdicts = service.handle_batch([first, second, terminate])
    assert [v.outcome for v in verdicts] == [Outcome.ACK] * 3
    kinds = [entry.kind for entry in store.journal("one")]
    assert kinds.count("answered") == 2 and kinds.count("dispatched") == 3, kinds
    assert kinds.index("terminating") > max(i for i, k in enumerate(kinds) if k == "answered")
    record = store.instance("one")
    assert record is not None and record.status == "terminated"
