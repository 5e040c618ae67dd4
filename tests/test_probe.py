"""The precedence probe and the revision it refines (:mod:`pytun_hash.probe`).

v3-v9 and v10/v11 answer the same request numbers; only a steering program attached while native RSS
is on tells them apart (``EBUSY`` on v3-v9, attached on v10+). Without privileges on a FakeTunTap of
each revision; as root on a real TAP under the seccomp KernelEmulator of each revision (``kernel``);
and on the running kernel, whatever it carries (the tests branch on its probe).
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import attrs
import pytest

from pytun_hash import MICROSOFT_RSS_KEY, Revision, ValidationError, VnetHashConfig, default_capability
from pytun_hash.bpf import Assembler, Program, Reg
from pytun_hash.device import NetworkNamespace, TunTapBase, TunTapDevice
from pytun_hash.device.hashctl import HashControl, ProbeResult, probe_revision
from pytun_hash.errors import PrivilegeError
from pytun_hash.probe import (
    BpfProbe,
    KernelProbe,
    probe_kernel,
    refine_revision,
    tap_probe_bpf,
    tap_probe_steering_precedence,
)
from pytun_hash.testing import EmulatorError, FakeTunTap, KernelEmulator

#: What the precedence probe answers on each revision's kernel (V3's numbers are absent elsewhere).
PRECEDENCE: dict[Revision | None, bool | None] = {
    None: None,
    Revision.RFC: None,
    Revision.V3: False,
    Revision.V10: True,
    Revision.V12: None,
}
#: What probe_kernel reports on each revision's kernel once refined.
REFINED = {Revision.RFC: Revision.RFC, Revision.V3: Revision.V3, Revision.V10: Revision.V10, Revision.V12: Revision.V12}
FAKE_PROGRAM = 901


def _names(calls: list[tuple[str, int]]) -> list[tuple[str, str]]:
    return [(name, errno.errorcode.get(err, "ok") if err else "ok") for name, err in calls]


# --------------------------------------------------------------------------- on the fake, without privileges


@pytest.mark.parametrize("revision", list(PRECEDENCE), ids=lambda r: r.value if r else "mainline")
def test_precedence_on_the_fake(revision: Revision | None) -> None:
    with FakeTunTap(revision, queues=2) as fake:
        assert tap_probe_steering_precedence(fake, program=FAKE_PROGRAM) is PRECEDENCE[revision]
        # Undone: no program on the device, hashing off, and the binding never recorded either.
        assert fake.attached_program is None
        if revision is not None:
            assert not fake.kernel_state().enabled and not fake.kernel_state().steering_attached
        assert not fake.steering.steering_attached and not fake.steering.native_rss
        # So the binding's own attach works afterwards.
        fake.attach_steering_program(FAKE_PROGRAM)
        fake.detach_steering_program()


@pytest.mark.parametrize("revision", [Revision.V3, Revision.V10])
def test_precedence_issues_raw_v3_calls_and_undoes_them(revision: Revision) -> None:
    with FakeTunTap(revision, queues=2) as fake:
        tap_probe_steering_precedence(fake, program=FAKE_PROGRAM)
        attach = "EBUSY" if revision is Revision.V3 else "ok"
        calls = _names([(c.name, c.errno) for c in fake.calls])
        assert calls == [
            ("TUNSETVNETHASH", "ok"),
            ("TUNSETSTEERINGEBPF", attach),
            ("TUNSETSTEERINGEBPF", "ok"),  # detach
            ("TUNSETVNETHASH", "ok"),  # the disabled configuration
        ]
        rss_state = fake.states[0][1]
        assert rss_state.rss and len(rss_state.indirection_table) == 2
        assert fake.states[-1][1].as_config() == VnetHashConfig.disabled()


def test_precedence_leaves_a_device_with_state_of_its_own_alone() -> None:
    with FakeTunTap(Revision.V10, queues=2) as fake:
        fake.attach_steering_program(FAKE_PROGRAM, owner="user")
        fake.reset_log()
        assert tap_probe_steering_precedence(fake, program=FAKE_PROGRAM + 1) is None
        assert fake.calls == [] and fake.attached_program == FAKE_PROGRAM
        fake.detach_steering_program()
        config = VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY)
        HashControl(fake, revision=Revision.V10).apply(config)
        fake.reset_log()
        assert tap_probe_steering_precedence(fake, program=FAKE_PROGRAM) is None
        assert fake.calls == [] and fake.kernel_state().as_config() == config


def test_precedence_without_a_program_or_a_device_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied() -> None:
        raise PrivilegeError(errno.EPERM, "bpf(BPF_PROG_LOAD)", "needs CAP_BPF")

    monkeypatch.setattr("pytun_hash.probe._trivial_program", denied)
    with FakeTunTap(Revision.V10, queues=2) as fake:
        assert tap_probe_steering_precedence(fake) is None
        assert fake.calls == []  # nothing to undo: RSS was never turned on
    with FakeTunTap(Revision.V10, queues=2) as fake:
        fake.delete()
        assert tap_probe_steering_precedence(fake, program=FAKE_PROGRAM) is None


@pytest.mark.parametrize("revision", [None, Revision.RFC, Revision.V10, Revision.V12])
def test_refine_passes_other_answers_unchanged_without_a_probe(
    monkeypatch: pytest.MonkeyPatch, revision: Revision | None
) -> None:
    def no_probe(device: TunTapBase, *, program: int | None = None) -> bool | None:
        raise AssertionError("no probe for an answer other than V3")

    monkeypatch.setattr("pytun_hash.probe.tap_probe_steering_precedence", no_probe)
    assert refine_revision(revision) is revision


def test_refine_refuses_text() -> None:
    with pytest.raises(ValidationError):
        refine_revision("v3")  # type: ignore[arg-type]


def _kernel_probe(revision: Revision | None, precedence: bool | None) -> KernelProbe:
    capability = default_capability(revision) if revision else None
    return KernelProbe(
        "6.x",
        "x86_64",
        0,
        True,
        True,
        bpf=BpfProbe(True),
        hash=ProbeResult(revision, capability, ((Revision.V12, errno.EINVAL), (Revision.V3, 0))),
        precedence=precedence,
    )


@pytest.mark.parametrize(
    ("revision", "precedence", "told"),
    [
        (Revision.V10, True, "took precedence over native RSS: v10 or later"),
        (Revision.V3, False, "refused with EBUSY while native RSS was on: v3-v9"),
        (Revision.V3, None, "could not be told: read as v3-v9"),
    ],
    ids=["v10", "v3", "v3-untold"],
)
def test_auto_backend_says_how_the_revision_was_told(revision: Revision, precedence: bool | None, told: str) -> None:
    found = _kernel_probe(revision, precedence)
    assert found.precedence_asked
    decision = found.auto_backend()
    assert decision.backend == "native" and decision.revision is revision
    assert decision.reason.startswith(f"the kernel speaks hash UAPI revision {revision.value} (")
    assert decision.reason.endswith(f"{told})")


def test_auto_backend_of_other_revisions_says_nothing_of_precedence() -> None:
    found = attrs.evolve(_kernel_probe(Revision.V12, None), hash=ProbeResult(Revision.V12, None, ((Revision.V12, 0),)))
    assert not found.precedence_asked
    assert found.auto_backend().reason == "the kernel speaks hash UAPI revision v12"


# --------------------------------------------------------------------------- under the emulator (root)


@pytest.fixture
def steering_ok() -> None:
    """Skip where the probe cannot load a steering program or the seccomp emulator cannot run."""
    bpf = tap_probe_bpf()
    if not bpf.usable:
        pytest.skip(f"bpf(2) cannot create a map here ({bpf.errno}): {bpf.error}; the probe attaches a program")
    try:
        KernelEmulator(Revision.RFC).close()
    except EmulatorError as exc:
        pytest.skip(f"seccomp user notification unavailable: {exc}")


@pytest.fixture
def pair(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    """A 2-queue TAP, as the probe's scratch device."""
    with TunTapDevice.create("prec%d", queues=2, vnet_hdr=True) as dev:
        yield dev


