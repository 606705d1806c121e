"""The configuration: defaults, the file, the original's files, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from bureaucrat import cli, config
from bureaucrat.config import DEFAULT_AMQP_URL, Config, find_config, load_config
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


BAD_VALUES = [
    ("amqp", "heartbeat", "-1", "must be from 0 to 3600"),
    ("amqp", "heartbeat", "3601", "must be from 0 to 3600"),
    ("amqp", "heartbeat", "1.5", "not a valid int"),
    ("amqp", "url", "http://rabbit/", "not an AMQP URL"),
    ("amqp", "url", "amqp://rabbit:five/", "not a valid AMQP URL"),
    ("amqp", "url", "amqp://rabbit/?bogus=1", "not a valid AMQP URL"),
    ("amqp", "url", "", "must not be empty"),
    ("amqp", "port", "http", "not a port number"),
    ("bureaucrat", "database_url", "not a url", "not a valid database URL"),
    ("bureaucrat", "database_url", "postgresql://u:p@db:port/x", "not a valid database URL"),
    ("bureaucrat", "prefetch", "0", "must be from 1 to 65535"),
    ("bureaucrat", "prefetch", "65536", "must be from 1 to 65535"),
    ("bureaucrat", "timer_interval", "0", "must be more than 0"),
    ("bureaucrat", "timer_interval", "nan", "not a finite number"),
    ("bureaucrat", "timer_interval", "inf", "not a finite number"),
    ("bureaucrat", "timer_interval", "soon", "not a valid float"),
    ("bureaucrat", "dedupe_window", "59", "must be at least 60"),
    ("bureaucrat", "dedupe_window", "1e400", "not a finite number"),
    ("bureaucrat", "dedupe_window", "-inf", "not a finite number"),
    ("bureaucrat", "max_redeliveries", "0", "must be from 1 to 1000"),
    ("bureaucrat", "max_redeliveries", "1001", "must be from 1 to 1000"),
    ("bureaucrat", "max_state_size", "9999", "must be at least 10000"),
    ("bureaucrat", "max_step_output", "99999", "must be at least 100000"),
    ("bureaucrat", "definition_cache_size", "999999", "must be at least 1000000"),
    ("bureaucrat", "queue_type", "stream", "must be one of classic, quorum"),
    ("bureaucrat", "taskqueue_type", "carrier-pigeon", "must be one of taskqueue, celery"),
    ("bureaucrat", "launch_queue", "", "must not be empty"),
    ("bureaucrat", "message_queue", "a\x1b[31mb", "contains a control character"),
    ("bureaucrat", "event_queue", "a\x85b", "contains a control character"),
    ("bureaucrat", "dead_letter_queue", "x\x00", "contains a NUL character"),
    ("bureaucrat", "exchange", "é" * 101, "202 bytes long, over the limit of 200"),
    ("bureaucrat", "notifications_exchange", "amq.topic", "reserved by RabbitMQ"),
    ("bureaucrat", "worker_queue_prefix", "w" * 56, "over the limit of 55"),
    ("bureaucrat", "worker_queue_prefix", "", "must not be empty"),
    ("bureaucrat", "event_queue", "bureaucrat", "must differ from [bureaucrat] launch_queue"),
    ("bureaucrat", "launch_queue", "bureaucrat.dead", "must differ from [bureaucrat] dead_le"),
    ("bureaucrat", "notifications_exchange", "bureaucrat", "must differ from [bureaucrat] exch"),
    ("logging", "level", "loud", "must be one of DEBUG, INFO"),
    ("logging", "syslog", "perhaps", "not a valid bool"),
    ("logging", "file", "/var/log/b\x07.log", "contains a control character"),
]


@pytest.mark.parametrize(("section", "key", "value", "phrase"), BAD_VALUES)
def test_every_bad_value_is_named_with_its_section_and_key(
    tmp_path: Path, section: str, key: str, value: str, phrase: str
) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(f"[{section}]\n{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: [{section}] {key}"), message
    assert phrase in message
    assert "\n" not in message and "\x1b" not in message and "\x00" not in message


def test_urls_with_passwords_are_named_but_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("[bureaucrat]\ndatabase_url = postgresql://u:s3cret@db:port/x\n")
    with pytest.raises(ConfigError, match=r"\[bureaucrat\] database_url") as caught:
        load_config(path, environ={})
    assert "s3cret" not in str(caught.value)


def test_a_bad_url_in_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "good.conf"
    path.write_text("[amqp]\nurl = amqp://rabbit/%2F\n")
    with pytest.raises(ConfigError, match=r"^BUREAUCRAT_AMQP_URL: is not an AMQP URL"):
        load_config(path, environ={"BUREAUCRAT_AMQP_URL": "rabbit:5672"})
    with pytest.raises(ConfigError, match=r"^BUREAUCRAT_AMQP_URL: is not a valid AMQP URL"):
        load_config(None, environ={"BUREAUCRAT_AMQP_URL": "amqp://rabbit:five/"})
    with pytest.raises(ConfigError, match=r"^BUREAUCRAT_DATABASE_URL: is not a valid database"):
        load_config(path, environ={"BUREAUCRAT_DATABASE_URL": "sqlite//nope"})
    with pytest.raises(ConfigError, match=r"^BUREAUCRAT_AMQP_URL: contains a lone surrogate"):
        load_config(None, environ={"BUREAUCRAT_AMQP_URL": "amqp://r\udcff/"})  # undecodable byte


def test_a_file_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.conf"
    path.write_bytes("[amqp]\nhost = café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 0xe9 at offset 17\)"):
        load_config(path, environ={})


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.conf"
    path.write_bytes("[bureaucrat]\nprefetch = 7\n".encode("utf-8-sig"))
    assert load_config(path, environ={}).prefetch == 7


def test_good_values_at_the_edges_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "edges.conf"
    path.write_text(
        "[amqp]\nurl = amqps://u:p@rabbit:5671/prod?heartbeat=10\nheartbeat = 0\n"
        "[bureaucrat]\nprefetch = 65535\nmax_redeliveries = 1000\nqueue_type = quorum\n"
        "dedupe_window = 60\ntimer_interval = 1e-3\nexchange = " + "é" * 100 + "\n"
        "[logging]\nlevel = warning\n"
    )
    config = load_config(path, environ={})
    assert (config.heartbeat, config.prefetch, config.max_redeliveries) == (0, 65535, 1000)
    assert config.queue_type == "quorum" and config.log_level == "WARNING"


def test_default_keys_apply_to_every_section(tmp_path: Path) -> None:
    """As in the original (``configparser``): a ``[DEFAULT]`` key is in every section that does
    not set it itself; an error names ``[DEFAULT]``."""
    path = tmp_path / "config.ini"
    path.write_text(
        "[DEFAULT]\nprefetch = 7\nevent_queue = shared_events\nhost = rabbit.example\n"
        "passwd = s3cret\n"
        "[amqp]\nuser = bob\n"
        "[bureaucrat]\nevent_queue = ev\n"
    )
    config = load_config(path, environ={})
    assert (config.prefetch, config.event_queue) == (7, "ev")  # the section's own value wins
    assert config.amqp_url == "amqp://bob:s3cret@rabbit.example:5672/%2F"
    assert config.ignored == ("[DEFAULT] event_queue",)  # every section using it has its own
    path.write_text("[DEFAULT]\nprefetch = nonsense\n[bureaucrat]\nevent_queue = ev\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "[DEFAULT] prefetch (for [bureaucrat]) = 'nonsense' is not a valid int" in str(
        caught.value
    )


def test_a_default_key_applies_only_to_sections_that_exist(tmp_path: Path) -> None:
    """As ``configparser`` (and so the original): no ``[amqp]``, no broker from ``[DEFAULT]``."""
    path = tmp_path / "config.ini"
    path.write_text("[DEFAULT]\nhost = rabbit.example\nprefetch = 7\n")
    config = load_config(path, environ={})
    assert (config.amqp_url, config.prefetch) == (DEFAULT_AMQP_URL, 100)
    assert config.ignored == ("[DEFAULT] host", "[DEFAULT] prefetch")


def test_an_unused_default_key_is_listed_once_not_in_every_section(tmp_path: Path) -> None:
    """The original's taskqueue.ini hands ``test = yes`` to its workers through [DEFAULT]."""
    path = tmp_path / "config.ini"
    path.write_text(
        "[DEFAULT]\ntest = yes\nlevel = debug\n"
        "[amqp]\nhost = localhost\n[bureaucrat]\nstorage_dir = /tmp/p\n[logging]\n"
        "[taskqueue]\nworkers = participant1\n[handler_consoleHandler]\nclass = StreamHandler\n"
    )
    config = load_config(path, environ={})
    assert config.log_level == "DEBUG"  # [logging] level, from [DEFAULT]
    assert sorted(config.ignored) == [
        "[DEFAULT] test",
        "[bureaucrat] storage_dir",
        "[handler_consoleHandler] class",
        "[taskqueue]",
    ]
    path.write_text("[DEFAULT]\n; nothing\n[bureaucrat]\n")  # the original's config.ini
    assert load_config(path, environ={}).ignored == ()


