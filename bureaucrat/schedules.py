"""Schedules, the pure part: when a schedule is due, which occurrences to launch, their ids, and
the control messages that manage schedules.

A schedule launches one definition with fixed fields on a timing (DESIGN.md section 8):

- ``cron``: a cron expression (five fields, or six with seconds last, as croniter reads them)
  in a time zone (``zoneinfo`` name, default UTC). Daylight saving time: a wall time that the
  clocks skip fires once, right after the jump (``30 2 * * *`` fires at 03:00 that day); in the
  hour that repeats when the clocks go back, an expression with a fixed hour fires once, the
  first time, and one whose hour field is ``*`` keeps firing by the real clock (Vixie cron's rule).
- ``every``: a fixed interval (``30s``, ``5m``, ``1h30m``, ``2d``), the first occurrence one
  interval after the schedule is added, then one per interval on that grid.
- ``at``: one date and time (ISO 8601; without an offset, in the schedule's time zone).

Every due time is a whole second. An occurrence's process id is ``<name>@<due time, UTC ISO>``
(``nightly@2026-11-30T01:00:00Z``), so launching it twice starts one process, whichever daemon
does it; ``occurrence_id`` keeps it within ``bounds.MAX_PROCESS_ID``.

After downtime (no daemon ran, or the schedule was paused) the catch-up policy decides what to
launch of what was missed: ``none`` (nothing that is more than ``ON_TIME`` seconds late),
``one`` (the latest missed occurrence, once) or ``all`` (each, at most ``MAX_CATCH_UP`` per pass).
The overlap policy decides what to do when an occurrence is due while the previous one's
instance has not finished: ``skip`` it, ``allow`` both, or ``terminate-previous``.

Control message (on the message queue)::

    {"name": "schedule", "action": "add", "schedule": NAME, "definition": XML,
     "fields": {...}, "cron": EXPR, "tz": ZONE | "every": DURATION | "at": TIME,
     "overlap": "skip", "catch_up": "one"}
    {"name": "schedule", "action": "pause" | "resume" | "delete" | "trigger", "schedule": NAME}
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from bureaucrat import bounds
from bureaucrat.messages import Control, MessageError, check_fields, check_value

ON_TIME = 60.0
"""Seconds an occurrence may be late and still count as on time (catch-up ``none``): the
daemon looks for due schedules every ``timer_interval``, and a busy one may look late."""
MAX_CATCH_UP = 100
"""Occurrences of one schedule launched in one pass at most (catch-up ``all``); the next pass
goes on from there."""
MAX_INTERVAL = 366 * 86400
"""The longest ``every`` interval, in seconds (a year: longer is a date, use ``at``)."""
MAX_EXPRESSION = 1000
"""Bytes of a cron expression at most."""


class ScheduleError(MessageError):
    """A schedule that cannot be accepted (a bad expression, time zone, duration...); the text
    says why. It is a ``MessageError``: a control message holding it is dead-lettered."""


class Kind(enum.StrEnum):
    CRON = "cron"
    EVERY = "every"
    AT = "at"


class Overlap(enum.StrEnum):
    SKIP = "skip"
    ALLOW = "allow"
    TERMINATE_PREVIOUS = "terminate-previous"


class CatchUp(enum.StrEnum):
    NONE = "none"
    ONE = "one"
    ALL = "all"


ACTIONS = ("add", "pause", "resume", "delete", "trigger")


# timings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """When a schedule is due: one of ``cron`` (with ``timezone``), ``interval`` (seconds) or
    ``at`` (epoch seconds), as ``kind`` says."""

    kind: Kind
    cron: str | None = None
    timezone: str | None = None
    interval: int | None = None
    at: float | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone or "UTC")

    def first_due(self, now: float) -> float | None:
        """The first due time of a schedule added at ``now``."""
        if self.kind is Kind.AT:
            return self.at
        if self.kind is Kind.EVERY:
            assert self.interval is not None
            return float(math.ceil(now) + self.interval)
        return self.following(now)

    def following(self, after: float, grid: float | None = None) -> float | None:
        """The first due time strictly after ``after``; None when there is none (an ``at``
        past). ``grid``: a due time of this schedule, which ``every`` intervals count from."""
        if self.kind is Kind.AT:
            assert self.at is not None
            return self.at if self.at > after else None
        if self.kind is Kind.EVERY:
            assert self.interval is not None
            start = after if grid is None else grid
            if after < start:
                return float(start)
            return float(start + (math.floor((after - start) / self.interval) + 1) * self.interval)
        return self._cron_after(after)

    def latest(self, now: float, since: float) -> float | None:
        """The latest due time in ``[since, now]`` (``since`` being one), None if none."""
        if since > now:
            return None
        if self.kind is Kind.EVERY:
            assert self.interval is not None
            return float(since + math.floor((now - since) / self.interval) * self.interval)
        if self.kind is Kind.AT:
            return since
        found = self._cron_before(math.floor(now) + 1)  # whole seconds: ``now`` included
        return found if found is not None and found >= since else since

    def _cron_after(self, after: float) -> float:
        return next(self.cron_times(after))

    def _cron_before(self, before: float) -> float | None:
        return next(self.cron_times(before, backwards=True), None)

    def cron_times(self, start: float, *, backwards: bool = False) -> Iterator[float]:
        """The due times of a cron timing strictly after ``start`` (or before it, latest
        first), without the repeats of the hour the clocks go back (``_repeat``)."""
        zone = self.zone
        base = math.floor(start) if not backwards else math.ceil(start)
        runner = croniter(self._expression, dt.datetime.fromtimestamp(base, zone))
        step = runner.get_prev if backwards else runner.get_next
        repeats = 0
        while repeats <= 3600:  # a repeated hour holds at most 3,600 due times in a row
            due = float(step(float))
            if self._repeat(due, zone):
                repeats += 1
            elif due < start if backwards else due > start:
                repeats = 0
                yield due

    @property
    def _expression(self) -> str:
        assert self.cron is not None
        return self.cron

    def _repeat(self, due: float, zone: ZoneInfo) -> bool:
        """Whether ``due`` is the second pass of a wall time in the hour that repeats when the
        clocks go back, for an expression with a fixed hour (it fired the first time)."""
        local = dt.datetime.fromtimestamp(due, zone)
        return local.fold == 1 and self._expression.split()[1] != "*"


def parse_timing(
    *,
    cron: str | None = None,
    tz: str | None = None,
    every: str | int | None = None,
    at: str | float | None = None,
) -> Timing:
    """The timing given by exactly one of ``cron`` (with ``tz``), ``every`` or ``at``;
    ``ScheduleError`` says what is wrong."""
    given = [name for name, value in (("cron", cron), ("every", every), ("at", at)) if value]
    if len(given) != 1:
        found = ", ".join(given) or "none"
        raise ScheduleError(f"a schedule needs exactly one of cron, every or at (given: {found})")
    if tz is not None and not cron and not at:
        raise ScheduleError("a time zone (tz) applies to cron and at schedules only")
    zone = _zone(tz)
    if cron:
        return Timing(Kind.CRON, cron=_cron(cron, zone), timezone=zone.key)
    if every:
        return Timing(Kind.EVERY, interval=parse_duration(every))
    assert at is not None
    return Timing(Kind.AT, timezone=zone.key, at=parse_at(at, zone))


def _zone(name: str | None) -> ZoneInfo:
    if name is None:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or bounds.check_id(name, "tz", bounds.MAX_NAME) is not None:
        raise ScheduleError(f"time zone {str(name)[:80]!a} is not a time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder (``America``)
        raise ScheduleError(
            f"unknown time zone {name[:80]!a} (use an IANA name, e.g. Europe/Paris or UTC)"
        ) from None


def _cron(expression: str, zone: ZoneInfo) -> str:
    if not isinstance(expression, str) or bounds.bad_text(expression) is not None:
        raise ScheduleError("a cron expression must be text")
    if bounds.utf8_length(expression) > MAX_EXPRESSION:
        raise ScheduleError(f"the cron expression is over {MAX_EXPRESSION} bytes long")
    text = " ".join(expression.split())
    if len(text.split()) not in (5, 6):
        raise ScheduleError(
            f"cron expression {text[:80]!a} must have 5 fields (minute hour day month weekday) "
            "or 6 (a sixth for seconds)"
        )
    try:
        croniter(text, dt.datetime.now(zone)).get_next(float)
    except Exception as error:  # whatever the library makes of untrusted text: refused
        raise ScheduleError(f"invalid cron expression {text[:80]!a}: {error}") from None
    return text


_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (86400, 3600, 60, 1)


def parse_duration(text: str | int) -> int:
    """Seconds in ``text``: ``90``, ``30s``, ``5m``, ``1h30m``, ``2d`` (whole seconds, > 0)."""
    if isinstance(text, str) and len(text) > 40:
        raise ScheduleError(f"interval {text[:40]!a}...: too long for a duration")
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = text
    elif isinstance(text, str) and text.strip().isdigit():
        seconds = int(text.strip())
    else:
        match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or not any(match.groups()):
            raise ScheduleError(
                f"interval {str(text)[:80]!a} is not a duration (e.g. 30s, 5m, 1h30m, 2d)"
            )
        seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNITS, strict=True) if n)
    if not 0 < seconds <= MAX_INTERVAL:
        raise ScheduleError(f"interval {text!a}: must be between 1 second and {MAX_INTERVAL} s")
    return seconds


def parse_at(text: str | float, zone: ZoneInfo | None = None) -> float:
    """Epoch seconds (rounded up to a whole second) of an ISO 8601 time; one without an offset
    is in ``zone`` (default UTC)."""
    if isinstance(text, int | float) and not isinstance(text, bool) and math.isfinite(text):
        return _bounded_at(math.ceil(text), text)
    if not isinstance(text, str) or bounds.bad_text(text) is not None:
        raise ScheduleError("at: expected an ISO 8601 time, e.g. 2026-12-24T18:00")
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(
            f"at: {text[:80]!a} is not an ISO 8601 time (e.g. 2026-12-24T18:00 or "
            "2026-12-24T18:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone or dt.UTC)
    return _bounded_at(math.ceil(moment.timestamp()), text)


LATEST_AT = dt.datetime(9000, 1, 1, tzinfo=dt.UTC).timestamp()


def _bounded_at(seconds: float, text: object) -> float:
    if not 0 <= seconds < LATEST_AT:
        raise ScheduleError(f"at: {str(text)[:80]!a} is not between 1970 and the year 9000")
    return float(seconds)


# catch-up -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one pass does for a due schedule: the due times to launch, in order, and the next
    due time after them (None: the schedule has no more occurrences)."""

    launch: list[float]
    next_due: float | None
    missed: int = 0
    """Occurrences passed over (``none`` and ``one``); of a cron timing, 10,000 at most are
    counted."""


