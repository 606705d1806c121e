"""Write a taskqueue participant in Python: a function from payload to payload.

    from bureaucrat.worker import serve

    def check_stock(payload):
        payload["in_stock"] = payload["quantity"] <= 10
        return payload            # None: the payload goes back unchanged

    serve("check_stock", check_stock)     # consumes worker_check_stock until SIGTERM

or from the shell: ``bureaucrat-worker check_stock mypackage.stock:check_stock``.

The worker takes one workitem at a time with manual acks, calls the function, publishes the
answer to the engine's message queue with publisher confirms, and only then acks. A function
that raises, or returns what cannot travel as JSON (NaN, a set, nesting past
``bounds.MAX_DEPTH``, an answer over ``messages.MAX_BODY``), answers ``critical`` with the
reason as ``error``. A message that is not a workitem (``messages.decode_workitem``), or whose
answer RabbitMQ refuses, goes to the dead-letter queue with the reason; only a lost connection
makes the worker reconnect. The answer's message id is ``messages.answer_id``: at most 255
bytes, the same for the same workitem.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from bureaucrat.amqp import Broker, Delivery, QueueArguments
from bureaucrat.amqp.consumer import serve_forever
from bureaucrat.config import Config, find_config, load_config
from bureaucrat.errors import BrokerError, BureaucratError, ConfigError, PublishError
from bureaucrat.messages import (
    MAX_BODY,
    WORKITEM_TYPE,
    MessageError,
    answer_id,
    check_value,
    decode_workitem,
    dumps,
)
from bureaucrat.metrics import WorkerMetrics

LOG = logging.getLogger("bureaucrat.worker")

Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]

MAX_ERROR = 4000
"""Characters of an exception's text kept as a ``critical`` answer's ``error``."""


def answer(workitem: dict[str, Any], function: Handler) -> dict[str, Any]:
    """The response to ``workitem``: the function's payload, or ``critical`` if it raised or
    returned what cannot travel as JSON."""
    payload = workitem["payload"]
    try:
        result = function(copy.deepcopy(payload))
        new_payload = payload if result is None else dict(result)
        new_payload.setdefault("status", "done")
        response = {**workitem, "payload": new_payload}
        check_value(response, "the answer")
        size = len(dumps(response))
        if size > MAX_BODY:
            raise MessageError(f"the answer is {size} bytes, over the limit of {MAX_BODY}")
    except Exception as error:
        LOG.exception("participant failed on %s", ascii(workitem.get("target")))
        critical = {**payload, "status": "critical", "error": error_text(error)}
        return {**workitem, "payload": critical}
    return response


def error_text(error: BaseException) -> str:
    """An exception's text as it can travel: NUL and lone surrogates replaced, at most
    ``MAX_ERROR`` characters, never empty."""
    try:
        text = str(error) or repr(error)
    except Exception:  # a __str__ that raises
        text = type(error).__name__
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "\u2026"


class Worker:
    """Serves one participant's queue until asked to stop."""

    def __init__(
        self,
        participant: str,
        function: Handler,
        config: Config,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.participant = participant
        self.function = function
        self.config = config
        self.queue = config.worker_queue(participant)
        self.stopping = False
        self.metrics = metrics
        self._sessions = 0

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def serve(self) -> None:
        serve_forever(self._serve_once, lambda: self.stopping, (BrokerError,))

    def _serve_once(self) -> None:
        self._sessions += 1
        if self._sessions > 1 and self.metrics is not None:
            self.metrics.reconnects.labels(self.participant).inc()
        queues = QueueArguments.from_config(self.config)  # quorum when the engine's are
        broker = Broker(self.config.amqp_url, heartbeat=self.config.heartbeat, queues=queues)
        try:
            broker.ensure_queue(self.queue)
            broker.ensure_queue(self.config.message_queue)
            broker.consume([self.queue], 1, lambda delivery: self._on_message(broker, delivery))
            LOG.info("participant %s serving queue %s", self.participant, self.queue)
            while not self.stopping:
                broker.run(0.25)
            broker.cancel()
        finally:
            broker.close()

    def _on_message(self, broker: Broker, delivery: Delivery) -> None:
        try:
            workitem = decode_workitem(delivery.body)
        except Exception as error:  # MessageError; anything else would be a defect of ours
            self._refuse(broker, delivery, f"not a workitem: {error_text(error)}")
            return
        started = time.perf_counter()
        response = answer(workitem, self.function)
        if self.metrics is not None:
            status = response["payload"].get("status")
            self.metrics.answered(status, time.perf_counter() - started)
        ids = (delivery.message_id, workitem.get("workitem_id"))  # (pika gives bytes if not UTF-8)
        known_as = next((i for i in ids if isinstance(i, str) and i), None)
        fields = {
            "content_type": WORKITEM_TYPE,
            "delivery_mode": 2,
            "message_id": answer_id(known_as, delivery.body),
            "correlation_id": delivery.correlation_id,
        }
        try:
            broker.publish("", self.config.message_queue, dumps(response), fields)
        except PublishError as error:
            self._refuse(broker, delivery, f"the answer was refused: {error}")
            return
        except BrokerError:
            raise  # the connection is lost: reconnect, the workitem comes back
        except Exception as error:  # pika cannot send the answer at all
            self._refuse(broker, delivery, f"the answer cannot be sent: {_describe(error)}")
            return
        broker.ack(delivery)

    def _refuse(self, broker: Broker, delivery: Delivery, reason: str) -> None:
        """Dead-letter ``delivery`` with ``reason`` (headers as the daemon's), then ack it."""
        LOG.warning("dead-lettered a message from %s: %s", self.queue, reason)
        broker.ensure_queue(self.config.dead_letter_queue)
        ours = {"x-bureaucrat-error": reason, "x-bureaucrat-queue": delivery.queue}
        fields = {
            "content_type": delivery.content_type,
            "message_id": delivery.message_id,
            "correlation_id": delivery.correlation_id,
            "headers": {**(delivery.headers or {}), **ours},
            "delivery_mode": 2,
        }
        try:
            broker.publish("", self.config.dead_letter_queue, delivery.body, fields)
        except BrokerError:
            raise
        except Exception as error:  # its own headers cannot be sent again: without them
            LOG.warning("dead-lettered without its headers: %s", _describe(error))
            fields["headers"] = ours
            broker.publish("", self.config.dead_letter_queue, delivery.body, fields)
        broker.ack(delivery)
        if self.metrics is not None:
            self.metrics.dead_letters.labels(self.participant).inc()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error_text(error)}"


