"""``bureaucrat-web``: serve the console with uvicorn.

    bureaucrat-web -c /etc/bureaucrat/bureaucrat.conf [--host 0.0.0.0] [--port 8080]

It reads the same config file as the daemon (the database and the broker) and its ``[web]``
section: ``host``, ``port`` and ``token`` (the operator token; none: read-only).
"""

from __future__ import annotations

import argparse
import logging
import sys

from bureaucrat import __version__
from bureaucrat.config import find_config, load_config, with_absolute_database
from bureaucrat.errors import BureaucratError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucrat-web",
        description="The bureaucrat web console: instances, their diagrams, context and journal, "
        "definitions and schedules, and operations on them (terminate, retry, pause, resume, "
        "set, rerun, restart) when an operator token is configured. Also a JSON API under "
        "/api/.",
        epilog="Config: the daemon's file, with a [web] section: host (default 127.0.0.1), port "
        "(default 8080) and token (default none: read-only; at least 16 characters; "
        "$BUREAUCRAT_WEB_TOKEN wins over it). Reading needs no token: keep the console on a "
        "trusted address or behind an authenticating proxy. Exit status: 0 when stopped, 1 "
        "when it cannot start (e.g. the database), 2 on a bad config or usage.",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        help="bureaucrat config file (default: $BUREAUCRAT_CONFIG, else "
        "/etc/bureaucrat/bureaucrat.conf, else /etc/taskqueue/config.ini, else built-in "
        "defaults, as the daemon)",
    )
    parser.add_argument("--host", help="address to listen on (default: [web] host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: [web] port, 8080)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = with_absolute_database(load_config(args.config or find_config()))
    except ConfigError as error:
        print(f"bureaucrat-web: {error}", file=sys.stderr)
        return 2
    if args.port is not None and not 1 <= args.port <= 65535:
        print("bureaucrat-web: --port must be from 1 to 65535", file=sys.stderr)
        return 2
    import uvicorn

    from bureaucrat.web.app import create_app

    logging.basicConfig(level=config.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(config)
    except BureaucratError as error:
        print(f"bureaucrat-web: {error}", file=sys.stderr)
        return 1
    if config.web_token is None:
        logging.getLogger(__name__).info("no [web] token: the console is read-only")
    uvicorn.run(
        app,
        host=args.host or config.web_host,
        port=args.port or config.web_port,
        log_level=config.log_level.lower(),
        proxy_headers=True,
        server_header=False,
        ws="none",  # the console has no websockets: none are accepted
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
