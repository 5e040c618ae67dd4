"""Hash control: probing, capability, apply/disable and strict mutual exclusion.

Against the real kernel (whatever revision it carries, if any: the tests branch on the probe), and
against the emulated kernel of each revision (tests/harness.py): on a FakeTunTap, without privileges,
and for the representative cases also on a real TAP under the seccomp KernelEmulator (``kernel``).
"""

from __future__ import annotations

import errno
import os
import threading
import warnings
from collections.abc import Callable

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
from pytun_hash.device import TunTapDevice
from pytun_hash.device._ioctl import ioctl_ptr as real_ioctl_ptr
from pytun_hash.device.hashctl import HashControl, HashControlWarning, probe_revision
from pytun_hash.testing import FakeQueue, FakeTunTap
from tests.harness import BOTH, FAKE, KERNEL, Harness, MakeHarness

KEY = MICROSOFT_RSS_KEY
IPV6_ONLY = HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6

#: The exclusion on every revision without a kernel, and on the RFC (its silent drop) on a real one.
EXCLUSION = [pytest.param(FAKE.values[0], r, id=f"fake-{r.value}") for r in Revision] + [
    pytest.param(KERNEL.values[0], Revision.RFC, id="kernel-rfc", marks=KERNEL.marks)
]


def _calls(harness: Harness) -> list[str]:
    return [c.name for c in harness.calls]


# --------------------------------------------------------------------------- the real kernel


@pytest.mark.kernel
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


@pytest.mark.kernel
def test_real_kernel_feature_error_names_revisions_and_fallback(tap: TunTapDevice) -> None:
    found = probe_revision(tap).revision
    if found is not None:
        pytest.skip(f"this kernel carries revision {found.value}: HashControl works here")
    _assert_feature_error(tap)


def test_feature_error_names_revisions_and_fallback() -> None:
    """A kernel without any revision's hash ioctls (mainline), faked."""
    with FakeTunTap(None) as fake:
        result = probe_revision(fake)
        assert result.tried == ((Revision.V12, errno.EINVAL), (Revision.V3, errno.EINVAL), (Revision.RFC, errno.EINVAL))
        _assert_feature_error(fake)
        assert fake.calls == []  # nothing was trapped: this kernel has no hash ioctls


def _assert_feature_error(device: TunTapDevice | FakeTunTap) -> None:
    with pytest.raises(FeatureUnsupportedError) as info:
        HashControl(device)
    exc = info.value
    assert exc.errno == errno.EINVAL
    assert exc.request == "TUNGETVNETHASHCAP"
    assert "eBPF" in exc.hint and "v12" in exc.hint and "rfc" in exc.hint
    with pytest.raises(FeatureUnsupportedError):
        HashControl(device, revision=Revision.V3)


# --------------------------------------------------------------------------- the emulated kernel


