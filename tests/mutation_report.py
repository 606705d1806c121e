"""The score of the last ``make mutate`` run, per file, and the surviving mutants' diffs.

Run from the project's root after ``mutmut run`` (``make mutate`` does both)::

    python tests/mutation_report.py                     # the score, per file and in all
    python tests/mutation_report.py --survivors FILE    # and every survivor's diff, in FILE

The score counts a mutant as caught when a test failed or timed out with it. A mutant in a
function no fast test reaches ("no tests": the daemon's loop, run only by the end-to-end tests
in subprocesses) is counted apart: it is neither caught nor missed by the tests mutmut runs.

Re-checking. mutmut runs, against each mutant, every test that reaches its function; for the
engine's core (``step``, ``Runtime``, the sizes) that is the whole selection, some forty seconds
of CPU per surviving mutant. After writing tests, re-check the survivors (or the mutants not
checked yet) of some functions against the test files that matter to them::

    python tests/mutation_report.py --recheck survived --only bureaucrat.engine.operations \\
        --tests tests/test_operation_records.py tests/test_steering.py

``--keyword`` narrows the tests further (pytest's ``-k``), e.g. to the SQLite half of the store's
tests: ``--keyword "not end_to_end and not postgresql"``. ``--sample N`` re-checks N of the
mutants drawn at random (``--seed``): an estimate of a module's score when running them all
would take hours.

The tests are collected once; each mutant runs them in a child process forked from there (they
stop at the first failure). The verdicts are stored with mutmut's, so the report, ``mutmut
results`` and ``mutmut show`` include them. A mutant that survives there may still die to a
test left out: re-check without ``--tests`` (the whole selection) to be sure. The code mutmut
mutated must be the current one: run ``mutmut run`` (``make mutate``) after changing the
source, before re-checking; and a ``mutmut run`` after a change to the configuration starts
again from nothing, the verdicts of re-checks included.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

CAUGHT = {"killed", "timeout", "caught by type check", "segfault"}
VERDICTS = {0: "survived", 1: "killed", 3: "killed", 5: "no tests"}
"""pytest's exit status in a child, as mutmut reads it."""
CODES = {"survived": 0, "killed": 1, "no tests": 33, "timeout": 36}
"""The exit codes mutmut stores for each verdict."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--survivors", type=Path, help="write each survivor's diff to this file")
    parser.add_argument(
        "--recheck",
        metavar="STATUS",
        choices=["survived", "not checked", "no tests", "timeout"],
        help="run the mutants with this status again (then report)",
    )
    parser.add_argument(
        "--only", nargs="+", default=[""], metavar="PREFIX", help="mutant names to re-check"
    )
    parser.add_argument("--tests", nargs="+", metavar="FILE", help="test files to re-check with")
    parser.add_argument(
        "--keyword", metavar="EXPR", help="pytest's -k for the re-check, instead of the configured"
    )
    parser.add_argument(
        "--sample", type=int, metavar="N", help="re-check only N of them, drawn at random"
    )
    parser.add_argument("--seed", type=int, default=0, help="of the random draw (0)")
    parser.add_argument("--jobs", type=int, default=2, help="children at a time (2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (300)")
    args = parser.parse_args(argv)
    if not Path("mutants").is_dir():
        parser.error("no mutants/ here: run `make mutate` first, from the project's root")
    if args.recheck is not None:
        recheck(
            args.recheck,
            tuple(args.only),
            args.tests,
            args.keyword,
            (args.sample, args.seed),
            args.jobs,
            args.timeout,
        )
    return report(args.survivors)


def report(survivors_file: Path | None) -> int:
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
    if survivors_file is not None:
        with survivors_file.open("w") as out:
            for name, path in sorted(survivors):
                out.write(f"# {name}\n{get_diff_for_mutant(name, path=path)}\n\n")
        print(f"{len(survivors)} survivors' diffs written to {survivors_file}")
    return 0


def _row(label: str, counts: collections.Counter[str]) -> str:
    total = sum(counts.values())
    tested = counts["caught"] + counts["survived"]
    score = f"{100 * counts['caught'] / tested:.1f}%" if tested else "-"
    return (
        f"{label:<40} {total:>8} {counts['caught']:>8} {counts['survived']:>9}"
        f" {counts['no tests']:>9} {score:>7}"
    )


def recheck(
    status: str,
    prefixes: tuple[str, ...],
    tests: list[str] | None,
    keyword: str | None,
    sample: tuple[int | None, int],
    jobs: int,
    timeout: float,
) -> None:
    """Run the mutants with ``status`` whose names start with one of ``prefixes`` again."""
    from mutmut.configuration import config
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import setup_source_paths, walk_mutatable_files

    queue: list[tuple[str, Any]] = []
    for path in sorted(walk_mutatable_files()):
        data = SourceFileMutationData(path=path)
        data.load()
        data.meta_path = data.meta_path.absolute()  # the children run in mutants/
        queue += [
            (name, data)
            for name, code in data.exit_code_by_key.items()
            if status_by_exit_code[code] == status and name.startswith(prefixes)
        ]
    size, seed = sample
    if size is not None and size < len(queue):
        queue = sorted(random.Random(seed).sample(queue, size), key=lambda item: item[0])
    selection = tests or list(config().pytest_add_cli_args_test_selection)
    print(f"re-checking {len(queue)} mutants against {' '.join(selection)}", flush=True)
    pytest_args = [
        *("-q", "--tb=no", "-p", "no:cacheprovider", "-p", "no:randomly", "--rootdir=."),
        *config().pytest_add_cli_args,
        *(() if keyword is None else ("-k", keyword)),  # the last -k is the one pytest takes
        *selection,
    ]
    setup_source_paths()  # the mutated package first on the path, the original not at all
    os.chdir("mutants")
    os.environ.setdefault("BUREAUCRAT_TEST_WAIT", "10")  # the daemon loop's tests' deadlines
    import pytest

    runner = _Runner(queue, jobs, timeout)
    quiet = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(1)
    os.dup2(quiet, 1)  # pytest's collection report: not wanted
    try:
        pytest.main(pytest_args, plugins=[runner])
    finally:
        os.dup2(saved, 1)
    os.chdir("..")
    verdicts = runner.verdicts
    print("re-checked: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())))


class _Runner:
    """A pytest plugin: the tests are collected once, then each mutant runs them in a child
    forked from the collected session (``jobs`` at a time), stopping at the first failure."""

    def __init__(self, queue: list[tuple[str, Any]], jobs: int, timeout: float) -> None:
        self.queue = queue
        self.jobs = jobs
        self.timeout = timeout
        self.verdicts: collections.Counter[str] = collections.Counter()
        self.out = os.fdopen(os.dup(2), "w")  # the verdicts, one line each

    def pytest_runtestloop(self, session: Any) -> bool:
        running: dict[int, tuple[str, Any, float]] = {}
        while self.queue or running:
            while self.queue and len(running) < self.jobs:
                name, data = self.queue.pop(0)
                pid = os.fork()
                if pid == 0:
                    _run_child(name, session)
                running[pid] = (name, data, time.monotonic())
            pid, wait_status = _wait(running, self.timeout)
            name, data, _ = running.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            verdict = VERDICTS.get(code, "timeout" if code < 0 else f"exit status {code}")
            self.verdicts[verdict] += 1
            if verdict in CODES:
                data.load()  # another child's verdict on the same file may have been saved since
                data.exit_code_by_key[name] = CODES[verdict]
                data.save()
            print(f"{verdict:>9}  {name}", file=self.out, flush=True)
        return True  # the tests ran in the children: none here


def _run_child(name: str, session: Any) -> None:
    """Run the collected tests against mutant ``name``; exit 1 at the first failure, 0 when
    all pass, 5 when there are none (in the child)."""
    from mutmut.mutation.trampoline import set_mutant_under_test

    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    set_mutant_under_test(name)
    items = session.items
    code = 0 if items else 5
    try:
        for index, item in enumerate(items):
            following = items[index + 1] if index + 1 < len(items) else None
            item.config.hook.pytest_runtest_protocol(item=item, nextitem=following)
            if session.testsfailed:
                code = 1
                break
        if code == 1:
            session._setupstate.teardown_exact(None)  # the fixtures' own clean-up
    except BaseException:
        code = 1
    os._exit(code)


def _wait(running: dict[int, tuple[str, Any, float]], timeout: float) -> tuple[int, int]:
    """The next child to end, killing those past ``timeout`` seconds."""
    while True:
        now = time.monotonic()
        for pid, (_, _, started) in running.items():
            if now - started > timeout:
                os.kill(pid, signal.SIGKILL)
        pid, wait_status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, wait_status
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