# where the daemon finds its config file without -c ---------------------------------------------


@pytest.fixture
def search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """``SEARCH_PATHS`` made two files under ``tmp_path`` (neither exists yet), and
    ``BUREAUCRAT_CONFIG`` unset."""
    ours, original = tmp_path / "etc-bureaucrat.conf", tmp_path / "etc-taskqueue-config.ini"
    monkeypatch.setattr(config, "SEARCH_PATHS", (ours, original))
    monkeypatch.delenv("BUREAUCRAT_CONFIG", raising=False)
    # a daemon that would run on its defaults stops at once instead (exit status 2)
    monkeypatch.setenv("BUREAUCRAT_DATABASE_URL", "not a database URL")
    return ours, original


def test_the_shipped_search_paths_are_ours_then_the_originals() -> None:
    assert (
        Path("/etc/bureaucrat/bureaucrat.conf"),
        Path("/etc/taskqueue/config.ini"),
    ) == config.SEARCH_PATHS


def test_the_config_search_order(search: tuple[Path, Path], tmp_path: Path) -> None:
    ours, original = search
    named = tmp_path / "named.conf"
    assert find_config({}) is None  # nothing anywhere: the defaults
    original.write_text("[bureaucrat]\n")
    assert find_config({}) == original
    ours.write_text("[bureaucrat]\n")
    assert find_config({}) == ours
    assert find_config({"BUREAUCRAT_CONFIG": str(named)}) == named  # even before it exists
    assert find_config({"BUREAUCRAT_CONFIG": ""}) == ours  # empty: as if unset


