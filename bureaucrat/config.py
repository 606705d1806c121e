"""The configuration: an INI file where every option is optional, then the environment.

Precedence, lowest first: built-in defaults, the file, ``BUREAUCRAT_AMQP_URL``,
``BUREAUCRAT_DATABASE_URL`` and ``BUREAUCRAT_WEB_TOKEN`` (the web console's token). The
original bureaucrat's files keep working: ``[amqp]`` host, user, passwd and vhost make the broker
URL when no ``url`` is given; ``[bureaucrat]`` taskqueue_type,
message_queue and event_queue keep their meaning; its other keys and sections (``storage_dir``,
the ``logging.config`` sections) are accepted and ignored. As in the original (and in any INI file
``configparser`` reads), a key in ``[DEFAULT]`` applies to every section that does not set it
itself. ``config/bureaucrat.conf`` documents every option.

Without a file named on the command line, the daemon takes the first of: the file named by
``BUREAUCRAT_CONFIG``, ``/etc/bureaucrat/bureaucrat.conf``, the original's
``/etc/taskqueue/config.ini`` (``SEARCH_PATHS``); with none of them, the defaults
(``find_config``).

Every value is checked when it is loaded (its type, its range, names that RabbitMQ accepts, URLs
that parse): a ``ConfigError`` names the file, section and key, or the environment variable, so
that a daemon never starts on a setting it would trip over later.
"""

from __future__ import annotations

import configparser
import logging
import math
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bureaucrat.bounds import MAX_NAME, SHORT_STRING, bad_text, utf8_length
from bureaucrat.errors import ConfigError

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_DATABASE_URL = "sqlite:///bureaucrat.db"
AMQP_URL_VARIABLE = "BUREAUCRAT_AMQP_URL"
CONFIG_VARIABLE = "BUREAUCRAT_CONFIG"
SEARCH_PATHS: tuple[Path, ...] = (
    Path("/etc/bureaucrat/bureaucrat.conf"),
    Path("/etc/taskqueue/config.ini"),  # the original's
)
"""Where the daemon looks for its config file, in order, after ``BUREAUCRAT_CONFIG``."""
DATABASE_URL_VARIABLE = "BUREAUCRAT_DATABASE_URL"
WEB_TOKEN_VARIABLE = "BUREAUCRAT_WEB_TOKEN"
QUEUE_TYPES = ("classic", "quorum")
KINDS = ("taskqueue", "celery")


@dataclass(frozen=True)
class Config:
    """Every setting of the daemon and the client tools, with its default."""

    amqp_url: str = DEFAULT_AMQP_URL
    heartbeat: int = 60
    database_url: str = DEFAULT_DATABASE_URL
    exchange: str = "bureaucrat"
    launch_queue: str = "bureaucrat"
    message_queue: str = "bureaucrat_msgs"
    event_queue: str = "bureaucrat_events"
    dead_letter_queue: str = "bureaucrat.dead"
    notifications_exchange: str = "bureaucrat.notifications"
    worker_queue_prefix: str = "worker_"
    taskqueue_type: str = "taskqueue"
    celery_routing: str = "celery"
    celery_protocol: int = 2
    prefetch: int = 100
    timer_interval: float = 0.25
    dedupe_window: float = 7 * 24 * 3600.0
    queue_type: str = "classic"
    max_redeliveries: int = 5
    max_state_size: int = 1_000_000
    max_step_output: int = 10_000_000
    step_budget: int = 20_000_000
    sqlite_synchronous: str = "full"
    definition_cache_size: int = 64_000_000
    on_fault: str = "fault"
    log_level: str = "INFO"
    log_file: str | None = None
    syslog: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    web_token: str | None = None
    """The web console's operator token; None: the console is read-only."""
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    ignored: tuple[str, ...] = field(default=(), compare=False)

    def worker_queue(self, participant: str) -> str:
        return f"{self.worker_queue_prefix}{participant}"


