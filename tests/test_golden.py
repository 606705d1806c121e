"""Golden traces: each ``tests/golden/<name>.xml`` runs and its journal must equal ``<name>.trace``.

Participants are chosen by name: ``inc_<prop>`` adds one to ``prop``; ``fail`` answers critical;
``flaky_<n>`` answers error n times, then done; ``slow`` only reports progress (it never answers);
any other name echoes its payload. An optional ``<name>.json`` gives ``fields``, ``events`` and
``terminate`` (a reason: when the run has nothing more to do, an operator terminates it, and the
trace goes on with what the terminate step records and the commands it gives), and
``operations``: ``[when, {"op": ...}]`` pairs for ``run_process``'s ``operations`` (``when`` is
the text of a journal line to wait for, or null: when nothing else can happen).
Each run also makes the state's JSON round trip after every step.

An expected trace is read line by line against DESIGN.md section 3 before it is committed: it
says what the design asks for, not whatever the engine does today. After a deliberate change,
``BUREAUCRAT_REGOLD=1 pytest tests/test_golden.py`` writes every trace that differs and fails
each such test, so that a rewritten trace is read before it passes; under CI the variable is
refused and the tests fail.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bureaucrat.definition import parse_definition
from bureaucrat.engine import commands, events, step
from bureaucrat.testing import Participant, ProcessResult, run_process
from tests.brokers import in_ci

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.xml"))


class Participants(Mapping[str, Participant]):
    """Any name is a participant; its behaviour comes from its name."""

    def __init__(self) -> None:
        self.attempts: defaultdict[str, int] = defaultdict(int)

    def __getitem__(self, name: str) -> Participant:
        return lambda payload: self.answer(name, payload)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def answer(self, name: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.attempts[name] += 1
        if name.startswith("inc_"):
            prop = name[4:]
            return {**payload, prop: payload.get(prop, 0) + 1}
        if name == "fail":
            return {**payload, "status": "critical", "error": "failed"}
        if name.startswith("flaky_") and self.attempts[name] <= int(name[6:]):
            return {**payload, "status": "error", "error": f"attempt {self.attempts[name]}"}
        if name == "slow":
            return {**payload, "status": "in progress"}
        return payload


def render(result: ProcessResult) -> str:
    outcome = {"status": result.status, "context": result.context, "fault": result.fault}
    lines = [*result.trace, "=> " + json.dumps(outcome, sort_keys=True)]
    return "\n".join(lines) + "\n"


def terminated(case: Path, result: ProcessResult, reason: str) -> ProcessResult:
    """``result`` (a run that waits) after an operator's terminate, at the time it stopped."""
    assert result.status == "waiting", f"{case.name}: terminate needs a run that waits"
    now = float(result.trace[-1].split(" ", 1)[0])
    ended = step(parse_definition(case.read_bytes()), result.state, events.Terminate(reason), now)
    trace = list(result.trace)
    for command in ended.commands:
        if isinstance(command, commands.Record):
            details = sorted(command.details.items())
            fields = [f"{key}={json.dumps(value, sort_keys=True)}" for key, value in details]
            trace.append(" ".join([f"{now:g}", command.kind, command.activity, *fields]))
        elif not isinstance(command, commands.ProcessFinished):
            trace.append(f"{now:g}   {command!r}")
    state = ended.state
    fault = state["fault"]
    return ProcessResult(
        status=state["status"],
        context=state["scopes"][""],
        fault=None if fault is None else {"code": fault["code"], "message": fault["message"]},
        calls=result.calls,
        trace=trace,
        state=state,
    )


def operation(spec: dict[str, Any]) -> events.Operation:
    """An operator's operation from a case's JSON: ``{"op": "pause"}``, ``{"op": "set",
    "values": {...}}``, ``{"op": "rerun", "activity": "process_0_1", "values": {...}}``..."""
    match spec["op"]:
        case "pause":
            return events.Pause(spec.get("reason", ""))
        case "resume":
            return events.Resume()
        case "set":
            return events.SetContext(spec["values"])
        case "rerun":
            return events.Rerun(spec["activity"], spec.get("values", {}))
        case "restart":
            return events.Restart()
        case "terminate":
            return events.Terminate(spec.get("reason", ""))
    raise AssertionError(f"unknown operation {spec}")


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_golden_trace(case: Path) -> None:
    extra = case.with_suffix(".json")
    options = json.loads(extra.read_text()) if extra.exists() else {}
    result = run_process(
        case,
        options.get("fields"),
        participants=Participants(),
        events=[(name, data) for name, data in options.get("events", [])],
        operations=[(when, operation(spec)) for when, spec in options.get("operations", [])],
        check_json=True,
    )
    if "terminate" in options:
        result = terminated(case, result, options["terminate"])
    actual = render(result)
    expected_file = case.with_suffix(".trace")
    expected = expected_file.read_text() if expected_file.exists() else None
    if os.environ.get("BUREAUCRAT_REGOLD"):
        if in_ci():
            pytest.fail(
                "BUREAUCRAT_REGOLD is set under CI: expected traces are never rewritten there"
            )
        if actual != expected:
            expected_file.write_text(actual)
            pytest.fail(f"rewrote {expected_file.name}: read it against DESIGN.md, then run again")
    assert expected is not None, f"no expected trace for {case.name}"
    assert actual == expected


def test_every_activity_has_a_golden_trace() -> None:
    text = " ".join(case.read_text() for case in CASES)
    for tag in ("sequence", "action", "switch", "while", "foreach", "all", "call", "delay"):
        assert f"<{tag}" in text
    for tag in ("await", "fault", "assign", "faults"):
        assert f"<{tag}" in text