def daemon_refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What ``bureaucrat`` says on stderr when it refuses its config (exit status 2)."""
    assert cli.main(argv) == 2
    return capsys.readouterr().err


BAD = "[bureaucrat]\nprefetch = many\n"  # refused before anything starts: it shows which file


def test_the_daemon_reads_the_first_file_found_without_c(
    search: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours, original = search
    assert "BUREAUCRAT_DATABASE_URL" in daemon_refusal(["-f"], capsys)  # no file: the defaults
    original.write_text(BAD)
    assert f"{original}: [bureaucrat] prefetch = 'many'" in daemon_refusal(["-f"], capsys)
    ours.write_text(BAD)
    assert f"{ours}: [bureaucrat] prefetch" in daemon_refusal(["-f"], capsys)
    named = tmp_path / "named.conf"
    monkeypatch.setenv("BUREAUCRAT_CONFIG", str(named))
    assert f"{named}: cannot read the config file" in daemon_refusal(["-f"], capsys)
    named.write_text(BAD)
    assert f"{named}: [bureaucrat] prefetch" in daemon_refusal(["-f"], capsys)
    given = tmp_path / "given.conf"
    given.write_text(BAD)
    assert f"{given}: [bureaucrat] prefetch" in daemon_refusal(["-f", "-c", str(given)], capsys)


def test_help_says_where_the_config_comes_from_and_what_the_flags_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # as one line, whatever the width
    for phrase in (
        "-f, --foreground don't daemonize",
        "-c CONFIG, --config CONFIG path to the config file",
        "-p PIDFILE, --pid-file PIDFILE write the daemon's pid to PIDFILE",
        "Without -c it reads the first config file of: $BUREAUCRAT_CONFIG, "
        "/etc/bureaucrat/bureaucrat.conf, then the original bureaucrat's "
        "/etc/taskqueue/config.ini. With none of them it runs on defaults",
        "keys in [DEFAULT] apply to every section",
    ):
        assert phrase in text, phrase