# (section, key) -> Config field, for the keys that map one to one.
_KEYS: Mapping[tuple[str, str], str] = {
    ("amqp", "url"): "amqp_url",
    ("amqp", "heartbeat"): "heartbeat",
    ("bureaucrat", "database_url"): "database_url",
    ("bureaucrat", "exchange"): "exchange",
    ("bureaucrat", "launch_queue"): "launch_queue",
    ("bureaucrat", "message_queue"): "message_queue",
    ("bureaucrat", "event_queue"): "event_queue",
    ("bureaucrat", "dead_letter_queue"): "dead_letter_queue",
    ("bureaucrat", "notifications_exchange"): "notifications_exchange",
    ("bureaucrat", "worker_queue_prefix"): "worker_queue_prefix",
    ("bureaucrat", "taskqueue_type"): "taskqueue_type",
    ("bureaucrat", "celery_routing"): "celery_routing",
    ("bureaucrat", "celery_protocol"): "celery_protocol",
    ("bureaucrat", "prefetch"): "prefetch",
    ("bureaucrat", "timer_interval"): "timer_interval",
    ("bureaucrat", "dedupe_window"): "dedupe_window",
    ("bureaucrat", "queue_type"): "queue_type",
    ("bureaucrat", "max_redeliveries"): "max_redeliveries",
    ("bureaucrat", "max_state_size"): "max_state_size",
    ("bureaucrat", "max_step_output"): "max_step_output",
    ("bureaucrat", "step_budget"): "step_budget",
    ("bureaucrat", "sqlite_synchronous"): "sqlite_synchronous",
    ("bureaucrat", "definition_cache_size"): "definition_cache_size",
    ("bureaucrat", "on_fault"): "on_fault",
    ("logging", "level"): "log_level",
    ("logging", "file"): "log_file",
    ("logging", "syslog"): "syslog",
    ("web", "host"): "web_host",
    ("web", "port"): "web_port",
    ("web", "token"): "web_token",
    ("metrics", "port"): "metrics_port",
    ("metrics", "host"): "metrics_host",
}
_WHERE: Mapping[str, str] = {name: f"[{section}] {key}" for (section, key), name in _KEYS.items()}
_ORIGINAL_AMQP = ("host", "port", "user", "passwd", "vhost")
_IGNORED_SECTIONS = {"formatters", "handlers", "loggers", "taskqueue"}
_DEFAULT = "DEFAULT"
_QUEUES = ("launch_queue", "message_queue", "event_queue", "dead_letter_queue")
_EXCHANGES = ("exchange", "notifications_exchange")


def find_config(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file the daemon reads when none is named: ``BUREAUCRAT_CONFIG`` (when set and
    not empty, even if the file is missing: ``load_config`` then says so), else the first of
    ``SEARCH_PATHS`` that exists, else None (the defaults)."""
    named = environ.get(CONFIG_VARIABLE)
    if named:
        return Path(named)
    for candidate in SEARCH_PATHS:
        if candidate.exists():
            return candidate
    return None


def load_config(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration from ``path`` (None: defaults only) and the environment, checked."""
    config = Config()
    where: dict[str, str] = {}  # field -> where its value was set, for messages
    if path is not None:
        config, where = _from_file(Path(path))
    amqp_url = environ.get(AMQP_URL_VARIABLE)
    database_url = environ.get(DATABASE_URL_VARIABLE)
    if amqp_url:
        config = replace(config, amqp_url=amqp_url)
        where["amqp_url"] = AMQP_URL_VARIABLE
    if database_url:
        config = replace(config, database_url=database_url)
        where["database_url"] = DATABASE_URL_VARIABLE
    web_token = environ.get(WEB_TOKEN_VARIABLE)
    if web_token:
        config = replace(config, web_token=web_token)
        where["web_token"] = WEB_TOKEN_VARIABLE
    return _checked(config, where)


def _from_file(path: Path) -> tuple[Config, dict[str, str]]:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section="\x00",  # [DEFAULT] is read as a section, and applied below
    )
    try:
        with path.open(encoding="utf-8-sig") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{error.object[error.start]:02x} "
            f"at offset {error.start})"
        ) from None
    except configparser.Error as error:
        raise ConfigError(f"{path}: not a valid INI file: {_one_line(str(error))}") from None
    values: dict[str, object] = {}
    where: dict[str, str] = {}
    ignored: list[str] = []
    types = {f.name: str(f.type) for f in fields(Config)}
    defaults = dict(parser.items(_DEFAULT, raw=True)) if parser.has_section(_DEFAULT) else {}
    used_defaults: set[str] = set()
    for section in parser.sections():
        if section == _DEFAULT:
            continue
        if section in _IGNORED_SECTIONS:
            ignored.append(f"[{section}]")
            continue
        own = dict(parser.items(section, raw=True))
        for key, text in {**defaults, **own}.items():
            inherited = key not in own  # a [DEFAULT] key the section does not set itself
            name = _KEYS.get((section, key))
            if name is None and not (section == "amqp" and key in _ORIGINAL_AMQP):
                if not inherited:  # an unused [DEFAULT] key is listed once, below
                    ignored.append(f"[{section}] {key}")
                continue
            if inherited:
                used_defaults.add(key)
            if name is not None:
                origin = f"[{_DEFAULT}] {key} (for [{section}])" if inherited else _WHERE[name]
                where[name] = f"{path}: {origin}"
                values[name] = _convert(where[name], text, types[name])
    ignored.extend(f"[{_DEFAULT}] {key}" for key in defaults if key not in used_defaults)
    if "amqp_url" not in values and parser.has_section("amqp"):
        parts = {**defaults, **dict(parser.items("amqp", raw=True))}
        values["amqp_url"] = _original_amqp_url(path, parts)
        where["amqp_url"] = f"{path}: [amqp] host, port, user, passwd, vhost"
    config = replace(Config(), **values, ignored=tuple(ignored))  # type: ignore[arg-type]
    return config, where


