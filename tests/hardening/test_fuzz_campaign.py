"""The long fuzzing campaign's runner (``make fuzz``): it runs targets, counts their examples and reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fuzz.campaign import ROOT, TargetResult, finished, report

TARGET = "tests/fuzz/test_fuzz_netlink.py::test_decode_bpf_instruction"


def test_campaign_runs_a_target_and_reports_its_examples(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [
            sys.executable,
            "tests/fuzz/campaign.py",
            "--examples",
            "50",
            "--jobs",
            "1",
            "--logs",
            str(tmp_path),
            "--report",
            str(out),
            TARGET,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert "| test_fuzz_netlink.py::test_decode_bpf_instruction | 50 | 0 | 0 |" in text
    assert "1/1 ok" in text
    log = tmp_path / "test_decode_bpf_instruction.log"
    assert "passing" in log.read_text()
    # --resume takes the finished target from its log: nothing runs again, the report is the same.
    before = log.stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, "tests/fuzz/campaign.py", "--examples", "50", "--resume", "--logs", str(tmp_path), TARGET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0 and log.stat().st_mtime_ns == before, again.stdout + again.stderr
    assert "| test_fuzz_netlink.py::test_decode_bpf_instruction | 50 | 0 | 0 |" in again.stdout


def test_report_marks_failures_and_totals() -> None:
    results = [
        TargetResult("tests/fuzz/a.py::test_a", 100_000, 0, 12, 600.0, 0),
        TargetResult("tests/fuzz/b.py::test_b", 4_000, 1, 0, 60.0, 1),
    ]
    text = report(results, 100_000, 660.0, 2)
    assert "| a.py::test_a | 100,000 | 12 | 0 | 10.0 | ok |" in text
    assert "| b.py::test_b | 4,000 | 0 | 1 | 1.0 | FAILED (exit 1) |" in text
    assert "| **total** | 104,000 | 12 | 1 | 11.0 | 1/2 ok |" in text


STATS = """
tests/fuzz/test_fuzz_cli.py::test_cli_model_commands:

  - during generate phase (5436.12 seconds):
    - Typical runtimes: ~ 1-3 ms, of which < 1ms in data generation
    - {passing} passing, {failing} failing, and 1,234 invalid examples
"""


def _log(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / f"{name}.log").write_text(text)


def test_finished_reads_a_passing_run_back_and_nothing_else(tmp_path: Path) -> None:
    node = "tests/fuzz/test_fuzz_cli.py::test_cli_model_commands"
    assert finished(node, 100_000, tmp_path) is None  # no log
    done = STATS.format(passing=100000, failing=0).replace("1,234", "1234")
    _log(tmp_path, "test_cli_model_commands", done + "\n1 passed in 5437.50s (1:30:37)\n")
    result = finished(node, 100_000, tmp_path)
    assert result is not None and result.ok and result.passing == 100_000 and result.invalid == 1234
    assert result.seconds == 5437.5
    assert finished(node, 200_000, tmp_path) is None  # fewer examples than asked for
    _log(tmp_path, "test_cli_model_commands", STATS.format(passing=100, failing=1) + "\n1 failed in 3.0s\n")
    assert finished(node, 100, tmp_path) is None  # a failed run is run again
    _log(tmp_path, "test_cli_model_commands", "Fatal Python error: Aborted\n")
    assert finished(node, 100, tmp_path) is None  # a run that never finished


def test_a_hang_python_dropped_is_raised_when_the_call_returns() -> None:
    import contextlib
    import time

    import pytest

    from tests.fuzz.harness import Hang, watchdog

    # The inner suppress stands for a garbage-collector callback, where Python drops the exception.
    with pytest.raises(Hang, match="where Python drops it"), watchdog(0.05), contextlib.suppress(Hang):
        time.sleep(0.5)
