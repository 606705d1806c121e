"""Participant functions the end-to-end tests serve through ``bureaucrat-worker``."""

from __future__ import annotations

import os
import time
from typing import Any


def echo(payload: dict[str, Any]) -> None:
    return None


def inc(payload: dict[str, Any]) -> dict[str, Any]:
    """Adds one to ``n`` and appends the step to ``seen`` (so order and count show); takes
    INC_DELAY seconds when the worker's environment sets it."""
    time.sleep(float(os.environ.get("INC_DELAY", "0")))
    payload["n"] = payload.get("n", 0) + 1
    payload["seen"] = [*payload.get("seen", []), payload.get("step", payload["n"])]
    return payload


def mark(payload: dict[str, Any]) -> dict[str, Any]:
    """Sets a property named by the worker's environment (MARK), for parallel branches."""
    payload[os.environ.get("MARK", "marked")] = True
    return payload


def fail(payload: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the participant failed on purpose")


def sleepy(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("sleep", 0.05)))
    payload["slept"] = True
    return payload
