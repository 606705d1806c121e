"""Operations hardening: the pid file, the modes of the daemon's files, config errors on the
command line, and bureaucratctl printing values from the database with their control
characters escaped."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bureaucrat.store import Store
from tests.harness import ROOT, Installation
from tests.test_operations import read_pid

pytestmark = pytest.mark.usefixtures("rabbitmq")

ESC = "\x1b[31m"


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("BUREAUCRAT_AMQP_URL", None)
    env.pop("BUREAUCRAT_DATABASE_URL", None)
    return env


def run(module: str, *args: str, cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(),
        cwd=cwd,
        umask=umask,
    )


def start_daemon(install: Installation, *args: str, umask: int = 0o022) -> subprocess.Popen[bytes]:
    """Start ``bureaucrat -f -c CONFIG args`` as the installation's daemon (stopped with it)."""
    log = install.tmp / f"{install.tag}.daemon.{len(install.logs)}.log"
    install.logs.append(log)
    command = [sys.executable, "-m", "bureaucrat.cli", "-f", "-c", str(install.config_path)]
    with log.open("wb") as out:
        install.daemon = subprocess.Popen(
            [*command, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(),
            cwd=install.tmp,
            umask=umask,
        )
    return install.daemon


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# the pid file ---------------------------------------------------------------------------------


def test_a_second_daemon_is_refused_and_the_pid_file_goes_on_exit(
    sqlite_installation: Installation,
) -> None:
    pid_file = sqlite_installation.tmp / "bureaucrat.pid"
    daemon = start_daemon(sqlite_installation, "-p", str(pid_file))
    sqlite_installation.wait_for(lambda: read_pid(pid_file) == daemon.pid, what="the pid file")
    assert mode(pid_file) & 0o022 == 0  # 0644 or stricter

    again = run(
        "bureaucrat.cli", "-f", "-c", str(sqlite_installation.config_path), "-p", str(pid_file),
        cwd=sqlite_installation.tmp,
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stderr == (
        f"bureaucrat: already running: pid {daemon.pid} holds the pid file {pid_file}\n"
    )
    assert read_pid(pid_file) == daemon.pid  # the refused daemon left it alone

    assert sqlite_installation.stop_daemon() == 0
    assert not pid_file.exists()


def test_a_stale_pid_file_is_replaced(sqlite_installation: Installation) -> None:
    pid_file = sqlite_installation.tmp / "bureaucrat.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # a live pid, but nobody holds the file: stale
    daemon = start_daemon(sqlite_installation, "-p", str(pid_file))
    sqlite_installation.wait_for(lambda: read_pid(pid_file) == daemon.pid, what="the pid file")
    assert sqlite_installation.stop_daemon() == 0
    assert not pid_file.exists()


def test_a_pid_file_that_is_no_longer_ours_is_left_on_exit(
    sqlite_installation: Installation,
) -> None:
    pid_file = sqlite_installation.tmp / "bureaucrat.pid"
    daemon = start_daemon(sqlite_installation, "-p", str(pid_file))
    sqlite_installation.wait_for(lambda: read_pid(pid_file) == daemon.pid, what="the pid file")
    pid_file.unlink()  # an operator removed it and something else wrote its own
    pid_file.write_text("4242\n")
    assert sqlite_installation.stop_daemon() == 0
    assert pid_file.read_text() == "4242\n"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_pid_file_that_is_a_symbolic_link_is_refused(
    sqlite_installation: Installation, dangling: bool
) -> None:
    target = sqlite_installation.tmp / "precious"
    if not dangling:
        target.write_text("keep me\n")
    pid_file = sqlite_installation.tmp / "bureaucrat.pid"
    pid_file.symlink_to(target)
    for flags in (["-f"], []):  # in the foreground and daemonising
        result = run(
            "bureaucrat.cli", *flags, "-c", str(sqlite_installation.config_path),
            "-p", str(pid_file), cwd=sqlite_installation.tmp,
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr == (
            f"bureaucrat: pid file {pid_file} is a symbolic link: refusing to use it\n"
        )
    assert pid_file.is_symlink()
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == "keep me\n"


def test_the_daemonised_daemon_holds_its_pid_file_and_makes_private_files(
    sqlite_installation: Installation,
) -> None:
    log_file = sqlite_installation.tmp / "logs" / "bureaucrat.log"
    log_file.parent.mkdir()
    config = sqlite_installation.config_path
    config.write_text(config.read_text() + f"file = {log_file}\n")  # [logging] is last
    pid_file = sqlite_installation.tmp / "run" / "bureaucrat.pid"
    pid_file.parent.mkdir()
    started = run("bureaucrat.cli", "-c", str(config), "-p", str(pid_file),
                  cwd=sqlite_installation.tmp, umask=0)  # fmt: skip
    assert started.returncode == 0, started.stderr
    sqlite_installation.wait_for(lambda: read_pid(pid_file) is not None, what="the pid file")
    daemon_pid = read_pid(pid_file)
    assert daemon_pid is not None
    try:
        sqlite_installation.wait_for(
            lambda: "serving" in log_file.read_text(), what="the daemon to serve"
        )
        again = run("bureaucrat.cli", "-c", str(config), "-p", str(pid_file),
                    cwd=sqlite_installation.tmp)  # fmt: skip
        assert again.returncode == 1
        assert f"already running: pid {daemon_pid} holds the pid file" in again.stderr
        database = sqlite_installation.tmp / "bureaucrat.db"
        for path in (log_file, database, pid_file):
            assert mode(path) & 0o027 == 0, f"{path} has mode {mode(path):o}"
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
    sqlite_installation.wait_for(lambda: not pid_file.exists(), what="the daemon to exit")


# file modes -------------------------------------------------------------------------------------


def test_the_database_and_the_log_are_private_in_the_foreground(
    sqlite_installation: Installation,
) -> None:
    log_file = sqlite_installation.tmp / "bureaucrat.log"
    config = sqlite_installation.config_path
    config.write_text(config.read_text() + f"file = {log_file}\n")
    start_daemon(sqlite_installation, umask=0)  # the daemon must not rely on the caller's umask
    sqlite_installation.wait_for(
        lambda: log_file.exists() and "serving" in log_file.read_text(), what="the daemon"
    )
    with sqlite_installation.launcher() as launcher:
        pid = launcher.launch("<process/>")
    sqlite_installation.wait_finished(pid)
    files = [log_file, *sqlite_installation.tmp.glob("bureaucrat.db*")]
    assert len(files) >= 2
    for path in files:
        assert mode(path) & 0o027 == 0, f"{path} has mode {mode(path):o}"


# config errors on the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["bureaucrat.cli", "bureaucrat.ctl", "bureaucrat.worker"], ids=lambda m: m
)
def test_every_command_prints_a_config_error_on_one_line_and_exits_2(
    tmp_path: Path, module: str
) -> None:
    config = tmp_path / "bad.conf"
    config.write_bytes(b"[bureaucrat]\nprefetch = 0\n")
    arguments = {
        "bureaucrat.cli": ["-f", "-c", str(config)],
        "bureaucrat.ctl": ["-c", str(config), "list"],
        "bureaucrat.worker": ["p", "tests.participants:echo", "-c", str(config)],
    }[module]
    result = run(module, *arguments, cwd=tmp_path)
    assert result.returncode == 2
    name = {"bureaucrat.cli": "bureaucrat", "bureaucrat.ctl": "bureaucratctl"}.get(
        module, "bureaucrat-worker"
    )
    expected = f"{name}: {config}: [bureaucrat] prefetch = 0: must be from 1 to 65535\n"
    assert result.stderr.endswith(expected), result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_file_that_is_not_utf8_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "latin1.conf"
    config.write_bytes(b"[amqp]\nhost = caf\xe9\n")
    for module, args in (("bureaucrat.cli", ["-f"]), ("bureaucrat.ctl", ["list"])):
        result = run(module, "-c", str(config), *args, cwd=tmp_path)
        assert result.returncode == 2
        assert "not a UTF-8 text file (byte 0xe9 at offset 17)" in result.stderr
        assert result.stderr.count("\n") == 1


def test_a_bad_url_in_the_environment_stops_the_daemon_naming_the_variable(
    tmp_path: Path,
) -> None:
    env = {**environment(), "BUREAUCRAT_AMQP_URL": "amqp://rabbit:five/"}
    result = subprocess.run(
        [sys.executable, "-m", "bureaucrat.cli", "-f"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("bureaucrat: BUREAUCRAT_AMQP_URL: is not a valid AMQP URL")
    assert not (tmp_path / "bureaucrat.db").exists()  # it stopped before touching anything


# bureaucratctl's output -------------------------------------------------------------------------


def test_ctl_escapes_control_characters_in_what_it_prints(
    sqlite_installation: Installation,
) -> None:
    install = sqlite_installation
    install.start_daemon()
    with install.launcher() as launcher:
        pid = launcher.launch('<process name="shop"><action participant="evil"/></process>')
    install.wait_for(lambda: bool(install.store.pending_workitems(pid)), what="the workitem")
    (item,) = install.store.pending_workitems(pid)
    answer = {
        "workitem_id": item.id,
        "target": item.activity,
        "payload": {"status": "critical", "error": f"{ESC}boom\x9b2J\nfake line\u202e"},
    }
    install.publish_raw(install.config.message_queue, json.dumps(answer).encode())
    assert install.wait_finished(pid).status == "faulted"
    # A row that no message could make (ids are checked on the way in), as an old or tampered
    # database might hold it.
    hostile = f"evil{ESC}id"
    with Store(install.database_url) as store:
        digest = store.add_definition("<process/>")
        with store.transaction() as tx:
            tx.create_instance(hostile, digest, f"name{ESC}\x07", None, None, 0.0)
            tx.mark_broken(hostile, f"reason {ESC}\r\x7f", 1.0)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return run("bureaucrat.ctl", "-c", str(install.config_path), *args, cwd=install.tmp)

    shown = ctl("show", pid)
    assert shown.returncode == 0, shown.stderr
    assert "fault    ActionError: \\x1b[31mboom\\x9b2J\\nfake line\\u202e" in shown.stdout
    listing = ctl("list")
    assert "evil\\x1b[31mid" in listing.stdout and "name\\x1b[31m\\x07" in listing.stdout
    broken = ctl("show", hostile)
    assert "process  evil\\x1b[31mid (name\\x1b[31m\\x07)" in broken.stdout
    assert "error    reason \\x1b[31m\\r\\x7f" in broken.stdout
    as_json = json.loads(ctl("show", hostile, "--json").stdout)
    assert as_json["id"] == hostile  # JSON keeps the value, escaped the JSON way
    missing = ctl("show", f"no{ESC}such")
    assert missing.returncode == 1
    assert missing.stderr == "bureaucratctl: no process no\\x1b[31msuch\n"
    for result in (shown, listing, broken, missing):
        printed = result.stdout + result.stderr
        assert not any((0 < ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in printed)
        assert "\u202e" not in printed
