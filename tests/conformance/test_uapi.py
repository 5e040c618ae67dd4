"""The ``uapi.*`` rules under the kernel emulator of each revision, natively, and against broken kernels.

Under ``--emulate R`` the suite must report exactly what R's documented behaviour implies (the table
in :mod:`pytun_hash.conformance.uapi`): the RFC deviates in ``uapi.key-length`` and ``uapi.exclusion``;
v3-v9, v10-v11 and v12 only in ``uapi.key-length``. The "broken kernel" tests change one thing in the
emulated kernel (a fixed or different key length, a larger table maximum, no header-size check, an
unknown flag that makes it read more, a copy before the device lookup, an ``EBUSY`` where v10 has
precedence, a set that ignores a fault) and check that the rule meant to catch it does, and only it.

Needs root, ``/dev/net/tun`` and network namespaces (the ``kernel`` marker), seccomp user
notification (the emulator) and ``bpf(2)`` (the emulated data path and the steering program).
"""

from __future__ import annotations

import errno
import functools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pytun_hash import Revision
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.prog import Program
from pytun_hash.config import VnetHashCapability
from pytun_hash.conformance import Mode, RuleResult, Status, run_suite
from pytun_hash.conformance.runner import SuiteResult
from pytun_hash.errors import PytunHashError
from pytun_hash.testing import EmulatorError, _seccomp, emulator, kernel
from pytun_hash.testing.kernel import EmulatedKernel, KernelErrno

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

UAPI_RULES = [
    "uapi.capability",
    "uapi.byte-counts",
    "uapi.key-length",
    "uapi.bad-mask",
    "uapi.report-header",
    "uapi.unknown-flags",
    "uapi.unknown-types",
    "uapi.padding",
    "uapi.deleted-device",
    "uapi.fault",
    "uapi.atomic-commit",
    "uapi.exclusion",
]
# What each revision's documented behaviour implies (pytun_hash/conformance/uapi.py says why).
DEVIATIONS = {
    Revision.RFC: {"uapi.key-length", "uapi.exclusion"},
    Revision.V3: {"uapi.key-length"},
    Revision.V10: {"uapi.key-length"},
    Revision.V12: {"uapi.key-length"},
}
SKIPS = {
    Revision.RFC: set(),
    Revision.V3: set(),
    Revision.V10: set(),
    Revision.V12: {"uapi.unknown-flags", "uapi.padding"},
}


@functools.cache
def _emulator_skip_reason() -> str | None:
    """Why the emulator cannot run here (no seccomp user notification, no bpf(2)), or None."""
    try:
        arch = _seccomp.seccomp_arch()
    except EmulatorError as exc:
        return str(exc)
    failure: list[str] = []

    def probe() -> None:
        # A throwaway thread: the filter is irreversible and stays with it.
        try:
            import os

            os.close(_seccomp.install_listener(arch, _seccomp.build_filter(arch, [0xFFFFFFFF])))
        except EmulatorError as exc:
            failure.append(f"seccomp user notification unavailable: {exc}")

    worker = threading.Thread(target=probe)
    worker.start()
    worker.join()
    if failure:
        return failure[0]
    try:
        Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble()).close()
    except PytunHashError as exc:
        return f"bpf(BPF_PROG_LOAD) refused ({exc}): the emulated data path and the steering program need it"
    return None


@pytest.fixture
def emulator_ok() -> None:
    """Skip, with the reason, where the kernel emulator or bpf(2) cannot be used."""
    reason = _emulator_skip_reason()
    if reason:
        pytest.skip(reason)


def by_id(suite: SuiteResult) -> dict[str, RuleResult]:
    return {r.id: r for r in suite.results}


def statuses(suite: SuiteResult, status: Status) -> set[str]:
    return {r.id for r in suite.results if r.status is status}


# -- the documented behaviour of each revision -----------------------------------------------------


