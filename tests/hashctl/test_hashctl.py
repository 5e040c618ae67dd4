"""Hash control: probing, capability, apply/disable and strict mutual exclusion.

Against the real kernel (whatever revision it carries, if any: the tests branch on the probe)
and against the seccomp kernel emulator for each revision. Every test runs in an anonymous network namespace.
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Callable, Iterator

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    FeatureUnsupportedError,
    HashType,
    Revision,
    SteeringConflictError,
    ValidationError,
    VnetHashConfig,
    default_capability,
    ioctl_plan,
)
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.prog import Program
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device._ioctl import ioctl_ptr as real_ioctl_ptr
from pytun_hash.device._ioctl import ioctl_request_ptr
from pytun_hash.device.hashctl import HashControl, HashControlWarning, probe_revision
from pytun_hash.testing import KernelEmulator

pytestmark = pytest.mark.kernel

KEY = MICROSOFT_RSS_KEY
IPV6_ONLY = HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6


@pytest.fixture
def program() -> Iterator[Program]:
    code = Assembler().mov64_imm(Reg.R0, 0).exit()
    with Program.load(code.assemble(), name="hc_const0") as prog:
        yield prog


def _emulated_calls(emu: KernelEmulator) -> list[str]:
    return [c.name for c in emu.calls]


# --------------------------------------------------------------------------- the real kernel


def test_real_kernel_probe_is_consistent(tap: TunTapDevice) -> None:
    result = probe_revision(tap)
    tried = [r for r, _ in result.tried]
    # Newest first; every revision before the one that answered (if any) said EINVAL.
    assert tried == [Revision.V12, Revision.V3, Revision.RFC][: len(tried)]
    assert all(err == errno.EINVAL for _, err in result.tried[:-1])
    if result.revision is None:  # mainline
        assert not result.supported and len(tried) == 3 and result.tried[-1][1] == errno.EINVAL
    else:
        assert result.supported and result.tried[-1] == (result.revision, 0) and result.capability is not None


def test_real_kernel_feature_error_names_revisions_and_fallback(tap: TunTapDevice) -> None:
    found = probe_revision(tap).revision
    if found is not None:
        pytest.skip(f"this kernel carries revision {found.value}: HashControl works here")
    with pytest.raises(FeatureUnsupportedError) as info:
        HashControl(tap)
    exc = info.value
    assert exc.errno == errno.EINVAL
    assert exc.request == "TUNGETVNETHASHCAP"
    assert "eBPF" in exc.hint and "v12" in exc.hint and "rfc" in exc.hint
    with pytest.raises(FeatureUnsupportedError):
        HashControl(tap, revision=Revision.V3)


# --------------------------------------------------------------------------- the emulator


@pytest.mark.parametrize("revision", list(Revision))
def test_probe_and_capability_through_emulator(tap: TunTapDevice, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        result = emu.run(probe_revision, tap)
        assert result.revision is revision.abi
        assert result.capability == default_capability(revision.abi)
        control = emu.run(HashControl, tap)
        assert control.revision is revision.abi
        assert control.capability() == default_capability(revision.abi)


@pytest.mark.parametrize("revision", list(Revision))
def test_apply_disable_round_trip(tap: TunTapDevice, revision: Revision) -> None:
    config = VnetHashConfig.round_robin(4, key=KEY, report=True, table_length=16)
    with KernelEmulator(revision) as emu:
        control = emu.run(HashControl, tap, revision=revision)
        emu.reset_log()
        emu.run(control.apply, config)
        # Exactly the plan's calls, in order.
        assert _emulated_calls(emu) == [c.name for c in ioctl_plan(config, revision)]
        assert all(c.errno == 0 for c in emu.calls)
        assert emu.device_state(tap.name).as_config() == config
        assert control.config == config and tap.steering.native_rss and tap.steering.native_report
        emu.run(control.disable)
        state = emu.device_state(tap.name)
        assert not state.rss and not state.report
        assert control.config == VnetHashConfig.disabled() and not tap.steering.native_rss


def test_rfc_key_workaround_leaves_full_key_in_force(tap: TunTapDevice) -> None:
    config = VnetHashConfig.round_robin(4, key=KEY, types=IPV6_ONLY, table_length=8)
    with KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, tap, revision=Revision.RFC)
        emu.reset_log()
        emu.run(control.apply, config)
        assert [c.bytes_read for c in emu.calls] == [12 + 2 + 40, 12 + 16 + 4]
        state = emu.device_state(tap.name)
        assert state.key == KEY and state.as_config() == config


def test_without_workaround_the_kernel_would_hold_another_key(tap: TunTapDevice) -> None:
    config = VnetHashConfig.round_robin(4, key=KEY, types=IPV6_ONLY, table_length=8)
    only_real_call = ioctl_plan(config, Revision.RFC)[-1]
    with KernelEmulator(Revision.RFC) as emu:
        fd = tap.attached_queues[0].fd
        emu.run(ioctl_request_ptr, fd, only_real_call.request, only_real_call.name,
                bytearray(only_real_call.payload))
        state = emu.device_state(tap.name)
        assert state.key_loaded == 4
        assert state.key == KEY[:4] + bytes(36) != KEY


@pytest.mark.parametrize("revision", list(Revision))
def test_rss_refused_while_steering_attached(tap: TunTapDevice, program: Program, revision: Revision) -> None:
    with KernelEmulator(revision) as emu:
        control = emu.run(HashControl, tap, revision=revision)
        emu.run(tap.attach_steering_program, program.fd)
        emu.reset_log()
        with pytest.raises(SteeringConflictError) as info:
            emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
        assert info.value.errno == errno.EBUSY
        assert "detach" in info.value.hint
        assert emu.calls == []  # no ioctl was issued
        state = emu.device_state(tap.name)
        assert state.steering_attached and not state.rss
        # Report-only hashing coexists with steering.
        emu.run(control.apply, VnetHashConfig(report=True, types=0x3F, key=KEY))
        assert emu.device_state(tap.name).steering_attached
        # Explicit detach, then RSS is allowed.
        emu.run(tap.detach_steering_program)
        emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
        assert emu.device_state(tap.name).rss


@pytest.mark.parametrize("revision", list(Revision))
def test_steering_refused_while_rss_enabled(tap: TunTapDevice, program: Program, revision: Revision) -> None:
    config = VnetHashConfig.round_robin(4, key=KEY, report=True)
    with KernelEmulator(revision) as emu:
        control = emu.run(HashControl, tap, revision=revision)
        emu.run(control.apply, config)
        emu.reset_log()
        with pytest.raises(SteeringConflictError) as info:
            emu.run(tap.attach_steering_program, program.fd)
        assert info.value.errno == errno.EBUSY and info.value.request == "TUNSETSTEERINGEBPF"
        assert emu.calls == []  # TUNSETSTEERINGEBPF was never issued
        state = emu.device_state(tap.name)
        # The RFC kernel would have silently cleared RSS; through the binding it never happens.
        assert state.rss and not state.steering_attached
        assert state.as_config() == config
        emu.run(control.disable)
        emu.run(tap.attach_steering_program, program.fd)
        assert emu.device_state(tap.name).steering_attached
        emu.run(tap.detach_steering_program)


def test_report_needs_20_byte_header(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("hc%d", queues=2, vnet_hdr=True) as dev, KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, dev, revision=Revision.RFC)
        emu.reset_log()
        with pytest.raises(ValidationError) as info:
            emu.run(control.apply, VnetHashConfig(report=True, types=0x3F))
        assert info.value.field == "report" and "set_vnet_hdr_size(20)" in info.value.rule
        assert emu.calls == []
        dev.set_vnet_hdr_size(20)
        emu.run(control.apply, VnetHashConfig(report=True, types=0x3F))
        assert emu.device_state(dev.name).report


def test_capability_violations_refused_before_syscall(tap: TunTapDevice) -> None:
    with KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, tap, revision=Revision.RFC)
        emu.reset_log()
        with pytest.raises(ValidationError) as info:
            emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY, types=0x3F | HashType.IP_EX))
        assert "IP_EX" in info.value.rule
        assert emu.calls == []


def test_warnings_for_queue_range_and_single_queue(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("hc%d", queues=1, vnet_hdr=True) as dev, KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, dev, revision=Revision.RFC)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
        messages = [str(w.message) for w in caught if issubclass(w.category, HashControlWarning)]
        assert any("fewer than 2 queues" in m for m in messages)
        assert any("modulo the queue count" in m for m in messages)


def test_v12_refusals_name_the_v12_requests(tap: TunTapDevice, program: Program) -> None:
    with KernelEmulator(Revision.V12, data_path=False) as emu:
        control = emu.run(HashControl, tap)
        assert control.revision is Revision.V12
        emu.run(tap.attach_steering_program, program.fd)
        emu.reset_log()
        with pytest.raises(SteeringConflictError) as info:
            emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
        assert info.value.request == "TUNSETVNETRSS" and info.value.errno == errno.EBUSY
        assert emu.calls == []
        emu.run(tap.detach_steering_program)
        emu.run(control.apply, VnetHashConfig.round_robin(4, key=KEY, report=True))
        emu.reset_log()
        with pytest.raises(SteeringConflictError) as info:
            emu.run(tap.attach_steering_program, program.fd)
        assert info.value.request == "TUNSETSTEERINGEBPF" and "(TUNSETVNETRSS)" in info.value.hint
        assert "TUNSETVNETHASH" not in info.value.hint
        assert emu.calls == []
        emu.run(control.disable)
    with KernelEmulator(Revision.RFC, data_path=False) as emu, pytest.raises(FeatureUnsupportedError) as gone:
        emu.run(HashControl, tap, revision=Revision.V12)
    assert gone.value.request == "TUNGETVNETHASHTYPES"


_LOCKED_OPERATIONS: dict[str, tuple[str, Callable[[HashControl], object]]] = {
    "apply": ("TUNSETVNETHASH", lambda control: control.apply(VnetHashConfig.round_robin(2, key=KEY))),
    "capability": ("TUNGETVNETHASHCAP", lambda control: control.capability(refresh=True)),
    "probe": ("TUNGETVNETHASHCAP", lambda control: probe_revision(control.device, [Revision.RFC])),
    "queue_ioctl": ("TUNGETIFF", lambda control: control.device.queue_ioctl("TUNGETIFF", bytearray(40))),
}


@pytest.mark.filterwarnings("ignore::pytun_hash.device.hashctl.HashControlWarning")  # 1 queue left
@pytest.mark.parametrize("operation", list(_LOCKED_OPERATIONS))
def test_hash_control_issues_its_ioctls_under_the_device_lock(
    netns: NetworkNamespace, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """A queue closed while hash control runs waits for it, so no hash ioctl reaches a closed or reused fd."""
    request, run = _LOCKED_OPERATIONS[operation]
    with TunTapDevice.create("hc%d", queues=2) as dev, KernelEmulator(Revision.RFC, data_path=False) as emu:
        control = emu.run(HashControl, dev, revision=Revision.RFC)
        first = dev.attached_queues[0]
        number = first.fd
        closers: list[threading.Thread] = []
        seen: list[tuple[int, bool, bool]] = []

        def ioctl_ptr(fd: int, name: str, buf: bytearray, *, revision: Revision = Revision.RFC) -> int:
            if name == request and not closers:
                # Another thread closes the queue about to be used; it must wait for the device lock.
                closer = threading.Thread(target=first.close)
                closers.append(closer)
                closer.start()
                closer.join(0.2)
                seen.append((fd, closer.is_alive(), first.closed))
            os.fstat(fd)  # still open: the number was not handed to another file
            return real_ioctl_ptr(fd, name, buf, revision=revision)

        monkeypatch.setattr("pytun_hash.device.tap.ioctl_ptr", ioctl_ptr)  # what queue_ioctl calls
        emu.reset_log()
        emu.run(run, control)
        assert seen == [(number, True, False)]
        closers[0].join(5)
        assert first.closed and not closers[0].is_alive()
        if request != "TUNGETIFF":  # not a trapped ioctl
            assert [c.errno for c in emu.calls if c.name == request] == [0]
        # The next call picks the queue that is attached now.
        emu.run(control.apply, VnetHashConfig.round_robin(2, key=KEY))
        assert emu.device_state(dev.attached_queues[0].fd).rss and dev.steering.native_rss
