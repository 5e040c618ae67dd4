"""FakeTunTap: a device whose hash ioctls the emulator's kernel logic answers in-process.

Everything here runs without privileges, except the parity test, which runs one script on a fake and
on a real TAP under the seccomp emulator and compares what the two kernels saw and held.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    BusyError,
    DeviceGoneError,
    HashControl,
    KernelError,
    Revision,
    SteeringConflictError,
    UnsupportedError,
    ValidationError,
    VnetHashCapability,
    VnetHashConfig,
    ioctl_plan,
    probe_revision,
)
from pytun_hash._abi import TunFlag, hash_ioctls
from pytun_hash.backend import Backend, choose_backend
from pytun_hash.device import DeviceMode, TunTapBase, TunTapDevice
from pytun_hash.device.primitives import decode_ifreq
from pytun_hash.hashing import Hashing
from pytun_hash.testing import BufferCall, EmulatedHashState, EmulatorError, FakeTunTap
from pytun_hash.testing.kernel import DeviceInfo, DeviceKey, KernelErrno
from tests.hardening.conftest import no_syscalls
from tests.harness import BOTH, Harness, MakeHarness

KEY = MICROSOFT_RSS_KEY
RSS = VnetHashConfig.round_robin(4, key=KEY, table_length=8)
RSS_REPORT = RSS.replace(report=True)


def _rss_payload(revision: Revision) -> bytes:
    """The raw set-ioctl payload that turns RSS on (v12: TUNSETVNETRSS), bypassing hash control."""
    return ioctl_plan(RSS, revision)[-1].payload


# ----------------------------------------------------------------------------- the device


def test_is_a_device_for_hash_control_and_makes_no_syscall() -> None:
    with no_syscalls(), FakeTunTap(Revision.RFC, queues=4) as fake:
        assert isinstance(fake, TunTapBase) and not isinstance(fake, TunTapDevice)
        fake.set_vnet_hdr_size(20)
        fake.set_vnet_le(True)
        control = HashControl(fake)
        assert control.revision is Revision.RFC
        control.apply(RSS_REPORT)
        assert fake.kernel_state().as_config() == RSS_REPORT == control.config
        control.disable()
        assert not fake.kernel_state().enabled


def test_flags_and_queues() -> None:
    fake = FakeTunTap(Revision.V12, name="vm0", queues=3, mode=DeviceMode.TUN, vnet_hdr=False, packet_info=True)
    assert fake.flags == TunFlag.IFF_TUN | TunFlag.IFF_MULTI_QUEUE
    assert (fake.name, fake.mode, fake.vnet_hdr, fake.packet_info, fake.multi_queue) == (
        "vm0",
        DeviceMode.TUN,
        False,
        True,
        True,
    )
    q0, q1, q2 = fake.queues
    assert [q.index for q in fake.queues] == [0, 1, 2] and fake.numqueues == 3
    assert all(q.fd < 0 for q in fake.queues)  # never an open file
    # tun.c's numbering: a detached queue's index goes to the last attached queue.
    q0.detach()
    assert (q2.index, q1.index, q0.index) == (0, 1, None) and fake.detached_queues == (q0,)
    q0.attach()
    assert q0.index == 2 and fake.numqueues == 3
    q3 = fake.add_queue()
    assert q3.index == 3
    q2.close()
    assert q3.index == 0 and q2.closed and fake.numqueues == 3
    with pytest.raises(KernelError) as info:
        q1.attach()  # attached already
    assert info.value.errno == errno.EINVAL and info.value.request == "TUNSETQUEUE"
    with pytest.raises(KernelError) as info:
        fake.detach_queue(q2)
    assert info.value.errno == errno.EBADF
    with FakeTunTap(Revision.V12, name="other0") as other, pytest.raises(ValidationError) as wrong:
        fake.detach_queue(other.queues[0])
    assert wrong.value.field == "queue"
    fake.close()
    assert fake.closed and fake.queues == () and "closed" in repr(fake)


def test_single_queue_device() -> None:
    with FakeTunTap(Revision.RFC, queues=1) as fake:
        assert not fake.multi_queue
        with pytest.raises(KernelError) as info:
            fake.detach_queue(fake.queues[0])
        assert info.value.errno == errno.EINVAL
        with pytest.raises(ValidationError, match="single-queue"):
            fake.add_queue()


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: FakeTunTap(name="tap%d"), "name"),
        (lambda: FakeTunTap(name="x" * 16), "name"),
        (lambda: FakeTunTap(queues=0), "queues"),
        (lambda: FakeTunTap(queues=2, multi_queue=False), "queues"),
        (lambda: FakeTunTap(mode="tap"), "mode"),  # type: ignore[arg-type]
        (lambda: FakeTunTap("rfc"), "revision"),  # type: ignore[arg-type]
        (lambda: FakeTunTap(Revision.RFC, capability=VnetHashCapability(Revision.V12, 0x3F)), "capability"),
        (lambda: FakeTunTap(None, capability=VnetHashCapability(Revision.V12, 0x3F)), "capability"),
    ],
)
def test_bad_arguments(make: Callable[[], object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        make()
    assert info.value.field == field


def test_two_fakes_hold_two_states() -> None:
    with FakeTunTap(Revision.V3) as a, FakeTunTap(Revision.V3) as b:
        HashControl(a).apply(RSS)
        assert a.kernel_state().rss and not b.kernel_state().rss


# ----------------------------------------------------------------------------- BufferCall


def test_buffer_call_copies_like_the_kernel() -> None:
    memory = bytearray(b"\xaa" * 6)
    call = BufferCall(memory, device=None)
    assert call.copy_from_user(2, 4) == b"\xaa" * 4
    with pytest.raises(KernelErrno) as info:
        call.copy_from_user(3, 4)  # one byte past the end: nothing is copied
    assert info.value.errno == errno.EFAULT
    # A write past the end leaves the bytes before the fault, as copy_to_user does, then faults.
    with pytest.raises(KernelErrno):
        call.copy_to_user(4, b"\x01\x02\x03")
    assert memory == bytearray(b"\xaa" * 4 + b"\x01\x02")  # the caller's buffer itself
    assert [(c.to_user, c.offset, c.length, c.ok) for c in call.copies] == [
        (False, 2, 4, True),
        (False, 3, 4, False),
        (True, 4, 3, False),
    ]
    with pytest.raises(KernelErrno) as info:
        call.device()
    assert info.value.errno == errno.EBADFD and call.looked_up is None
    with pytest.raises(ValueError, match="offset -1"):
        call.copy_from_user(-1, 1)


def test_buffer_call_device_side() -> None:
    info = DeviceInfo(DeviceKey.of(0, 1, "d0"), "d0", 0)
    call = BufferCall(b"\x00", device=info, vnet_hdr_sz=12, little_endian=False)
    assert call.device() is info and call.looked_up is info
    assert (call.vnet_hdr_sz(), call.vnet_is_little_endian()) == (12, False)
    assert call.set_steering_ebpf(5) == 5 and call.set_steering_ebpf(-1) is None
    call.set_vnet_hdr_sz(20)
    assert call.steering == [5, -1] and call.hdr_sz == 20
    assert bytes(call.memory) == b"\x00"  # bytes are copied into a buffer of the call's own


# ----------------------------------------------------------------------------- ioctls


def test_queue_ioctl_answers_tungetiff_and_refuses_what_it_does_not_model() -> None:
    with FakeTunTap(Revision.RFC, name="vm1") as fake:
        buf = bytearray(40)
        assert fake.queue_ioctl("TUNGETIFF", buf) == 0
        assert decode_ifreq(buf) == ("vm1", fake.flags)
        with pytest.raises(ValidationError) as info:
            fake.queue_ioctl("TUNNOPE", bytearray(4))
        assert info.value.field == "name"
        with pytest.raises(NotImplementedError, match="TUNSETOFFLOAD"):
            fake.queue_ioctl("TUNSETOFFLOAD", bytearray(4))
        for queue in fake.attached_queues:
            queue.detach()
        with pytest.raises(ValidationError) as info:
            fake.queue_ioctl("TUNGETIFF", bytearray(40))
        assert info.value.field == "device" and "no attached queue" in info.value.rule


def test_vnet_header_accessors() -> None:
    with FakeTunTap(Revision.V3) as fake:
        assert fake.get_vnet_hdr_size() == 10 and not fake.get_vnet_le()
        fake.set_vnet_hdr_size(20)
        fake.set_vnet_le(True)
        assert fake.get_vnet_hdr_size() == 20 and fake.get_vnet_le()
        with pytest.raises(KernelError) as info:
            fake.set_vnet_hdr_size(9)
        assert info.value.errno == errno.EINVAL and "at least 10 bytes" in info.value.hint
        with pytest.raises(UnsupportedError) as unsupported:
            fake.get_vnet_be()
        assert unsupported.value.errno == errno.EINVAL and "CONFIG_TUN_VNET_CROSS_LE" in unsupported.value.hint
        with pytest.raises(ValidationError):
            fake.set_vnet_hdr_size(2**40)
        assert fake.calls == []  # v3 traps none of these


def test_rfc_traps_the_header_size_while_reporting() -> None:
    with FakeTunTap(Revision.RFC) as fake:
        fake.set_vnet_hdr_size(20)
        HashControl(fake).apply(VnetHashConfig(report=True, types=0x3F, key=KEY))
        fake.reset_log()
        with pytest.raises(KernelError) as info:
            fake.set_vnet_hdr_size(12)
        assert info.value.errno == errno.EINVAL
        assert [(c.name, c.errno) for c in fake.calls] == [("TUNSETVNETHDRSZ", errno.EINVAL)]
        assert fake.get_vnet_hdr_size() == 20


@pytest.mark.parametrize("revision", list(Revision))
def test_copies_past_the_buffer_fault(revision: Revision) -> None:
    payload = _rss_payload(revision)
    with FakeTunTap(revision) as fake:
        with pytest.raises(KernelError) as info:
            fake.queue_ioctl(ioctl_plan(RSS, revision)[-1].name, bytearray(payload[:-1]), revision=revision)
        assert info.value.errno == errno.EFAULT
        [call] = fake.calls
        assert call.errno == errno.EFAULT and not call.copies[-1].ok and call.copies[-1].to_user is False
        assert not fake.kernel_state().rss  # nothing committed
        get = hash_ioctls(revision)[0]
        with pytest.raises(KernelError) as info:
            fake.queue_ioctl(get.name, bytearray(3), revision=revision)
        assert info.value.errno == errno.EFAULT


@pytest.mark.parametrize("revision", list(Revision))
def test_other_revisions_answer_as_unknown_ioctls(revision: Revision) -> None:
    with FakeTunTap(revision) as fake:
        for other in (Revision.RFC, Revision.V3, Revision.V12):
            if other is revision.abi:
                continue
            get = hash_ioctls(other)[0]
            with pytest.raises(KernelError) as info:
                fake.queue_ioctl(get.name, bytearray(8), revision=other)
            assert info.value.errno == errno.EINVAL
            assert fake.calls[-1].name == f"{get.name}[{other.value}]"


# ----------------------------------------------------------------------------- what each revision does with steering


def test_rfc_drops_the_program_silently_when_rss_is_set_behind_the_binding() -> None:
    with FakeTunTap(Revision.RFC) as fake:
        fake.attach_steering_program(7)
        assert fake.attached_program == 7 and fake.kernel_state().steering_attached
        fake.queue_ioctl("TUNSETVNETHASH", bytearray(_rss_payload(Revision.RFC)), revision=Revision.RFC)
        assert fake.attached_program is None and not fake.kernel_state().steering_attached
        # ... and an attach behind the binding silently clears RSS.
        fake.queue_ioctl("TUNSETSTEERINGEBPF", bytearray(struct.pack("=i", 8)))
        state = fake.kernel_state()
        assert fake.attached_program == 8 and state.steering_attached and not state.rss


def test_v3_refuses_a_program_while_rss_is_on_and_v10_lets_it_take_precedence() -> None:
    for revision, refused in ((Revision.V3, True), (Revision.V10, False)):
        with FakeTunTap(revision) as fake:
            fake.queue_ioctl("TUNSETVNETHASH", bytearray(_rss_payload(revision)), revision=revision)
            attach = bytearray(struct.pack("=i", 7))
            if refused:
                with pytest.raises(BusyError) as info:
                    fake.queue_ioctl("TUNSETSTEERINGEBPF", attach)
                assert info.value.errno == errno.EBUSY and fake.attached_program is None
            else:
                fake.queue_ioctl("TUNSETSTEERINGEBPF", attach)
                assert fake.attached_program == 7
            assert fake.kernel_state().rss


def test_the_binding_refuses_before_the_kernel_is_asked() -> None:
    with FakeTunTap(Revision.V3) as fake:
        HashControl(fake).apply(RSS)
        fake.reset_log()
        with pytest.raises(SteeringConflictError):
            fake.attach_steering_program(7)
        assert fake.calls == [] and fake.attached_program is None


# ----------------------------------------------------------------------------- deletion and closing


@pytest.mark.parametrize("revision", list(Revision))
def test_deleted_device_answers_ebadfd(revision: Revision) -> None:
    with FakeTunTap(revision) as fake:
        control = HashControl(fake)
        control.apply(RSS)
        fake.delete()
        assert fake.deleted and "deleted" in repr(fake)
        for operation in (
            fake.get_vnet_hdr_size,
            lambda: fake.set_vnet_le(True),
            fake.raise_if_deleted,
            lambda: fake.attach_steering_program(3),
            fake.detach_steering_program,
            lambda: fake.queue_ioctl("TUNGETIFF", bytearray(40)),
            lambda: control.apply(RSS),
            fake.add_queue,
            lambda: fake.detach_queue(fake.queues[0]),
        ):
            with pytest.raises(DeviceGoneError) as info:
                operation()
            assert info.value.errno == errno.EBADFD, operation
        assert not fake.steering.native_rss and control.config is None
        # v3+ answer their get-ioctl without a device; the RFC's needs one.
        get = hash_ioctls(revision)[0]
        if revision is Revision.RFC:
            with pytest.raises(DeviceGoneError):
                fake.queue_ioctl(get.name, bytearray(8), revision=revision)
        else:
            assert fake.queue_ioctl(get.name, bytearray(8), revision=revision) == 0


def test_at_most_256_queues() -> None:
    with FakeTunTap(Revision.RFC, queues=255) as fake:
        fake.add_queue()
        with pytest.raises(KernelError) as info:
            fake.add_queue()
        assert info.value.errno == errno.E2BIG and fake.numqueues == 256


def test_closing_the_last_queue_deletes_the_device() -> None:
    with FakeTunTap(Revision.RFC, queues=2) as fake:
        for queue in fake.queues:
            queue.close()
        assert fake.deleted and fake.numqueues == 0
        with pytest.raises(KernelError) as info:
            fake.get_vnet_hdr_size()
        assert info.value.errno == errno.EBADF
        fake.raise_if_deleted()  # nothing to ask: returns
    with pytest.raises(KernelError) as info:
        fake.add_queue()
    assert info.value.errno == errno.EBADF


# ----------------------------------------------------------------------------- backends


def test_backends_on_a_fake() -> None:
    with FakeTunTap(Revision.V12) as fake:
        assert choose_backend(fake).backend is Backend.NATIVE
        with Hashing.enable(fake, RSS) as hashing:
            assert hashing.revision is Revision.V12 and fake.kernel_state().rss
            hashing.reconfigure(RSS.replace(unclassified_queue=3))
            assert fake.kernel_state().unclassified_queue == 3
        assert not fake.kernel_state().enabled
    with FakeTunTap(None) as mainline:
        choice = choose_backend(mainline)
        assert choice.backend is Backend.EBPF and "lacks the hash ioctls" in choice.reason
        with pytest.raises(EmulatorError):
            mainline.kernel_state()


def test_the_documented_example_runs_without_a_syscall() -> None:
    """The example of docs/emulator.md's "Without root: FakeTunTap" section (linked from the README)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "emulator.md").read_text()
    section = page.split("## Without root: `FakeTunTap`", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    with no_syscalls():
        exec(compile(code, "docs/emulator.md (Without root: FakeTunTap)", "exec"), {})


# ----------------------------------------------------------------------------- parity with the emulator


def _script(h: Harness) -> HashControl:
    """Hash control, steering and raw calls (accepted, refused and behind the binding's back)."""
    dev, revision = h.device, h.revision
    h.run(probe_revision, dev)
    h.run(dev.set_vnet_le, True)
    control = h.run(HashControl, dev, revision=revision)
    h.run(control.apply, RSS_REPORT)
    h.run(control.apply, RSS.replace(types=0x38) if revision is Revision.RFC else RSS.replace(types=0x3))
    h.run(control.disable)
    h.run(dev.attach_steering_program, h.program())
    h.run(control.apply, VnetHashConfig(report=True, types=0x3F, key=KEY))
    for other in (Revision.RFC, Revision.V3, Revision.V12):
        if other is not revision.abi:
            with pytest.raises(KernelError):
                h.run(dev.queue_ioctl, hash_ioctls(other)[0].name, bytearray(8), revision=other)
    # Behind the binding's back: RSS while the program is attached (RFC: silent drop; v3-v9: EBUSY).
    name = ioctl_plan(RSS, revision)[-1].name
    with contextlib.suppress(BusyError):
        h.run(dev.queue_ioctl, name, bytearray(_rss_payload(revision)), revision=revision)
    return control


def _comparable(state: EmulatedHashState) -> EmulatedHashState:
    # Names and program ids are the device's own (a fake program's id is its fd number).
    return attrs.evolve(state, ifname="", steering_prog_id=None)


@pytest.mark.kernel
@pytest.mark.parametrize("revision", list(Revision))
def test_the_fake_and_the_emulator_answer_alike(make_harness: MakeHarness, revision: Revision) -> None:
    logs = []
    for where in [p.values[0] for p in BOTH]:
        h = make_harness(str(where), revision, data_path=False)
        h.reset_log()
        _script(h)
        steering = h.device.steering
        logs.append(
            (
                [(c.name, c.request, c.copies, c.errno, c.result) for c in h.calls],
                [(i, _comparable(s)) for i, s in h.states],
                (steering.native_rss, steering.native_report, steering.steering_attached, steering.steering_owner),
            )
        )
    fake, kernel = logs
    assert fake[0] == kernel[0]
    assert fake[1] == kernel[1]
    assert fake[2] == kernel[2]