def plan(
    timing: Timing, next_due: float, now: float, catch_up: CatchUp, limit: int = MAX_CATCH_UP
) -> Plan:
    """Which occurrences of a schedule due at ``next_due`` to launch at ``now``."""
    if next_due > now:
        return Plan([], next_due)
    if catch_up is CatchUp.ALL:
        launch: list[float] = []
        due: float | None = next_due
        while due is not None and due <= now and len(launch) < limit:
            launch.append(due)
            due = timing.following(due, grid=next_due)
        return Plan(launch, due)
    latest = timing.latest(now, next_due)
    assert latest is not None
    following = timing.following(now, grid=next_due)
    missed = _count(timing, next_due, latest)
    if catch_up is CatchUp.NONE and now - latest > ON_TIME:
        return Plan([], following, missed + 1)
    return Plan([latest], following, missed)


def _count(timing: Timing, first: float, last: float, limit: int = 10_000) -> int:
    """How many due times lie in ``[first, last)`` (at most ``limit`` counted)."""
    if timing.kind is Kind.EVERY:
        assert timing.interval is not None
        return int((last - first) // timing.interval)
    if timing.kind is Kind.AT or first >= last:
        return 0
    count = 1  # ``first`` is one
    for due in timing.cron_times(first):
        if due >= last or count >= limit:
            break
        count += 1
    return count


# process ids ----------------------------------------------------------------------------------


def iso(moment: float, *, milliseconds: bool = False) -> str:
    """``moment`` as UTC ISO 8601 text: ``2026-11-30T09:00:00Z``."""
    when = dt.datetime.fromtimestamp(moment, dt.UTC)
    if milliseconds:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def occurrence_id(name: str, due: float) -> str:
    """The process id of the occurrence of schedule ``name`` due at ``due``."""
    return _process_id(name, iso(due))


def trigger_id(name: str, now: float) -> str:
    """The process id of an occurrence an operator triggered at ``now`` (milliseconds, so it
    differs from the schedule's own whole-second occurrences)."""
    return _process_id(name, iso(now, milliseconds=True))


def _process_id(name: str, when: str) -> str:
    """``<name>@<when>``; a name too long for that is cut and followed by ``~`` and a digest
    of the whole name, so that different names still give different ids."""
    whole = f"{name}@{when}"
    if bounds.utf8_length(whole) <= bounds.MAX_PROCESS_ID:
        return whole
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    room = bounds.MAX_PROCESS_ID - len(digest) - len(when) - 2
    prefix = name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{prefix}~{digest}@{when}"


# control messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """A schedule as an ``add`` message gives it."""

    name: str
    definition: str
    timing: Timing
    fields: dict[str, Any] = field(default_factory=dict)
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.ONE


def check_name(name: object) -> str:
    """``name`` if it can name a schedule, else ``ScheduleError``."""
    if not isinstance(name, str):
        raise ScheduleError("'schedule' must name the schedule, as a string")
    problem = bounds.check_id(name, "the schedule name", bounds.MAX_NAME)
    if problem is not None:
        raise ScheduleError(problem)
    return name


def decode_control(message: dict[str, Any]) -> Control:
    """A schedule control message, checked; ``ScheduleError`` (a ``MessageError``) if not
    acceptable. Its ``process_id`` is empty: it is about a schedule, not a process."""
    action = message.get("action")
    if action not in ACTIONS:
        raise ScheduleError(
            f"schedule message: 'action' must be one of {', '.join(ACTIONS)}, "
            f"not {str(action)[:80]!a}"
        )
    check_name(message.get("schedule"))
    if action == "add":
        try:
            spec_of(message)
        except MessageError:
            raise
        except Exception as error:  # a defect here must not make the message a poison pill
            raise ScheduleError(f"schedule add: {type(error).__name__}: {error}") from None
    return Control("schedule", "", message)


def spec_of(message: dict[str, Any]) -> Spec:
    """The schedule an ``add`` message describes; ``ScheduleError`` says what is wrong."""
    name = check_name(message.get("schedule"))
    definition = message.get("definition")
    if not isinstance(definition, str) or not definition.strip():
        raise ScheduleError("schedule add: 'definition' must be the process XML, as a string")
    fields = message.get("fields")
    fields = {} if fields is None else fields
    if not isinstance(fields, dict):
        raise ScheduleError("schedule add: 'fields' must be a JSON object")
    check_value(fields, "schedule add: fields", depth=1)
    check_fields(fields, "schedule add")
    texts = {key: message.get(key) for key in ("cron", "tz", "at")}
    for key, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise ScheduleError(f"schedule add: {key!r} must be a string")
    every = message.get("every")
    if every is not None and not isinstance(every, str | int):
        raise ScheduleError("schedule add: 'every' must be a duration (e.g. \"5m\")")
    timing = parse_timing(cron=texts["cron"], tz=texts["tz"], every=every, at=texts["at"])
    return Spec(
        name,
        definition,
        timing,
        fields,
        _choice(Overlap, message.get("overlap", "skip"), "overlap"),
        _choice(CatchUp, message.get("catch_up", "one"), "catch_up"),
    )


_E = TypeVar("_E", bound=enum.StrEnum)


def _choice(kind: type[_E], value: object, what: str) -> _E:
    try:
        return kind(value if isinstance(value, str) else "")
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ScheduleError(f"{what} must be one of {allowed}, not {str(value)[:80]!a}") from None
