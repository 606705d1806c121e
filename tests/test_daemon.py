"""End to end: the daemon in a subprocess, taskqueue workers in subprocesses, the real broker
and the real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pika
import pytest

from bureaucrat.engine.state import root_context
from tests.brokers import AMQP_URL
from tests.harness import ROOT, Installation

EVERYTHING = """<process name="everything">
  <context>
    <property name="items" type="json">["a", "b", "c"]</property>
    <property name="child" type="str"
      >&lt;process&gt;&lt;action participant="inc"/&gt;&lt;/process&gt;</property>
    <faults><case code="Late">
      <assign property="late">context["inst:fault"]["message"]</assign>
    </case></faults>
  </context>
  <action participant="inc"/>
  <sequence><action participant="inc"/></sequence>
  <switch>
    <case><condition>context["n"] == 2</condition><assign property="switched">True</assign></case>
    <default><fault code="Wrong" message="switch took the default"/></default>
  </switch>
  <while>
    <context><property name="i" type="int">0</property></context>
    <condition>context["i"] &lt; 2</condition>
    <assign property="i">context["i"] + 1</assign>
    <action participant="inc"/>
  </while>
  <foreach select="items"><assign property="last">context["inst:current"]</assign></foreach>
  <all>
    <action participant="mark_left"/>
    <action participant="mark_right"/>
  </all>
  <call process="$child"/>
  <delay duration="0.3"/>
  <await event="go"><condition>event["ok"] is True</condition></await>
  <sequence>
    <context><faults><default>
      <assign property="recovered">context["inst:fault"]["code"]</assign>
    </default></faults></context>
    <action participant="fail"/>
  </sequence>
  <fault code="Late" message="the last word"/>