def _convert(where: str, text: str, kind: str) -> object:
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            number = float(text)
            if not math.isfinite(number):
                raise ConfigError(f"{where} = {text!r} is not a finite number")
            return number
        if kind == "bool":
            return _boolean(text)
    except ValueError:
        raise ConfigError(f"{where} = {text!r} is not a valid {kind}") from None
    return text or None if kind.endswith("None") else text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(text)


def _original_amqp_url(path: Path, section: Mapping[str, str]) -> str:
    parts = {key: section[key] for key in _ORIGINAL_AMQP if key in section}
    return original_amqp_url(parts, f"{path}: [amqp]")


def original_amqp_url(parts: Mapping[str, str], where: str) -> str:
    """The broker URL the original's ``host``, ``port``, ``user``, ``passwd`` and ``vhost``
    make (each optional: localhost, 5672, guest, guest, /); ``where`` names them in errors."""
    host = parts.get("host", "localhost").strip()
    port = parts.get("port", "5672").strip()
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{where} port = {port!r} is not a port number (1 to 65535)")
    user = quote(parts.get("user", "guest").strip(), safe="")
    password = quote(parts.get("passwd", "guest").strip(), safe="")
    vhost = quote(parts.get("vhost", "/").strip(), safe="")
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"


# checks -----------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _between(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be from {low} to {high}"


def _at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be at least {low}"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0"


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _name(limit: int) -> Check:
    def check(value: object) -> str | None:
        text = str(value)
        if not text:
            return "must not be empty"
        if text.startswith("amq."):
            return "names starting with 'amq.' are reserved by RabbitMQ"
        size = utf8_length(text)
        return None if size <= limit else f"is {size} bytes long, over the limit of {limit}"

    return check


def _log_level(value: object) -> str | None:
    if str(value).upper() in logging.getLevelNamesMapping():
        return None
    return "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"


def _token(value: object) -> str | None:
    text = str(value)
    if len(text) < 16:
        return "must be at least 16 characters long (e.g. from `openssl rand -hex 24`)"
    return None if text.isprintable() and not text.isspace() else "must be printable text"


def _host(value: object) -> str | None:
    """An address to listen on: an IP address or a host name (``localhost``, ``0.0.0.0``)."""
    text = str(value)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:")
    if len(text) > 253 or not set(text) <= allowed:
        return "is not a host name or an IP address to listen on"
    return None


