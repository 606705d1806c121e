"""The configuration: an INI file where every option is optional, then the environment.

Precedence, lowest first: built-in defaults, the file, ``BUREAUCRAT_AMQP_URL`` and
``BUREAUCRAT_DATABASE_URL``. The original bureaucrat's files keep working: ``[amqp]`` host, user,
passwd and vhost make the broker URL when no ``url`` is given; ``[bureaucrat]`` taskqueue_type,
message_queue and event_queue keep their meaning; its other keys and sections (``storage_dir``,
the ``logging.config`` sections) are accepted and ignored. ``config/bureaucrat.conf`` documents
every option.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import quote

from bureaucrat.errors import ConfigError

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_DATABASE_URL = "sqlite:///bureaucrat.db"


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
    prefetch: int = 100
    timer_interval: float = 0.25
    dedupe_window: float = 7 * 24 * 3600.0
    queue_type: str = "classic"
    max_redeliveries: int = 5
    max_state_size: int = 1_000_000
    max_step_output: int = 10_000_000
    definition_cache_size: int = 64_000_000
    log_level: str = "INFO"
    log_file: str | None = None
    syslog: bool = False
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
    ("bureaucrat", "prefetch"): "prefetch",
    ("bureaucrat", "timer_interval"): "timer_interval",
    ("bureaucrat", "dedupe_window"): "dedupe_window",
    ("bureaucrat", "queue_type"): "queue_type",
    ("bureaucrat", "max_redeliveries"): "max_redeliveries",
    ("bureaucrat", "max_state_size"): "max_state_size",
    ("bureaucrat", "max_step_output"): "max_step_output",
    ("bureaucrat", "definition_cache_size"): "definition_cache_size",
    ("logging", "level"): "log_level",
    ("logging", "file"): "log_file",
    ("logging", "syslog"): "syslog",
}
_ORIGINAL_AMQP = ("host", "port", "user", "passwd", "vhost")
_IGNORED_SECTIONS = {"DEFAULT", "formatters", "handlers", "loggers", "taskqueue"}
_KINDS = ("taskqueue", "celery")


def load_config(path: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Config:
    """The configuration from ``path`` (None: defaults only) and the environment."""
    config = Config()
    if path is not None:
        config = _from_file(Path(path))
    amqp_url = environ.get("BUREAUCRAT_AMQP_URL")
    database_url = environ.get("BUREAUCRAT_DATABASE_URL")
    if amqp_url:
        config = replace(config, amqp_url=amqp_url)
    if database_url:
        config = replace(config, database_url=database_url)
    _check(config)
    return config


def _from_file(path: Path) -> Config:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        default_section="\x00",  # the original's [DEFAULT] is a section like any other
    )
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}") from None
    except configparser.Error as error:
        raise ConfigError(f"{path}: not a valid INI file: {error}") from None
    values: dict[str, object] = {}
    ignored: list[str] = []
    types = {f.name: f.type for f in fields(Config)}
    for section in parser.sections():
        if section in _IGNORED_SECTIONS:
            ignored.append(f"[{section}]")
            continue
        for key, text in parser.items(section, raw=True):
            name = _KEYS.get((section, key))
            if name is not None:
                values[name] = _convert(path, section, key, text, str(types[name]))
            elif not (section == "amqp" and key in _ORIGINAL_AMQP):
                ignored.append(f"[{section}] {key}")
    if "amqp_url" not in values and parser.has_section("amqp"):
        values["amqp_url"] = _original_amqp_url(parser["amqp"])
    return replace(Config(), **values, ignored=tuple(ignored))  # type: ignore[arg-type]


def _convert(path: Path, section: str, key: str, text: str, kind: str) -> object:
    text = text.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return _boolean(text)
    except ValueError:
        raise ConfigError(f"{path}: [{section}] {key} = {text!r} is not a valid {kind}") from None
    return text or None if kind.endswith("None") else text


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(text)


def _original_amqp_url(section: configparser.SectionProxy) -> str:
    host = section.get("host", "localhost").strip()
    port = section.get("port", "5672").strip()
    user = quote(section.get("user", "guest").strip(), safe="")
    password = quote(section.get("passwd", "guest").strip(), safe="")
    vhost = quote(section.get("vhost", "/").strip(), safe="")
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"


def _check(config: Config) -> None:
    if config.taskqueue_type not in _KINDS:
        raise ConfigError(
            f"taskqueue_type = {config.taskqueue_type!r}: expected one of {', '.join(_KINDS)}"
        )
    if config.prefetch < 1:
        raise ConfigError(f"prefetch = {config.prefetch}: must be at least 1")
    if config.timer_interval <= 0:
        raise ConfigError(f"timer_interval = {config.timer_interval}: must be positive")
    if config.dedupe_window < 60:
        raise ConfigError(f"dedupe_window = {config.dedupe_window}: must be at least 60 seconds")


def with_absolute_database(config: Config) -> Config:
    """``config`` with a relative SQLite path made absolute against the working directory, so
    that it names the same file after the daemon changes directory."""
    from bureaucrat.store import resolve_url

    return replace(config, database_url=resolve_url(config.database_url))
