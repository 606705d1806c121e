"""Write a taskqueue participant in Python: a function from payload to payload.

    from bureaucrat.worker import serve

    def check_stock(payload):
        payload["in_stock"] = payload["quantity"] <= 10
        return payload            # None: the payload goes back unchanged

    serve("check_stock", check_stock)     # consumes worker_check_stock until SIGTERM

or from the shell: ``bureaucrat-worker check_stock mypackage.stock:check_stock``.

The worker takes one workitem at a time with manual acks, calls the function, publishes the
answer to the engine's message queue with publisher confirms, and only then acks. A function
that raises answers ``critical`` with the exception's text as ``error``; a message that is not a
workitem goes to the dead-letter queue with the reason.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from bureaucrat.amqp import Broker, Delivery
from bureaucrat.config import Config, load_config
from bureaucrat.errors import BrokerError, BureaucratError
from bureaucrat.messages import WORKITEM_TYPE, dumps

LOG = logging.getLogger("bureaucrat.worker")

Handler = Callable[[dict[str, Any]], "dict[str, Any] | None"]


def answer(workitem: dict[str, Any], function: Handler) -> dict[str, Any]:
    """The response to ``workitem``: the function's payload, or ``critical`` if it raised."""
    payload = workitem["payload"]
    try:
        result = function(copy.deepcopy(payload))
        new_payload = payload if result is None else dict(result)
        new_payload.setdefault("status", "done")
        json.dumps(new_payload)  # the answer must travel as JSON
    except Exception as error:
        LOG.exception("participant failed on %s", workitem.get("target"))
        new_payload = {**payload, "status": "critical", "error": f"{error}" or repr(error)}
    return {**workitem, "payload": new_payload}


class Worker:
    """Serves one participant's queue until asked to stop."""

    def __init__(self, participant: str, function: Handler, config: Config) -> None:
        self.participant = participant
        self.function = function
        self.config = config
        self.queue = config.worker_queue(participant)
        self.stopping = False

    def stop(self, *_: Any) -> None:
        self.stopping = True

    def serve(self) -> None:
        backoff = 1.0
        while not self.stopping:
            try:
                self._serve_once()
                backoff = 1.0
            except BrokerError as error:
                LOG.error("%s; retrying in %.0f s", error, backoff)
                _sleep_unless(lambda: self.stopping, backoff)
                backoff = min(backoff * 2, 30.0)

    def _serve_once(self) -> None:
        broker = Broker(self.config.amqp_url, heartbeat=self.config.heartbeat)
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
            workitem = json.loads(delivery.body)
            if not isinstance(workitem, dict) or not isinstance(workitem.get("payload"), dict):
                raise ValueError("a workitem is a JSON object with a 'payload' object")
        except ValueError as error:
            self._dead_letter(broker, delivery, f"not a workitem: {error}")
            broker.ack(delivery)
            return
        response = answer(workitem, self.function)
        message_id = f"{delivery.message_id or workitem.get('workitem_id')}:answer"
        fields = {
            "content_type": WORKITEM_TYPE,
            "delivery_mode": 2,
            "message_id": message_id,
            "correlation_id": delivery.correlation_id,
        }
        broker.publish("", self.config.message_queue, dumps(response), fields)
        broker.ack(delivery)

    def _dead_letter(self, broker: Broker, delivery: Delivery, reason: str) -> None:
        LOG.warning("dead-lettered a message from %s: %s", self.queue, reason)
        broker.ensure_queue(self.config.dead_letter_queue)
        headers = {**(delivery.headers or {}), "x-bureaucrat-error": reason}
        fields = {"delivery_mode": 2, "headers": headers, "message_id": delivery.message_id}
        broker.publish("", self.config.dead_letter_queue, delivery.body, fields)


def serve(
    participant: str,
    function: Handler,
    *,
    amqp_url: str | None = None,
    config: Config | None = None,
) -> None:
    """Serve ``participant`` with ``function`` until SIGTERM or SIGINT."""
    config = config or load_config(None)
    if amqp_url:
        from dataclasses import replace

        config = replace(config, amqp_url=amqp_url)
    worker = Worker(participant, function, config)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.serve()


def _sleep_unless(stopping: Callable[[], bool], seconds: float) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not stopping() and time.monotonic() < deadline:
        time.sleep(0.2)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bureaucrat-worker",
        description="Serve a taskqueue participant: consume worker_<PARTICIPANT>, call "
        "FUNCTION with each workitem's payload, answer the engine.",
    )
    parser.add_argument("participant", metavar="PARTICIPANT", help="the participant's name")
    parser.add_argument("function", metavar="FUNCTION", help="package.module:function")
    parser.add_argument("-c", "--config", metavar="CONFIG", help="bureaucrat config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        function = load_function(args.function)
        config = load_config(args.config)
    except BureaucratError as error:
        print(f"bureaucrat-worker: {error}", file=sys.stderr)
        return 2
    serve(args.participant, function, config=config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
