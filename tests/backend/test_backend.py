"""The backend facade: choosing native vs eBPF, and one Hashing API over both.

The native backend runs against the emulated kernel on a FakeTunTap (no privileges) and on a real TAP
under the seccomp emulator; the eBPF backend and the real kernel's answer need root (``kernel``).
"""

from __future__ import annotations

import errno
import time

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    FeatureUnsupportedError,
    HashType,
    Revision,
    SteeringConflictError,
    ValidationError,
    VnetHashConfig,
)
from pytun_hash.backend import Backend, choose_backend
from pytun_hash.bpf import EBPF_RSS_OWNER, prog_ids
from pytun_hash.device import TunTapDevice
from pytun_hash.device.hashctl import HashControl
from pytun_hash.hashing import Hashing
from pytun_hash.testing import FakeTunTap, KernelEmulator
from tests.hardening.conftest import no_syscalls
from tests.harness import BOTH, MakeHarness

CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8)


@pytest.mark.kernel
def test_auto_picks_by_what_the_kernel_has(tap: TunTapDevice) -> None:
    choice = choose_backend(tap)
    assert choice.probe is not None
    if choice.probe.revision is not None:  # a kernel carrying the series
        assert choice.backend is Backend.NATIVE and choice.revision is choice.probe.revision
        assert choose_backend(tap, Backend.EBPF).backend is Backend.EBPF
        return
    assert choice.backend is Backend.EBPF and choice.revision is None
    assert "lacks the hash ioctls" in choice.reason
    assert choice.probe is not None and not choice.probe.supported
    with pytest.raises(FeatureUnsupportedError) as info:
        choose_backend(tap, Backend.NATIVE)
    assert info.value.errno == errno.EINVAL and "eBPF" in info.value.hint
    assert choose_backend(tap, Backend.EBPF).backend is Backend.EBPF


@pytest.mark.parametrize("where", BOTH)
def test_auto_picks_native_where_a_revision_answers(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.V3)
    choice = h.run(choose_backend, h.device)
    assert choice.backend is Backend.NATIVE and choice.revision is Revision.V3
    hashing = h.run(Hashing.enable, h.device, CONFIG.replace(report=True))
    assert hashing.backend is Backend.NATIVE and not hashing.reports_in_user_space
    assert h.state().as_config() == CONFIG.replace(report=True)
    h.run(hashing.reconfigure, CONFIG.replace(unclassified_queue=3))
    assert h.state().unclassified_queue == 3
    h.run(hashing.close)
    assert not h.state().enabled


def test_auto_picks_ebpf_where_no_revision_answers() -> None:
    with FakeTunTap(None) as mainline:
        choice = choose_backend(mainline)
        assert choice.backend is Backend.EBPF and choice.revision is None
        assert "lacks the hash ioctls" in choice.reason
        assert choice.probe is not None and not choice.probe.supported
        with pytest.raises(FeatureUnsupportedError) as info:
            choose_backend(mainline, Backend.NATIVE)
        assert info.value.errno == errno.EINVAL and "eBPF" in info.value.hint


def test_native_refused_while_a_steering_program_is_attached() -> None:
    with FakeTunTap(Revision.RFC) as fake:
        fake.attach_steering_program(7, owner="ebpf-rss", exclusive=True)
        fake.reset_log()
        with pytest.raises(SteeringConflictError):
            Hashing.enable(fake, CONFIG, backend=Backend.NATIVE, revision=Revision.RFC)
        # Only the capability was read; no set-ioctl was issued.
        assert [c.name for c in fake.calls] == ["TUNGETVNETHASHCAP"]
        fake.detach_steering_program()
        with Hashing.enable(fake, CONFIG) as native:
            assert native.backend is Backend.NATIVE and fake.kernel_state().rss


@pytest.mark.kernel
def test_ebpf_enable_reconfigure_disable(tap: TunTapDevice) -> None:
    with Hashing.enable(tap, CONFIG.replace(report=True)) as hashing:
        assert hashing.backend is Backend.EBPF and hashing.reports_in_user_space
        assert tap.steering.steering_attached and tap.steering.steering_owner == EBPF_RSS_OWNER
        assert hashing.ebpf is not None
        program_id = hashing.ebpf.object_ids()[0]
        hashing.reconfigure(CONFIG.replace(types=HashType.TCPV4 | HashType.UDPV4))
        assert hashing.config.types == HashType.TCPV4 | HashType.UDPV4
        # Report-only: nothing to steer, so the program goes.
        hashing.reconfigure(VnetHashConfig(report=True, types=0x3F))
        assert hashing.ebpf is None and not tap.steering.steering_attached
        hashing.reconfigure(CONFIG)
        assert tap.steering.steering_attached
    assert not tap.steering.steering_attached
    assert program_id not in _settled_prog_ids(program_id)
    with pytest.raises(ValidationError):
        hashing.reconfigure(CONFIG)


def test_ebpf_refuses_ex_types() -> None:
    # Refused before any program is loaded, so a device without a kernel shows it.
    with FakeTunTap(None) as mainline, no_syscalls():
        with pytest.raises(ValidationError):
            Hashing.enable(mainline, CONFIG.replace(types=HashType.TCPV4 | HashType.TCP_EX), backend=Backend.EBPF)
        assert not mainline.steering.steering_attached and mainline.attached_program is None


@pytest.mark.kernel
def test_keep_leaves_the_program_attached(tap: TunTapDevice) -> None:
    hashing = Hashing.enable(tap, CONFIG)
    assert hashing.ebpf is not None
    program_id = hashing.ebpf.object_ids()[0]
    hashing.close(keep=True)
    # The device (and the pins) keep the program alive; the record says so to any process.
    assert program_id in prog_ids()
    assert tap.steering.steering_attached
    recorded = Hashing.recorded(tap)
    assert recorded is not None and recorded.ebpf is not None and recorded.ebpf.program_id == program_id
    removal = Hashing.remove(tap)
    assert removal.record == recorded and Hashing.recorded(tap) is None
    assert not tap.steering.steering_attached
    assert program_id not in _settled_prog_ids(program_id)


@pytest.mark.kernel
def test_exclusion_between_backends(tap: TunTapDevice) -> None:
    with Hashing.enable(tap, CONFIG, backend=Backend.EBPF), KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, tap, revision=Revision.RFC)
        emu.reset_log()
        with pytest.raises(SteeringConflictError):
            emu.run(control.apply, CONFIG)
        assert emu.calls == []
        with pytest.raises(SteeringConflictError):
            emu.run(Hashing.enable, tap, CONFIG, backend=Backend.NATIVE, revision=Revision.RFC)
        # Refused on the device's record, before any hash ioctl.
        assert emu.calls == []
    with KernelEmulator(Revision.RFC) as emu:
        native = emu.run(Hashing.enable, tap, CONFIG)
        assert native.backend is Backend.NATIVE
        with pytest.raises(SteeringConflictError):
            Hashing.enable(tap, CONFIG, backend=Backend.EBPF)
        emu.run(native.close)


def _settled_prog_ids(program_id: int, timeout: float = 5.0) -> list[int]:
    # The kernel frees a detached program after an RCU grace period.
    deadline = time.monotonic() + timeout
    ids = prog_ids()
    while program_id in ids and time.monotonic() < deadline:
        time.sleep(0.02)
        ids = prog_ids()
    return ids
