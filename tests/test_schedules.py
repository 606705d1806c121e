"""Schedules: the pure timing and policies, the service firing them on the real databases with a
controlled clock, and the real daemons (two sharing PostgreSQL, restarted) launching each
occurrence exactly once."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from bureaucrat import bounds, messages, schedules
from bureaucrat.config import Config
from bureaucrat.ctl import main as ctl_main
from bureaucrat.engine.state import root_context
from bureaucrat.errors import DefinitionError, StoreDataError, StoreError
from bureaucrat.launcher import Launcher
from bureaucrat.messages import MessageError
from bureaucrat.schedules import CatchUp, Kind, ScheduleError, Timing, parse_timing, plan
from bureaucrat.service import Outcome, Service, Verdict
from bureaucrat.store import Store
from bureaucrat.store import schedules as rows
from bureaucrat.store.tables import definitions
from tests.harness import Installation, wait_until
from tests.store_fixtures import postgres_url, store, store_url

__all__ = ["postgres_url", "store", "store_url"]  # fixtures, imported for pytest

CONFIG = Config()
FOREVER = '<process name="forever"><await event="never"/></process>'
QUICK = '<process name="quick"/>'


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()


def dues(timing: Timing, after: float, count: int) -> list[str]:
    found: list[str] = []
    due: float | None = after
    for _ in range(count):
        assert due is not None
        due = timing.following(due)
        assert due is not None
        found.append(schedules.iso(due))
    return found


# the pure part --------------------------------------------------------------------------------


def test_a_daily_cron_fires_once_on_each_day_of_a_dst_change() -> None:
    """02:30 in Berlin does not exist on the spring day (fired right after the jump, 03:00
    CEST) and happens twice on the autumn day (fired the first time only)."""
    daily = parse_timing(cron="30 2 * * *", tz="Europe/Berlin")
    spring = dues(daily, utc(2026, 3, 28, 12), 3)
    assert spring == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
    autumn = dues(daily, utc(2026, 10, 24, 12), 3)
    assert autumn == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]


def test_an_hourly_cron_keeps_the_real_clock_across_dst() -> None:
    hourly = parse_timing(cron="0 * * * *", tz="Europe/Berlin")
    autumn = dues(hourly, utc(2026, 10, 24, 23, 30), 4)
    assert autumn == [f"2026-10-25T0{h}:00:00Z" for h in range(4)]  # 02:00 CEST and CET
    spring = dues(hourly, utc(2026, 3, 28, 23, 30), 3)
    assert spring == [f"2026-03-29T0{h}:00:00Z" for h in range(3)]


def test_cron_in_a_time_zone_and_with_seconds() -> None:
    new_york = parse_timing(cron="0 9 * * mon-fri", tz="America/New_York")
    assert dues(new_york, utc(2026, 11, 27, 15), 2) == [  # Friday 10:00 EST, then Monday
        "2026-11-30T14:00:00Z",
        "2026-12-01T14:00:00Z",
    ]
    every_other_second = parse_timing(cron="* * * * * */2")
    assert dues(every_other_second, utc(2026, 1, 1), 2) == [
        "2026-01-01T00:00:02Z",
        "2026-01-01T00:00:04Z",
    ]
    assert every_other_second.latest(utc(2026, 1, 1, 0, 0, 5) + 0.5, 0) == utc(2026, 1, 1, 0, 0, 4)


def test_every_counts_from_one_interval_after_it_was_added() -> None:
    assert schedules.parse_duration("30s") == 30
    assert schedules.parse_duration("5m") == 300
    assert schedules.parse_duration("1h30m") == 5400
    assert schedules.parse_duration("2d") == 172800
    assert schedules.parse_duration("90") == 90
    every = parse_timing(every="1h30m")
    first = every.first_due(1000.25)
    assert first == 1001 + 5400
    assert every.following(first + 10, grid=first) == first + 5400
    assert every.following(first - 10, grid=first) == first
    assert every.latest(first + 3 * 5400 + 7, first) == first + 3 * 5400


def test_at_is_one_time_in_its_time_zone() -> None:
    paris = parse_timing(at="2026-12-24T18:00", tz="Europe/Paris")
    assert paris.kind is Kind.AT and paris.at == utc(2026, 12, 24, 17)
    offset = parse_timing(at="2026-12-24T18:00+02:00")
    assert offset.at == utc(2026, 12, 24, 16)
    assert offset.first_due(0) == offset.at
    assert offset.following(utc(2026, 12, 24, 16)) is None


def test_catch_up_after_downtime() -> None:
    every = parse_timing(every="10s")
    now = 1000 + 45.5  # due at 1000, 1010, 1020, 1030, 1040; next 1050
    assert plan(every, 1000, now, CatchUp.ALL) == schedules.Plan(
        [1000, 1010, 1020, 1030, 1040], 1050
    )
    assert plan(every, 1000, now, CatchUp.ALL, limit=2) == schedules.Plan([1000, 1010], 1020)
    assert plan(every, 1000, now, CatchUp.ONE) == schedules.Plan([1040], 1050, missed=4)
    assert plan(every, 1000, now, CatchUp.NONE) == schedules.Plan([1040], 1050, missed=4)
    hourly = parse_timing(every="1h")
    late = 1000 + 3 * 3600 + schedules.ON_TIME + 1  # the latest is late: none launches nothing
    assert plan(hourly, 1000, late, CatchUp.NONE) == schedules.Plan([], 1000 + 4 * 3600, 4)
    assert plan(hourly, 1000, late, CatchUp.ONE).launch == [1000 + 3 * 3600]
    assert plan(hourly, 1000, 999, CatchUp.ALL) == schedules.Plan([], 1000)
    once = parse_timing(at="2026-01-01T00:00:00Z")
    assert plan(once, once.at or 0, utc(2026, 2, 1), CatchUp.ONE).launch == [once.at]
    assert plan(once, once.at or 0, utc(2026, 2, 1), CatchUp.NONE).launch == []


def test_process_ids_derive_from_the_name_and_the_due_time() -> None:
    due = utc(2026, 11, 30, 9)
    assert schedules.occurrence_id("nightly", due) == "nightly@2026-11-30T09:00:00Z"
    assert schedules.trigger_id("nightly", due + 1.25) == "nightly@2026-11-30T09:00:01.250Z"
    long_a, long_b = "é" * 99 + "a", "é" * 99 + "b"
    ids = {schedules.occurrence_id(name, due) for name in (long_a, long_b)}
    assert len(ids) == 2
    for process_id in ids:
        assert bounds.check_id(process_id, "id") is None
        assert process_id.endswith("@2026-11-30T09:00:00Z") and "~" in process_id


@pytest.mark.parametrize(
    ("timing", "problem"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * *"}, "must have 5 fields"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "* * * * *", "tz": "../../etc/passwd"}, "unknown time zone"),
        ({"every": "5x"}, "is not a duration"),
        ({"every": "0s"}, "between 1 second"),
        ({"at": "tomorrow"}, "not an ISO 8601 time"),
        ({}, "exactly one of cron, every or at"),
        ({"cron": "* * * * *", "every": "5m"}, "exactly one of cron, every or at"),
        ({"every": "5m", "tz": "UTC"}, "applies to cron and at schedules only"),
    ],
)
def test_bad_timings_are_refused_with_the_reason(timing: dict[str, str], problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        parse_timing(**timing)


ADD = {"action": "add", "schedule": "s", "definition": QUICK, "every": "5m"}
CRON = {"action": "add", "schedule": "s", "definition": QUICK, "cron": "* * * * *"}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"action": "explode", "schedule": "s"}, "'action' must be one of"),
        ({"action": "pause"}, "must name the schedule"),
        ({"action": "pause", "schedule": "a\x07b"}, "control character"),
        ({"action": "add", "schedule": "s", "every": "5m"}, "'definition' must be"),
        ({"action": "add", "schedule": "s", "definition": QUICK}, "exactly one of"),
        ({**CRON, "tz": "America"}, "unknown time zone 'America'"),
        ({**CRON, "tz": "/etc/passwd"}, "unknown time zone"),
        ({**ADD, "every": "9" * 5000}, "too long for a duration"),
        ({**ADD, "every": 10**30}, "between 1 second"),
        ({**CRON, "cron": None, "at": "9999-12-31T23:59:59-23:00"}, "not between 1970"),
        ({**CRON, "cron": "0 0 31 2 *"}, "invalid cron expression"),
        (
            {**ADD, "overlap": "x"},
            "overlap must be one of skip, allow, terminate-previous",
        ),
        (
            {**ADD, "fields": []},
            "'fields' must be a JSON object",
        ),
        (
            {
                "action": "add",
                "schedule": "s",
                "definition": QUICK,
                "every": "5m",
                "fields": {"inst:x": 1},
            },
            "inst: properties are the engine's own",
        ),
    ],
)
def test_bad_schedule_messages_are_refused_with_the_reason(
    body: dict[str, Any], problem: str
) -> None:
    encoded = json.dumps({"name": "schedule", **body}).encode()
    with pytest.raises(MessageError, match=problem):
        messages.decode_message(encoded)


CRON_TEXT = st.one_of(
    st.sampled_from(["* * * * *", "0 2 * * *", "* * * * * */2", "0 0 31 2 *"]),
    st.text(alphabet="0123456789*/,-LW#?abcdefghijklmnopqrstuvwxyz ", max_size=40),
)
ZONES = ["UTC", "Europe/Paris", "America", "x/../y", "/etc/passwd", "Etc"]
ANY_VALUE = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=30), st.booleans())
TIMINGS = {
    "cron": st.one_of(CRON_TEXT, ANY_VALUE),
    "every": st.one_of(st.from_regex(r"\d{0,50}[dhms]?", fullmatch=True), ANY_VALUE),
    "at": st.one_of(st.datetimes().map(dt.datetime.isoformat), st.text(max_size=30), ANY_VALUE),
}


@settings(max_examples=400)
@given(
    action=st.one_of(st.just("add"), st.sampled_from(schedules.ACTIONS), st.text(max_size=10)),
    name=st.one_of(st.from_regex(r"[a-z]{1,10}", fullmatch=True), ANY_VALUE),
    timing=st.sampled_from(sorted(TIMINGS)).flatmap(
        lambda kind: st.tuples(st.just(kind), TIMINGS[kind])
    ),
    extra=st.one_of(st.just({}), st.fixed_dictionaries({}, optional=TIMINGS)),
    tz=st.one_of(st.none(), st.sampled_from(ZONES), ANY_VALUE),
    choices=st.one_of(st.just(("skip", "one")), st.tuples(ANY_VALUE, ANY_VALUE)),
)
def test_any_schedule_message_is_decoded_or_refused_with_a_reason(
    action: Any,
    name: Any,
    timing: tuple[str, Any],
    extra: dict[str, Any],
    tz: Any,
    choices: tuple[Any, Any],
) -> None:
    """Whatever a schedule message holds, decoding it gives a control or a ``MessageError``:
    never another exception, which would turn the message into a poison pill."""
    body = {"name": "schedule", "action": action, "schedule": name, "definition": QUICK}
    body.update({timing[0]: timing[1], **extra})
    if tz is not None:
        body["tz"] = tz
    body["overlap"], body["catch_up"] = choices
    try:
        encoded = json.dumps(body).encode()
    except ValueError:  # NaN: refused before it gets here
        return
    try:
        decoded = messages.decode_message(encoded)
    except MessageError:
        return
    assert isinstance(decoded, messages.Control) and decoded.name == "schedule"


# the service, on the real databases, with a controlled clock ---------------------------------


@dataclass(frozen=True)
class Message:
    queue: str
    body: bytes
    message_id: str | None = None
    content_type: str | None = "application/json"
    redelivered: bool = False


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


START = utc(2026, 11, 30, 9)


def service_on(store: Store, start: float = START) -> tuple[Service, Clock]:
    clock = Clock(start)
    return Service(store, CONFIG, clock=clock), clock


def send(service: Service, action: str, name: str, message_id: str = "", **extra: Any) -> Verdict:
    body = {"name": "schedule", "action": action, "schedule": name, **extra}
    message = Message(CONFIG.message_queue, json.dumps(body).encode(), message_id or None)
    return service.handle(message)


def add(service: Service, name: str, definition: str = QUICK, **extra: Any) -> None:
    verdict = send(service, "add", name, definition=definition, **extra)
    assert verdict.outcome is Outcome.ACK, verdict.reason


def launched(store: Store, name: str) -> list[str]:
    """The due times of the schedule's instances, in order (from their ids)."""
    ids = [r.id for r in store.list_instances(limit=10_000) if r.id.startswith(f"{name}@")]
    return sorted(process_id.split("@", 1)[1] for process_id in ids)