@pytest.mark.parametrize("revision", list(DEVIATIONS), ids=lambda r: r.value)
def test_each_revision_shows_exactly_its_documented_departures(emulator_ok: None, revision: Revision) -> None:
    suite = run_suite(Mode.EMULATED, revision=revision, rules=["uapi.*"])
    assert [r.id for r in suite.results] == UAPI_RULES
    assert suite.mode is Mode.EMULATED and suite.revision is revision
    assert statuses(suite, Status.DEVIATION) == DEVIATIONS[revision], {r.id: r.summary for r in suite.results}
    assert statuses(suite, Status.SKIP) == SKIPS[revision]
    assert not suite.ok
    for result in suite.results:
        assert result.summary and "could not complete" not in result.summary
        if result.status is Status.DEVIATION:
            assert result.evidence["departures"] and result.evidence["expected"]


def test_rfc_evidence(emulator_ok: None) -> None:
    suite = by_id(run_suite(Mode.EMULATED, revision=Revision.RFC, rules=["uapi.*"]))
    key = suite["uapi.key-length"].evidence
    assert {d["case"]: d["observed"] for d in key["departures"]} == {
        "types 0x8": 4,
        "types 0x10": 4,
        "types 0x20": 4,
        "types 0x38": 4,
    }
    assert key["departure_count"] == 4 and key["checked"] == 10
    assert "reads 4 key bytes for type sets 0x8, 0x10, 0x20, 0x38 (no IPv4 bit)" in suite["uapi.key-length"].summary
    exclusion = suite["uapi.exclusion"]
    assert exclusion.basis.value == "choice"
    assert exclusion.summary.startswith("silent trade instead of EBUSY")
    assert exclusion.evidence["steps"] == {
        # RSS enabled under a program: accepted, the program silently detached, RSS steers.
        "program then RSS": {"attach": "ok", "rss": "ok", "in force": "rss", "detach": "ok", "after": "rss"},
        # A program attached under RSS: accepted, RSS silently cleared; detaching leaves the automatic spread.
        "RSS then program": {"rss": "ok", "attach": "ok", "in force": "program", "detach": "ok", "after": "automq"},
    }
    capability = {r["case"]: r["observed"] for r in suite["uapi.capability"].evidence["observed"]}
    assert capability["max_indirection_table_length"] == "0x80" and capability["types"] == "0x3f"
    assert capability["TUNGETVNETHASHCAP on an fd without TUNSETIFF"] == "EBADFD"
    assert "refused with EINVAL" in suite["uapi.report-header"].summary
    assert "accepted and ignored" in suite["uapi.unknown-flags"].summary
    assert "accepted and ignored" in suite["uapi.padding"].summary
    masks = {r["case"]: r["observed"] for r in suite["uapi.bad-mask"].evidence["observed"]}
    assert masks["mask 0xffff (over the maximum 127)"] == {"bytes": 12, "errno": "EINVAL"}
    assert masks["mask 0x7f"] == {"bytes": 12 + 256 + 40, "errno": "ok"}
    assert masks["mask 0x5 (6 entries)"] == {"bytes": 12 + 12 + 40, "errno": "ok"}


@pytest.mark.parametrize("revision", [Revision.V3, Revision.V10, Revision.V12], ids=lambda r: r.value)
def test_later_revisions_evidence(emulator_ok: None, revision: Revision) -> None:
    rules = ["uapi.exclusion", "uapi.report-header", "uapi.deleted-device", "uapi.bad-mask", "uapi.capability"]
    suite = by_id(run_suite(Mode.EMULATED, revision=revision, rules=rules))
    steps = suite["uapi.exclusion"].evidence["observed"]
    observed = {r["case"]: r["observed"] for r in steps}
    if revision is Revision.V3:
        assert observed["program then RSS: rss"] == "EBUSY" and observed["RSS then program: attach"] == "EBUSY"
        assert observed["program then RSS: in force"] == "program" and observed["RSS then program: in force"] == "rss"
        assert "(v5-v9)" in suite["uapi.report-header"].summary
    else:
        assert observed["program then RSS: rss"] == "ok" and observed["RSS then program: attach"] == "ok"
        assert observed["program then RSS: in force"] == observed["RSS then program: in force"] == "program"
        assert observed["program then RSS: after"] == observed["RSS then program: after"] == "rss"
    assert "still answers" in suite["uapi.deleted-device"].summary
    masks = {r["case"]: r["observed"] for r in suite["uapi.bad-mask"].evidence["observed"]}
    header = 8 if revision is Revision.V12 else 12
    assert masks["mask 0xffff"] == {"bytes": header + 2 * 0x10000 + 40, "errno": "ok"}
    assert all(r.status is Status.PASS for r in suite.values())


