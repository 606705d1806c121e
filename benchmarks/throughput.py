"""End-to-end throughput: the daemon, a trivial taskqueue worker, the real broker and database.

In one run, on one RabbitMQ, it measures and prints:

- a raw pika request/response through an echo process, 100 requests in flight (round trips
  per second) and one at a time (latency): the floor any AMQP engine stands on;
- Celery chains of 10 echo tasks on a solo-pool worker (steps per second): what a Celery user
  gets without durability;
- the engine on SQLite, on PostgreSQL, and with two daemons sharing PostgreSQL: processes of
  10 actions served by a worker that answers at once, all at once (action steps per second)
  and one at a time (the latency of one step, from the worker's answer to the next workitem of
  the same process: broker -> daemon -> store -> broker -> worker);

then a table with the ratios to the raw rate and to the chains, and each step's latency above
the raw round trip.

    .venv/bin/python benchmarks/throughput.py [--processes 300] [--chains 300] [--no-postgresql]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bureaucrat.launcher import Launcher
from tests.brokers import AMQP_URL
from tests.harness import Installation
from tests.store_fixtures import postgres_schema

ROOT = Path(__file__).resolve().parent.parent
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


def raw_round_trip(rounds: int, in_flight: int = 1) -> tuple[list[float], float]:
    """Request/response through two durable queues and an echo server: the latency of each
    round trip with ``in_flight`` requests outstanding, and the round trips per second."""
    requests, replies = f"raw.{uuid.uuid4().hex[:8]}.req", f"raw.{uuid.uuid4().hex[:8]}.rep"
    ready = threading.Event()

    def echo() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        channel.queue_declare(requests, durable=True)
        channel.basic_qos(prefetch_count=in_flight)
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
    channel.basic_qos(prefetch_count=in_flight)
    timings: list[float] = []
    sent_at: dict[bytes, float] = {}
    consumer = channel.consume(replies)
    began = time.perf_counter()
    for n in range(min(in_flight, rounds)):
        sent_at[str(n).encode()] = time.perf_counter()
        channel.basic_publish("", requests, str(n).encode(), pika.BasicProperties(delivery_mode=2))
    sent = min(in_flight, rounds)
    while len(timings) < rounds:
        method, _, body = next(consumer)
        timings.append(time.perf_counter() - sent_at.pop(body))
        channel.basic_ack(method.delivery_tag)
        if sent < rounds:
            sent_at[str(sent).encode()] = time.perf_counter()
            channel.basic_publish(
                "", requests, str(sent).encode(), pika.BasicProperties(delivery_mode=2)
            )
            sent += 1
    rate = rounds / (time.perf_counter() - began)
    channel.cancel()
    channel.queue_delete(requests)
    channel.queue_delete(replies)
    connection.close()
    return timings, rate


def celery_chains(chains: int, tmp: Path) -> float:
    """Steps per second of ``chains`` Celery chains of ten echo tasks, all at once, served by
    one solo-pool worker: the baseline a Celery user weighs bureaucrat against."""
    from celery import chain  # type: ignore[import-untyped]

    from benchmarks.chain_app import app, echo, last

    queue = f"bench_chains.{uuid.uuid4().hex[:8]}"
    done = f"{queue}.done"
    app.conf.task_default_queue = queue
    env = {**os.environ, "BENCH_AMQP_URL": AMQP_URL, "BENCH_CHAIN_QUEUE": queue}
    env.update(BENCH_DONE_QUEUE=done, PYTHONPATH=str(ROOT))
    log = (tmp / "celery-chains.log").open("wb")
    command = [sys.executable, "-m", "celery", "-A", "benchmarks.chain_app", "worker"]
    command += ["--pool=solo", "-Q", queue, "-n", f"{queue}@%h", "--without-gossip"]
    command += ["--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(done)
    worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    finished = channel.consume(done, auto_ack=True, inactivity_timeout=600)
    try:
        chain(echo.s({"i": -1}), last.s()).apply_async()  # warm up: the worker is ready
        next(finished)
        began = time.perf_counter()
        for n in range(chains):
            chain(echo.s({"i": n}), *[echo.s() for _ in range(8)], last.s()).apply_async()
        for _ in range(chains):
            if next(finished)[0] is None:
                raise SystemExit(f"Celery chains did not finish; see {log.name}")
        elapsed = time.perf_counter() - began
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()
        channel.cancel()
        channel.queue_delete(done)
        channel.queue_delete(queue)
        connection.close()
    return chains * 10 / elapsed


@dataclass
class Engine:
    """What one engine run measured."""

    title: str
    steps_per_second: float
    latency_mean: float
    latency_p99: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=300, help="processes run at once")
    parser.add_argument("--chains", type=int, default=300, help="Celery chains run at once")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        latencies, _ = raw_round_trip(500)
        _, raw_rate = raw_round_trip(5000, in_flight=100)
        chains = celery_chains(args.chains, tmp)
        runs = [engine_run(tmp, "SQLite", False, args.processes)]
        normal = {"sqlite_synchronous": "normal"}
        runs.append(engine_run(tmp, "SQLite, sync=normal", False, args.processes, 1, **normal))
        if not args.no_postgresql:
            runs.append(engine_run(tmp, "PostgreSQL", True, args.processes))
            runs.append(engine_run(tmp, "PostgreSQL, 2 daemons", True, args.processes, daemons=2))
    raw_mean = statistics.mean(latencies)
    print()
    print(
        f"raw pika request/response: {raw_rate:,.0f} round trips/s (100 in flight), "
        f"one at a time {raw_mean * 1000:.2f} ms mean, "
        f"{percentile(latencies, 0.99) * 1000:.2f} ms p99"
    )
    print(f"Celery chains of 10 echo tasks, solo pool: {chains:,.0f} steps/s")
    print()
    header = f"{'engine':<24}{'steps/s':>9}{'x raw':>8}{'x chains':>10}"
    header += f"{'one step':>11}{'p99':>9}{'- raw':>9}"
    print(header)
    for run in runs:
        print(
            f"{run.title:<24}{run.steps_per_second:>9,.0f}"
            f"{run.steps_per_second / raw_rate:>8.2f}{run.steps_per_second / chains:>10.2f}"
            f"{run.latency_mean * 1000:>9.2f}ms{run.latency_p99 * 1000:>7.2f}ms"
            f"{(run.latency_mean - raw_mean) * 1000:>7.2f}ms"
        )


def engine_run(
    tmp: Path, title: str, postgresql: bool, processes: int, daemons: int = 1, **options: str
) -> Engine:
    with database(tmp, postgresql) as url, Installation(tmp, url, **options) as install:
        install.start_daemon()
        for _ in range(daemons - 1):
            install.start_another_daemon()
        with Launcher(config=install.config) as launcher:
            phase(install, launcher, 20, concurrent=True)  # warm up
            busy = phase(install, launcher, processes, concurrent=True)
            alone = phase(install, launcher, 30, concurrent=False)
        return Engine(
            title,
            busy.count / (busy.last - busy.first),
            statistics.mean(alone.latencies),
            percentile(alone.latencies, 0.99),
        )


@contextmanager
def database(tmp: Path, postgresql: bool) -> Iterator[str]:
    if postgresql:
        with postgres_schema(prefix="bench") as url:
            yield url
    else:
        yield f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:6]}.db'}"


def phase(install: Installation, launcher: Launcher, processes: int, concurrent: bool) -> Worker:
    """Run ``processes`` processes of ten actions, all at once or one after the other."""
    config = install.config
    worker = Worker(config.worker_queue("bench"), config.message_queue, processes * 10)
    worker.start()
    for index in range(processes):
        pid = launcher.launch(TEN, {"i": index})
        if not concurrent:
            install.wait_finished(pid, timeout=60)
    if not worker.done.wait(900):
        raise SystemExit(f"only {worker.count} steps in 600 s\n{install.log_text()[-3000:]}")
    return worker


if __name__ == "__main__":
    main()