@pytest.mark.kernel
@pytest.mark.parametrize("revision", list(Revision))
def test_precedence_under_the_emulator(steering_ok: None, pair: TunTapDevice, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        assert emu.run(tap_probe_steering_precedence, pair) is PRECEDENCE[revision]
        state = emu.device_state(pair.queues[0].fd)
        assert not state.enabled and not state.steering_attached and state.steering_prog_id is None
        if revision.abi is Revision.V3:
            attach = "EBUSY" if revision is Revision.V3 else "ok"
            assert _names([(c.name, c.errno) for c in emu.calls])[:2] == [
                ("TUNSETVNETHASH", "ok"),
                ("TUNSETSTEERINGEBPF", attach),
            ]
        # The binding recorded nothing, and a program it attaches now is not refused by the kernel.
        assert not pair.steering.steering_attached and not pair.steering.native_rss
        with Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_second") as prog:
            emu.run(pair.attach_steering_program, prog.fd)
            assert emu.device_state(pair.queues[0].fd).steering_attached
            emu.run(pair.detach_steering_program)


@pytest.mark.kernel
@pytest.mark.parametrize("revision", [Revision.V3, Revision.V10])
def test_refine_under_the_emulator(steering_ok: None, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        assert emu.run(refine_revision, Revision.V3) is revision
        names = [c.name for c in emu.calls]
        assert names == ["TUNSETVNETHASH", "TUNSETSTEERINGEBPF", "TUNSETSTEERINGEBPF", "TUNSETVNETHASH"]
        # The scratch device's last state: hashing off, no program.
        final = emu.states[-1][1]
        assert not final.enabled and not final.steering_attached


@pytest.mark.kernel
@pytest.mark.parametrize("revision", [Revision.RFC, Revision.V12])
def test_refine_asks_nothing_of_other_revisions(steering_ok: None, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        assert emu.run(refine_revision, revision) is revision
        assert emu.run(refine_revision, None) is None
        assert emu.calls == []


@pytest.mark.kernel
@pytest.mark.parametrize("revision", list(Revision))
def test_probe_kernel_reports_the_refined_revision(steering_ok: None, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        found = emu.run(probe_kernel)
    assert found.hash is not None and found.hash.revision is REFINED[revision]
    assert found.precedence is PRECEDENCE[revision] and found.precedence_asked is (revision.abi is Revision.V3)
    # The capability carries the refined revision too, so HashControl takes the pair as it is.
    assert found.hash.capability == default_capability(REFINED[revision])
    assert found.hash.tried[-1] == (revision.abi, 0)
    decision = found.auto_backend()
    assert decision.backend == "native" and decision.revision is REFINED[revision]


# --------------------------------------------------------------------------- the running kernel


@pytest.mark.kernel
def test_precedence_on_this_kernel(steering_ok: None, tap: TunTapDevice) -> None:
    found = probe_revision(tap).revision
    answer = tap_probe_steering_precedence(tap)
    if found is Revision.V3:
        assert answer in (True, False)
        assert refine_revision(found) is (Revision.V10 if answer else Revision.V3)
    else:  # V3's set-ioctl answers EINVAL on the RFC, v12 and mainline
        assert answer is None
        assert refine_revision(found) is found
    assert not tap.steering.steering_attached and not tap.steering.native_rss
    with Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_second") as prog:
        tap.attach_steering_program(prog.fd)
        tap.detach_steering_program()