def seconds(*offsets: int, start: float = START) -> list[str]:
    return [schedules.iso(start + offset) for offset in offsets]


def test_an_interval_fires_each_occurrence_once(store: Store) -> None:
    service, clock = service_on(store)
    add(service, "tick", every="10s", catch_up="all")
    assert service.fire_due_schedules() == 0
    clock.now += 10
    assert service.fire_due_schedules() == 1
    assert service.fire_due_schedules() == 0  # nothing more is due
    clock.now += 25  # down for a while: 20 and 30 missed, 'all' launches both
    assert service.fire_due_schedules() == 2
    assert launched(store, "tick") == seconds(10, 20, 30)
    record = store.schedule("tick")
    assert record is not None
    assert (record.launched, record.next_due, record.last_due) == (3, START + 40, START + 30)
    assert record.last_instance_id == f"tick@{schedules.iso(START + 30)}"
    assert record.definition_name == "quick" and store.instance(record.last_instance_id)


def test_one_firing_takes_at_most_the_limit_of_due_schedules(store: Store) -> None:
    service, clock = service_on(store)
    for name in ("a", "b", "c"):
        add(service, name, every="10s")
    clock.now += 10
    assert service.fire_due_schedules(limit=2) == 2
    assert service.fire_due_schedules(limit=2) == 1  # the one left over, at the next firing
    assert [launched(store, name) for name in ("a", "b", "c")] == [seconds(10)] * 3


