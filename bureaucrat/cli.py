"""``bureaucrat``: run the engine daemon (the original's flags: -f, -c, -p)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from bureaucrat import __version__
from bureaucrat.config import Config, load_config, with_absolute_database
from bureaucrat.errors import BureaucratError

LOG = logging.getLogger("bureaucrat")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucrat",
        description=(
            "The bureaucrat workflow engine daemon. It consumes launch, participant-response "
            "and event messages from RabbitMQ, advances the process instances it keeps in its "
            "database, and dispatches actions to Celery tasks and taskqueue workers."
        ),
        epilog=(
            "Without a config file it runs on defaults: RabbitMQ on localhost:5672 "
            "(guest/guest) and the SQLite database bureaucrat.db in the working directory. "
            "BUREAUCRAT_AMQP_URL and BUREAUCRAT_DATABASE_URL override the file. "
            "SIGTERM or SIGINT stops it cleanly."
        ),
    )
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="don't daemonize; log to stderr"
    )
    parser.add_argument("-c", "--config", metavar="CONFIG", help="path to config file (INI)")
    parser.add_argument(
        "-p", "--pid-file", metavar="PIDFILE", help="write the daemon's pid to PIDFILE (locked)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except BureaucratError as error:
        print(f"bureaucrat: {error}", file=sys.stderr)
        return 2
    config = with_absolute_database(config)
    problem = schema_problem(config)
    if problem is not None:
        print(f"bureaucrat: {problem}", file=sys.stderr)
        return 1
    if args.foreground:
        return run(config, foreground=True, pid_file=args.pid_file)
    return daemonize(config, args.pid_file)


def schema_problem(config: Config) -> str | None:
    """Why the daemon must not start on this database, if it must not (an older schema).

    A database that cannot be reached now is no reason: the daemon waits for it."""
    from bureaucrat.errors import SchemaOutdatedError, StoreError
    from bureaucrat.store import Store

    try:
        Store(config.database_url).close()
    except SchemaOutdatedError as error:
        return str(error)
    except StoreError:
        return None
    return None


def run(config: Config, *, foreground: bool, pid_file: str | None = None) -> int:
    from bureaucrat.daemon import Daemon, setup_logging

    if foreground:
        setup_logging(config, foreground=True)
        if pid_file:
            Path(pid_file).write_text(f"{os.getpid()}\n")
    for ignored in config.ignored:
        LOG.info("config: %s is not used by this version and is ignored", ignored)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    try:
        return daemon.run()
    finally:
        if foreground and pid_file:
            Path(pid_file).unlink(missing_ok=True)


def daemonize(config: Config, pid_file: str | None) -> int:
    import daemon as python_daemon
    from daemon import pidfile as pidlock

    from bureaucrat.daemon import setup_logging

    lock = None
    if pid_file:
        lock = pidlock.TimeoutPIDLockFile(os.path.abspath(pid_file), acquire_timeout=1)
        if _stale(lock):
            lock.break_lock()
        if lock.is_locked():
            print(f"bureaucrat: already running (pid file {pid_file})", file=sys.stderr)
            return 1
    streams = setup_logging(config, foreground=False)
    context = python_daemon.DaemonContext(
        working_directory="/", umask=0o027, pidfile=lock, files_preserve=streams
    )
    with context:
        return run(config, foreground=False)


def _stale(lock: object) -> bool:
    """Whether the pid file names a process that no longer runs."""
    pid = lock.read_pid()  # type: ignore[attr-defined]
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


if __name__ == "__main__":
    sys.exit(main())
