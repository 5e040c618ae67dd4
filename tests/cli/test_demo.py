"""``pytun-hash demo``: end to end as root, its failure verdict, and the message without root."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytun_hash.config import VnetHashConfig
from pytun_hash.device import thread_netns_inode
from tests import tracking
from tests.cli.helpers import run_as_nobody

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
        s["report"] in {"TCPV4", "UDPV4", "TCPV6", "UDPV6", "IPV4", "IPV6"}
        for q in per_queue
        for s in q["samples"]
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
    assert lines[-1].startswith(
        "result: 14/14 packets matched (0 not from the demo); every packet on its predicted"
    )
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
    for needed in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW", "/dev/net/tun", "sudo pytun-hash demo"):
        assert needed in done.stderr
    doc = run_as_nobody("demo", "--json")
    assert json.loads(doc.stdout)["error"]["exit_code"] == 3
