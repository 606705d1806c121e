"""What the browser tests of the console need: Chromium, the console served, and participants
that the test itself plays.

Chromium is Debian's (``chromium``, at ``/usr/bin/chromium``; ``BUREAUCRAT_TEST_CHROMIUM`` names
another), driven by Playwright, which cannot download a browser of its own here. When it is
missing and this is root with apt-get, ``find_chromium`` installs it; when it still cannot be had
the browser tests skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pytest
import uvicorn

from bureaucrat.amqp import QueueArguments
from bureaucrat.config import Config
from tests.brokers import AMQP_URL, in_ci

CHROMIUM = Path(os.environ.get("BUREAUCRAT_TEST_CHROMIUM", "/usr/bin/chromium"))
PACKAGES = ("chromium", "chromium-driver")


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message} (CI requires it)")
    pytest.skip(message)


def find_chromium() -> str:
    """The Chromium executable, installed with apt-get first when it is missing and can be."""
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *PACKAGES]):
            subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install {' '.join(PACKAGES)})")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConsoleServer:
    """The console's app served by uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            log_config=None,
            ws="none",  # the console has no websockets
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("the console did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Participants:
    """Participants the test plays: their queues are declared before anything is sent to them;
    ``take`` reads the next workitem as a worker would, ``answer`` sends it back done."""

    def __init__(self, config: Config, names: tuple[str, ...]) -> None:
        self.config = config
        self.queues = {name: config.worker_queue(name) for name in names}
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        self.channel = self.connection.channel()
        for queue in self.queues.values():
            QueueArguments.from_config(config).declare(self.channel, queue)

    def take(self, name: str, wait: Callable[[Callable[[], bool], str], None]) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def got_one() -> bool:
            method, _props, body = self.channel.basic_get(self.queues[name], auto_ack=True)
            if method is not None:
                found.append(json.loads(body))
            return bool(found)

        wait(got_one, f"a workitem for {name}")
        return found[0]

    def answer(self, workitem: dict[str, Any], **changes: Any) -> None:
        workitem["payload"].update(status="done", **changes)
        self.channel.basic_publish(
            "",
            self.config.message_queue,
            json.dumps(workitem).encode(),
            pika.BasicProperties(content_type="application/json", delivery_mode=2),
        )

    def close(self) -> None:
        for queue in self.queues.values():
            self.channel.queue_delete(queue)
        self.connection.close()
