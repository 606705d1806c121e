"""``make demo``: the engine end to end on this machine, then everything it started stopped.

1. makes sure RabbitMQ answers on localhost:5672 (starts a local ``rabbitmq-server`` if one is
   installed; otherwise says how to get one);
2. starts the daemon on SQLite (``.demo/bureaucrat.db``), a taskqueue worker per example
   participant and a Celery worker for the Celery one;
3. launches every process in ``examples/processes`` (sending the event one of them waits for);
4. shows each one's outcome and journal, as ``bureaucratctl show`` does;
5. stops what it started, deletes its queues, and exits 0 when every outcome is the expected one.

The demo uses queues of its own (``demo.*``), so it never touches a real installation's messages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bureaucrat import ctl  # noqa: E402
from bureaucrat.config import Config, load_config  # noqa: E402
from bureaucrat.launcher import Launcher  # noqa: E402
from bureaucrat.store import Store  # noqa: E402
from examples.participants.workers import PARTICIPANTS  # noqa: E402

WORK = ROOT / ".demo"
AMQP_URL = os.environ.get("BUREAUCRAT_AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
CELERY_QUEUE = "demo.celery"
CONFIG = f"""[amqp]
url = {AMQP_URL}
[bureaucrat]
database_url = sqlite:///{WORK / "bureaucrat.db"}
launch_queue = demo.bureaucrat
message_queue = demo.bureaucrat_msgs
event_queue = demo.bureaucrat_events
dead_letter_queue = demo.bureaucrat.dead
exchange = demo.bureaucrat
notifications_exchange = demo.bureaucrat.notifications
worker_queue_prefix = demo.worker_
timer_interval = 0.1
[logging]
level = INFO
"""

# (definition, fields, what the context must hold at the end, expected status)
RUNS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("hello.xml", {"name": "bureaucrat"}, {"greeting": "hello, bureaucrat"}, "completed"),
    ("approval.xml", {"amount": 120.0}, {"approved": True, "paid": 120.0}, "completed"),
    (
        "approval.xml",
        {"amount": 5000.0},
        {"approved": False, "notified": "rejected: the reviewer did not approve the payment"},
        "completed",
    ),
    ("parallel.xml", {}, {"in_stock": True, "credit_ok": True, "shipping_days": 2}, "completed"),
    ("foreach.xml", {}, {"invited": ["ann", "bob", "cid"]}, "completed"),
    ("wait_for_event.xml", {"order": 42}, {"shipped": True}, "completed"),
    ("subprocess.xml", {}, {"packed": True, "label": "order 7", "shipped": True}, "completed"),
    ("retries.xml", {}, {"attempts": 3}, "completed"),
]


def main() -> int:
    if not rabbitmq_ready():
        return 1
    WORK.mkdir(exist_ok=True)
    (WORK / "bureaucrat.db").unlink(missing_ok=True)
    config_path = WORK / "demo.conf"
    config_path.write_text(CONFIG)
    config = load_config(config_path, environ={})
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes += start_all(config_path)
        ok = run_examples(config, config_path)
    finally:
        stop_all(processes)
        delete_queues(config)
    print("\nthe demo " + ("succeeded" if ok else "FAILED") + f"; logs are in {WORK}/")
    return 0 if ok else 1


# RabbitMQ ---------------------------------------------------------------------------------------


def reachable(host: str = "localhost", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def rabbitmq_ready() -> bool:
    if reachable():
        print("RabbitMQ answers on localhost:5672")
        return True
    server = shutil.which("rabbitmq-server") or _sbin("rabbitmq-server")
    if server:
        print(f"RabbitMQ is not running; starting it: {server} -detached")
        subprocess.run([server, "-detached"], check=False)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if reachable():
                time.sleep(2)  # the port opens a moment before the broker accepts logins
                return True
            time.sleep(1)
        print("RabbitMQ did not come up within 90 s; see its logs", file=sys.stderr)
        return False
    print(
        "RabbitMQ is not reachable on localhost:5672 and is not installed here. Get one with\n"
        "    docker compose up -d rabbitmq          (uses docker-compose.yml of this repository)\n"
        "or your system's package (Debian/Ubuntu: apt install rabbitmq-server), or point\n"
        "BUREAUCRAT_AMQP_URL at a broker, then run 'make demo' again.",
        file=sys.stderr,
    )
    return False


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


# the processes ----------------------------------------------------------------------------------


def spawn(name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = (WORK / f"{name}.log").open("wb")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)


def start_all(config_path: Path) -> list[subprocess.Popen[bytes]]:
    python = sys.executable
    conf = ["-c", str(config_path)]
    celery_env = {
        "BUREAUCRAT_AMQP_URL": AMQP_URL,
        "BUREAUCRAT_MESSAGE_QUEUE": "demo.bureaucrat_msgs",
        "BUREAUCRAT_CELERY_QUEUE": CELERY_QUEUE,
        "CELERY_CONFIG_MODULE": "examples.participants.celeryconfig",
    }
    started = [spawn("daemon", [python, "-m", "bureaucrat.cli", "-f", *conf], celery_env)]
    for participant, function in PARTICIPANTS.items():
        args = [python, "-m", "bureaucrat.worker", participant, function, *conf]
        started.append(spawn(f"worker-{participant}", args))
    celery = [python, "-m", "celery", "-A", "examples.participants.celery_app", "worker"]
    celery += ["--pool=solo", "-Q", CELERY_QUEUE, "-l", "warning"]
    celery += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    started.append(spawn("celery", celery, celery_env))
    print(f"started the daemon, {len(PARTICIPANTS)} taskqueue workers and a Celery worker")
    return started


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    print("stopped the daemon and the workers")


def delete_queues(config: Config) -> None:
    import pika

    queues = [config.launch_queue, config.message_queue, config.event_queue]
    queues += [config.dead_letter_queue, CELERY_QUEUE]
    queues += [config.worker_queue(name) for name in PARTICIPANTS]
    try:
        connection = pika.BlockingConnection(pika.URLParameters(config.amqp_url))
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        channel.exchange_delete(config.exchange)
        channel.exchange_delete(config.notifications_exchange)
        connection.close()
    except Exception as error:  # clean-up is best effort
        print(f"could not delete the demo's queues: {error}", file=sys.stderr)


# the examples -----------------------------------------------------------------------------------


def run_examples(config: Config, config_path: Path) -> bool:
    store = wait_for(lambda: Store(config.database_url), "the database")
    ok = True
    with Launcher(config=config) as launcher:
        launched = [
            (
                launcher.launch(ROOT / "examples" / "processes" / name, fields),
                name,
                expected,
                status,
            )
            for name, fields, expected, status in RUNS
        ]
        wait_for(lambda: _awaiting(store, "payment_received"), "the payment event's await")
        launcher.send_event("payment_received", {"order": 41})  # not this order: ignored
        launcher.send_event("payment_received", {"order": 42})
        for pid, name, expected, status in launched:
            record = wait_for(lambda p=pid: _finished(store, p), f"{name} to finish", 60)  # type: ignore[misc]
            print(f"\n=== {name} " + "=" * max(0, 60 - len(name)))
            ctl.main(["-c", str(config_path), "show", pid])
            context = record.state["scopes"][""] if record.state else {}
            wrong = {k: context.get(k) for k, v in expected.items() if context.get(k) != v}
            if record.status != status or wrong:
                ok = False
                print(f"!!! expected {status} with {expected}; got {record.status}, {wrong}")
    store.close()
    return ok


def _awaiting(store: Store, event: str) -> bool:
    return any(
        record.state and event in record.state["awaits"].values()
        for record in store.list_instances(status="running")
    )


def _finished(store: Store, pid: str) -> Any:
    record = store.instance(pid)
    return record if record and record.status in ("completed", "faulted", "terminated") else None


def wait_for(probe: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except Exception as error:  # not ready yet (the daemon may still be creating the database)
            last = error
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what} ({last or 'no answer'}); see {WORK}/*.log")


if __name__ == "__main__":
    sys.exit(main())
