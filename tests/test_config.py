"""The configuration: defaults, the file, the original's files, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bureaucrat.config import DEFAULT_AMQP_URL, Config, load_config
from bureaucrat.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

ORIGINAL = """[DEFAULT]
; AMQP settings
[amqp]
host = rabbit.example
user = bob
passwd = s3cr/t
vhost = /prod

[bureaucrat]
storage_dir = /tmp/process_storage
taskqueue_type = celery
message_queue = my_msgs
event_queue = my_events

[formatters]
keys = simpleFormatter

[handler_consoleHandler]
class = StreamHandler
args = (sys.stdout,)
"""


def test_defaults_without_a_file() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.amqp_url == DEFAULT_AMQP_URL
    assert config.database_url == "sqlite:///bureaucrat.db"
    assert config.worker_queue("p") == "worker_p"


def test_the_documented_file_gives_the_defaults() -> None:
    assert load_config(ROOT / "config" / "bureaucrat.conf", environ={}) == Config()


def test_original_config_files_keep_working(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(ORIGINAL)
    config = load_config(path, environ={})
    assert config.amqp_url == "amqp://bob:s3cr%2Ft@rabbit.example:5672/%2Fprod"
    assert config.taskqueue_type == "celery"
    assert (config.message_queue, config.event_queue) == ("my_msgs", "my_events")
    assert "[bureaucrat] storage_dir" in config.ignored


def test_url_wins_and_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_text("[amqp]\nurl = amqp://a/%2F  ; inline comment\nhost = ignored\n")
    assert load_config(path, environ={}).amqp_url == "amqp://a/%2F"
    env = {"BUREAUCRAT_AMQP_URL": "amqp://env/%2F", "BUREAUCRAT_DATABASE_URL": "sqlite:///x.db"}
    config = load_config(path, environ=env)
    assert (config.amqp_url, config.database_url) == ("amqp://env/%2F", "sqlite:///x.db")


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("[bureaucrat]\nprefetch = many\n", "not a valid int"),
        ("[bureaucrat]\ntaskqueue_type = carrier-pigeon\n", "taskqueue_type"),
        ("not an ini file", "not a valid INI file"),
        ("[logging]\nsyslog = perhaps\n", "not a valid bool"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, phrase: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=phrase):
        load_config(path, environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.conf", environ={})
