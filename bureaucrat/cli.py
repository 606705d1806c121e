"""``bureaucrat``: run the engine daemon (the original's flags: -f, -c, -p).

Without ``-c`` the config file is the first of ``BUREAUCRAT_CONFIG``,
``/etc/bureaucrat/bureaucrat.conf`` and the original's ``/etc/taskqueue/config.ini``
(``config.find_config``); with none of them, the built-in defaults.

The daemon starts with a umask of at least 027, so that its database file and log file are
private to its user and group, in the foreground too. Its pid file (``-p``) is created
exclusively, never through a symbolic link, and locked for the daemon's lifetime: a second
daemon with the same pid file refuses to start and names the pid that holds it, a pid file
that no process holds (left by a crash) is replaced, and on exit the file is removed if it is
still the daemon's own.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import stat
import sys
from contextlib import suppress

from bureaucrat import __version__
from bureaucrat.config import (
    CONFIG_VARIABLE,
    SEARCH_PATHS,
    Config,
    find_config,
    load_config,
    with_absolute_database,
)
from bureaucrat.ctl import printable
from bureaucrat.errors import BureaucratError, ConfigError

LOG = logging.getLogger("bureaucrat")
UMASK = 0o027
"""Permissions the daemon never grants: write to its group, anything to others."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucrat",
        description=(
            "The bureaucrat workflow engine daemon. It consumes launch, participant-response "
            "and event messages from RabbitMQ, advances the process instances it keeps in its "
            "database, and dispatches actions to Celery tasks and taskqueue workers."
        ),
        epilog=(
            f"Without -c it reads the first config file of: ${CONFIG_VARIABLE}, "
            f"{', '.join(str(path) for path in SEARCH_PATHS[:-1])}, then the original "
            f"bureaucrat's {SEARCH_PATHS[-1]}. With none of them it runs on defaults: "
            "RabbitMQ on localhost:5672 (guest/guest) and the SQLite database bureaucrat.db in "
            "the working directory. In a config file, keys in [DEFAULT] apply to every section. "
            "BUREAUCRAT_AMQP_URL and BUREAUCRAT_DATABASE_URL override the file. "
            "SIGTERM or SIGINT stops it cleanly. Exit status: 0 after a clean stop, 1 when it "
            "cannot start (already running, an outdated database schema), 2 for a config that "
            "cannot be used (including queues that exist in RabbitMQ with other arguments)."
        ),
    )
    parser.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="don't daemonize: stay attached to the terminal and log to stderr",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help=(
            f"path to the config file (INI); without it: ${CONFIG_VARIABLE}, "
            f"{', '.join(str(path) for path in SEARCH_PATHS)}, else defaults"
        ),
    )
    parser.add_argument(
        "-p",
        "--pid-file",
        metavar="PIDFILE",
        help=(
            "write the daemon's pid to PIDFILE, locked while it runs (a second daemon with "
            "the same PIDFILE refuses to start); none by default"
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = args.config if args.config is not None else find_config()
    try:
        config = load_config(path)
    except ConfigError as error:
        return _complain(error, 2)
    mask = restrict_umask()
    config = with_absolute_database(config)
    pid_file = PidFile(args.pid_file) if args.pid_file else None
    try:
        if pid_file is not None:
            pid_file.acquire()
        problem = schema_problem(config)
        if problem is not None:
            return _complain(problem, 1)
        if args.foreground:
            return run(config, foreground=True, pid_file=pid_file, source=path)
        return daemonize(config, pid_file, mask, source=path)
    except ConfigError as error:
        return _complain(error, 2)
    except BureaucratError as error:
        return _complain(error, 1)
    finally:
        if pid_file is not None:
            pid_file.release()


def _complain(problem: object, status: int) -> int:
    print(f"bureaucrat: {printable(problem)}", file=sys.stderr)
    return status


def restrict_umask() -> int:
    """Add 027 to the process's umask (a stricter one stays); the new umask."""
    mask = os.umask(UMASK) | UMASK
    os.umask(mask)
    return mask


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


def run(
    config: Config,
    *,
    foreground: bool,
    pid_file: PidFile | None = None,
    source: str | os.PathLike[str] | None = None,
) -> int:
    """Serve until stopped; 2 when the config cannot be served (``TopologyError``).

    ``source`` is the config file ``config`` was read from (None: the defaults)."""
    from bureaucrat.daemon import Daemon, setup_logging

    if foreground:
        setup_logging(config, foreground=True)
    daemon = Daemon(config)
    daemon.install_signal_handlers()  # before the pid file names it: `kill` then stops it cleanly
    if pid_file is not None:
        pid_file.write(os.getpid())
    LOG.info("config: %s", "built-in defaults" if source is None else os.fspath(source))
    for ignored in config.ignored:
        LOG.info("config: %s is not used by this version and is ignored", ignored)
    try:
        return daemon.run()
    except ConfigError as error:  # retrying cannot help: an operator has to act
        LOG.critical("stopping: %s", error)
        if foreground and not _logs_to_stderr():
            _complain(error, 2)
        return 2


def _logs_to_stderr() -> bool:
    return any(
        getattr(handler, "stream", None) is sys.stderr for handler in logging.getLogger().handlers
    )


def daemonize(
    config: Config,
    pid_file: PidFile | None,
    umask: int,
    source: str | os.PathLike[str] | None = None,
) -> int:
    import daemon as python_daemon

    from bureaucrat.daemon import setup_logging

    streams: list[object] = list(setup_logging(config, foreground=False))
    if pid_file is not None:
        streams.append(pid_file.fd)
    context = python_daemon.DaemonContext(
        working_directory="/", umask=umask, files_preserve=streams
    )
    with context:  # the parent exits here; the daemon goes on
        return run(config, foreground=False, pid_file=pid_file, source=source)


class PidFile:
    """A pid file, created exclusively and held with ``flock`` while the daemon runs.

    The lock, not the pid written in it, says whether a daemon runs: a file that nobody holds
    is stale, whatever it says. The descriptor survives daemonising (the lock goes with it)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.fd: int | None = None

    def acquire(self) -> None:
        """Create and lock the file; ``BureaucratError`` if a daemon holds it or it is not a
        plain file (a symbolic link, a directory...)."""
        for _attempt in range(10):  # each retry means another daemon changed the file meanwhile
            try:
                fd = os.open(self.path, _CREATE, 0o644)
            except FileExistsError:
                self._remove_stale()
                continue
            except OSError as error:
                raise BureaucratError(
                    f"cannot create pid file {self.path}: {error.strerror}"
                ) from None
            if _lock(fd) and self._is_ours(fd):
                self.fd = fd
                return
            os.close(fd)
        raise BureaucratError(f"pid file {self.path} keeps changing: is another daemon starting?")

    def write(self, pid: int) -> None:
        """Write ``pid`` (after daemonising: the daemon's own)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        """Remove the file if it is still ours, and unlock it."""
        if self.fd is None:
            return
        if self._is_ours(self.fd):
            with suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = None

    def _remove_stale(self) -> None:
        """Remove the existing file if no process holds it; raise if one does."""
        try:
            fd = os.open(self.path, _INSPECT)
        except FileNotFoundError:
            return  # removed meanwhile
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise BureaucratError(
                    f"pid file {self.path} is a symbolic link: refusing to use it"
                ) from None
            raise BureaucratError(f"cannot open pid file {self.path}: {error.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BureaucratError(f"pid file {self.path} is not a regular file")
            if not _lock(fd):
                raise BureaucratError(
                    f"already running: pid {_read_pid(fd)} holds the pid file {self.path}"
                )
            if self._is_ours(fd):  # stale, and still the file at the path: replace it
                os.unlink(self.path)
        finally:
            os.close(fd)

    def _is_ours(self, fd: int) -> bool:
        """Whether the path still names the file open as ``fd`` (not a newer one)."""
        try:
            here = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_INSPECT = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_pid(fd: int) -> str:
    """The pid a held pid file names, for messages ("?" while its daemon is starting)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "?"


if __name__ == "__main__":
    sys.exit(main())
