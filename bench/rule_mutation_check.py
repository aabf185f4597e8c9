"""Mutation check for the rule tests: switch each registered op's rule off and expect a failure.

For every op in the registry (rules and known blockers), the rule tests beside the families
(``onnxcompress/channels/rules/*_test.py``) run with ``ONNXCOMPRESS_BLOCK_OPS=<op>``, which
replaces the op's rule by a user blocker ("blocked by the user"). A tracked op then stops
propagating channels, and a known blocker's reason changes; either way some test must fail.
An op whose tests still pass "survives": its rule could be wrong without any test noticing.

Run: python bench/rule_mutation_check.py [-j JOBS]   (writes bench/RULE_MUTATION.md;
exits 1 if any op survives, 2 if the unmutated tests do not pass)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = "onnxcompress/channels/rules/"
REPORT = ROOT / "bench" / "RULE_MUTATION.md"
BLOCK_ENV = "ONNXCOMPRESS_BLOCK_OPS"


@dataclass
class Outcome:
    op: str
    kind: str
    rc: int
    seconds: float
    first_failure: str

    @property
    def killed(self) -> bool:
        return self.rc == 1  # pytest: tests ran and some failed

    @property
    def verdict(self) -> str:
        return "killed" if self.killed else ("SURVIVED" if self.rc == 0 else f"error (rc {self.rc})")


def run_tests(op: str | None) -> tuple[int, float, str]:
    """Run the rule tests (stop at the first failure) with ``op`` blocked by the user."""
    env = dict(os.environ, ONNXCOMPRESS_STRICT_RULES="1")
    env.pop(BLOCK_ENV, None)
    if op:
        env[BLOCK_ENV] = op
    cmd = [sys.executable, "-m", "pytest", TESTS, "-x", "-q", "-rf", "-p", "no:cacheprovider"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    m = re.search(r"^FAILED (\S+)", proc.stdout, re.M)
    return proc.returncode, time.perf_counter() - t0, m.group(1) if m else ""


def registry() -> list[tuple[str, str]]:
    """(op, kind) for every registered op: ``rule``, ``blocker``, or both (opset ranges)."""
    sys.path.insert(0, str(ROOT))
    from onnxcompress.channels.rules import registered_ops

    rules, blockers = set(registered_ops()), set(registered_ops(blockers=True))
    kinds = {op: "rule + blocker" if op in rules and op in blockers else ("rule" if op in rules else "blocker")
             for op in rules | blockers}
    return sorted(kinds.items())


def render(outcomes: list[Outcome], wall: float, baseline: float, jobs: int) -> str:
    killed = sum(o.killed for o in outcomes)
    lines = [
        "# Rule mutation check",
        "",
        "Each registered op's rule is switched off (`ONNXCOMPRESS_BLOCK_OPS=<op>`: the op blocks",
        "\"by the user\") and the rule tests in `onnxcompress/channels/rules/*_test.py` run with",
        "`pytest -x`. An op is *killed* when a test fails. Produced by `python bench/rule_mutation_check.py`.",
        "",
        f"**{killed} / {len(outcomes)} ops killed**; {len(outcomes) - killed} survived or errored.",
        f"Wall time {wall:.1f} s with {jobs} parallel jobs (one unmutated run: {baseline:.1f} s).",
        "",
        "| op | registry entry | result | first failing test | s |",
        "|---|---|---|---|---:|",
    ]
    for o in outcomes:
        test = o.first_failure.replace(TESTS, "") or "-"
        lines.append(f"| {o.op} | {o.kind} | {o.verdict} | `{test}` | {o.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel pytest runs")
    ap.add_argument("--ops", nargs="*", help="only these ops (default: the whole registry)")
    ap.add_argument("--no-report", action="store_true", help="do not write bench/RULE_MUTATION.md")
    args = ap.parse_args(argv)

    rc, baseline, failure = run_tests(None)
    if rc != 0:
        print(f"the rule tests fail without any mutation (rc {rc}, {failure}); fix them first", file=sys.stderr)
        return 2
    ops = [(op, kind) for op, kind in registry() if not args.ops or op in args.ops]
    t0 = time.perf_counter()

    def one(item: tuple[str, str]) -> Outcome:
        op, kind = item
        return Outcome(op, kind, *run_tests(op))

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(one, ops))
    wall = time.perf_counter() - t0

    width = max(len(o.op) for o in outcomes)
    for o in outcomes:
        print(f"{o.op:<{width}}  {o.kind:<14}  {o.verdict:<10}  {o.seconds:5.1f}s  {o.first_failure}")
    killed = sum(o.killed for o in outcomes)
    print(f"\n{killed}/{len(outcomes)} killed in {wall:.1f} s ({args.jobs} jobs; unmutated run {baseline:.1f} s)")
    if not args.no_report and not args.ops:
        REPORT.write_text(render(outcomes, wall, baseline, args.jobs))
        print(f"wrote {REPORT.relative_to(ROOT)}")
    return 0 if killed == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
