"""Limits on the texts that enter bureaucrat and end up in AMQP short strings or database keys.

AMQP short strings (message ids, queue names, routing keys, exchange names) hold at most 255
bytes. The engine derives ids from what it is given: a workitem id is
``<process id>_<activity path>.<counter>``, a participant's answer id adds ``:answer``, a worker
queue is ``<prefix><participant>``. Each input is bounded where it enters (message decoding,
definition reading, ``Launcher`` and ``bureaucratctl``) so that whatever the engine appends still
fits. Lengths are counted in UTF-8 bytes, as AMQP counts them.

    process id      <= 128 bytes   (+ "_" + path <= 64 + "." + counter <= 20 + ":answer" < 255)
    activity path   <= 64 bytes    (nesting and width of a definition)
    names           <= 200 bytes   (participants, events, process names, queues, exchanges)

An id derived from one that was not bounded where it entered (a participant's answer to a
workitem that did not come from this engine) goes through ``short_id``.
"""

from __future__ import annotations

import hashlib
import re

SHORT_STRING = 255
"""AMQP's limit on a short string, in bytes."""
MAX_PROCESS_ID = 128
MAX_ACTIVITY_PATH = 64
MAX_NAME = 200
MAX_DEPTH = 100
"""How deeply JSON values in messages, fields and answers may nest."""
MAX_ACTIVITY_ID = MAX_PROCESS_ID + 1 + MAX_ACTIVITY_PATH
"""``<process id>_<activity path>``."""
MAX_WORKITEM_ID = MAX_ACTIVITY_ID + 21
"""``<activity id>.<counter>``, the counter at most 20 digits."""

_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


def utf8_length(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes (lone surrogates count as three)."""
    return len(text.encode("utf-8", "surrogatepass"))


def bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored or sent (a NUL or a lone surrogate), or None if it can."""
    match = _FORBIDDEN.search(text)
    if match is None:
        return None
    if match.group() == "\x00":
        return "contains a NUL character"
    return f"contains a lone surrogate (U+{ord(match.group()):04X})"


def check_id(text: str, what: str, limit: int = MAX_PROCESS_ID) -> str | None:
    """Why ``text`` is not acceptable as an id or name of at most ``limit`` bytes, or None."""
    if not text:
        return f"{what} is empty"
    problem = bad_text(text)
    if problem is not None:
        return f"{what} {problem}"
    size = utf8_length(text)
    if size > limit:
        return f"{what} is {size} bytes long, over the limit of {limit}"
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        return f"{what} contains a control character"
    return None


_UNSAFE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def short_id(text: str, suffix: str = "") -> str:
    """``text + suffix`` as an AMQP short string: itself when it fits (and holds no NUL or lone
    surrogate), else a readable prefix of ``text``, ``~``, the SHA-256 of ``text`` and ``suffix``.

    The same ``text`` always gives the same id, so a message sent again keeps its id."""
    whole = text + suffix
    if utf8_length(whole) <= SHORT_STRING and _FORBIDDEN.search(whole) is None:
        return whole
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    room = max(0, SHORT_STRING - len(digest) - 1 - utf8_length(suffix))
    prefix = _UNSAFE.sub("", text).encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{prefix}~{digest}{suffix}"
