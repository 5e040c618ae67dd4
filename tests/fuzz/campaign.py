"""Run the long fuzzing campaign: every target in its own pytest process, a few at a time, with a report.

``make fuzz`` runs this. Each target runs under the ``long`` hypothesis profile (100,000 examples
unless ``--examples`` says otherwise) in a separate process, so one target's failure or hang cannot
stop the others and each gets its own statistics. The report (Markdown, one row per target: examples
that passed, invalid examples, failures, wall time) goes to standard output and, with ``--report``,
to a file (replaced on each run, never through a symlink, mode 0600: pytun_hash._files); each
target's full pytest output is kept under ``--logs``. Exit status 1 when a target failed, 2 when
the report cannot be written there (checked before the campaign starts).

    python tests/fuzz/campaign.py --jobs 2 --report fuzz-report.md
    python tests/fuzz/campaign.py -k decode --examples 10000

``--resume`` takes the targets whose log under ``--logs`` shows a finished, passing run of at least
``--examples`` examples as done (their figures come from the log) and runs only the others: a
campaign of hours can be stopped and carried on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytun_hash._files import check_target, write_file
from pytun_hash.errors import ValidationError

ROOT = Path(__file__).resolve().parents[2]
FUZZ_DIR = Path(__file__).resolve().parent

_PASSING = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid")
# pytest's last line: "1 passed in 5437.50s (1:30:37)", framed with '=' without -q.
_FINISHED = re.compile(r"^=*\s*(\d+ (?:passed|failed)[^=\n]*) in ([\d.]+)s", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One target's run: its node id, example counts from hypothesis's statistics, and the outcome."""

    node_id: str
    passing: int
    failing: int
    invalid: int
    seconds: float
    returncode: int

    @property
    def ok(self) -> bool:
        """Whether pytest passed the target."""
        return self.returncode == 0 and self.failing == 0


def collect(keyword: str | None) -> list[str]:
    """The node ids of the fuzz targets (optionally filtered by a pytest ``-k`` expression)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(FUZZ_DIR)]
    if keyword:
        command += ["-k", keyword]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in out.splitlines() if "::" in line]


def _log_path(node_id: str, logs: Path) -> Path:
    return logs / (node_id.rsplit("::", 1)[-1] + ".log")


def _counts(output: str) -> tuple[int, int, int]:
    counts = [tuple(int(g) for g in m.groups()) for m in _PASSING.finditer(output)]
    # The statistics list the generate phase (and shrink phase, after a failure) separately.
    return sum(c[0] for c in counts), sum(c[1] for c in counts), sum(c[2] for c in counts)


def finished(node_id: str, examples: int, logs: Path) -> TargetResult | None:
    """The result of an earlier passing run of ``node_id`` with at least ``examples`` examples, from its log."""
    path = _log_path(node_id, logs)
    try:
        output = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    summaries = _FINISHED.findall(output)
    passing, failing, invalid = _counts(output)
    if not summaries or any(word in summaries[-1][0] for word in ("failed", "error")) or failing:
        return None
    if passing < examples:
        return None
    seconds = float(summaries[-1][1])
    return TargetResult(node_id, passing, failing, invalid, seconds, 0)


def run_target(node_id: str, examples: int, logs: Path) -> TargetResult:
    """Run one target under the long profile; its output goes to ``logs``."""
    env = dict(os.environ, HYPOTHESIS_PROFILE="long", PYTUN_HASH_FUZZ_EXAMPLES=str(examples))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics", node_id]
    start = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    # Each run replaces its log; written like every file the project names (never through a symlink).
    write_file(str(_log_path(node_id, logs)), (proc.stdout + proc.stderr).encode(), "logs", overwrite=True)
    passing, failing, invalid = _counts(proc.stdout)
    return TargetResult(node_id, passing, failing, invalid, seconds, proc.returncode)


def report(results: Sequence[TargetResult], examples: int, wall: float, jobs: int) -> str:
    """The campaign as a Markdown table with a totals line."""
    lines = [
        f"Fuzzing campaign: {len(results)} targets, {examples:,} examples each requested, {jobs} at a time, "
        f"{wall / 60:.1f} min wall.",
        "",
        "| target | passing | invalid | failing | minutes | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        name = r.node_id.split("/")[-1]
        verdict = "ok" if r.ok else f"FAILED (exit {r.returncode})"
        lines.append(f"| {name} | {r.passing:,} | {r.invalid:,} | {r.failing} | {r.seconds / 60:.1f} | {verdict} |")
    lines.append(
        f"| **total** | {sum(r.passing for r in results):,} | {sum(r.invalid for r in results):,} | "
        f"{sum(r.failing for r in results)} | {sum(r.seconds for r in results) / 60:.1f} | "
        f"{sum(r.ok for r in results)}/{len(results)} ok |"
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the campaign; the exit status is 1 when a target failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=100_000, help="examples per target (default 100,000)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="targets run at once (default: CPUs)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression selecting targets")
    parser.add_argument("targets", nargs="*", help="node ids to run, in this order (default: every target)")
    parser.add_argument("--logs", type=Path, default=ROOT / ".fuzz-logs", help="directory for each target's output")
    parser.add_argument("--report", type=Path, help="also write the Markdown report here")
    parser.add_argument(
        "--resume", action="store_true", help="skip targets whose log shows a finished, passing run of --examples"
    )
    args = parser.parse_args(argv)

    if args.report:
        # Checked before the hours of fuzzing, not only when the report is written at the end.
        try:
            check_target(str(args.report), "report", overwrite=True)
        except ValidationError as exc:
            print(f"campaign: {exc}", file=sys.stderr)
            return 2
    targets = args.targets or collect(args.keyword)
    if not targets:
        print("no fuzz targets selected", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    earlier = {t: finished(t, args.examples, args.logs) for t in targets} if args.resume else {}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {t: pool.submit(run_target, t, args.examples, args.logs) for t in targets if not earlier.get(t)}
        results = []
        for target in targets:
            done = earlier.get(target)
            result = done if done is not None else futures[target].result()
            results.append(result)
            print(
                f"{result.node_id}: {result.passing:,} passing, {result.failing} failing, "
                f"{result.seconds / 60:.1f} min",
                flush=True,
            )
    text = report(results, args.examples, time.monotonic() - start, args.jobs)
    print(text)
    if args.report:
        write_file(str(args.report), text.encode(), "report", overwrite=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
