"""``make bench``: every benchmark of ``benchmarks/`` in one summary table.

Each script runs in its own process with ``--json`` and prints its rows (``benchmark``, ``case``,
``value``, and where it has them ``ratio`` against the reference measured in the same run, ``target``
and ``met``); this script prints them as one Markdown table and the count of targets met. The scripts
that need root (``bench_bpf``, ``bench_emulator``) are listed as skipped, with the reason, without it.

    .venv/bin/python benchmarks/summary.py [--only NAME ...] [--save FILE]

Benchmarks are not tests: a missed target is printed, and the exit status is 0 unless a script failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: script -> (needs root, extra arguments)
SCRIPTS: dict[str, tuple[bool, list[str]]] = {
    "bench_startup.py": (False, []),
    "bench_model.py": (False, []),
    "bench_capture.py": (False, []),
    "bench_bpf.py": (True, []),
    "bench_emulator.py": (True, []),
}


def run(script: str, root_needed: bool, extra: list[str]) -> tuple[list[dict[str, object]], str | None]:
    """The rows of one script, or none and why."""
    if not (HERE / script).exists():
        return [], "not in this checkout"
    if root_needed and os.geteuid() != 0:
        return [], "needs root (bpf(2), namespaces): run make bench with sudo"
    done = subprocess.run(
        [sys.executable, str(HERE / script), "--json", *extra], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"failed (exit {done.returncode}): {last}"
    lines = done.stdout.strip().splitlines()
    rows = json.loads(lines[-1]) if lines else []
    return list(rows), None


def main(argv: list[str] | None = None) -> int:
    """Run the scripts and print the table; exit 1 when a script failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="scripts to run (e.g. bench_model.py)")
    parser.add_argument("--save", metavar="FILE", help="also write every row as JSON to FILE")
    args = parser.parse_args(argv)
    chosen = {name: how for name, how in SCRIPTS.items() if not args.only or name in args.only}
    rows: list[dict[str, object]] = []
    notes: list[str] = []
    failed = False
    for script, (root_needed, extra) in chosen.items():
        print(f"running {script} ...", file=sys.stderr, flush=True)
        got, why = run(script, root_needed, extra)
        rows.extend(got)
        if why is not None:
            notes.append(f"{script}: {why}")
            failed |= why.startswith("failed")
    print("| benchmark | case | figure | vs reference | target | |")
    print("|---|---|---:|---:|---|---|")
    for row in rows:
        verdict = ("met" if row["met"] else "**missed**") if "met" in row else ""
        cells = (row["benchmark"], row["case"], row["value"], row.get("ratio", ""), row.get("target", ""), verdict)
        print("| " + " | ".join(str(c) for c in cells) + " |")
    targeted = [row for row in rows if "met" in row]
    print(f"\n{sum(bool(r['met']) for r in targeted)}/{len(targeted)} targets met")
    for note in notes:
        print(f"skipped {note}")
    if args.save:
        Path(args.save).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
