"""The examples: each definition runs locally with the example participants, and a fresh clone
runs them all through the real daemon, Celery included, with ``make demo``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bureaucrat.testing import run_process
from examples.demo import RUNS
from examples.participants import workers

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = ROOT / "examples" / "processes"


def estimate_shipping(payload: dict[str, Any]) -> dict[str, Any]:
    payload["shipping_days"] = 2 if payload["quantity"] < 10 else 5
    return payload


PARTICIPANTS = {
    **{name: getattr(workers, name) for name in workers.PARTICIPANTS},
    "examples.participants.celery_app.estimate_shipping": estimate_shipping,
}


def test_every_example_is_in_the_demo_and_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    demo = {name for name, *_ in RUNS}
    for path in PROCESSES.glob("*.xml"):
        assert path.name in demo
        assert f"examples/processes/{path.name}" in readme


@pytest.mark.parametrize(("name", "fields", "expected", "status"), RUNS)
def test_example_runs_locally(
    name: str, fields: dict[str, Any], expected: dict[str, Any], status: str
) -> None:
    events = [("payment_received", {"order": 41}), ("payment_received", {"order": 42})]
    result = run_process(PROCESSES / name, fields, participants=PARTICIPANTS, events=events)
    assert result.status == status, result.trace
    for key, value in expected.items():
        assert result.context[key] == value, key


def test_wait_for_event_times_out_into_a_cancellation() -> None:
    result = run_process(PROCESSES / "wait_for_event.xml", {"order": 1}, participants=PARTICIPANTS)
    assert result.status == "completed"
    assert result.context["cancelled"] is True
    assert "shipped" not in result.context


@pytest.mark.slow
@pytest.mark.usefixtures("rabbitmq")
def test_make_demo_from_a_fresh_clone(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "bureaucrat"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "BUREAUCRAT_"))}
    result = subprocess.run(
        ["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "the demo succeeded" in result.stdout
    for name, *_ in RUNS:
        assert f"=== {name}" in result.stdout