def serve(
    participant: str,
    function: Handler,
    *,
    amqp_url: str | None = None,
    config: Config | None = None,
    metrics_port: int | None = None,
) -> None:
    """Serve ``participant`` with ``function`` until SIGTERM or SIGINT; with ``metrics_port``,
    Prometheus metrics at ``http://<[metrics] host>:<metrics_port>/metrics``."""
    config = config or load_config(None)
    if amqp_url:
        from dataclasses import replace

        config = replace(config, amqp_url=amqp_url)
    metrics = None
    if metrics_port is not None:
        metrics = WorkerMetrics(participant)
        try:
            port = metrics.start(metrics_port, config.metrics_host)
        except OSError as error:
            raise ConfigError(
                f"--metrics-port {metrics_port}: cannot listen on {config.metrics_host}: "
                f"{error.strerror}"
            ) from None
        LOG.info("metrics at http://%s:%d/metrics", config.metrics_host, port)
    worker = Worker(participant, function, config, metrics)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    try:
        worker.serve()
    finally:
        if metrics is not None:
            metrics.stop()


def load_function(spec: str) -> Handler:
    """``package.module:function`` -> the function."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise BureaucratError(f"{spec!r}: expected package.module:function")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as error:
        raise BureaucratError(f"cannot load {spec}: {error}") from None
    if not callable(function):
        raise BureaucratError(f"{spec} is not callable")
    return function  # type: ignore[no-any-return]


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bureaucrat-worker",
        description="Serve a taskqueue participant: consume worker_<PARTICIPANT>, call "
        "FUNCTION with each workitem's payload, answer the engine.",
    )
    parser.add_argument("participant", metavar="PARTICIPANT", help="the participant's name")
    parser.add_argument("function", metavar="FUNCTION", help="package.module:function")
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="bureaucrat config file (default: as the daemon finds it)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST: [metrics] host of "
        "the config, 127.0.0.1 by default)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        function = load_function(args.function)
        config = load_config(args.config or find_config())
    except BureaucratError as error:
        print(f"bureaucrat-worker: {error}", file=sys.stderr)
        return 2
    try:
        serve(args.participant, function, config=config, metrics_port=args.metrics_port)
    except ConfigError as error:  # a queue declared otherwise: waiting cannot help
        LOG.critical("stopping: %s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
