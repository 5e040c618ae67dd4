"""Faults: the device deleted under open queues, a queue fd closed underneath, the emulator's
supervisor gone, a call of a two-call plan refused, the verifier rejecting a program, and no
privilege. Each gives a typed error with a useful sentence, and the binding's state
(``HashControl.config``, ``device.steering``, the queue lists) is what the kernel holds afterwards.

Deletion and the refused plan run against the emulated kernel on a FakeTunTap (no privileges) and,
for the operations a real device takes part in, on a real TAP (``kernel``); the rest needs the real
kernel, the seccomp emulator or ``bpf(2)``, and is marked ``kernel``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    DeviceGoneError,
    FeatureUnsupportedError,
    HashControl,
    HashType,
    KernelError,
    Revision,
    UnsupportedError,
    VerifierError,
    VnetHashCapability,
    VnetHashConfig,
    probe_revision,
)
from pytun_hash._abi import hash_ioctls
from pytun_hash.bpf import Assembler, EbpfRss, Program, enable_ebpf_rss, rss
from pytun_hash.codec import kernel_write_length
from pytun_hash.device import DeviceMode, NetworkNamespace, Queue, TunTapDevice
from pytun_hash.testing import EmulatorError, EmulatorFault, FakeQueue, FakeTunTap, KernelEmulator
from tests import tracking
from tests.cli.helpers import tun_open_to_nobody
from tests.hardening.conftest import bpf_skip_reason
from tests.hardening.test_bad_input import assert_binding_agrees
from tests.harness import BOTH, Harness, MakeHarness

pytestmark = pytest.mark.filterwarnings("ignore::pytun_hash.HashControlWarning")

KEY = MICROSOFT_RSS_KEY
RSS = VnetHashConfig.round_robin(2, key=KEY, table_length=8)
FRAME = bytes(10) + bytes(12) + b"\x08\x00" + bytes(46)


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ----------------------------------------------------------------------------- device deleted


@attrs.frozen
class Gone:
    """A device deleted under its open queues, and what was in force before."""

    dev: TunTapDevice | FakeTunTap
    control: HashControl
    program: int
    detached: Queue | FakeQueue
    h: Harness

    @property
    def tap(self) -> TunTapDevice:
        """The real device (operations the fake does not model)."""
        assert isinstance(self.dev, TunTapDevice)
        return self.dev


# (name, operation): what hash control and the steering rule use; on the fake, and some on the kernel.
HASH_OPERATIONS: list[tuple[str, Callable[[Gone], object]]] = [
    ("get_vnet_hdr_size", lambda g: g.dev.get_vnet_hdr_size()),
    ("set_vnet_hdr_size", lambda g: g.dev.set_vnet_hdr_size(20)),
    ("set_vnet_le", lambda g: g.dev.set_vnet_le(True)),
    ("attach_steering_program", lambda g: g.h.run(g.dev.attach_steering_program, g.program)),
    ("detach_steering_program", lambda g: g.h.run(g.dev.detach_steering_program)),
    ("probe_revision", lambda g: g.h.run(probe_revision, g.dev)),
    ("HashControl", lambda g: g.h.run(HashControl, g.dev)),
    ("apply", lambda g: g.h.run(g.control.apply, RSS.replace(report=True))),
    ("disable", lambda g: g.h.run(g.control.disable)),
    ("capability refresh", lambda g: g.h.run(g.control.capability, refresh=True)),
    ("add_queue", lambda g: g.dev.add_queue()),
    ("attach_queue", lambda g: g.detached.attach()),
    ("detach_queue", lambda g: g.dev.attached_queues[0].detach()),
]
# (name, operation, clears the steering state; adopt builds a new device object instead): the real
# device's own calls, and frames; only on the kernel.
DEVICE_OPERATIONS: list[tuple[str, Callable[[Gone], object], bool]] = [
    ("set_offload", lambda g: g.tap.set_offload(0), True),
    ("set_persist", lambda g: g.tap.set_persist(False), True),
    ("set_carrier", lambda g: g.tap.set_carrier(True), True),
    ("getiff", lambda g: g.tap.getiff(), True),
    ("link_info", lambda g: g.tap.link_info(), True),
    ("kernel_queue_counts", lambda g: g.tap.kernel_queue_counts(), True),
    ("read", lambda g: g.tap.attached_queues[0].read(), True),
    ("write", lambda g: g.tap.attached_queues[0].write(FRAME), True),
    ("ebpf attach", lambda g: enable_ebpf_rss(g.tap, RSS), True),
    ("adopt", lambda g: TunTapDevice.adopt([q.fd for q in g.tap.queues], close=False), False),
]
#: Hash operations also run on a real deleted device, after either state: the set-ioctl and the
#: steering attach, where what was in force decides the path (a refusal asks TUNGETIFF first).
_HASH_ON_THE_KERNEL = {"apply", "attach_steering_program"}
#: And the queue operations (tun.c answers EINVAL there, TUNGETIFF tells deletion apart), like the
#: device's own calls, once: their path does not depend on what was in force, and the fake clears
#: the binding's record after either state. After a real steering program, which the kernel frees.
_QUEUE_OPERATIONS = {"add_queue", "attach_queue", "detach_queue"}


def _deleted_cases() -> Iterator[object]:
    kernel = pytest.mark.kernel
    for before in ("native rss", "steering program"):
        for name, op in HASH_OPERATIONS:
            yield pytest.param("fake", before, name, op, True, id=f"fake-{name}-{before}")
            if name in _HASH_ON_THE_KERNEL or (name in _QUEUE_OPERATIONS and before == "steering program"):
                yield pytest.param("kernel", before, name, op, True, id=f"kernel-{name}-{before}", marks=kernel)
    for name, op, clears in DEVICE_OPERATIONS:
        before = "steering program"
        yield pytest.param("kernel", before, name, op, clears, id=f"kernel-{name}-{before}", marks=kernel)


@pytest.mark.parametrize(("where", "before", "name", "operation", "clears"), list(_deleted_cases()))
def test_device_deleted_under_open_queues(
    make_harness: MakeHarness,
    where: str,
    before: str,
    name: str,
    operation: Callable[[Gone], object],
    clears: bool,
) -> None:
    h = make_harness(where, Revision.RFC, queues=3)
    dev = h.device
    assert isinstance(dev, TunTapDevice | FakeTunTap)
    detached = dev.queues[2]
    detached.detach()
    program = h.program()
    control = h.run(HashControl, dev, revision=Revision.RFC)
    if before == "native rss":
        h.run(control.apply, RSS)
    else:
        h.run(dev.attach_steering_program, program)
    h.delete()
    with pytest.raises(DeviceGoneError) as info:
        operation(Gone(dev, control, program, detached, h))
    exc = info.value
    assert exc.errno == errno.EBADFD
    assert "deleted" in exc.hint, exc.hint
    # The kernel freed the hash state and the steering program with the device: the binding,
    # once it has seen the deletion, holds neither.
    if clears:
        assert not dev.steering.native_rss and not dev.steering.native_report
        assert not dev.steering.steering_attached
    if name in ("apply", "disable", "capability refresh"):
        assert control.config is None


_GET_NEEDS_NO_DEVICE = [
    *(pytest.param("fake", r, id=f"fake-{r.value}") for r in (Revision.V3, Revision.V10, Revision.V12)),
    pytest.param("kernel", Revision.V12, id="kernel-v12", marks=pytest.mark.kernel),
]


@pytest.mark.parametrize(("where", "revision"), _GET_NEEDS_NO_DEVICE)
def test_deletion_is_seen_where_the_get_ioctl_needs_no_device(
    make_harness: MakeHarness, where: str, revision: Revision
) -> None:
    """v3+ answer their capability ioctl without a device (v12 even on a deleted device's fd)."""
    h = make_harness(where, revision, queues=2, data_path=False)
    dev = h.device
    control = h.run(HashControl, dev, revision=revision)
    h.delete()
    # The emulated kernel itself still answers the get-ioctl on the dead fd...
    get = hash_ioctls(revision)[0]
    h.run(dev.queue_ioctl, get.name, bytearray(kernel_write_length(revision, get.name)), revision=revision)
    for operation in (
        lambda: probe_revision(dev),
        lambda: HashControl(dev),
        lambda: control.capability(refresh=True),
    ):
        # ...but the binding asks TUNGETIFF first and reports the deletion.
        with pytest.raises(DeviceGoneError) as info:
            h.run(operation)
        assert info.value.errno == errno.EBADFD
    assert all(c.errno == 0 for c in h.calls)  # no get-ioctl failed: the binding asked TUNGETIFF


# ----------------------------------------------------------------------------- fd closed underneath


@pytest.mark.kernel
def test_queue_fd_closed_underneath(netns: NetworkNamespace, need_seccomp: None) -> None:
    fds = _fd_count()
    dev = TunTapDevice.create("cl%d", queues=3)
    try:
        dev.set_vnet_hdr_size(20)
        with KernelEmulator(Revision.RFC) as emu:
            control = emu.run(HashControl, dev, revision=Revision.RFC)
            emu.run(control.apply, RSS)
            first = dev.attached_queues[0]
            number = first.fd
            os.close(number)  # behind the binding's back: the control fd is gone
            for call in (dev.get_vnet_hdr_size, first.read, lambda: first.write(FRAME), dev.getiff):
                with pytest.raises(KernelError) as info:
                    call()
                assert info.value.errno == errno.EBADF and "closed" in info.value.hint
            # The same number reused by another file: the binding now reaches a file that is not a queue.
            reused = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            assert reused == number
            with pytest.raises(UnsupportedError) as info:
                emu.run(control.apply, RSS.replace(unclassified_queue=1))
            assert info.value.errno == errno.ENOTTY and "not a TUN/TAP queue" in info.value.hint
            assert [c.passed_through for c in emu.calls[-1:]] == [True]
            # Nothing changed on the device, and the binding still says what it holds.
            assert control.config == RSS and dev.steering.native_rss
            assert emu.device_state(dev.attached_queues[1].fd).as_config() == RSS
    finally:
        # Closes every queue fd, the reused number too: an fd closed behind the binding's back is
        # a bug of the caller, and this is its cost.
        dev.close()
    with pytest.raises(OSError):
        os.fstat(number)
    assert _fd_count() == fds


# ----------------------------------------------------------------------------- the emulator's supervisor


@pytest.mark.kernel
def test_emulator_supervisor_gone(tap: TunTapDevice, need_seccomp: None) -> None:
    emu = KernelEmulator(Revision.RFC, timeout=0.3)
    try:
        control = emu.run(HashControl, tap, revision=Revision.RFC)
        emu.run(control.apply, RSS)
        seen: list[BaseException] = []
        finished = threading.Event()
        gave_up = threading.Event()

        def outlives_the_supervisor() -> None:
            # Wait until run() has given up (after 0.3 s) and closed the listener: no race of sleeps.
            gave_up.wait(60)
            try:
                control.apply(RSS.replace(indirection_table=(1,) * 8))
            except BaseException as exc:
                seen.append(exc)
            finally:
                finished.set()

        with pytest.raises(EmulatorError, match="did not finish"):
            emu.run(outlives_the_supervisor)
        gave_up.set()
        assert finished.wait(60)
        [exc] = seen
        assert isinstance(exc, FeatureUnsupportedError) and exc.errno == errno.ENOSYS
        assert "supervisor is gone" in exc.hint
        # The call never reached the (emulated) kernel: the binding and the kernel still agree.
        assert control.config == RSS and tap.steering.native_rss
        assert_binding_agrees(control, tap, emu.device_state(tap.queues[0].fd))
        with pytest.raises(EmulatorError, match="unusable"):
            emu.run(control.disable)
    finally:
        emu.close()


@pytest.mark.kernel
def test_emulator_handler_failure_is_reported(tap: TunTapDevice, need_seccomp: None) -> None:
    with KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, tap, revision=Revision.RFC)
        emu.inject(EmulatorFault.HANDLER_ERROR, requests={"TUNSETVNETHASH"})
        with pytest.raises(EmulatorError, match="handler of TUNSETVNETHASH failed") as info:
            emu.run(control.apply, RSS)
        # The target saw EIO, a typed kernel error, and recorded nothing.
        assert isinstance(info.value.__cause__, KernelError) and info.value.__cause__.errno == errno.EIO
        assert control.config is None and not tap.steering.native_rss
        assert emu.calls[-1].errno == errno.EIO and emu.calls[-1].failure