# -- natively ---------------------------------------------------------------------------------------


def test_natively_without_the_hash_ioctls_every_uapi_rule_is_skipped() -> None:
    suite = run_suite(Mode.NATIVE, rules=["uapi.*"])
    assert [r.id for r in suite.results] == UAPI_RULES
    if suite.revision is None:
        # This kernel answers none of the revisions' get ioctls (mainline, 6.18 included).
        assert statuses(suite, Status.SKIP) == set(UAPI_RULES)
        assert all("answers none of the hash ioctls" in r.summary for r in suite.results)
        assert suite.ok
    else:
        # A kernel carrying a revision: every rule ran against it, none fell over.
        assert statuses(suite, Status.SKIP) <= {"uapi.unknown-flags", "uapi.padding", "uapi.atomic-commit"}
        assert all("could not complete" not in r.summary for r in suite.results)
        assert suite.to_mapping()["revision"] == suite.revision.value


# -- broken kernels: each rule catches what it is for -----------------------------------------------


def _run(revision: Revision, *rules: str) -> dict[str, RuleResult]:
    return by_id(run_suite(Mode.EMULATED, revision=revision, rules=list(rules)))


@pytest.mark.parametrize(("length", "byte_counts"), [(40, Status.PASS), (20, Status.DEVIATION)])
def test_key_length_and_byte_counts_follow_the_key_read(
    emulator_ok: None, monkeypatch: pytest.MonkeyPatch, length: int, byte_counts: Status
) -> None:
    # 40: the fix (the whole key, always): both pass. 20: neither the series', the spec's nor 40.
    monkeypatch.setattr(kernel, "virtio_net_hash_key_length", lambda types: length)
    suite = _run(Revision.RFC, "uapi.key-length", "uapi.byte-counts", "uapi.fault")
    assert suite["uapi.key-length"].status is (Status.PASS if length == 40 else Status.DEVIATION)
    assert suite["uapi.byte-counts"].status is byte_counts
    assert suite["uapi.fault"].status is Status.PASS  # the count is byte-counts' to judge, not fault's
    if length == 20:
        assert "reads 20 key bytes for type sets 0x1, 0x2" in suite["uapi.key-length"].summary


def test_a_larger_table_maximum_shows_in_capability_and_bad_mask(
    emulator_ok: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    larger = VnetHashCapability(Revision.RFC, 0x3F, max_indirection_table_length=256)
    monkeypatch.setattr(kernel, "_default_capability", lambda revision: larger)
    suite = _run(Revision.RFC, "uapi.capability", "uapi.bad-mask")
    assert suite["uapi.capability"].status is Status.DEVIATION
    assert "max_indirection_table_length: 0x100 (expected 0x80)" in suite["uapi.capability"].summary
    mask = suite["uapi.bad-mask"]
    assert mask.status is Status.DEVIATION
    assert {d["case"] for d in mask.evidence["departures"]} == {
        "mask 0x80 (over the maximum 127)",
        "mask 0xff (over the maximum 127)",
    }


def test_reporting_without_the_header_check_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "VIRTIO_NET_HDR_V1_HASH_SIZE", 10)
    result = _run(Revision.RFC, "uapi.report-header")["uapi.report-header"]
    assert result.status is Status.DEVIATION
    cases = {d["case"]: (d["expected"], d["observed"]) for d in result.evidence["departures"]}
    assert cases["REPORT types 0x3f with a 10-byte header"] == ("EINVAL", "ok")
    assert cases["TUNSETVNETHDRSZ(12) while REPORT types 0x3f"] == ("EINVAL", "ok")


