"""``pytun-hash demo``: end to end as root, its failure verdict, and the message without root."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytun_hash.config import VnetHashConfig
from pytun_hash.device import thread_netns_inode
from tests import tracking
from tests.cli.helpers import run_as_nobody, tun_open_to_nobody
from tests.cli.test_readable_output import eighths

DEMO_KEYS = {
    "ok", "device", "queues", "backend", "revision", "reason", "semantics", "config", "reports", "flows", "sent",
    "received", "matched", "mismatches", "missing", "duplicates", "foreign", "per_queue", "emulated", "elapsed_s",
}  # fmt: skip


@pytest.mark.kernel
@pytest.mark.bpf
def test_demo_every_packet_on_its_predicted_queue(cli: Any) -> None:
    inode = thread_netns_inode()

    run = cli("demo", "--json")

    assert run.code == 0, run.out + run.err
    doc = run.json()
    assert set(doc) == DEMO_KEYS
    assert doc["ok"] is True and doc["queues"] == 4 and doc["flows"] == 66 and doc["sent"] == 66
    assert doc["received"] == doc["matched"] == 66
    assert doc["mismatches"] == doc["missing"] == doc["duplicates"] == [] and doc["foreign"] == 0
    per_queue = doc["per_queue"]
    assert [q["queue"] for q in per_queue] == [0, 1, 2, 3]
    assert sum(q["packets"] for q in per_queue) == sum(q["predicted"] for q in per_queue) == 66
    assert all(q["packets"] == q["predicted"] == q["matched"] > 0 for q in per_queue)
    assert all(
        s["report"] in {"TCPV4", "UDPV4", "TCPV6", "UDPV6", "IPV4", "IPV6"} for q in per_queue for s in q["samples"]
    )
    config = VnetHashConfig.from_mapping(doc["config"])
    assert config.rss and config.report and len(config.indirection_table) == 128
    if doc["backend"] == "ebpf":
        assert doc["reports"] == "computed" and doc["revision"] is None
    # Nothing is left behind, and this thread is where it was.
    assert tracking.devices_left(inode) == [] and thread_netns_inode() == inode


@pytest.mark.kernel
@pytest.mark.bpf
@pytest.mark.parametrize("revision", ["rfc", "v3", "v10", "v12"])
def test_demo_through_the_native_backend_of_an_emulated_kernel(cli: Any, revision: str) -> None:
    run = cli("demo", "--emulate", revision, "--json")
    assert run.code == 0, run.out + run.err
    doc = run.json()
    assert set(doc) == DEMO_KEYS
    assert doc["backend"] == "native" and doc["revision"] == revision and doc["reports"] == "kernel"
    assert doc["semantics"] == ("rfc-2023" if revision == "rfc" else "spec")
    # Every frame's queue, hash value and report matched; the emulator wrote each header.
    assert doc["received"] == doc["matched"] == doc["sent"] == 66 and doc["mismatches"] == []
    assert doc["emulated"]["revision"] == revision and doc["emulated"]["reads"] == 66
    assert doc["emulated"]["matched"] == 66
    assert all(q["packets"] == q["matched"] > 0 for q in doc["per_queue"])


@pytest.mark.kernel
@pytest.mark.bpf
def test_demo_on_the_ebpf_backend_whatever_the_kernel_has(cli: Any) -> None:
    run = cli("demo", "--backend", "ebpf", "--json")
    doc = run.json()
    assert run.code == 0 and doc["ok"] is True, run.out + run.err
    assert doc["backend"] == "ebpf" and doc["revision"] is None and doc["semantics"] == "spec"
    assert doc["reports"] == "computed" and doc["emulated"] is None
    assert doc["received"] == doc["matched"] == 66


@pytest.mark.kernel
@pytest.mark.bpf
def test_predicting_an_rfc_kernel_with_the_specification_fails(cli: Any) -> None:
    # What the first wave's demo did on a real RFC kernel (0/66 there too).
    run = cli("demo", "--emulate", "rfc", "--semantics", "spec", "--json")
    doc = run.json()
    assert run.code == 1 and doc["ok"] is False and doc["semantics"] == "spec"
    assert doc["received"] == 66 and doc["matched"] < 10
    assert all("kernel reported" in m["problem"] for m in doc["mismatches"])


def chart_row(line: str) -> tuple[int, str, int, str]:
    """``(queue, "observed" or "predicted", packets, bar)`` from a line of demo's queue chart
    (a predicted line names no queue: it is the one of the observed line above it)."""
    match = re.fullmatch(r"(\d+)? +(observed|predicted) +(\d+)(?: +(\S+))?", line)
    assert match is not None, line
    return (int(match[1]) if match[1] else -1, match[2], int(match[3]), match[4] or "")


def bar_eighths(value: int, largest: int) -> int:
    """How many eighths of a cell a 40-cell chart gives ``value`` (rounded half up, at least one)."""
    return 0 if value == 0 else max(1, (2 * value * 40 * 8 + largest) // (2 * largest))


@pytest.mark.kernel
@pytest.mark.bpf
def test_demo_human_table_and_options(cli: Any) -> None:
    run = cli("demo", "--queues", "3", "--flows", "12", "--seed", "9")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "pytun-hash demo: 3-queue TAP pthdemo0 in a private network namespace"
    header = next(i for i, line in enumerate(lines) if line.startswith("queue"))
    assert lines[header].split()[:4] == ["queue", "observed", "predicted", "matched"]
    rows = [line.split() for line in lines[header + 2 : header + 5]]
    assert [r[0] for r in rows] == ["0", "1", "2"] and sum(int(r[1]) for r in rows) == 14
    assert lines[-1].startswith("result: 14/14 packets matched (0 not from the demo); every packet on its predicted")
    # Under the table, observed and predicted packets per queue as bars, the busiest queue's full width.
    chart = next(i for i in range(header + 1, len(lines)) if lines[i].split() == ["queue", "packets"])
    bars = [chart_row(line) for line in lines[chart + 2 : chart + 8]]
    counts = [int(r[1]) for r in rows]
    assert [b[:3] for b in bars[0::2]] == [(q, "observed", counts[q]) for q in range(3)]
    # Every packet was on its predicted queue: the predicted bars are the observed ones.
    assert [b[1:] for b in bars[1::2]] == [("predicted", *b[2:]) for b in bars[0::2]]
    assert [eighths(b[3]) for b in bars] == [bar_eighths(b[2], max(counts)) for b in bars]
    assert max(eighths(b[3]) for b in bars) == 8 * 40
    # The same seed gives the same key and flows.
    again = cli("demo", "--queues", "3", "--flows", "12", "--seed", "9", "--json").json()
    assert again["config"]["key"] in run.out


@pytest.mark.kernel
@pytest.mark.bpf
def test_demo_reports_mismatches_with_exit_1(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytun_hash.cli import demo
    from pytun_hash.model import queue_for_flow

    def off_by_one(config: VnetHashConfig, flow: Any, queues: int, **kw: Any) -> int:
        return (queue_for_flow(config, flow, queues, **kw) + 1) % queues

    monkeypatch.setattr(demo, "queue_for_flow", off_by_one)
    run = cli("demo", "--flows", "8")
    assert run.code == 1
    assert "MISMATCH" in run.out and "MISMATCHES FOUND" in run.out
    doc = cli("demo", "--flows", "8", "--json").json()
    assert doc["ok"] is False and doc["matched"] == 0 and len(doc["mismatches"]) == doc["received"] == 10
    assert "predicted" in doc["mismatches"][0]["problem"]


def test_demo_argument_bounds(cli: Any) -> None:
    assert cli("demo", "--queues", "1").code == 2
    assert cli("demo", "--flows", "0").code == 2


def test_demo_without_root_says_what_it_needs() -> None:
    done = run_as_nobody("demo")
    assert done.returncode == 3
    assert done.stdout == "" and done.stderr.count("\n") == 1
    needs = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "sudo pytun-hash demo"]
    if not tun_open_to_nobody():  # where anyone may open it, it is not among what is missing
        needs.append("/dev/net/tun")
    for needed in needs:
        assert needed in done.stderr
    doc = run_as_nobody("demo", "--json")
    assert json.loads(doc.stdout)["error"]["exit_code"] == 3


def test_demo_chart_shows_queues_that_got_other_than_predicted() -> None:
    # The text of a demo that went wrong, without running one: bars of different lengths.
    from pytun_hash.cli.demo import _render

    doc = {
        "ok": False, "device": "pthdemo0", "queues": 3, "backend": "ebpf", "revision": None, "reason": "test",
        "semantics": "spec", "config": VnetHashConfig.round_robin(3, key=bytes(range(40))).to_mapping(),
        "reports": "computed", "flows": 10, "sent": 10, "received": 10, "matched": 6, "mismatches": [],
        "missing": [], "duplicates": [], "foreign": 0, "emulated": None, "elapsed_s": 0.5,
        "per_queue": [
            {"queue": 0, "packets": 8, "predicted": 4, "matched": 4, "samples": []},
            {"queue": 1, "packets": 2, "predicted": 4, "matched": 2, "samples": []},
            {"queue": 2, "packets": 0, "predicted": 2, "matched": 0, "samples": []},
        ],
    }  # fmt: skip
    lines = _render(doc, blocks=True).splitlines()
    chart = next(i for i, line in enumerate(lines) if line.split() == ["queue", "packets"])
    bars = [chart_row(line) for line in lines[chart + 2 : chart + 8]]
    assert [b[1:3] for b in bars] == [
        ("observed", 8), ("predicted", 4), ("observed", 2), ("predicted", 4), ("observed", 0), ("predicted", 2)
    ]  # fmt: skip
    assert [eighths(b[3]) for b in bars] == [320, 160, 80, 160, 0, 80]
    ascii_lines = _render(doc, blocks=False).splitlines()
    assert [chart_row(line)[3] for line in ascii_lines[chart + 2 : chart + 8]] == [
        "#" * 40, "#" * 20, "#" * 10, "#" * 20, "", "#" * 10
    ]  # fmt: skip