@pytest.mark.parametrize("revision", list(Revision))
@pytest.mark.parametrize("where", [FAKE])
def test_probe_and_capability(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    # On the seccomp path: tests/testing/test_integration.py::test_hash_control_runs_unmodified_against_the_emulator.
    h = make_harness(where, revision)
    result = h.run(probe_revision, h.device)
    assert result.revision is revision.abi
    assert result.capability == default_capability(revision.abi)
    control = h.run(HashControl, h.device)
    assert control.revision is revision.abi
    assert control.capability() == default_capability(revision.abi)


@pytest.mark.parametrize("revision", list(Revision))
@pytest.mark.parametrize("where", [FAKE])
def test_apply_disable_round_trip(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    # On the seccomp path: tests/testing/test_integration.py (the plans, and hash control unmodified).
    h = make_harness(where, revision)
    config = VnetHashConfig.round_robin(4, key=KEY, report=True, table_length=16)
    control = h.run(HashControl, h.device, revision=revision)
    h.reset_log()
    h.run(control.apply, config)
    # Exactly the plan's calls, in order.
    assert _calls(h) == [c.name for c in ioctl_plan(config, revision)]
    assert all(c.errno == 0 for c in h.calls)
    assert h.state().as_config() == config
    assert control.config == config and h.device.steering.native_rss and h.device.steering.native_report
    h.run(control.disable)
    state = h.state()
    assert not state.rss and not state.report
    assert control.config == VnetHashConfig.disabled() and not h.device.steering.native_rss


@pytest.mark.parametrize("where", BOTH)
def test_rfc_key_workaround_leaves_full_key_in_force(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.RFC)
    config = VnetHashConfig.round_robin(4, key=KEY, types=IPV6_ONLY, table_length=8)
    control = h.run(HashControl, h.device, revision=Revision.RFC)
    h.reset_log()
    h.run(control.apply, config)
    assert [c.bytes_read for c in h.calls] == [12 + 2 + 40, 12 + 16 + 4]
    state = h.state()
    assert state.key == KEY and state.as_config() == config


@pytest.mark.parametrize("where", [FAKE])
def test_without_workaround_the_kernel_would_hold_another_key(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.RFC)
    config = VnetHashConfig.round_robin(4, key=KEY, types=IPV6_ONLY, table_length=8)
    only_real_call = ioctl_plan(config, Revision.RFC)[-1]
    h.run(h.device.queue_ioctl, only_real_call.name, bytearray(only_real_call.payload), revision=Revision.RFC)
    state = h.state()
    assert state.key_loaded == 4
    assert state.key == KEY[:4] + bytes(36) != KEY


@pytest.mark.parametrize(("where", "revision"), EXCLUSION)
def test_rss_refused_while_steering_attached(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    h = make_harness(where, revision)
    dev, program = h.device, h.program()
    control = h.run(HashControl, dev, revision=revision)
    h.run(dev.attach_steering_program, program)
    h.reset_log()
    with pytest.raises(SteeringConflictError) as info:
        h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
    assert info.value.errno == errno.EBUSY
    assert "detach" in info.value.hint
    assert h.calls == []  # no ioctl was issued
    state = h.state()
    assert state.steering_attached and not state.rss
    # Report-only hashing coexists with steering.
    h.run(control.apply, VnetHashConfig(report=True, types=0x3F, key=KEY))
    assert h.state().steering_attached
    # Explicit detach, then RSS is allowed.
    h.run(dev.detach_steering_program)
    h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
    assert h.state().rss


@pytest.mark.parametrize(("where", "revision"), EXCLUSION)
def test_steering_refused_while_rss_enabled(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    h = make_harness(where, revision)
    dev, program = h.device, h.program()
    config = VnetHashConfig.round_robin(4, key=KEY, report=True)
    control = h.run(HashControl, dev, revision=revision)
    h.run(control.apply, config)
    h.reset_log()
    with pytest.raises(SteeringConflictError) as info:
        h.run(dev.attach_steering_program, program)
    assert info.value.errno == errno.EBUSY and info.value.request == "TUNSETSTEERINGEBPF"
    assert h.calls == []  # TUNSETSTEERINGEBPF was never issued
    state = h.state()
    # The RFC kernel would have silently cleared RSS; through the binding it never happens.
    assert state.rss and not state.steering_attached
    assert state.as_config() == config
    h.run(control.disable)
    h.run(dev.attach_steering_program, program)
    assert h.state().steering_attached
    h.run(dev.detach_steering_program)


@pytest.mark.parametrize("where", [FAKE])
def test_report_needs_20_byte_header(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.RFC, queues=2, vnet_hdr_size=None)
    control = h.run(HashControl, h.device, revision=Revision.RFC)
    h.reset_log()
    with pytest.raises(ValidationError) as info:
        h.run(control.apply, VnetHashConfig(report=True, types=0x3F))
    assert info.value.field == "report" and "set_vnet_hdr_size(20)" in info.value.rule
    assert h.calls == []
    h.device.set_vnet_hdr_size(20)
    h.run(control.apply, VnetHashConfig(report=True, types=0x3F))
    assert h.state().report


@pytest.mark.parametrize("where", [FAKE])
def test_capability_violations_refused_before_syscall(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.RFC)
    control = h.run(HashControl, h.device, revision=Revision.RFC)
    h.reset_log()
    with pytest.raises(ValidationError) as info:
        h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY, types=0x3F | HashType.IP_EX))
    assert "IP_EX" in info.value.rule
    assert h.calls == []


@pytest.mark.parametrize("where", [FAKE])
def test_warnings_for_queue_range_and_single_queue(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.RFC, queues=1)
    control = h.run(HashControl, h.device, revision=Revision.RFC)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
    messages = [str(w.message) for w in caught if issubclass(w.category, HashControlWarning)]
    assert any("fewer than 2 queues" in m for m in messages)
    assert any("modulo the queue count" in m for m in messages)


@pytest.mark.parametrize("where", BOTH)
def test_v12_refusals_name_the_v12_requests(make_harness: MakeHarness, where: str) -> None:
    h = make_harness(where, Revision.V12, data_path=False)
    dev, program = h.device, h.program()
    control = h.run(HashControl, dev)
    assert control.revision is Revision.V12
    h.run(dev.attach_steering_program, program)
    h.reset_log()
    with pytest.raises(SteeringConflictError) as info:
        h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY))
    assert info.value.request == "TUNSETVNETRSS" and info.value.errno == errno.EBUSY
    assert h.calls == []
    h.run(dev.detach_steering_program)
    h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY, report=True))
    h.reset_log()
    with pytest.raises(SteeringConflictError) as info:
        h.run(dev.attach_steering_program, program)
    assert info.value.request == "TUNSETSTEERINGEBPF" and "(TUNSETVNETRSS)" in info.value.hint
    assert "TUNSETVNETHASH" not in info.value.hint
    assert h.calls == []
    h.run(control.disable)


