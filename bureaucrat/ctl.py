"""``bureaucratctl``: the operator's tool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bureaucrat import __version__
from bureaucrat.errors import DefinitionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bureaucratctl", description="Operate the bureaucrat workflow engine."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    validate = commands.add_parser(
        "validate", help="check a process definition and report its problems with line numbers"
    )
    validate.add_argument("file", metavar="FILE", type=Path, help="the definition's XML file")
    return parser


def validate(path: Path) -> int:
    from bureaucrat.definition import parse_definition

    try:
        definition = parse_definition(path.read_bytes())
    except OSError as error:
        print(f"{path}: cannot read: {error.strerror}", file=sys.stderr)
        return 1
    except DefinitionError as error:
        print(f"{path}:{error.line or 0}: {error.problem}", file=sys.stderr)
        return 1
    activities = len(definition.activities) - 1
    print(f"{path}: valid ({activities} activities)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return validate(args.file)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