def test_a_cron_schedule_in_a_time_zone_fires_on_the_wall_clock(store: Store) -> None:
    service, clock = service_on(store, utc(2026, 10, 24, 22))
    add(service, "berlin", cron="30 2 * * *", tz="Europe/Berlin", catch_up="all")
    for _ in range(3):
        clock.now += 86400
        service.fire_due_schedules()
    assert launched(store, "berlin") == [
        "2026-10-25T00:30:00Z",  # 02:30 CEST: the repeated 02:30 CET is not fired again
        "2026-10-26T01:30:00Z",
        "2026-10-27T01:30:00Z",
    ]


@pytest.mark.parametrize(
    ("catch_up", "on_time", "late"),
    [
        ("all", [120, 240, 360, 480], [600, 720, 840, 960]),
        ("one", [480], [960]),
        ("none", [480], []),
    ],
)
def test_catch_up_policies_after_downtime(
    store: Store, catch_up: str, on_time: list[int], late: list[int]
) -> None:
    service, clock = service_on(store)
    add(service, "nightly", every="2m", catch_up=catch_up)
    clock.now = START + 485  # due at 120, 240, 360 (missed) and 480 (on time)
    service.fire_due_schedules()
    assert launched(store, "nightly") == seconds(*on_time)
    clock.now = START + 960 + schedules.ON_TIME + 30  # the latest, 960, is late too
    service.fire_due_schedules()
    assert launched(store, "nightly") == seconds(*on_time, *late)
    record = store.schedule("nightly")
    assert record is not None and record.next_due == START + 1080
    assert record.skipped == 8 - len(on_time) - len(late)


