"""Taskqueue participants for the example processes: plain functions from payload to payload.

Serve one with ``bureaucrat-worker PARTICIPANT examples.participants.workers:FUNCTION``; it
consumes queue ``worker_PARTICIPANT`` and answers the engine. Returning None sends the payload
back unchanged; raising answers ``critical`` (a fault ``ActionError`` in the process).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

Payload = dict[str, Any]


def greeter(payload: Payload) -> Payload:
    payload["greeting"] = f"hello, {payload.get('name', 'world')}"
    return payload


def review(payload: Payload) -> Payload:
    """Approves amounts up to 1,000."""
    payload["approved"] = payload["amount"] <= 1000
    return payload


def pay(payload: Payload) -> Payload:
    payload["paid"] = payload["amount"]
    return payload


def notify_rejection(payload: Payload) -> Payload:
    fault = payload.get("inst:fault", {})
    payload["notified"] = f"rejected: {fault.get('message', '')}"
    return payload


def check_stock(payload: Payload) -> Payload:
    payload["in_stock"] = payload["quantity"] <= 10
    return payload


def check_credit(payload: Payload) -> Payload:
    payload["credit_ok"] = payload["customer"] != "Deadbeat Inc"
    return payload


def send_invitation(payload: Payload) -> Payload:
    payload["invited"] = [*payload.get("invited", []), payload["inst:current"]]
    return payload


def ship_order(payload: Payload) -> Payload:
    payload["shipped"] = True
    return payload


def cancel_order(payload: Payload) -> Payload:
    payload["cancelled"] = True
    return payload


def pack(payload: Payload) -> Payload:
    payload["packed"] = True
    return payload


def label(payload: Payload) -> Payload:
    payload["label"] = f"order {payload['order']}"
    return payload


_attempts: Counter[str] = Counter()


def flaky(payload: Payload) -> Payload:
    """Answers ``error`` (a recoverable failure) twice per process, then succeeds."""
    key = str(payload.get("order", ""))
    _attempts[key] += 1
    if _attempts[key] <= 2:
        return {**payload, "status": "error", "error": f"busy (attempt {_attempts[key]})"}
    payload["attempts"] = _attempts[key]
    return payload


PARTICIPANTS = {
    name: f"examples.participants.workers:{name}"
    for name in (
        "greeter",
        "review",
        "pay",
        "notify_rejection",
        "check_stock",
        "check_credit",
        "send_invitation",
        "ship_order",
        "cancel_order",
        "pack",
        "label",
        "flaky",
    )
}
"""Every taskqueue participant of the examples, and the function that serves it."""
