"""The score of the last ``make mutate`` run, per file, and the surviving mutants' diffs.

Run from the project's root after ``mutmut run`` (``make mutate`` does both)::

    python tests/mutation_report.py                     # the score, per file and in all
    python tests/mutation_report.py --survivors FILE    # and every survivor's diff, in FILE

The score counts a mutant as caught when a test failed or timed out with it. A mutant in a
function no fast test reaches ("no tests": the daemon's loop, run only by the end-to-end tests
in subprocesses) is counted apart: it is neither caught nor missed by the tests mutmut runs.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", type=Path, help="write each survivor's diff to this file")
    args = parser.parse_args(argv)
    if not Path("mutants").is_dir():
        parser.error("no mutants/ here: run `make mutate` first, from the project's root")

    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    totals: collections.Counter[str] = collections.Counter()
    survivors: list[tuple[str, Path]] = []
    print(f"{'file':<40} {'mutants':>8} {'caught':>8} {'survived':>9} {'no tests':>9} {'score':>7}")
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        counts: collections.Counter[str] = collections.Counter()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            counts["caught" if status in CAUGHT else status] += 1
            if status == "survived":
                survivors.append((name, path))
        if not counts:
            continue
        totals.update(counts)
        print(_row(str(path), counts))
    print(_row("in all", totals))
    others = sorted(set(totals) - {"caught", "survived", "no tests"})
    if others:
        print("also: " + ", ".join(f"{totals[s]} {s}" for s in others))
    if args.survivors is not None:
        with args.survivors.open("w") as out:
            for name, path in sorted(survivors):
                out.write(f"# {name}\n{get_diff_for_mutant(name, path=path)}\n\n")
        print(f"{len(survivors)} survivors' diffs written to {args.survivors}")
    return 0


def _row(label: str, counts: collections.Counter[str]) -> str:
    total = sum(counts.values())
    tested = counts["caught"] + counts["survived"]
    score = f"{100 * counts['caught'] / tested:.1f}%" if tested else "-"
    return (
        f"{label:<40} {total:>8} {counts['caught']:>8} {counts['survived']:>9}"
        f" {counts['no tests']:>9} {score:>7}"
    )


if __name__ == "__main__":
    sys.exit(main())
