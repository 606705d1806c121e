"""Operating processes end to end (README, "Operating processes"): pause and resume with answers,
events and timers arriving meanwhile and a SIGKILL in between, an incident fixed with ``set``
and resumed, a rerun from the middle of a ``foreach`` inside an ``all``, and restart; with the
real daemon, workers and RabbitMQ, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bureaucrat import ctl
from tests.harness import Installation

pytestmark = [pytest.mark.usefixtures("rabbitmq"), pytest.mark.slow]

PAUSABLE = """
<process name="pausable">
  <context><property name="n" type="int">0</property></context>
  <all>
    <action participant="inc"/>
    <delay duration="3"/>
    <await event="go"><condition>event['ok']</condition></await>
  </all>
  <action participant="inc"/>
</process>
"""


def _kinds(installation: Installation, process_id: str) -> Counter[str]:
    return Counter(entry.kind for entry in installation.store.journal(process_id))


def _state(installation: Installation, process_id: str) -> dict:  # type: ignore[type-arg]
    record = installation.store.instance(process_id)
    assert record is not None and record.state is not None
    return record.state


def test_a_paused_process_holds_what_arrives_survives_a_sigkill_and_resumes_with_nothing_lost(
    installation: Installation,
) -> None:
    installation.start_daemon()
    with installation.launcher() as launcher:
        pid = launcher.launch(PAUSABLE, process_id="paused-1")
        installation.wait_for(lambda: _kinds(installation, pid)["dispatched"] == 1, what="launch")
        launcher.pause(pid, reason="maintenance")
        installation.wait_for(lambda: installation.status(pid) == "paused", what="pause")
        # the answer, the event and the delay's timer all arrive while it is paused
        installation.start_worker("inc", "tests.participants:inc")
        launcher.send_event("go", {"ok": True}, process_id=pid)
        installation.wait_for(
            lambda: len(_state(installation, pid).get("held", [])) == 3, what="three held"
        )
        assert _kinds(installation, pid)["dispatched"] == 1  # nothing new went out
        installation.kill_daemon()
        installation.start_daemon()
        state = _state(installation, pid)
        assert state["status"] == "paused"
        held = [entry["type"] for entry in state["held"]]
        assert sorted(held) == ["event", "response", "timer"]
        # kept in the order they arrived, whichever came first (the journal says which)
        journal = installation.store.journal(pid)
        assert held == [e.details["message"] for e in journal if e.kind == "held"]
        launcher.resume(pid)
        record = installation.wait_finished(pid)
    assert record.status == "completed", installation.log_text()
    assert record.state["scopes"][""]["n"] == 2
    kinds = _kinds(installation, pid)
    assert kinds["held"] == 3
    assert kinds["paused"] == kinds["resumed"] == kinds["timer"] == 1
    assert kinds["dispatched"] == kinds["answered"] == 2
    assert kinds["launched"] == kinds["completed"] == 1
    assert installation.store.pending_workitems(pid) == []


INCIDENT = """
<process name="incident" on-fault="suspend">
  <all>
    <action participant="inc"/>
    <assign property="total">context['price'] * 2</assign>
  </all>
  <action participant="inc"/>
</process>
"""


def test_an_incident_is_fixed_with_set_and_resumed(installation: Installation) -> None:
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    with installation.launcher() as launcher:
        pid = launcher.launch(INCIDENT, process_id="incident-1")
        installation.wait_for(lambda: installation.status(pid) == "suspended", what="incident")
        state = _state(installation, pid)
        assert state["incident"]["code"] == "ExpressionError"
        assert state["incident"]["activity"] == f"{pid}_0_1"
        launcher.set_context(pid, {"price": 21})
        installation.wait_for(
            lambda: _state(installation, pid)["scopes"][""].get("price") == 21, what="set"
        )
        launcher.resume(pid)
        record = installation.wait_finished(pid)
    assert record.status == "completed", installation.log_text()
    context = record.state["scopes"][""]
    assert context["total"] == 42 and context["n"] == 2
    kinds = _kinds(installation, pid)
    assert kinds["incident"] == kinds["set"] == kinds["resumed"] == 1
    assert "fault" not in [e.kind for e in installation.store.journal(pid)][-3:]


RERUN = """
<process name="rerun">
  <context><property name="items" type="json">["a", "b", "c"]</property></context>
  <all>
    <foreach select="items">
      <action participant="inc"/>
      <action participant="second"/>
    </foreach>
    <action participant="slow"/>
  </all>
  <action participant="inc"/>
