"""``pytun-hash conformance``: modes, exit status, JSON and the Markdown report (the suite itself faked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytun_hash._abi import Revision
from pytun_hash.conformance import Mode, SuiteResult
from tests.conformance.samples import sample_suite


@pytest.fixture
def fake_suite(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def run_suite(mode: Mode, *, revision: Revision | None, rules: list[str] | None, progress: Any) -> SuiteResult:
        calls.append({"mode": mode, "revision": revision, "rules": rules})
        suite = sample_suite()
        return SuiteResult(suite.kernel, mode, revision, suite.results)

    monkeypatch.setattr("pytun_hash.cli.conformance.run_suite", run_suite)
    return calls


def test_cli_modes_exit_status_json_and_report(cli: Any, fake_suite: list[dict[str, Any]], tmp_path: Path) -> None:
    report = tmp_path / "conformance.md"
    run = cli("conformance", "--emulate", "rfc", "--rules", "uapi.*,data.vlan", "--report", str(report), "--json")
    assert run.code == 1  # a deviation
    doc = run.json()
    assert doc["ok"] is False and doc["counts"] == {"pass": 1, "deviation": 1, "skip": 1}
    assert doc["report"] == str(report)
    assert fake_suite[-1] == {"mode": Mode.EMULATED, "revision": Revision.RFC, "rules": ["uapi.*", "data.vlan"]}
    assert "uapi.key-length" in report.read_text() and os.stat(report).st_mode & 0o777 == 0o600
    again = cli("conformance", "--emulate", "rfc", "--report", str(report))
    assert again.code == 2 and "--report" in again.err and len(fake_suite) == 1  # refused before the run
    ebpf = cli("conformance", "--backend", "ebpf")
    assert fake_suite[-1]["mode"] is Mode.EBPF and "DEVIATION" in ebpf.out and ebpf.code == 1
    native = cli("conformance", "--revision", "v12", "--rules", "data.*")
    assert fake_suite[-1] == {"mode": Mode.NATIVE, "revision": Revision.V12, "rules": ["data.*"]} and native.code == 1


def test_cli_natively_without_hash_ioctls_exits_4(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def run_suite(mode: Mode, **_: Any) -> SuiteResult:
        return SuiteResult("6.18", mode, None, ())

    monkeypatch.setattr("pytun_hash.cli.conformance.run_suite", run_suite)
    run = cli("conformance", "--json")
    assert run.code == 4 and run.json()["ok"] is False and "--emulate" in run.err


def test_cli_mutually_exclusive_modes(cli: Any) -> None:
    run = cli("conformance", "--emulate", "rfc", "--revision", "v12")
    assert run.code == 2 and "not allowed with" in run.err


# ---------------------------------------------------------------- the whole suite, end to end

RFC_DEPARTURES = {
    # The RFC's known departures, one rule each (the list): byte-reversed Toeplitz words, the
    # key-length helper, zero entries as "unclassified" (and unclassified to table[0]), fragments as
    # TCP/UDP with ports 0, no hash with one queue, the silent RSS/steering trade.
    "data.toeplitz",
    "uapi.key-length",
    "data.unclassified",
    "data.fragments",
    "data.single-queue-report",
    "uapi.exclusion",
}


@pytest.fixture
def emulated_suite_ok() -> None:
    from tests.conformance.test_uapi import _emulator_skip_reason

    reason = _emulator_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.kernel
@pytest.mark.bpf
@pytest.mark.usefixtures("emulated_suite_ok")
@pytest.mark.parametrize(
    ("revision", "deviations", "skips"),
    [
        ("rfc", RFC_DEPARTURES, set()),
        ("v3", {"uapi.key-length", "data.single-queue-report"}, set()),
        ("v10", {"uapi.key-length", "data.single-queue-report"}, set()),
        ("v12", {"uapi.key-length", "data.single-queue-report"}, {"uapi.unknown-flags", "uapi.padding"}),
    ],
)
def test_the_whole_suite_under_each_emulated_revision(
    cli: Any, revision: str, deviations: set[str], skips: set[str], tmp_path: Path
) -> None:
    report = tmp_path / "report.md"
    run = cli("conformance", "--emulate", revision, "--json", "--report", str(report))
    assert run.code == 1, run.err
    doc = run.json()
    by_status: dict[str, set[str]] = {"pass": set(), "deviation": set(), "skip": set()}
    for rule in doc["rules"]:
        by_status[rule["status"]].add(rule["id"])
    assert by_status["deviation"] == deviations and by_status["skip"] == skips
    assert len(doc["rules"]) == 22 and doc["rules"][0]["id"].startswith("uapi.")  # uapi first, then data
    text = report.read_text()
    assert all(f"### `{rule}`: deviation" in text for rule in deviations)


@pytest.mark.kernel
@pytest.mark.bpf
def test_the_ebpf_backend_passes_every_data_rule(cli: Any) -> None:
    run = cli("conformance", "--backend", "ebpf", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    statuses = {r["id"]: r["status"] for r in doc["rules"]}
    assert doc["ok"] and doc["mode"] == "ebpf" and doc["revision"] is None
    assert all(s == "skip" for i, s in statuses.items() if i.startswith("uapi."))
    assert {i for i, s in statuses.items() if s == "skip" and i.startswith("data.")} == {
        "data.single-queue-report",
        "data.read-time-report",
    }
    assert not any(s == "deviation" for s in statuses.values())
