"""A bureaucrat installation for end-to-end tests: the real daemon and workers in subprocesses,
against the real RabbitMQ and a real database, with queue names of its own.

Each ``Installation`` gets unique queue and exchange names, so test runs never read each
other's messages, and removes them when it is closed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pika

from bureaucrat.amqp import Topology
from bureaucrat.config import Config, load_config
from bureaucrat.launcher import Launcher
from bureaucrat.store import Store
from tests.brokers import AMQP_URL

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("completed", "faulted", "terminated")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``condition`` until it holds, else fail saying ``what`` was awaited (with no daemon
    running: ``Installation.wait_for`` would take that as a failure)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Installation:
    def __init__(self, tmp: Path, database_url: str, **options: Any) -> None:
        self.tmp = tmp
        self.tag = f"t{uuid.uuid4().hex[:10]}"
        self.database_url = database_url
        values = {
            "launch_queue": f"{self.tag}.launch",
            "message_queue": f"{self.tag}.msgs",
            "event_queue": f"{self.tag}.events",
            "dead_letter_queue": f"{self.tag}.dead",
            "exchange": f"{self.tag}.x",
            "notifications_exchange": f"{self.tag}.notifications",
            "worker_queue_prefix": f"{self.tag}.worker_",
            "timer_interval": "0.1",
            "prefetch": "20",
            **{k: str(v) for k, v in options.items()},
        }
        lines = ["[amqp]", f"url = {AMQP_URL}", "[bureaucrat]", f"database_url = {database_url}"]
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines += ["[logging]", "level = INFO"]
        self.config_path = tmp / f"{self.tag}.conf"
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config: Config = load_config(self.config_path, environ={})
        self._declare()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.worker_queues: list[str] = []
        """Workers' queues a test declared itself, deleted with the installation."""
        self._store: Store | None = None

    def _declare(self) -> None:
        """Declare the queues now, so messages published before the daemon starts wait."""
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            Topology.from_config(self.config).declare(connection.channel())
        finally:
            connection.close()

    # processes --------------------------------------------------------------------------------

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{self.tag}.{name}.{len(self.logs)}.log"
        self.logs.append(log)
        environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        environment.pop("BUREAUCRAT_AMQP_URL", None)
        environment.pop("BUREAUCRAT_DATABASE_URL", None)
        with log.open("wb") as out:
            return subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=environment, cwd=self.tmp
            )

    def start_daemon(self) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(self.config_path)]
        self.daemon = self._spawn("daemon", args)
        return self.daemon

    def start_another_daemon(self) -> subprocess.Popen[bytes]:
        """One more daemon on the same database and queues (scale-out)."""
        args = [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(self.config_path)]
        daemon = self._spawn("daemon", args)
        self.workers.append(daemon)  # stopped with the workers
        return daemon

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(10)

    def stop_daemon(self, timeout: float = 20) -> int:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        return self.daemon.wait(timeout)

    def start_worker(
        self,
        participant: str,
        function: str,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        args = [sys.executable, "-m", "bureaucrat.worker", participant, function, *options]
        self.workers.append(
            self._spawn(f"worker-{participant}", [*args, "-c", str(self.config_path)], env)
        )

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs)

    # clients ----------------------------------------------------------------------------------

    @contextmanager
    def launcher(self) -> Iterator[Launcher]:
        with Launcher(config=self.config) as launcher:
            yield launcher

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.database_url)
        return self._store

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.daemon is not None and self.daemon.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.daemon.returncode})\n{self.log_text()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n{self.log_text()[-6000:]}")

    def status(self, process_id: str) -> str | None:
        record = self.store.instance(process_id)
        return None if record is None else record.status

    def awaits(self, process_id: str) -> list[str]:
        """The events the process waits for now."""
        record = self.store.instance(process_id)
        if record is None or record.state is None:
            return []
        return list(record.state["awaits"].values())

    def wait_finished(self, process_id: str, timeout: float = 30) -> Any:
        self.wait_for(
            lambda: self.status(process_id) in TERMINAL, timeout, f"{process_id} to finish"
        )
        return self.store.instance(process_id)

    def dead_letters(
        self, expected: int, timeout: float = 15
    ) -> list[tuple[bytes, dict[str, Any]]]:
        """Read ``expected`` messages from the dead-letter queue."""
        found: list[tuple[bytes, dict[str, Any]]] = []
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            deadline = time.monotonic() + timeout
            while len(found) < expected and time.monotonic() < deadline:
                method, props, body = channel.basic_get(
                    self.config.dead_letter_queue, auto_ack=True
                )
                if method is None:
                    time.sleep(0.05)
                    continue
                found.append((body, dict(props.headers or {})))
        finally:
            connection.close()
        return found

    def publish_raw(self, queue: str, body: bytes, **props: Any) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            channel = connection.channel()
            channel.basic_publish("", queue, body, pika.BasicProperties(**props))
        finally:
            connection.close()

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # cleanup ----------------------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers:
            with suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.daemon.wait(15)
            if self.daemon.poll() is None:
                self.daemon.kill()
        for worker in self.workers:
            with suppress(subprocess.TimeoutExpired):
                worker.wait(10)
            if worker.poll() is None:
                worker.kill()
        if self._store is not None:
            self._store.close()
        self._delete_broker_objects()

    def _delete_broker_objects(self) -> None:
        with suppress(Exception):
            connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
            channel = connection.channel()
            config = self.config
            for queue in (
                config.launch_queue,
                config.message_queue,
                config.event_queue,
                config.dead_letter_queue,
            ):
                channel.queue_delete(queue)
            for participant in _participants_in(self.logs):
                channel.queue_delete(config.worker_queue(participant))
            for queue in self.worker_queues:
                channel.queue_delete(queue)
            channel.exchange_delete(config.exchange)
            channel.exchange_delete(config.notifications_exchange)
            connection.close()


def _participants_in(logs: list[Path]) -> list[str]:
    return [log.name.split(".worker-")[-1].split(".")[0] for log in logs if ".worker-" in log.name]


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