</process>
"""


def test_a_rerun_from_the_middle_of_a_foreach_inside_an_all(installation: Installation) -> None:
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    with installation.launcher() as launcher:
        pid = launcher.launch(RERUN, process_id="rerun-1")
        # the first element's second action waits (no worker serves it yet), so does "slow"
        installation.wait_for(lambda: _kinds(installation, pid)["dispatched"] == 3, what="wait")
        launcher.rerun(pid, f"{pid}_0_0_0", values={"n": 10})
        installation.wait_for(lambda: _kinds(installation, pid)["rerun"] == 1, what="rerun")
        # "second" answers both the cancelled workitem (ignored) and the new ones
        installation.start_worker("second", "tests.participants:echo")
        record = installation.wait_finished(pid)
    assert record.status == "completed", installation.log_text()
    context = record.state["scopes"][""]
    # inc ran for a (before the rerun: n=1, then set to 10), then again for a, b and c, then
    # once after the all
    assert context["n"] == 14, context
    kinds = _kinds(installation, pid)
    assert kinds["cancelled"] == 2  # the second action of element a, and the slow branch
    assert installation.store.pending_workitems(pid) == []


def test_restart_runs_a_finished_process_again_with_its_launch_fields(
    installation: Installation,
) -> None:
    installation.start_daemon()
    installation.start_worker("inc", "tests.participants:inc")
    definition = '<process><action participant="inc"/></process>'
    with installation.launcher() as launcher:
        pid = launcher.launch(definition, {"n": 5}, process_id="restart-1")
        record = installation.wait_finished(pid)
        assert record.state["scopes"][""]["n"] == 6
        launcher.restart(pid)
        installation.wait_for(lambda: _kinds(installation, pid)["completed"] == 2, what="again")
    record = installation.wait_finished(pid)
    assert record.status == "completed"
    assert record.state["scopes"][""]["n"] == 6  # from the launch's fields again, not 7
    assert _kinds(installation, pid)["restarted"] == 1


def test_bureaucratctl_steers_a_process_and_refuses_what_makes_no_sense(
    sqlite_installation: Installation, capsys: pytest.CaptureFixture[str]
) -> None:
    installation = sqlite_installation
    config = str(installation.config_path)
    installation.start_daemon()
    with installation.launcher() as launcher:
        pid = launcher.launch(INCIDENT, process_id="ctl-1")
    installation.wait_for(lambda: installation.status(pid) == "suspended", what="incident")
    assert ctl.main(["-c", config, "show", pid]) == 0
    assert "incident ExpressionError: expression \"context['price'] * 2\" failed" in (
        capsys.readouterr().out
    )
    assert ctl.main(["-c", config, "pause", pid]) == 1  # suspended, not running
    assert "cannot pause process ctl-1: it is suspended" in capsys.readouterr().err
    assert ctl.main(["-c", config, "set", pid, "price=21", 'note="fixed"']) == 0
    installation.wait_for(lambda: _kinds(installation, pid)["set"] == 2, what="set")
    assert ctl.main(["-c", config, "set", pid, "inst:current=1"]) == 1
    assert "inst:" in capsys.readouterr().err
    installation.start_worker("inc", "tests.participants:inc")
    assert ctl.main(["-c", config, "resume", pid]) == 0
    record = installation.wait_finished(pid)
    assert record.status == "completed"
    assert record.state["scopes"][""]["note"] == "fixed"
    capsys.readouterr()
    assert ctl.main(["-c", config, "set", pid, "price=1"]) == 1
    assert "it is completed" in capsys.readouterr().err
    assert ctl.main(["-c", config, "rerun", pid, "--from", "1", "--set", "price=2"]) == 0
    installation.wait_for(lambda: _kinds(installation, pid)["completed"] == 2, what="rerun")
    record = installation.wait_finished(pid)
    assert record.state["scopes"][""]["price"] == 2
    assert record.state["scopes"][""]["n"] == 3  # inc: two before, one after the rerun


@pytest.mark.parametrize("command", ["pause", "resume", "set", "rerun", "restart"])
def test_each_operation_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        ctl.main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: bureaucratctl" in capsys.readouterr().out
