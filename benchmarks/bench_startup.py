"""Start-up cost of the command line: CPU time of ``pytun-hash --help``, ``hash``, ``predict`` and ``probe``
against a bare interpreter start (``python -c pass``) measured in the same run.

Run from the repository root, after ``make setup``:

    .venv/bin/python benchmarks/bench_startup.py [--runs N] [--json]

Each figure is the lowest CPU time (user + system, from ``getrusage`` of the child) of N runs (the
machines this runs on are shared: the lowest is the least disturbed). The package is byte-compiled
first, as an installed package is: with ``PYTHONDONTWRITEBYTECODE`` set (CI images often set it) every
run would otherwise compile every module from source, which measures the compiler. Targets (issue 17): ``--help``
and ``hash`` at most 2.5x the bare interpreter. ``--json`` prints the rows for ``make bench``'s summary.
"""

from __future__ import annotations

import argparse
import compileall
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.5

CASES: dict[str, list[str]] = {
    "pytun-hash --help": ["--help"],
    "pytun-hash hash (Microsoft vector)": [
        "hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794",
        "--dst", "161.142.100.80", "--dport", "1766",
    ],
    "pytun-hash predict (2 flows)": [
        "predict", "--key", "microsoft", "--queues", "4", "tcp,10.0.0.1:1,10.0.0.2:2", "udp,10.0.0.1:3,10.0.0.2:4",
    ],
    "pytun-hash probe": ["probe"],
}  # fmt: skip
TARGETED = ("pytun-hash --help", "pytun-hash hash (Microsoft vector)")


def cpu_seconds(command: list[str], runs: int) -> float:
    """The lowest child CPU time (user + system, seconds) of ``runs`` runs of ``command``."""
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return best


def main(argv: list[str] | None = None) -> int:
    """Measure and print; the exit status is 0 (targets missed are printed, not failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON for the summary")
    args = parser.parse_args(argv)
    compileall.compile_dir(ROOT / "pytun_hash", quiet=1)
    bare = cpu_seconds([sys.executable, "-c", "pass"], args.runs)
    rows: list[dict[str, object]] = [
        {"benchmark": "start-up", "case": "python -c pass (reference)", "value": f"{bare * 1000:.1f} ms"}
    ]
    for name, cli_args in CASES.items():
        seconds = cpu_seconds([sys.executable, "-m", "pytun_hash", *cli_args], args.runs)
        ratio = seconds / bare
        row: dict[str, object] = {
            "benchmark": "start-up",
            "case": name,
            "value": f"{seconds * 1000:.1f} ms",
            "ratio": f"{ratio:.2f}x",
        }
        if name in TARGETED:
            row["target"] = f"<= {TARGET}x"
            row["met"] = ratio <= TARGET
        rows.append(row)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"pytun-hash start-up, CPU time (best of {args.runs}), against a bare `python -c pass`")
    for row in rows:
        goal = f"  (target {row['target']}: {'met' if row['met'] else 'MISSED'})" if "target" in row else ""
        print(f"{row['case']!s:40s} {row['value']!s:>10s} {row.get('ratio', '')!s:>7s}{goal}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
