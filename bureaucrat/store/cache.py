"""A cache of parsed definitions, bounded by an estimate of the memory they take.

Parsing a definition costs far more than looking it up, so the store keeps the parsed ones; but
every distinct definition launched would otherwise stay in memory for ever (a parsed definition
takes about ten times its source). The least recently used are dropped past the budget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from bureaucrat.definition import Definition

PARSED_FACTOR = 10
"""Bytes of memory per character of source, roughly, that a parsed definition takes."""
FLAT_COST = 20_000
"""Bytes a parsed definition takes whatever its size (its objects, the dict entries)."""


class DefinitionCache:
    """Parsed definitions by content hash; least recently used dropped past ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._entries: OrderedDict[str, tuple[Definition, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, digest: str) -> bool:
        return digest in self._entries

    def get(self, digest: str) -> Definition | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            self._entries.move_to_end(digest)
            return entry[0]

    def put(self, digest: str, definition: Definition, source_length: int) -> None:
        cost = FLAT_COST + PARSED_FACTOR * source_length
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self.size -= old[1]
            self._entries[digest] = (definition, cost)
            self.size += cost
            while self.size > self.capacity and len(self._entries) > 1:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.size -= dropped