def test_v12_named_on_another_revisions_kernel() -> None:
    # The V12 get-ioctl on an RFC kernel answers as an unknown ioctl.
    with FakeTunTap(Revision.RFC) as fake, pytest.raises(FeatureUnsupportedError) as gone:
        HashControl(fake, revision=Revision.V12)
    assert gone.value.request == "TUNGETVNETHASHTYPES"
    assert [(c.name, c.errno) for c in fake.calls] == [("TUNGETVNETHASHTYPES[v12]", errno.EINVAL)]


_LOCKED_OPERATIONS: dict[str, tuple[str, Callable[[HashControl], object]]] = {
    "apply": ("TUNSETVNETHASH", lambda control: control.apply(VnetHashConfig.round_robin(2, key=KEY))),
    "capability": ("TUNGETVNETHASHCAP", lambda control: control.capability(refresh=True)),
    "probe": ("TUNGETVNETHASHCAP", lambda control: probe_revision(control.device, [Revision.RFC])),
    "queue_ioctl": ("TUNGETIFF", lambda control: control.device.queue_ioctl("TUNGETIFF", bytearray(40))),
}
LOCKED = [pytest.param(FAKE.values[0], op, id=f"fake-{op}") for op in _LOCKED_OPERATIONS] + [
    pytest.param(KERNEL.values[0], "apply", id="kernel-apply", marks=KERNEL.marks)
]


@pytest.mark.filterwarnings("ignore::pytun_hash.device.hashctl.HashControlWarning")  # 1 queue left
@pytest.mark.parametrize(("where", "operation"), LOCKED)
def test_hash_control_issues_its_ioctls_under_the_device_lock(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch, where: str, operation: str
) -> None:
    """A queue closed while hash control runs waits for it, so no hash ioctl reaches a closed or reused fd."""
    request, run = _LOCKED_OPERATIONS[operation]
    h = make_harness(where, Revision.RFC, queues=2, data_path=False)
    dev = h.device
    control = h.run(HashControl, dev, revision=Revision.RFC)
    assert isinstance(dev, TunTapDevice | FakeTunTap)
    first = dev.attached_queues[0]
    number = first.fd
    closers: list[threading.Thread] = []
    seen: list[tuple[int, bool, bool]] = []

    def close_concurrently(fd: int, name: str) -> None:
        if name == request and not closers:
            # Another thread closes the queue about to be used; it must wait for the device lock.
            closer = threading.Thread(target=first.close)
            closers.append(closer)
            closer.start()
            closer.join(0.2)
            seen.append((fd, closer.is_alive(), first.closed))

    if isinstance(dev, FakeTunTap):
        fake_ioctl = FakeTunTap._ioctl

        def ioctl(self: FakeTunTap, queue: FakeQueue, name: str, buf: bytearray, revision: Revision) -> int:
            close_concurrently(queue.fd, name)
            assert not queue.closed  # still open: the queue was not closed under the call
            return fake_ioctl(self, queue, name, buf, revision)

        monkeypatch.setattr(FakeTunTap, "_ioctl", ioctl)
    else:

        def ioctl_ptr(fd: int, name: str, buf: bytearray, *, revision: Revision = Revision.RFC) -> int:
            close_concurrently(fd, name)
            os.fstat(fd)  # still open: the number was not handed to another file
            return real_ioctl_ptr(fd, name, buf, revision=revision)

        monkeypatch.setattr("pytun_hash.device.tap.ioctl_ptr", ioctl_ptr)  # what queue_ioctl calls
    h.reset_log()
    h.run(run, control)
    assert seen == [(number, True, False)]
    closers[0].join(5)
    assert first.closed and not closers[0].is_alive()
    if request != "TUNGETIFF":  # not a trapped ioctl
        assert [c.errno for c in h.calls if c.name == request] == [0]
    # The next call picks the queue that is attached now.
    h.run(control.apply, VnetHashConfig.round_robin(2, key=KEY))
    assert h.state().rss and dev.steering.native_rss
