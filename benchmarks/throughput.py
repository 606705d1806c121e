"""End-to-end throughput: the daemon, a trivial taskqueue worker, the real broker and database.

Launches processes of 10 actions each, served by a worker that answers at once, and prints:
action steps per second; the mean and p99 latency of one step (from the worker's answer to the
next workitem of the same process, i.e. broker -> daemon -> store -> broker -> worker); and, in
the same run and through the same broker, a raw pika request/response round trip (client ->
queue -> echo server -> queue -> client), the floor any AMQP engine stands on. The ratio of the
two is the figure to watch.

    .venv/bin/python benchmarks/throughput.py [--processes 100] [--postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bureaucrat.launcher import Launcher
from tests.brokers import AMQP_URL
from tests.harness import Installation
from tests.store_fixtures import postgres_schema

TEN = "<process>" + '<action participant="bench"/>' * 10 + "</process>"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Worker(threading.Thread):
    """A taskqueue participant answering at once, timing the engine between its answers."""

    def __init__(self, queue: str, answers: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.queue, self.answers, self.expected = queue, answers, expected
        self.latencies: list[float] = []
        self.answered: dict[str, float] = {}
        self.count = 0
        self.first = self.last = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.queue_declare(self.queue, durable=True)
        channel.basic_qos(prefetch_count=50)
        for method, props, body in channel.consume(self.queue, inactivity_timeout=60):
            if method is None:
                break
            self.on_workitem(channel, method, props, body)
            if self.count >= self.expected:
                break
        connection.close()
        self.done.set()

    def on_workitem(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        import json

        now = time.perf_counter()
        workitem = json.loads(body)
        pid = workitem["process_id"]
        if pid in self.answered:
            self.latencies.append(now - self.answered[pid])
        self.first = self.first or now
        channel.basic_publish("", self.answers, body, pika.BasicProperties(delivery_mode=2))
        self.answered[pid] = time.perf_counter()
        channel.basic_ack(method.delivery_tag)
        self.count += 1
        self.last = time.perf_counter()


def raw_round_trip(rounds: int) -> list[float]:
    """Request/response through two durable queues and an echo server, one at a time."""
    requests, replies = f"raw.{uuid.uuid4().hex[:8]}.req", f"raw.{uuid.uuid4().hex[:8]}.rep"
    ready = threading.Event()

    def echo() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.queue_declare(requests, durable=True)
        ready.set()
        for method, _, body in channel.consume(requests, inactivity_timeout=10):
            if method is None:
                break
            channel.basic_publish("", replies, body, pika.BasicProperties(delivery_mode=2))
            channel.basic_ack(method.delivery_tag)
        connection.close()

    server = threading.Thread(target=echo, daemon=True)
    server.start()
    ready.wait(10)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(replies, durable=True)
    timings = []
    consumer = channel.consume(replies)
    for _ in range(rounds):
        began = time.perf_counter()
        channel.basic_publish("", requests, b"{}", pika.BasicProperties(delivery_mode=2))
        method, _, _ = next(consumer)
        channel.basic_ack(method.delivery_tag)
        timings.append(time.perf_counter() - began)
    channel.cancel()
    channel.queue_delete(requests)
    channel.queue_delete(replies)
    connection.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=100)
    parser.add_argument(
        "--postgresql", action="store_true", help="a PostgreSQL schema of its own, not SQLite"
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        database(Path(tmp), args.postgresql) as url,
        Installation(Path(tmp), url) as install,
    ):
        run(install, args.processes)


@contextmanager
def database(tmp: Path, postgresql: bool) -> Iterator[str]:
    if postgresql:
        with postgres_schema(prefix="bench") as url:
            yield url
    else:
        yield f"sqlite:///{tmp / 'bench.db'}"


def run(install: Installation, processes: int) -> None:
    config = install.config
    install.start_daemon()
    with Launcher(config=config) as launcher:
        busy = phase(install, launcher, processes, concurrent=True)
        alone = phase(install, launcher, 20, concurrent=False)
    raw = raw_round_trip(500)
    raw_mean, raw_p99 = statistics.mean(raw), percentile(raw, 0.99)
    print(f"database: {install.database_url.split('?')[0]}")
    for title, worker in ((f"{processes} processes at once", busy), ("one at a time", alone)):
        elapsed = worker.last - worker.first
        mean, p99 = statistics.mean(worker.latencies), percentile(worker.latencies, 0.99)
        print(f"{title}: {worker.count} action steps in {elapsed:.2f} s")
        print(f"  throughput {worker.count / elapsed:,.0f} action steps/s")
        print(f"  step latency mean {mean * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
        print(
            f"  ratio to the raw round trip: mean {mean / raw_mean:.1f}x, p99 {p99 / raw_p99:.1f}x"
        )
    print(f"raw pika request/response: mean {raw_mean * 1000:.2f} ms, p99 {raw_p99 * 1000:.2f} ms")


def phase(install: Installation, launcher: Launcher, processes: int, concurrent: bool) -> Worker:
    """Run ``processes`` processes of ten actions, all at once or one after the other."""
    config = install.config
    worker = Worker(config.worker_queue("bench"), config.message_queue, processes * 10)
    worker.start()
    for index in range(processes):
        pid = launcher.launch(TEN, {"i": index})
        if not concurrent:
            install.wait_finished(pid, timeout=60)
    if not worker.done.wait(600):
        raise SystemExit(f"only {worker.count} steps in 600 s\n{install.log_text()[-3000:]}")
    return worker


if __name__ == "__main__":
    main()
