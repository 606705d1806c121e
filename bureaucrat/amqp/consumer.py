"""The one reconnect loop of the daemon and the workers: serve, and when the broker (or the
database) is lost, wait with growing back-off and serve again, until asked to stop.

A session connects, declares, consumes and returns when asked to stop; it raises one of the
``recoverable`` errors when a connection is lost (anything else is not for a reconnect to fix
and goes to the caller). Unacknowledged messages come back from RabbitMQ meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
"""Seconds between attempts, at most (the wait doubles from one second)."""


def serve_forever(
    session: Callable[[], None],
    stopping: Callable[[], bool],
    recoverable: tuple[type[Exception], ...],
) -> None:
    """Run ``session`` until ``stopping()``, again after each ``recoverable`` error."""
    backoff = 1.0
    while not stopping():
        try:
            session()
            backoff = 1.0
        except recoverable as error:
            LOG.error("%s; retrying in %.0f s", error, backoff)
            sleep_unless(stopping, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


def sleep_unless(stopping: Callable[[], bool], seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stopping()`` becomes true meanwhile (a signal handler
    sets the flag; the loop notices it within a fifth of a second)."""
    deadline = time.monotonic() + seconds
    while not stopping() and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
