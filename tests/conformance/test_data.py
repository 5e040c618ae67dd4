"""The ``data.*`` conformance rules: what each emulated revision and the eBPF backend show, and that the
rules catch what they are about.

The suite runs end to end: scratch TAPs in a private namespace, raw set-ioctls answered by the kernel
emulator (its data path steers with eBPF and writes the revision's hash header on reads), frames sent
with ``AF_PACKET`` and read back. Expected outcomes per revision are the ones ``pytun_hash.conformance.data``
documents: the RFC departs in four rules, every later revision only in ``data.single-queue-report``.
"""

from __future__ import annotations

import json
import struct

import pytest

from pytun_hash import Revision, VnetHashConfig
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.conformance import Context, Mode, RuleResult, Status, SuiteResult, _frames, data, markdown, run_suite
from pytun_hash.conformance._frames import FILL, Bench, hash_fields, set_call
from pytun_hash.conformance.rules import RULES
from pytun_hash.device import NetworkNamespace
from pytun_hash.model import frames as fr
from pytun_hash.model import rfc_input, toeplitz_hash
from tests.bpf.conftest import _bpf_guard
from tests.testing.conftest import seccomp_skip_reason

__all__ = ["_bpf_guard"]

DATA_RULES = [
    "data.toeplitz",
    "data.classification",
    "data.queue",
    "data.unclassified",
    "data.fragments",
    "data.ipv6-extensions",
    "data.vlan",
    "data.key-bytes",
    "data.single-queue-report",
    "data.read-time-report",
]

# What each revision's documented behaviour implies (pytun_hash/conformance/data.py says why).
DEVIATIONS = {
    Revision.RFC: {"data.toeplitz", "data.unclassified", "data.fragments", "data.single-queue-report"},
    Revision.V3: {"data.single-queue-report"},
    Revision.V10: {"data.single-queue-report"},
    Revision.V12: {"data.single-queue-report"},
}


@pytest.fixture
def need_seccomp() -> None:
    """Skip where seccomp user notification (the emulator's trap) is unavailable."""
    reason = seccomp_skip_reason()
    if reason:
        pytest.skip(reason)


def by_id(suite: SuiteResult) -> dict[str, RuleResult]:
    return {r.id: r for r in suite.results}


def check_common(suite: SuiteResult) -> None:
    """Every data rule ran, in order; passes checked something and saw nothing else; the result is JSON."""
    assert [r.id for r in suite.results] == DATA_RULES
    for result in suite.results:
        if result.status is Status.PASS:
            assert result.evidence["checked"] > 0 and result.evidence["departed"] == 0, result
            assert "other_frames" not in result.evidence, result  # nothing but the rules' own frames arrived
        if result.status is Status.DEVIATION:
            assert result.evidence["departed"] > 0 and result.evidence["cases"], result
            assert "error" not in result.evidence, result  # a finding, not a rule that could not complete
    json.dumps(suite.to_mapping())
    report = markdown(suite)
    for result in suite.results:
        assert f"`{result.id}`" in report


# ----------------------------------------------------------------------------- emulated revisions


@pytest.mark.parametrize("revision", list(DEVIATIONS), ids=lambda r: r.value)
@pytest.mark.usefixtures("need_seccomp")
@pytest.mark.kernel
@pytest.mark.bpf
def test_emulated_revision_shows_exactly_its_documented_departures(revision: Revision) -> None:
    suite = run_suite(Mode.EMULATED, revision=revision, rules=["data.*"])
    check_common(suite)
    assert suite.mode is Mode.EMULATED and suite.revision is revision
    statuses = {r.id: r.status for r in suite.results}
    assert {i for i, s in statuses.items() if s is Status.DEVIATION} == DEVIATIONS[revision], statuses
    assert {i for i, s in statuses.items() if s is Status.PASS} == set(DATA_RULES) - DEVIATIONS[revision]
    results = by_id(suite)

    single = results["data.single-queue-report"].evidence
    assert single["checked"] == 5 and single["inputs"]["queues"] == 1
    read_time = results["data.read-time-report"].evidence
    if revision is Revision.RFC:
        # No hash at all with one queue: the 10-byte header, bytes 10-19 left as the reader had them.
        assert single["departures"] == {"no hash": 5}
        assert read_time["checked"] == 16
        assert set(read_time["not_applicable"]) == {"header shrunk before read", "header grown before read"}
    else:
        # v3+ zero-fill the header: four hashable frames report NONE, the ARP frame rightly NONE.
        assert sum(single["departures"].values()) == 4
        assert all(kind.startswith("NONE for ") for kind in single["departures"])
        assert read_time["checked"] == 24 and "not_applicable" not in read_time


