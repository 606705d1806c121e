"""The files that deploy bureaucrat (Dockerfile, docker-compose.yml, the systemd unit) name
commands, options, files and participants that exist."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path
from typing import Any

import yaml

from bureaucrat import cli, ctl
from examples.participants.workers import PARTICIPANTS

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_everything_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {
        "rabbitmq",
        "postgres",
        "engine",
        "celery-worker",
        "taskqueue-worker",
        "console",
    }
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
    assert "15672:15672" in services["rabbitmq"]["ports"]  # the management UI
    assert "8080:8080" in services["console"]["ports"]
    for name in ("engine", "celery-worker", "taskqueue-worker", "console"):
        service = services[name]
        assert service["build"] == "."
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert service["environment"]["BUREAUCRAT_DATABASE_URL"].startswith("postgresql+psycopg")


def test_compose_health_checks_are_real_commands() -> None:
    for name in ("engine", "celery-worker", "taskqueue-worker"):
        test = compose()["services"][name]["healthcheck"]["test"]
        assert test[1] == "bureaucratctl", name
        args = ctl.build_parser().parse_args(test[2:])
        assert args.command == "health"


def test_compose_console_command_is_the_consoles() -> None:
    from bureaucrat.web import cli

    command = compose()["services"]["console"]["command"]
    assert command[0] == "bureaucrat-web"
    args = cli.build_parser().parse_args(command[1:])
    assert args.host == "0.0.0.0"


def test_compose_engine_command_is_the_daemons() -> None:
    command = compose()["services"]["engine"]["command"]
    assert command[0] == "bureaucrat"
    args = cli.build_parser().parse_args(command[1:])
    assert args.foreground
    assert (ROOT / Path(args.config).relative_to("/srv/bureaucrat")).exists()


def test_compose_taskqueue_worker_serves_every_example_participant() -> None:
    script = compose()["services"]["taskqueue-worker"]["command"][-1]
    names = shlex.split(script.split(";")[0].removeprefix("for p in"))
    assert names == list(PARTICIPANTS)
    health = compose()["services"]["taskqueue-worker"]["healthcheck"]["test"]
    assert {queue.removeprefix("worker_") for queue in health[4:]} <= set(PARTICIPANTS)


def test_dockerfile_copies_what_exists_and_runs_the_daemon() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
    cmd = next(line for line in lines if line.startswith("CMD "))
    assert '"bureaucrat", "-f"' in cmd


def test_systemd_unit_runs_the_daemon_in_the_foreground() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "config" / "bureaucrat.service")
    program, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert program.endswith("/bureaucrat")
    args = cli.build_parser().parse_args(argv)
    assert args.foreground and args.config
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