</process>"""


pytestmark = pytest.mark.usefixtures("rabbitmq")


def bureaucratctl(install: Installation, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bureaucrat.ctl", "-c", str(install.config_path), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=env, cwd=install.tmp
    )


def messages_in(queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def start_everything(install: Installation) -> None:
    install.start_daemon()
    install.start_worker("inc", "tests.participants:inc")
    install.start_worker("fail", "tests.participants:fail")
    install.start_worker("mark_left", "tests.participants:mark", {"MARK": "left"})
    install.start_worker("mark_right", "tests.participants:mark", {"MARK": "right"})


def test_every_activity_through_the_broker(installation: Installation) -> None:
    start_everything(installation)
    with installation.launcher() as launcher:
        pid = launcher.launch(EVERYTHING, {"n": 0})
        installation.wait_for(lambda: installation.awaits(pid) == ["go"], what="the await")
        launcher.send_event("go", {"ok": False})
        launcher.send_event("unrelated", {})
        launcher.send_event("go", {"ok": True}, process_id=pid)
    record = installation.wait_finished(pid)
    assert record.status == "completed", installation.log_text()[-4000:]
    context = record.state["scopes"][""]
    assert context["n"] == 5  # two actions, two loop rounds, one in the subprocess
    assert context["switched"] is True and context["last"] == "c"
    assert context["left"] is True and context["right"] is True
    assert context["recovered"] == "ActionError"
    assert context["late"] == "the last word"
    assert "i" not in context
    assert installation.store.pending_workitems(pid) == []


def test_launch_twice_with_one_id_starts_one_process(installation: Installation) -> None:
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    definition = '<process><action participant="inc"/></process>'
    with installation.launcher() as launcher:
        first = launcher.launch(definition, {"n": 10}, process_id="same-id")
        second = launcher.launch(definition, {"n": 10}, process_id="same-id")
    assert first == second == "same-id"
    record = installation.wait_finished("same-id")
    assert record.state["scopes"][""]["n"] == 11
    launched = [e for e in installation.store.journal("same-id") if e.kind == "launched"]
    assert len(launched) == 1


def test_terminate_cancels_the_waiting_process_and_its_child(installation: Installation) -> None:
    installation.start_daemon()
    child = '<process><await event="never"/></process>'
    definition = '<process><all><call process="$child"/><delay duration="3600"/></all></process>'
    with installation.launcher() as launcher:
        pid = launcher.launch(definition, {"child": child})
        installation.wait_for(
            lambda: any(r.parent_id == pid for r in installation.store.list_instances()),
            what="the subprocess",
        )
        launcher.send_control("terminate", pid)
    assert installation.wait_finished(pid).status == "terminated"
    (child_record,) = [r for r in installation.store.list_instances() if r.parent_id == pid]
    assert installation.wait_finished(child_record.id).status == "terminated"


def test_notifications_and_dead_letters(installation: Installation) -> None:
    installation.start_daemon()
    installation.publish_raw(installation.config.launch_queue, b"<process><bogus/></process>")
    installation.publish_raw(
        installation.config.launch_queue, b"<process/>", message_id="plain-xml"
    )
    assert installation.wait_finished("plain-xml").status == "completed"
    ((body, headers),) = installation.dead_letters(1)
    assert body == b"<process><bogus/></process>"
    assert "unknown element <bogus>" in headers["x-bureaucrat-error"]
    assert "line 1" in headers["x-bureaucrat-error"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_mid_stream_exits_zero_and_loses_nothing(
    installation: Installation, signum: signal.Signals
) -> None:
    """SIGTERM or SIGINT while launches pour in: the daemon finishes the batch in hand and
    exits 0; every instance it stored is whole, and what it left in the queue is served, once,
    by the next daemon."""
    definition = '<process><assign property="n">context["n"] + 1</assign></process>'
    ids = [f"stop-{k}" for k in range(300)]
    daemon = installation.start_daemon()
    with installation.launcher() as launcher:
        for pid in ids:
            launcher.launch(definition, {"n": 0}, pid)
    installation.wait_for(lambda: bool(installation.store.list_instances()), what="a launch")
    daemon.send_signal(signum)
    assert daemon.wait(20) == 0
    log = installation.log_text()
    assert f"signal {signum.name}: stopping after the batch in hand" in log
    assert log.rstrip().endswith("stopped")
    for record in installation.store.list_instances():
        assert record.status == "completed" and record.state is not None, record.id
        assert root_context(record.state)["n"] == 1, record.id
    installation.start_daemon()
    with installation.launcher() as launcher:  # once it is done, the daemon serves: it may stop
        ids.append(launcher.launch(definition, {"n": 0}, "stop-last"))
    finished = [installation.wait_finished(pid) for pid in ids]
    assert {(r.status, root_context(r.state)["n"]) for r in finished} == {("completed", 1)}
    for pid in ids:
        assert [e.kind for e in installation.store.journal(pid)] == ["launched", "completed"]
    assert installation.stop_daemon() == 0


def test_json_round_trip_of_context_through_show(installation: Installation) -> None:
    """The fields a launch sends come back unchanged from ``bureaucratctl show``, through the
    broker, the engine, the database and the command's JSON and text output."""
    fields = {"nested": {"a": [1, 2.5, None, "x", True, -(2**40)], "é": "ünï ☃"}, "empty": {}}
    expected = {
        "empty": {},
        "nested": {"a": [1, 2.5, None, "x", True, -1099511627776], "é": "ünï ☃"},
    }
    installation.start_daemon()
    with installation.launcher() as launcher:
        pid = launcher.launch('<process name="shown"/>', fields)
    assert installation.wait_finished(pid).status == "completed"
    shown = bureaucratctl(installation, "show", pid, "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert (report["id"], report["name"], report["status"]) == (pid, "shown", "completed")
    assert report["context"] == expected
    assert report["fault"] is None and report["pending_workitems"] == []
    assert [entry["kind"] for entry in report["journal"]] == ["launched", "completed"]
    text = bureaucratctl(installation, "show", pid).stdout
    assert f"process  {pid} (shown)" in text and "status   completed" in text
    (context_line,) = [line for line in text.splitlines() if line.startswith("context  ")]
    assert json.loads(context_line.removeprefix("context  ")) == expected


def test_a_call_of_an_invalid_definition_faults_at_the_call(installation: Installation) -> None:
    installation.start_daemon()
    definition = """<process>
  <sequence>
    <context><faults><case code="DefinitionError">
      <assign property="problem">context["inst:fault"]["message"]</assign>
    </case></faults></context>
    <call process="$child"/>
  </sequence>
</process>"""
    with installation.launcher() as launcher:
        pid = launcher.launch(definition, {"child": "<process><bogus/></process>"})
    record = installation.wait_finished(pid)
    assert record.status == "completed", installation.log_text()[-3000:]
    assert "unknown element <bogus>" in record.state["scopes"][""]["problem"]
    # A fault, not a dead letter: a bad launch sent after the process ended must be the first
    # (and only) message in the dead-letter queue.
    sentinel = b"<process><sentinel/></process>"
    installation.publish_raw(installation.config.launch_queue, sentinel)
    assert [body for body, _ in installation.dead_letters(1)] == [sentinel]
    assert messages_in(installation.config.dead_letter_queue) == 0