def _wrap(monkeypatch: pytest.MonkeyPatch, name: str, before: Callable[[Any], None]) -> None:
    """Make EmulatedKernel's handler ``name`` run ``before(call)`` first."""
    original = getattr(EmulatedKernel, name)

    def handler(self: EmulatedKernel, call: Any) -> int:
        before(call)
        result: int = original(self, call)
        return result

    monkeypatch.setattr(EmulatedKernel, name, handler)


def test_an_unknown_flag_that_changes_the_read_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def misread(call: Any) -> None:
        if call.copy_from_user(0, 1)[0] & 0x80:
            call.copy_from_user(0, 512)  # a flag bit taken for "a longer blob follows"

    _wrap(monkeypatch, "_rfc_setvnethash", misread)
    result = _run(Revision.RFC, "uapi.unknown-flags")["uapi.unknown-flags"]
    assert result.status is Status.DEVIATION
    assert {d["case"] for d in result.evidence["departures"]} == {
        "RSS types 0x3f mask 0x1, unknown flag 0x80",
        "flags 0x80 alone",
    }


def test_a_copy_before_the_device_lookup_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    _wrap(monkeypatch, "_v3_setvnethash", lambda call: call.copy_from_user(0, 8))
    result = _run(Revision.V3, "uapi.deleted-device")["uapi.deleted-device"]
    assert result.status is Status.DEVIATION
    assert result.evidence["departures"][0]["observed"] == {"bytes": 8, "errno": "EBADFD"}


def test_ebusy_where_v10_has_precedence_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EmulatedKernel, "_v12_setsteeringebpf", EmulatedKernel._v3_setsteeringebpf)
    result = _run(Revision.V10, "uapi.exclusion")["uapi.exclusion"]
    assert result.status is Status.DEVIATION
    departures = {d["case"]: (d["expected"], d["observed"]) for d in result.evidence["departures"]}
    assert departures["RSS then program: attach"] == ("ok", "EBUSY")
    assert departures["RSS then program: in force"] == ("program", "rss")


def test_a_set_that_ignores_a_fault_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    original = emulator._TrappedCall.copy_from_user

    def careless(self: Any, offset: int, length: int) -> bytes:
        # A kernel that checks only the header's copy_from_user: unreadable table or key bytes read as 0.
        try:
            data: bytes = original(self, offset, length)
        except KernelErrno as exc:
            if offset == 0 or exc.errno != errno.EFAULT:
                raise
            return bytes(length)
        return data

    monkeypatch.setattr(emulator._TrappedCall, "copy_from_user", careless)
    result = _run(Revision.RFC, "uapi.atomic-commit")["uapi.atomic-commit"]
    assert result.status is Status.DEVIATION
    departures = {d["case"]: d["observed"] for d in result.evidence["departures"]}
    assert departures["B with the first table byte unreadable"] == "ok"
    changed = departures["flows after B failed at the first table byte"]["changed"]
    # B's table {0} (zeros read) sends every flow to unclassified_queue 2, reporting IPv4 (1).
    assert len(changed) == 16 and all(f["queue"] == 2 and f["hash"][1] == 1 for f in changed.values())


def test_another_errno_for_an_unreadable_byte_is_caught(emulator_ok: None, monkeypatch: pytest.MonkeyPatch) -> None:
    original = emulator._TrappedCall.copy_from_user

    def eio(self: Any, offset: int, length: int) -> bytes:
        # A kernel that turns a fault in the table or the key into EIO.
        try:
            data: bytes = original(self, offset, length)
        except KernelErrno as exc:
            raise KernelErrno(errno.EIO if offset and exc.errno == errno.EFAULT else exc.errno) from None
        return data

    monkeypatch.setattr(emulator._TrappedCall, "copy_from_user", eio)
    result = _run(Revision.V12, "uapi.fault")["uapi.fault"]
    assert result.status is Status.DEVIATION
    departures = {d["case"]: d["observed"] for d in result.evidence["departures"]}
    # The 8-byte header still faults; beyond it the call fails with EIO, so it never copies its whole blob.
    assert departures["TUNSETVNETRSS: RSS types 0x3f mask 0x0"] == {"bytes": 8, "errno": "EIO"}
    assert "TUNSETVNETREPORTINGAUTOMQ: AUTOMQ types 0x3f" not in departures  # 4 bytes, all header