@pytest.mark.parametrize("where", BOTH)
def test_second_call_of_a_plan_refused(make_harness: MakeHarness, where: str) -> None:
    # An IPv6-only type set needs the key-loading call first; this kernel refuses the second
    # call (its table limit is 4), so only the first one is in force.
    small = VnetHashCapability(Revision.RFC, 0x3F, max_indirection_table_length=4)
    config = RSS.replace(types=HashType.IPV6 | HashType.TCPV6)
    h = make_harness(where, Revision.RFC, capability=small)
    control = h.run(HashControl, h.device, revision=Revision.RFC, read_capability=False)
    h.reset_log()
    with pytest.raises(KernelError) as info:
        h.run(control.apply, config)
    assert info.value.errno == errno.EINVAL and info.value.hint
    assert [c.errno for c in h.calls] == [0, errno.EINVAL]
    # The binding records what the first call left: hashing off, the whole key loaded.
    assert control.config is not None and not control.config.enabled and control.config.key == KEY
    assert_binding_agrees(control, h.device, h.state())


# ----------------------------------------------------------------------------- the verifier


@pytest.mark.kernel
def test_verifier_rejects_a_program() -> None:
    reason = bpf_skip_reason()
    if reason:
        pytest.skip(reason)
    fds = _fd_count()
    with pytest.raises(VerifierError) as info:
        Program.load(Assembler().exit().assemble(), name="hardening_bad")  # r0 never written
    exc = info.value
    assert exc.errno == errno.EACCES and "R0 !read_ok" in exc.log and "R0 !read_ok" in str(exc)
    assert exc.hint
    assert _fd_count() == fds