def _amqp_url(value: object) -> str | None:
    import pika

    text = str(value)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in ("amqp", "amqps"):
        return "is not an AMQP URL (amqp://user:password@host:port/vhost or amqps://...)"
    try:
        parameters = pika.URLParameters(text)
    except Exception as error:  # pika raises ValueError, IndexError... for what it cannot read
        return f"is not a valid AMQP URL: {_one_line(str(error)) or type(error).__name__}"
    if not parameters.port:
        return "is not a valid AMQP URL: no port"
    return None


def _database_url(value: object) -> str | None:
    import sqlalchemy

    try:
        sqlalchemy.make_url(str(value))
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        return f"is not a valid database URL: {_one_line(str(error))}"
    return None


# Config field -> its check (every value is also checked for control characters and NULs).
_CHECKS: Mapping[str, Check] = {
    "amqp_url": _amqp_url,
    "heartbeat": _between(0, 3600),
    "database_url": _database_url,
    **{name: _name(MAX_NAME) for name in (*_QUEUES, *_EXCHANGES)},
    # a worker queue is <prefix><participant>, and a participant's name has up to MAX_NAME bytes
    "worker_queue_prefix": _name(SHORT_STRING - MAX_NAME),
    "taskqueue_type": _one_of(*KINDS),
    "celery_routing": _one_of("celery", "original"),
    "celery_protocol": _between(1, 2),
    "prefetch": _between(1, 65535),
    "timer_interval": _positive,
    "dedupe_window": _at_least(60),
    "queue_type": _one_of(*QUEUE_TYPES),
    "max_redeliveries": _between(1, 1000),
    "max_state_size": _at_least(10_000),
    "max_step_output": _at_least(100_000),
    "step_budget": _at_least(10_000),
    "sqlite_synchronous": _one_of("full", "normal"),
    "definition_cache_size": _at_least(1_000_000),
    "on_fault": _one_of("fault", "suspend"),
    "log_level": _log_level,
    "web_host": _host,
    "web_port": _between(1, 65535),
    "web_token": _token,
    "metrics_port": _between(0, 65535),
    "metrics_host": _host,
}
_SECRET = frozenset({"amqp_url", "database_url", "web_token"})
"""Fields whose value may hold a password: errors name them without showing the value."""


def check_config(config: Config, where: Mapping[str, str]) -> Config:
    """``config`` checked as a loaded one (``ConfigError`` naming ``where`` a value was set)."""
    return _checked(config, where)


def _checked(config: Config, where: Mapping[str, str]) -> Config:
    """``config`` if every value is acceptable (the log level in capitals), else ConfigError.

    ``where`` says where the values that were set come from (file and key, or variable)."""

    def fail(name: str, problem: str) -> ConfigError:
        value = getattr(config, name)
        shown = "" if name in _SECRET else f" = {value!r}"
        return ConfigError(f"{where.get(name, _WHERE[name])}{shown}: {problem}")

    for name, value in ((f.name, getattr(config, f.name)) for f in fields(Config)):
        if name == "ignored" or value is None:
            continue
        problem = _problem(name, value)
        if problem is not None:
            raise fail(name, problem)
    for first, second in _pairs(_QUEUES, ("exchange", "notifications_exchange")):
        if getattr(config, first) == getattr(config, second):
            named = second if second in where or first not in where else first
            other = _WHERE[first if named == second else second]
            raise fail(named, f"must differ from {other} (each has its own role)")
    return replace(config, log_level=config.log_level.upper())


def _pairs(*groups: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every pair of fields within each group (whose values must differ)."""
    return [(a, b) for group in groups for i, a in enumerate(group) for b in group[i + 1 :]]


def _problem(name: str, value: object) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, str):
        if not value:
            return "must not be empty"
        problem = bad_text(value)
        if problem is not None:
            return problem
        if any(unicodedata.category(char) == "Cc" for char in value):
            return "contains a control character"
    check = _CHECKS.get(name)
    return None if check is None else check(value)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def with_absolute_database(config: Config) -> Config:
    """``config`` with a relative SQLite path made absolute against the working directory, so
    that it names the same file after the daemon changes directory."""
    from bureaucrat.store import resolve_url

    return replace(config, database_url=resolve_url(config.database_url))
