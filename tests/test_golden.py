"""Golden traces: each ``tests/golden/<name>.xml`` runs and its journal must equal ``<name>.trace``.

Participants are chosen by name: ``inc_<prop>`` adds one to ``prop``; ``fail`` answers critical;
``flaky_<n>`` answers error n times, then done; ``slow`` only reports progress (it never answers);
any other name echoes its payload. An optional ``<name>.json`` gives ``fields`` and ``events``.
Each run also makes the state's JSON round trip after every step.

To write the expected traces after a deliberate change: ``BUREAUCRAT_REGOLD=1 pytest
tests/test_golden.py``, then read every changed trace before committing it.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bureaucrat.testing import Participant, ProcessResult, run_process

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


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_golden_trace(case: Path) -> None:
    extra = case.with_suffix(".json")
    options = json.loads(extra.read_text()) if extra.exists() else {}
    result = run_process(
        case,
        options.get("fields"),
        participants=Participants(),
        events=[(name, data) for name, data in options.get("events", [])],
        check_json=True,
    )
    actual = render(result)
    expected_file = case.with_suffix(".trace")
    if os.environ.get("BUREAUCRAT_REGOLD"):
        expected_file.write_text(actual)
    assert expected_file.exists(), f"no expected trace for {case.name}"
    assert actual == expected_file.read_text()


def test_every_activity_has_a_golden_trace() -> None:
    text = " ".join(case.read_text() for case in CASES)
    for tag in ("sequence", "action", "switch", "while", "foreach", "all", "call", "delay"):
        assert f"<{tag}" in text
    for tag in ("await", "fault", "assign", "faults"):
        assert f"<{tag}" in text