def test_overlap_skip_allow_and_terminate_previous(store: Store) -> None:
    service, clock = service_on(store)
    for policy in ("skip", "allow", "terminate-previous"):
        add(service, policy, FOREVER, every="10s", overlap=policy)
    clock.now += 10
    assert service.fire_due_schedules() == 3
    clock.now += 10
    assert service.fire_due_schedules() == 2  # skip: the first still runs
    assert launched(store, "skip") == seconds(10)
    assert launched(store, "allow") == seconds(10, 20)
    assert launched(store, "terminate-previous") == seconds(10, 20)

    def status(name: str, offset: int) -> str | None:
        record = store.instance(f"{name}@{schedules.iso(START + offset)}")
        return None if record is None else record.status

    assert [status("allow", 10), status("allow", 20)] == ["running", "running"]
    assert status("terminate-previous", 10) == "terminated"
    assert status("terminate-previous", 20) == "running"
    skipped = store.schedule("skip")
    assert skipped is not None and skipped.skipped == 1 and skipped.launched == 1
    assert skipped.next_due == START + 30
    with store.transaction() as tx:  # the first one ends: the next occurrence starts
        service.advance(tx, f"skip@{schedules.iso(START + 10)}", _terminate(), None)
    clock.now += 10
    service.fire_due_schedules()
    assert launched(store, "skip") == seconds(10, 30)


