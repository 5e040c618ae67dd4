"""The long fuzzing campaign's runner (``make fuzz``): it runs targets, counts their examples and reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fuzz.campaign import ROOT, TargetResult, report

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
    assert "passing" in (tmp_path / "test_decode_bpf_instruction.log").read_text()


def test_report_marks_failures_and_totals() -> None:
    results = [
        TargetResult("tests/fuzz/a.py::test_a", 100_000, 0, 12, 600.0, 0),
        TargetResult("tests/fuzz/b.py::test_b", 4_000, 1, 0, 60.0, 1),
    ]
    text = report(results, 100_000, 660.0, 2)
    assert "| a.py::test_a | 100,000 | 12 | 0 | 10.0 | ok |" in text
    assert "| b.py::test_b | 4,000 | 0 | 1 | 1.0 | FAILED (exit 1) |" in text
    assert "| **total** | 104,000 | 12 | 1 | 11.0 | 1/2 ok |" in text
