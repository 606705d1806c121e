"""``bureaucrat``: the engine daemon's command line (the original's flags)."""

from __future__ import annotations

import argparse
import sys

from bureaucrat import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucrat",
        description=(
            "The bureaucrat workflow engine daemon: consumes launch, response and event "
            "messages from RabbitMQ and advances persisted process instances."
        ),
        epilog="Without a config file the engine runs on defaults: local RabbitMQ, SQLite file.",
    )
    parser.add_argument("-f", "--foreground", action="store_true", help="don't daemonize")
    parser.add_argument("-c", "--config", metavar="CONFIG", help="path to config file")
    parser.add_argument("-p", "--pid-file", metavar="PIDFILE", help="path to the pid file")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    print(
        "bureaucrat: the daemon is not available in this version yet; "
        "use bureaucrat.testing.run_process to run definitions locally",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