def test_an_occurrence_keeps_its_name_and_fields_and_restarts_with_them(store: Store) -> None:
    """An occurrence is an instance like a launched one: named after its definition, with
    the schedule's fields as its launch's, which a restart gives it again; terminated for
    the next occurrence, it says so."""
    service, clock = service_on(store)
    greeter = '<process name="greeter"><await event="never"/></process>'
    add(service, "g", greeter, every="10s", fields={"who": "Ada"}, overlap="terminate-previous")
    clock.now += 10
    assert service.fire_due_schedules() == 1
    first, second = (f"g@{schedules.iso(START + offset)}" for offset in (10, 20))
    record = store.instance(first)
    assert record is not None and record.name == "greeter"

    def operate(message_id: str, name: str, **extra: Any) -> None:
        body = {"name": name, "process_id": first, **extra}
        message = Message(CONFIG.message_queue, json.dumps(body).encode(), message_id)
        assert service.handle(message).outcome is Outcome.ACK

    operate("set", "set", values={"who": "Bob"})
    operate("restart", "restart")
    record = store.instance(first)
    assert record is not None and record.state is not None
    assert root_context(record.state)["who"] == "Ada"
    clock.now += 10
    assert service.fire_due_schedules() == 1
    stopped = [e.details for e in store.journal(first) if e.kind == "terminating"]
    assert stopped == [{"reason": f"schedule g: terminated for the next occurrence, {second}"}]


def _terminate() -> Any:
    from bureaucrat.engine import events

    return events.Terminate("done with it")


def test_pause_resume_trigger_delete(store: Store) -> None:
    service, clock = service_on(store)
    add(service, "ops", every="5m", catch_up="none", fields={"who": "scheduler"})
    assert send(service, "pause", "ops").outcome is Outcome.ACK
    clock.now += 300
    assert service.fire_due_schedules() == 0
    paused = store.schedule("ops")
    assert paused is not None and paused.paused
    clock.now = START + 900 + schedules.ON_TIME + 30
    send(service, "resume", "ops")
    assert service.fire_due_schedules() == 0  # everything it missed is late: catch-up none
    record = store.schedule("ops")
    assert record is not None and not record.paused and record.next_due is not None
    assert record.next_due > clock.now
    send(service, "trigger", "ops", message_id="trigger-1")
    clock.now += 0.5
    send(service, "trigger", "ops", message_id="trigger-1")  # the same message, redelivered
    clock.now += 0.5
    send(service, "trigger", "ops", message_id="trigger-2")
    triggered = launched(store, "ops")
    assert triggered == [
        schedules.iso(clock.now - 1, milliseconds=True),
        schedules.iso(clock.now, milliseconds=True),
    ]
    instance = store.instance(f"ops@{triggered[0]}")
    assert instance is not None and instance.state is not None
    assert instance.state["scopes"][""]["who"] == "scheduler"
    send(service, "delete", "ops")
    assert store.schedule("ops") is None and store.list_schedules() == []
    assert send(service, "pause", "ops").outcome is Outcome.ACK  # unknown: logged, ignored


def test_adding_again_replaces_the_schedule(store: Store) -> None:
    service, _ = service_on(store)
    add(service, "swap", every="10s")
    add(service, "swap", FOREVER, cron="0 12 * * *", tz="Europe/Paris", catch_up="all")
    (record,) = store.list_schedules()
    assert (record.kind, record.cron, record.timezone, record.catch_up) == (
        "cron",
        "0 12 * * *",
        "Europe/Paris",
        "all",
    )
    assert record.definition_name == "forever" and record.next_due == utc(2026, 11, 30, 11)


def test_bad_schedule_messages_are_dead_lettered(store: Store) -> None:
    service, _ = service_on(store)
    verdict = send(service, "add", "bad", definition="<process><bogus/></process>", every="5m")
    assert verdict.outcome is Outcome.DEAD
    assert "invalid definition" in verdict.reason and "bogus" in verdict.reason
    verdict = send(service, "add", "bad", definition=QUICK, cron="99 * * * *")
    assert verdict.outcome is Outcome.DEAD and "invalid cron expression" in verdict.reason
    assert store.list_schedules() == []


def test_a_schedule_that_cannot_fire_is_paused_alone_with_the_reason(store: Store) -> None:
    service, clock = service_on(store)
    add(service, "broken", '<process name="other"/>', every="10s")
    add(service, "fine", every="10s")
    with store.transaction() as tx:  # its definition lost (a damaged database)
        tx.connection.execute(sa.delete(definitions).where(definitions.c.name == "other"))
    clock.now += 10
    assert service.fire_due_schedules() == 1
    broken = store.schedule("broken")
    assert broken is not None and broken.paused and "definition" in (broken.error or "")
    assert launched(store, "fine") == seconds(10)