@pytest.mark.usefixtures("need_seccomp")
@pytest.mark.kernel
@pytest.mark.bpf
def test_rfc_departures_carry_their_evidence() -> None:
    results = by_id(
        run_suite(
            Mode.EMULATED,
            revision=Revision.RFC,
            rules=["data.toeplitz", "data.unclassified", "data.fragments"],
        )
    )
    toeplitz = results["data.toeplitz"]
    # Every value, published or random, is the hash of the byte-reversed 32-bit input words.
    assert toeplitz.evidence["departures"] == {"host-order words": 48} and toeplitz.evidence["checked"] == 48
    assert "byte-reversed" in toeplitz.summary
    first = toeplitz.evidence["cases"][0]
    assert first["frame"] == "tcp 66.9.149.187:2794 -> 161.142.100.80:1766"
    assert first["expected"] == {"hash_value": "0x51ccc178"}  # Microsoft's published value
    four_tuple = fr.addr("66.9.149.187") + fr.addr("161.142.100.80") + struct.pack(">HH", 2794, 1766)
    assert first["observed"]["hash_value"] == f"0x{toeplitz_hash(MICROSOFT_RSS_KEY, rfc_input(four_tuple)):08x}"
    assert first["observed"]["hash_report"] == "TCPV4"

    unclassified = results["data.unclassified"]
    # 6 frames with no hash went to table[0]; 12 hashed frames on zero entries to unclassified_queue.
    assert unclassified.evidence["departures"] == {"unclassified to table[0]": 6, "zero entry as unclassified": 12}
    assert "table[0]" in unclassified.summary and "zero table entry" in unclassified.summary

    fragments = results["data.fragments"]
    # Every fragment (6 of them, under two type sets) reported TCP/UDP with ports 0; the DF-only controls pass.
    assert fragments.evidence["departures"] == {"TCP/UDP type, ports 0": 12}
    assert fragments.evidence["checked"] == 14
    assert all(
        c["observed"]["hash_report"] in ("TCPV4", "UDPV4", "TCPV6", "UDPV6") for c in fragments.evidence["cases"]
    )


# ----------------------------------------------------------------------------- eBPF backend


@pytest.mark.kernel
@pytest.mark.bpf
def test_ebpf_backend_passes_every_data_rule_or_skips_the_report_rules() -> None:
    suite = run_suite(Mode.EBPF, rules=["data.*"])
    check_common(suite)
    assert suite.revision is None
    statuses = {r.id: r.status for r in suite.results}
    skipped = {"data.single-queue-report", "data.read-time-report"}
    assert {i for i, s in statuses.items() if s is Status.SKIP} == skipped, statuses
    assert {i for i, s in statuses.items() if s is Status.PASS} == set(DATA_RULES) - skipped, statuses
    results = by_id(suite)
    for rule_id in skipped:
        assert "no hash reports" in results[rule_id].summary
    # 48 frames under 4 tables that show hash bits 0-6 through the queue.
    assert results["data.toeplitz"].evidence["checked"] == 192
    key_bytes = results["data.key-bytes"]
    assert key_bytes.evidence["checked"] == 37 and "bytes 0-2" in key_bytes.summary


# ----------------------------------------------------------------------------- the rules catch what they are about


@pytest.mark.usefixtures("need_seccomp")
@pytest.mark.kernel
@pytest.mark.bpf
def test_key_bytes_finds_a_kernel_that_ignores_the_last_key_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    def short_key(revision: Revision, config: VnetHashConfig) -> tuple[str, bytes]:
        name, payload = set_call(revision, config)
        return name, payload[:-4] + bytes(4)  # the key ends the payload: its last 4 bytes never arrive

    monkeypatch.setattr(_frames, "set_call", short_key)
    (result,) = run_suite(Mode.EMULATED, revision=Revision.V12, rules=["data.key-bytes"]).results
    assert result.status is Status.DEVIATION
    assert result.evidence["departures"] == {"unused": 4}
    assert [c["key_byte"] for c in result.evidence["cases"]] == [36, 37, 38, 39]


@pytest.mark.kernel
@pytest.mark.bpf
def test_queue_finds_a_program_that_indexes_the_table_wrongly(monkeypatch: pytest.MonkeyPatch) -> None:
    apply = Bench.apply

    def rotated(self: Bench, config: VnetHashConfig) -> None:
        table = config.indirection_table
        apply(self, config.replace(indirection_table=table[1:] + table[:1]))

    monkeypatch.setattr(Bench, "apply", rotated)
    (result,) = run_suite(Mode.EBPF, rules=["data.queue"]).results
    assert result.status is Status.DEVIATION
    assert set(result.evidence["departures"]) == {"queue"}
    # The 1-entry table cannot be rotated: only the frames under the 4- and 128-entry tables move.
    assert 0 < result.evidence["departed"] <= 64 and result.evidence["checked"] == 96


