"""Failures stay with what caused them: a message, an instance, an outgoing message; the service
and everything else go on. On the real store (SQLite and PostgreSQL), one message at a time."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from bureaucrat.errors import BrokerError, PublishError, StoreDataError
from bureaucrat.service import Outcome, Service
from bureaucrat.store import Outgoing, Store
from bureaucrat.store.cache import DefinitionCache
from tests.store_fixtures import postgres_url, store, store_url
from tests.test_service import CONFIG, Message, Recorder, launch

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

ACTION = '<process><action participant="p"/></process>'
CALLER = '<process><call process="$child"/></process>'
CHILD = '<process><action participant="c"/></process>'


def answer(workitem: Message, **payload: Any) -> Message:
    body = json.loads(workitem.body)
    body["payload"] = {**body["payload"], "status": "done", **payload}
    return Message(CONFIG.message_queue, json.dumps(body).encode(), f"{workitem.message_id}:a")


# messages redelivered too often ------------------------------------------------------------------


def test_a_message_redelivered_past_the_limit_is_dead_lettered_even_after_a_restart(
    store: Store,
) -> None:
    config = replace(CONFIG, max_redeliveries=2)
    message = replace(launch(ACTION, {}, "again"), redelivered=True)
    assert Service(store, config, Recorder()).handle(message).outcome is Outcome.ACK
    # Handling it again (as if the daemon had died before the ack) is a duplicate: acked.
    assert Service(store, config, Recorder()).handle(message).outcome is Outcome.ACK
    verdict = Service(store, config, Recorder()).handle(message)  # a new service: a restart
    assert verdict.outcome is Outcome.DEAD
    assert "redelivered 3 times" in verdict.reason and "max_redeliveries = 2" in verdict.reason


def test_first_deliveries_are_not_counted(store: Store) -> None:
    config = replace(CONFIG, max_redeliveries=1)
    service = Service(store, config, Recorder())
    for n in range(3):
        assert service.handle(launch(ACTION, {}, f"p{n}")).outcome is Outcome.ACK
    assert [r.status for r in store.list_instances()] == ["running"] * 3


# message ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_id", "reason"),
    [
        ("a\x00b", "message_id contains a NUL character"),
        ("a" * 250, "the process id is 250 bytes long, over the limit of 128"),
    ],
)
def test_launch_ids_that_cannot_be_kept_are_dead_lettered(
    store: Store, message_id: str, reason: str
) -> None:
    verdict = Service(store, CONFIG, Recorder()).handle(launch(ACTION, {}, message_id))
    assert verdict.outcome is Outcome.DEAD and reason in verdict.reason
    assert store.list_instances() == []


# outgoing messages RabbitMQ refuses ---------------------------------------------------------------


class Refusing(Recorder):
    """Refuses messages for one routing key, as RabbitMQ or pika would refuse them."""

    def __init__(self, routing_key: str, error: Exception) -> None:
        super().__init__()
        self.routing_key = routing_key
        self.error = error

    def publish(self, message: Outgoing) -> None:
        if message.routing_key == self.routing_key:
            raise self.error
        super().publish(message)


@pytest.mark.parametrize(
    "error",
    [PublishError("RabbitMQ refused it: NackError"), ValueError("ShortStringTooLong: 300 > 255")],
)
def test_a_refused_outgoing_message_sets_its_instance_aside_and_the_others_go_out(
    store: Store, error: Exception
) -> None:
    publisher = Refusing("worker_bad", error)
    service = Service(store, CONFIG, publisher)
    service.handle(launch('<process><action participant="bad"/></process>', {}, "victim"))
    service.handle(launch(ACTION, {}, "bystander"))
    assert [m.routing_key for m in publisher.sent] == ["worker_p"]
    victim = store.instance("victim")
    assert victim is not None and victim.status == "broken"
    assert "not sent" in (victim.error or "") and str(error) in (victim.error or "")
    assert store.instance("bystander").status == "running"  # type: ignore[union-attr]
    service.mark_published()
    assert (
        service.relay_outbox(everything=True) == 0
    )  # the refused row is kept, but not published again


def test_an_id_too_long_for_amqp_is_never_handed_to_the_broker(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, replace(CONFIG, worker_queue_prefix="w" * 100), publisher)
    service.handle(launch(f'<process><action participant="{"p" * 200}"/></process>', {}, "long"))
    assert publisher.sent == []
    record = store.instance("long")
    assert record is not None and record.status == "broken"
    assert "routing key is longer than 255 bytes" in (record.error or "")


def test_a_lost_connection_keeps_the_message_for_the_next_try(store: Store) -> None:
    publisher = Refusing("worker_p", BrokerError("lost RabbitMQ"))
    service = Service(store, CONFIG, publisher)
    with pytest.raises(BrokerError):
        service.handle(launch(ACTION, {}, "waiting"))
    assert store.instance("waiting").status == "running"  # type: ignore[union-attr]
    publisher.routing_key = "nothing"
    assert service.relay_outbox(everything=True) == 1
    assert [m.routing_key for m in publisher.sent] == ["worker_p"]


# data the database refuses ------------------------------------------------------------------------


def test_data_the_database_refuses_is_a_data_error_not_a_lost_connection(store: Store) -> None:
    refused = "a\x00b" if not store.is_sqlite else "\ud800"
    with pytest.raises(StoreDataError), store.transaction() as tx:
        tx.mark_processed(refused, 1.0)
    with store.transaction() as tx:  # and the store goes on
        tx.mark_processed("fine", 1.0)
        assert tx.processed("fine")


# answers, child results and child launches are checked against what is stored --------------------


def test_an_answer_naming_a_target_goes_only_to_the_instance_that_waits_there(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(
        launch('<process><sequence><action participant="p"/></sequence></process>', {}, "P")
    )
    service.handle(launch('<process><delay duration="100"/></process>', {}, "P_0"))
    workitem = json.loads(publisher.take("worker_p").body)
    assert workitem["target"] == "P_0_0"
    target_only = {"target": "P_0_0", "payload": {**workitem["payload"], "status": "done"}}
    service.handle(Message(CONFIG.message_queue, json.dumps(target_only).encode(), "a1"))
    assert store.instance("P").status == "completed"  # type: ignore[union-attr]
    assert store.instance("P_0").status == "running"  # type: ignore[union-attr]


def test_an_answer_naming_an_unknown_workitem_is_not_routed_by_its_target(store: Store) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(ACTION, {}, "P"))
    workitem = json.loads(publisher.take("worker_p").body)
    forged = {**workitem, "workitem_id": "P_0.999", "payload": {"status": "done"}}
    service.handle(Message(CONFIG.message_queue, json.dumps(forged).encode(), "forged"))
    assert store.instance("P").status == "running"  # type: ignore[union-attr]


def test_a_forged_child_result_is_ignored_and_the_real_one_uses_the_childs_record(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD, "x": 1}, "caller"))
    child_launch = publisher.take(CONFIG.launch_queue)
    child_id = child_launch.message_id or ""
    forged = {
        "name": "child_finished",
        "process_id": "caller",
        "child_id": child_id,
        "status": "completed",
        "context": {"x": "forged"},
    }
    service.handle(Message(CONFIG.message_queue, json.dumps(forged).encode(), "forged-1"))
    assert store.instance("caller").status == "running"  # type: ignore[union-attr]
    service.handle(child_launch)
    service.handle(answer(publisher.take("worker_c"), x=2))
    finished = json.loads(publisher.take(CONFIG.message_queue).body)
    finished["context"] = {"x": "forged"}  # tampered in flight: the child's record wins
    service.handle(Message(CONFIG.message_queue, json.dumps(finished).encode(), "finished"))
    caller = store.instance("caller")
    assert caller is not None and caller.status == "completed"
    assert caller.state is not None and caller.state["scopes"][""]["x"] == 2


def test_a_launch_posing_as_a_subprocess_with_another_definition_starts_nothing(
    store: Store,
) -> None:
    publisher = Recorder()
    service = Service(store, CONFIG, publisher)
    service.handle(launch(CALLER, {"child": CHILD}, "caller"))
    genuine = publisher.take(CONFIG.launch_queue)
    body = json.loads(genuine.body)
    impostor = {**body, "definition": '<process><action participant="evil"/></process>'}
    service.handle(Message(CONFIG.launch_queue, json.dumps(impostor).encode(), genuine.message_id))
    assert store.instance(genuine.message_id or "") is None
    assert not [m for m in publisher.sent if m.routing_key == "worker_evil"]
    service.handle(genuine)
    child = store.instance(genuine.message_id or "")
    assert child is not None and child.status == "running"


# memory -------------------------------------------------------------------------------------------


def test_the_definition_cache_drops_the_least_recently_used_past_its_budget(store: Store) -> None:
    cache = DefinitionCache(capacity=100_000)
    small = store.definition(store.add_definition(ACTION))
    cache.put("a", small, 1_000)
    cache.put("b", small, 1_000)
    assert cache.get("a") is small  # a is now the most recently used
    cache.put("c", small, 5_000)  # 20,000 + 10 x 5,000 = 70,000: b must go
    assert "a" in cache and "c" in cache and "b" not in cache
    assert cache.size <= cache.capacity


def test_many_distinct_definitions_do_not_stay_in_memory(store_url: str) -> None:
    with Store(store_url, definition_cache_size=1_000_000) as bounded:
        body = '<delay duration="1"/>' * 200
        digests = [
            bounded.add_definition(f'<process name="n{n}">{body}</process>') for n in range(40)
        ]
        assert len(bounded._definitions) < 40
        assert bounded.definition(digests[0]).name == "n0"  # read back from the database


def test_pruning_forgets_definitions_no_instance_runs(store: Store) -> None:
    service = Service(store, CONFIG, Recorder(), clock=lambda: 1_000.0)
    service.handle(launch(ACTION, {}, "uses-it"))
    unused = store.add_definition('<process name="unused"><delay duration="1"/></process>')
    used = store.instance("uses-it").definition_hash  # type: ignore[union-attr]
    store.prune(before=10**12)
    with store.transaction() as tx:
        rows = tx.connection.exec_driver_sql("SELECT hash FROM definitions").scalars().all()
    assert used in rows and unused not in rows
