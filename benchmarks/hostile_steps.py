"""What a hostile definition costs, now that every step has its limits (``engine.Limits``).

Each case is one step of the pure engine (the launch) in a subprocess of its own, so that peak
memory is that case's alone. Prints, per case: how the instance ended (the fault code and the
limit its message names), the CPU seconds of the step, the peak resident memory of the process
(and what it was before the step), and the bytes of the state and of the messages the step sent.

    doubling      a 200-byte definition that doubles a list in a loop ([x, x] every round)
    burning       a loop whose condition sorts a 100,000-character list 280 times over
    fan-out       20 properties of 100,000 characters, then an all of 200 actions
    fan-out/big   the same with max_state_size raised to 100 MB: the output limit stops it
    foreach-10k   a legitimate heavy step: a foreach over 10,000 elements, for comparison

    .venv/bin/python benchmarks/hostile_steps.py [--case NAME]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bureaucrat.definition import parse_definition
from bureaucrat.engine import Limits, commands, events, step
from tests.test_budgets import BURNING, DOUBLING, FAN_OUT  # the cases the tests fault

FOREACH = """<process><foreach select="items">
  <switch>
    <case><condition>context["inst:current"] % 2 == 0</condition>
      <assign property="even">context.get("even", 0) + 1</assign></case>
    <default><assign property="odd">context.get("odd", 0) + 1</assign></default>
  </switch>
</foreach></process>"""

CASES: dict[str, tuple[str, dict[str, Any], Limits]] = {
    "doubling": (DOUBLING, {}, Limits()),
    "burning": (BURNING, {}, Limits()),
    "fan-out": (FAN_OUT, {}, Limits()),
    "fan-out/big": (FAN_OUT, {}, Limits(max_state_size=100_000_000)),
    "foreach-10k": (FOREACH, {"items": list(range(10_000))}, Limits()),
}
LIMIT_NAMES = ("step_budget", "max_state_size", "max_step_output")


def run_case(name: str) -> dict[str, Any]:
    """Run one case in this process; its figures."""
    source, fields, limits = CASES[name]
    definition = parse_definition(source)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.process_time()
    result = step(definition, None, events.Start("hostile", fields), 0.0, limits)
    cpu = time.process_time() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fault = result.state["fault"] or {}
    sent = [c.message for c in result.commands if isinstance(c, commands.DispatchWorkitem)] + [
        c.context
        for c in result.commands
        if isinstance(c, commands.ProcessFinished | commands.NotifyParent)
    ]
    return {
        "case": name,
        "status": result.state["status"],
        "code": fault.get("code", ""),
        "limit": next((n for n in LIMIT_NAMES if n in fault.get("message", "")), ""),
        "cpu": cpu,
        "rss_before_mb": before.ru_maxrss / 1024,
        "rss_peak_mb": peak / 1024,
        "state_bytes": len(_compact(result.state)),
        "sent_bytes": sum(len(_compact(message)) for message in sent),
    }


def _compact(value: Any) -> bytes:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run only this case")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process:
        print(json.dumps(run_case(args.case)))
        return
    names = [args.case] if args.case else list(CASES)
    header = f"{'case':<13}{'outcome':<42}{'cpu s':>7}{'peak MB':>9}{'(before)':>9}"
    print(header + f"{'state kB':>10}{'sent kB':>10}")
    for name in names:
        command = [sys.executable, __file__, "--case", name, "--in-process"]
        line = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        row = json.loads(line)
        outcome = row["status"] + (f" {row['code']} ({row['limit']})" if row["code"] else "")
        print(
            f"{name:<13}{outcome:<42}{row['cpu']:>7.2f}{row['rss_peak_mb']:>9.0f}"
            f"{row['rss_before_mb']:>9.0f}{row['state_bytes'] / 1e3:>10,.0f}"
            f"{row['sent_bytes'] / 1e3:>10,.0f}"
        )


if __name__ == "__main__":
    main()