def test_pruning_keeps_the_definitions_of_schedules(store: Store) -> None:
    service, clock = service_on(store)
    add(service, "rare", '<process name="rare"/>', every="30d")
    store.prune(before=START + 10**9)
    clock.now += 30 * 86400
    assert service.fire_due_schedules() == 1


def test_the_launch_and_the_next_due_time_commit_together(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after an occurrence's instance is created and before the schedule's next due
    time is written keeps neither: the next pass launches that occurrence, once."""
    service, clock = service_on(store)
    add(service, "atomic", every="10s")
    clock.now += 10
    real_update = rows.update

    def lost_connection(*args: Any, **kwargs: Any) -> bool:
        raise StoreError("the database went away")

    monkeypatch.setattr(rows, "update", lost_connection)
    with pytest.raises(StoreError):
        service.fire_due_schedules()
    assert launched(store, "atomic") == []
    record = store.schedule("atomic")
    assert record is not None and record.next_due == START + 10 and record.launched == 0
    monkeypatch.setattr(rows, "update", real_update)
    assert service.fire_due_schedules() == 1
    assert launched(store, "atomic") == seconds(10)


def test_two_services_sharing_postgresql_launch_each_occurrence_once(postgres_url: str) -> None:
    """Two daemons' passes at the same moment: each schedule is claimed by one of them."""
    stores = [Store(postgres_url), Store(postgres_url)]
    try:
        first, clock = service_on(stores[0])
        names = [f"s{i}" for i in range(8)]
        for name in names:
            add(first, name, every="1s", catch_up="all")
        clock.now += 30  # 30 occurrences each, due at once
        services = [first, Service(stores[1], CONFIG, clock=clock)]
        counts = [0, 0]
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def run(index: int) -> None:
            try:
                barrier.wait(10)
                while launched_now := services[index].fire_due_schedules(limit=3):
                    counts[index] += launched_now
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sum(counts) == 8 * 30
        for record in stores[0].list_schedules():
            assert record.error is None and record.launched == 30, record
        for name in names:
            assert launched(stores[0], name) == seconds(*range(1, 31))
    finally:
        for opened in stores:
            opened.close()


# the real daemons -----------------------------------------------------------------------------


def due_times(store: Store, name: str) -> list[float]:
    return [dt.datetime.fromisoformat(due).timestamp() for due in launched(store, name)]


def test_end_to_end_two_daemons_on_postgresql_launch_each_occurrence_once_across_restarts(
    rabbitmq: None, postgres_url: str, tmp_path: Path
) -> None:
    """A cron schedule (every other second) and an interval schedule (every second) fired by
    two daemons sharing PostgreSQL; both are killed and started again, and catch up what was
    due meanwhile: every occurrence from the first to the last is launched, each once."""
    with Installation(tmp_path, postgres_url) as install:
        install.start_daemon()
        install.start_another_daemon()
        store = install.store
        with install.launcher() as launcher:
            launcher.schedule_add("tick", QUICK, every="1s", catch_up="all")
            launcher.schedule_add("cron", QUICK, cron="* * * * * */2", catch_up="all")

        def launched_at_least(count: int, after: float = 0) -> bool:
            return all(
                len([due for due in due_times(store, name) if due > after]) >= count
                for name in ("tick", "cron")
            )

        install.wait_for(lambda: launched_at_least(3), what="three occurrences of each")
        install.kill_daemon()
        for other in install.workers:
            other.send_signal(signal.SIGKILL)
            other.wait(10)
        stopped = time.time()
        install.workers.clear()
        wait_until(overdue(store, 3), "three seconds of occurrences due with no daemon")
        install.start_daemon()
        install.start_another_daemon()
        install.wait_for(lambda: launched_at_least(3, stopped + 1), what="occurrences after")
        with install.launcher() as launcher:
            launcher.schedule_pause("tick")
            launcher.schedule_pause("cron")
        install.wait_for(
            lambda: all(r.paused for r in store.list_schedules()), what="the schedules paused"
        )
        for name, step in (("tick", 1), ("cron", 2)):
            times = due_times(store, name)
            assert [b - a for a, b in itertools.pairwise(times)] == [step] * (len(times) - 1)
            record = store.schedule(name)
            assert record is not None and record.error is None
            assert record.launched == len(times) and record.last_due == times[-1]
            caught_up = [
                due
                for due in times
                if stopped < due and (instance := store.instance(occurrence(name, due)))
                if instance.created_at > due + 0.5
            ]
            assert caught_up, f"{name}: nothing was due while no daemon ran"
            for due in times:
                kinds = [entry.kind for entry in store.journal(occurrence(name, due))]
                assert kinds.count("launched") == 1
        assert "launch ignored" not in install.log_text()


def overdue(store: Store, seconds: float) -> Callable[[], bool]:
    """Whether every schedule has occurrences due ``seconds`` ago and not launched."""

    def condition() -> bool:
        records = store.list_schedules()
        return all(r.next_due is not None and time.time() - r.next_due >= seconds for r in records)

    return condition


def occurrence(name: str, due: float) -> str:
    return schedules.occurrence_id(name, due)


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


class Ctl:
    """``bureaucratctl`` in this process (a subprocess per command would cost seconds each)."""

    def __init__(self, install: Installation, capsys: pytest.CaptureFixture[str]) -> None:
        self.install = install
        self.capsys = capsys

    def __call__(self, *args: str) -> Ran:
        self.capsys.readouterr()
        code = ctl_main(["-c", str(self.install.config_path), *args])
        captured = self.capsys.readouterr()
        return Ran(code, captured.out, captured.err)


def test_end_to_end_bureaucratctl_schedule_commands(
    sqlite_installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    install = sqlite_installation
    ctl = Ctl(install, capsys)
    definition = install.tmp / "forever.xml"
    definition.write_text(FOREVER)
    install.start_daemon()
    added = ctl(
        "schedule",
        "add",
        "relay",
        str(definition),
        "--every",
        "1s",
        "--overlap",
        "terminate-previous",
        "-F",
        "who=ctl",
        "-F",
        "n=3",
    )
    assert added.returncode == 0, added.stderr
    skip = ctl("schedule", "add", "lonely", str(definition), "--every", "1s")
    assert skip.returncode == 0, skip.stderr
    store = install.store

    def schedule(name: str) -> Any:
        return store.schedule(name)

    install.wait_for(lambda: len(launched(store, "relay")) >= 3, what="three relays")
    install.wait_for(
        lambda: (record := schedule("lonely")) is not None and record.skipped >= 2,
        what="two occurrences skipped",
    )
    assert len(launched(store, "lonely")) == 1  # the first one never ends: the others skip
    assert ctl("schedule", "pause", "relay").returncode == 0
    install.wait_for(lambda: schedule("relay").paused, what="the schedule paused")
    relays = launched(store, "relay")
    statuses = [install.status(f"relay@{due}") for due in relays]
    assert statuses[:-1] == ["terminated"] * (len(relays) - 1) and statuses[-1] == "running"
    last = store.instance(f"relay@{relays[-1]}")
    assert last is not None and last.state is not None
    assert {"who": "ctl", "n": 3}.items() <= last.state["scopes"][""].items()

    listing = ctl("schedule", "list")
    assert listing.returncode == 0
    (line,) = [row for row in listing.stdout.splitlines() if row.startswith("relay ")]
    assert "paused" in line and "every 1s" in line
    shown = json.loads(ctl("schedule", "show", "relay", "--json").stdout)
    assert shown["state"] == "paused" and shown["overlap"] == "terminate-previous"
    assert shown["launched"] == len(relays) and shown["fields"] == {"who": "ctl", "n": 3}
    assert "timing" in ctl("schedule", "show", "lonely").stdout

    assert ctl("schedule", "trigger", "relay").returncode == 0
    install.wait_for(lambda: len(launched(store, "relay")) == len(relays) + 1, what="trigger")
    assert ctl("schedule", "delete", "lonely").returncode == 0
    install.wait_for(lambda: schedule("lonely") is None, what="the schedule deleted")

    bad = ctl("schedule", "add", "x", str(definition), "--every", "5 minutes")
    assert bad.returncode == 2 and "is not a duration" in bad.stderr
    bad = ctl("schedule", "add", "x", str(definition), "--cron", "* * *")
    assert bad.returncode == 2 and "5 fields" in bad.stderr
    bad = ctl("schedule", "add", "x", str(definition), "--at", "2001-01-01T00:00")
    assert bad.returncode == 2 and "in the past" in bad.stderr
    missing = ctl("schedule", "pause", "nosuch")
    assert missing.returncode == 1 and "no schedule nosuch" in missing.stderr
    with pytest.raises(SystemExit) as exited:
        ctl("schedule", "add", "--help")
    assert exited.value.code == 0 and "--catch-up" in capsys.readouterr().out

    body = {"name": "schedule", "action": "add", "schedule": "x", "definition": FOREVER}
    install.publish_raw(install.config.message_queue, json.dumps(body).encode())
    ((_, headers),) = install.dead_letters(1)
    assert "exactly one of cron, every or at" in headers["x-bureaucrat-error"]


def test_the_launcher_refuses_what_the_engine_would_refuse_before_sending() -> None:
    """No broker is reached: every check is local."""
    launcher = Launcher(config=CONFIG, amqp_url="amqp://nobody@127.0.0.1:1/")
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        launcher.schedule_add("s", QUICK, cron="0 25 * * *")
    with pytest.raises(ScheduleError, match="in the past"):
        launcher.schedule_add("s", QUICK, at="2001-01-01T00:00:00Z")
    with pytest.raises(ScheduleError, match="needs a time zone"):
        launcher.schedule_add("s", QUICK, at=dt.datetime(2099, 1, 1))
    with pytest.raises(ScheduleError, match="exactly one of"):
        launcher.schedule_add("s", QUICK)
    with pytest.raises(ScheduleError, match="catch_up must be one of none, one, all"):
        launcher.schedule_add("s", QUICK, every="5m", catch_up="some")
    with pytest.raises(ScheduleError, match="schedule name is empty"):
        launcher.schedule_pause("")
    with pytest.raises(MessageError, match="not JSON data"):
        launcher.schedule_add("s", QUICK, every="5m", fields={"when": dt.date(2026, 1, 1)})
    with pytest.raises(DefinitionError, match="bogus"):
        launcher.schedule_add("s", "<process><bogus/></process>", every="5m")


def test_a_cron_schedule_with_seconds_counts_what_it_missed() -> None:
    every_second = parse_timing(cron="* * * * * *")
    result = plan(every_second, START, START + 3600.5, CatchUp.ONE)
    assert result == schedules.Plan([START + 3600], START + 3601, missed=3600)


def test_schedule_messages_in_one_batch_apply_in_order(store: Store) -> None:
    service, clock = service_on(store)

    def message(action: str, **extra: Any) -> Message:
        body = {"name": "schedule", "action": action, "schedule": "batch", **extra}
        return Message(CONFIG.message_queue, json.dumps(body).encode(), f"m-{action}")

    batch = [
        message("add", definition=QUICK, every="10s"),
        message("trigger"),
        message("pause"),
        Message(CONFIG.message_queue, b'{"name": "schedule", "action": "add"}'),
    ]
    verdicts = service.handle_batch(batch)
    assert [v.outcome for v in verdicts] == [Outcome.ACK] * 3 + [Outcome.DEAD]
    assert "must name the schedule" in verdicts[3].reason
    record = store.schedule("batch")
    assert record is not None and record.paused and record.launched == 1
    assert launched(store, "batch") == [schedules.iso(START, milliseconds=True)]
    clock.now += 60
    assert service.fire_due_schedules() == 0


def test_an_occurrence_undone_with_its_schedule_sends_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses a schedule's update after its occurrence was created and its
    workitem staged: the savepoint undoes both, the schedule is paused with the reason, and no
    workitem of an instance that does not exist goes out."""
    sent: list[Any] = []

    class Publisher:
        def publish_many(self, batch: Any) -> list[str | None]:
            sent.extend(batch)
            return [None] * len(batch)

    clock = Clock(START)
    service = Service(store, CONFIG, Publisher(), clock=clock)
    add(service, "dispatching", '<process><action participant="p"/></process>', every="10s")
    add(service, "fine", '<process><action participant="q"/></process>', every="10s")
    real_update = rows.update
    refusals = iter([True])

    def refuse_once(connection: Any, name: str, **values: Any) -> bool:
        if name == "dispatching" and next(refusals, False):
            raise StoreDataError("a value the database refuses")
        return real_update(connection, name, **values)

    monkeypatch.setattr(rows, "update", refuse_once)
    clock.now += 10
    assert service.fire_due_schedules() == 1
    service.publish_committed()
    assert launched(store, "dispatching") == []
    record = store.schedule("dispatching")
    assert record is not None and record.paused and "refuses" in (record.error or "")
    assert [message.routing_key for message in sent] == ["worker_q"]
