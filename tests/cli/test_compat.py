"""``pytun-hash compat``: text, JSON, exit codes, and files that are not probe documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytun_hash import Revision, default_capability
from pytun_hash.cli.probe import _document
from pytun_hash.device.hashctl import ProbeResult
from pytun_hash.probe import BpfProbe, KernelProbe
from pytun_hash.virtio import host_from_probe
from tests.virtio import probes


def _write(tmp_path: Path, name: str, document: Any) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_same_host_is_compatible(cli: Any, tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", probes.ebpf_host())
    run = cli("compat", a, a, "--queues", "4")
    assert run.code == 0, run.err
    assert "compatible: a guest configured on A can move to B" in run.out
    assert "CTRL_VQ, MQ, HASH_REPORT, RSS" in run.out
    assert run.err == ""


def test_json(cli: Any, tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", probes.rfc_host())
    b = _write(tmp_path, "b.json", probes.ebpf_host())
    run = cli("compat", a, b, "--json", "--queues", "2")
    assert run.code == 0, run.err
    doc = run.json()
    assert (doc["ok"], doc["compatible"], doc["differences"]) == (True, True, [])
    assert doc["a"]["file"] == a and doc["a"]["host"]["backend"] == "native" and doc["a"]["host"]["revision"] == "rfc"
    assert doc["b"]["host"]["backend"] == "ebpf"
    assert doc["a"]["feature_bits"] == [17, 22, 57, 60]
    assert doc["b"]["rss_max_indirection_table_length"] == 128 and doc["b"]["max_virtqueue_pairs"] == 2
    # Compatible, but the RFC kernel's rules are not the specification's: said, not refused.
    assert (doc["a"]["semantics"], doc["b"]["semantics"]) == ("rfc-2023", "spec")
    assert len(doc["notes"]) == 1 and "rfc-2023 rules" in doc["notes"][0]


def test_same_rules_need_no_note(cli: Any, tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", probes.v12_host())
    b = _write(tmp_path, "b.json", probes.ebpf_host())
    doc = cli("compat", a, b, "--json").json()
    assert doc["compatible"] and doc["notes"] == [] and doc["a"]["semantics"] == doc["b"]["semantics"] == "spec"


def test_incompatible_exits_1_and_names_the_fields(cli: Any, tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", probes.v12_host())
    b = _write(tmp_path, "b.json", probes.rfc_host(max_table=64))
    run = cli("compat", a, b)
    assert run.code == 1
    assert "not compatible" in run.out and "VIRTIO_NET_F_RSS" in run.out
    assert "rss_max_indirection_table_length: B offers 0 entries, 128 fewer than A's 128" in run.out
    run = cli("compat", a, b, "--json")
    doc = run.json()
    assert (run.code, doc["ok"], doc["compatible"]) == (1, False, False)
    assert [d["field"] for d in doc["differences"]] == ["features", "rss_max_indirection_table_length"]


def test_vhost_net_data_path(cli: Any, tmp_path: Path) -> None:
    a = _write(tmp_path, "a.json", probes.rfc_host())
    b = _write(tmp_path, "b.json", probes.ebpf_host())
    run = cli("compat", a, b, "--no-user-space-reports", "--json")
    assert run.code == 1
    assert run.json()["differences"][0]["message"] == ("B does not offer VIRTIO_NET_F_HASH_REPORT, which A advertised")


@pytest.mark.parametrize(
    "content",
    [None, "not json", "[1, 2]", '{"hello": 1}', '{"kernel": 5}', '{"hash_ioctls": {"revision": "v99"}}', b"\xff\xfe"],
)
def test_bad_files_exit_2_with_one_line(cli: Any, tmp_path: Path, content: str | bytes | None) -> None:
    good = _write(tmp_path, "good.json", probes.ebpf_host())
    bad = tmp_path / "bad.json"
    if isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content)
    for args in ((str(bad), good), (good, str(bad))):
        run = cli("compat", *args)
        assert run.code == 2 and run.out == ""
        assert run.err.count("\n") == 1 and run.err.startswith("pytun-hash: error: invalid HOST_")
        run = cli("compat", *args, "--json")
        assert run.code == 2 and run.json()["ok"] is False


def test_usage_errors_exit_2(cli: Any, tmp_path: Path) -> None:
    good = _write(tmp_path, "good.json", probes.ebpf_host())
    assert cli("compat", good).code == 2
    assert cli("compat", good, good, "--queues", "0").code == 2
    assert cli("compat", good, good, "--queues", "x").code == 2


@pytest.mark.parametrize("revision", list(Revision))
def test_documents_the_probe_builder_writes(revision: Revision) -> None:
    """The probe command's own document builder, for each revision, reads as that native host."""
    found = KernelProbe(
        "6.x", "x86_64", 0, True, True, bpf=BpfProbe(True), hash=ProbeResult(revision, default_capability(revision), ())
    )
    host = host_from_probe(json.loads(json.dumps(_document(found))))
    assert (host.backend, host.revision, host.rss, host.report) == ("native", revision, True, True)
    assert host.max_indirection_table_length == 128


def test_the_sample_has_the_probe_documents_keys() -> None:
    found = KernelProbe("6.x", "x86_64", 0, True, True, bpf=BpfProbe(True))
    assert set(_document(found)) <= set(probes.ebpf_host())