@pytest.mark.usefixtures("need_seccomp")
@pytest.mark.kernel
@pytest.mark.bpf
def test_read_time_report_holds_the_rfc_to_its_own_uapi_not_to_v12s(monkeypatch: pytest.MonkeyPatch) -> None:
    scenarios = data._scenarios
    # The v12 expectations of the four conditions the RFC can be in.
    monkeypatch.setattr(data, "_scenarios", lambda revision: scenarios(Revision.V12)[:4])
    (result,) = run_suite(Mode.EMULATED, revision=Revision.RFC, rules=["data.read-time-report"]).results
    assert result.status is Status.DEVIATION
    # The RFC checks REPORT at read time (v12 stored the hash when sent) and skips bytes 20-23 (v12 zeroes them).
    assert result.evidence["departed"] == 8
    assert "report cleared before read" in result.summary and "24-byte header" in result.summary
    tails = [c for c in result.evidence["cases"] if c["scenario"] == "24-byte header"]
    assert all(c["observed"]["header"][40:48] == f"{FILL:02x}" * 4 for c in tails)


# ----------------------------------------------------------------------------- without a kernel


def test_without_a_data_path_every_data_rule_skips() -> None:
    # The namespace is never entered: a rule that skips touches nothing.
    ctx = Context(Mode.EMULATED, Revision.RFC, NetworkNamespace(), data_path=False)
    rules = [r for r in RULES if r.family == "data"]
    assert [r.id for r in rules] == DATA_RULES
    for rule in rules:
        result = rule.check(ctx)
        assert result.status is Status.SKIP and "data path" in result.summary, result


KEY = bytes(range(40))
CONFIG = VnetHashConfig(
    rss=True, report=True, types=0x3F, indirection_table=(1, 2, 3, 0), key=KEY, unclassified_queue=5
)
TABLE = struct.pack("=4H", 1, 2, 3, 0)


def test_rfc_payload_is_the_12_byte_header_table_and_key() -> None:
    name, payload = set_call(Revision.RFC, CONFIG)
    assert name == "TUNSETVNETHASH"
    # flags RSS|REPORT = 0x03, 3 pad bytes, types, mask 3, unclassified 5.
    assert payload == struct.pack("=B3xIHH", 0x03, 0x3F, 3, 5) + TABLE + KEY
    _, report_only = set_call(Revision.RFC, CONFIG.replace(rss=False))
    assert report_only[0] == 0x02 and len(report_only) == 12 + 8 + 40  # the table and key are always read


@pytest.mark.parametrize("revision", [Revision.V3, Revision.V10])
def test_v3_payload_has_the_rss_part_only_with_rss(revision: Revision) -> None:
    name, payload = set_call(revision, CONFIG)
    assert name == "TUNSETVNETHASH"
    # u16 flags REPORT|RSS = 0x0003, 2 pad bytes, types; then mask, unclassified, table, key.
    assert payload == struct.pack("=H2xI", 0x0003, 0x3F) + struct.pack("=HH", 3, 5) + TABLE + KEY
    assert set_call(revision, CONFIG.replace(rss=False)) == ("TUNSETVNETHASH", struct.pack("=H2xI", 0x0001, 0x3F))


def test_v12_payload_picks_the_setter_by_mode() -> None:
    body = struct.pack("=IHH", 0x3F, 3, 5) + TABLE + KEY
    assert set_call(Revision.V12, CONFIG) == ("TUNSETVNETREPORTINGRSS", body)
    assert set_call(Revision.V12, CONFIG.replace(report=False)) == ("TUNSETVNETRSS", body)
    assert set_call(Revision.V12, CONFIG.replace(rss=False)) == ("TUNSETVNETREPORTINGAUTOMQ", struct.pack("=I", 0x3F))
    off = CONFIG.replace(rss=False, report=False)
    assert set_call(Revision.V12, off) == ("TUNSETVNETREPORTINGAUTOMQ", bytes(4))


def test_hash_fields_tell_unwritten_from_zero() -> None:
    untouched = bytes(10) + bytes([FILL]) * 10
    assert hash_fields(untouched) is None
    assert hash_fields(bytes(12)) is None  # a 12-byte header has no hash fields
    assert hash_fields(bytes(20)) == (0, 0)
    written = bytes(12) + struct.pack("<IHH", 0x51CCC178, 2, 0) + bytes([FILL]) * 4
    assert hash_fields(written) == (0x51CCC178, 2)