@pytest.mark.kernel
def test_verifier_rejection_leaves_no_maps_and_no_steering(tap: TunTapDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = bpf_skip_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setattr(rss, "generate_shared_rss_program", lambda *args, **kwargs: Assembler().exit().assemble())
    fds = _fd_count()
    mark = tracking.bpf_mark()
    with pytest.raises(VerifierError):
        enable_ebpf_rss(tap, RSS)
    with pytest.raises(VerifierError):
        EbpfRss.load(RSS, DeviceMode.TAP)
    assert _fd_count() == fds
    assert not tap.steering.steering_attached
    made = tracking.bpf_since(mark)
    assert made[1], "the refused loads created their maps first"
    _wait_until(lambda: not any(tracking.alive_bpf(*made)), "the maps of the refused program")


def _wait_until(done: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            pytest.fail(f"{what} still exist after {timeout} s")
        time.sleep(0.01)


# ----------------------------------------------------------------------------- no privilege

_CHILD = Path(__file__).with_name("unprivileged_child.py")


@pytest.fixture
def shared_tap(netns: NetworkNamespace, program: Program) -> Iterator[tuple[TunTapDevice, Program]]:
    with TunTapDevice.create("up%d", queues=2) as dev:
        yield dev, program


def _run_child(mode: str, dev: TunTapDevice, program: Program) -> dict[str, dict[str, object]]:
    fds = [q.fd for q in dev.queues] + [program.fd]
    for fd in fds:
        os.set_inheritable(fd, True)
    try:
        # Started from this thread, the child lives in the test's network namespace, next to the TAP.
        done = subprocess.run(
            [sys.executable, str(_CHILD), mode, *map(str, fds)],
            pass_fds=fds,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        for fd in fds:
            os.set_inheritable(fd, False)
    assert done.returncode == 0, done.stderr
    results = {}
    for line in done.stdout.splitlines():
        entry = json.loads(line)
        results[entry["op"]] = entry
    foreign = {op: r for op, r in results.items() if str(r["error"]).startswith("foreign:")}
    assert not foreign, f"exceptions that are not pytun_hash's own: {foreign}"
    return results


def _refused(result: dict[str, object], err: int, capability: str) -> None:
    assert result["error"] == "PrivilegeError" and result["errno"] == err, result
    assert capability in str(result["hint"]), result


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["nocaps", "nobody"])
def test_without_privilege(shared_tap: tuple[TunTapDevice, Program], mode: str) -> None:
    dev, program = shared_tap
    # With an owner set, attaching queues needs that uid or CAP_NET_ADMIN (tun_not_capable()).
    dev.set_owner(12345)
    results = _run_child(mode, dev, program)
    if mode == "nocaps":
        _refused(results["create"], errno.EPERM, "CAP_NET_ADMIN")
        _refused(results["add_queue"], errno.EPERM, "CAP_NET_ADMIN")
    elif tun_open_to_nobody():
        # Opening succeeds where /dev/net/tun is 0666; creating and attaching still need CAP_NET_ADMIN.
        _refused(results["create"], errno.EPERM, "CAP_NET_ADMIN")
        _refused(results["add_queue"], errno.EPERM, "CAP_NET_ADMIN")
    else:
        _refused(results["create"], errno.EACCES, "/dev/net/tun")
        _refused(results["add_queue"], errno.EACCES, "/dev/net/tun")
    for op in ("prog_load", "map_create", "ebpf_load"):
        _refused(results[op], errno.EPERM, "CAP_BPF")
    assert results["fds_unchanged"]["ok"]
    # With queue fds handed over (as a VMM gets them), what needs no privilege works, the refused
    # add_queue left the binding's queue set as the kernel has it, and hash control through the
    # emulator needs no privilege at all.
    ok = ("adopt", "detach_queue", "attach_queue", "queues_unchanged", "attach_steering", "detach_steering")
    for op in (*ok, "emulated_apply", "emulated_state"):
        assert results[op]["ok"], results[op]
