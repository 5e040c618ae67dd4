"""Queue numbering and eBPF steering against the real kernel.

A constant steering program returning ``k`` puts every transmitted frame on the queue the kernel
numbers ``k`` (``(u16)k % numqueues``), so it reveals the kernel's fd-to-index mapping, which no
ioctl reports. The programs are loaded with a minimal raw ``bpf(2)`` call defined here (the
package's own eBPF layer is tested elsewhere).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytun_hash.device import NetworkNamespace, Queue, TunTapDevice
from pytun_hash.device.hashctl import probe_revision
from pytun_hash.errors import DeviceGoneError, KernelError, SteeringConflictError, ValidationError
from pytun_hash.model import steering_program_queue
from tests.device.traffic import PEER_ADDR, PEER_MAC, queue_of_next_frame, udp_socket, wire_tap

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
_BPF_ATTR_SIZE = 144
_libc = ctypes.CDLL(None, use_errno=True)

ProgramLoader = Callable[[int], int]


def load_constant_program(value: int) -> int:
    """Load the socket filter ``r0 = value; exit`` and return its fd (``O_CLOEXEC``).

    Raises:
        OSError: with the errno ``bpf(2)`` gave.
    """
    imm = struct.unpack("<i", struct.pack("<I", value & 0xFFFFFFFF))[0]
    insns = ctypes.create_string_buffer(struct.pack("<BBhi", 0xB7, 0, 0, imm) + struct.pack("<BBhi", 0x95, 0, 0, 0))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(_BPF_ATTR_SIZE)
    struct.pack_into(
        "<IIQQ", attr, 0, BPF_PROG_TYPE_SOCKET_FILTER, 2, ctypes.addressof(insns), ctypes.addressof(license_)
    )
    fd = _libc.syscall(
        ctypes.c_long(_SYS_BPF[platform.machine()]), ctypes.c_int(BPF_PROG_LOAD), attr, ctypes.c_uint(_BPF_ATTR_SIZE)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


@pytest.fixture
def programs() -> Iterator[ProgramLoader]:
    """Load constant steering programs on demand (cached per value); closes them after the test."""
    if platform.machine() not in _SYS_BPF:
        pytest.skip(f"no bpf(2) syscall number known for {platform.machine()}")
    try:
        os.close(load_constant_program(0))
    except OSError as exc:
        pytest.skip(f"bpf(BPF_PROG_LOAD) of a socket filter is not permitted here: {exc.strerror}")
    loaded: dict[int, int] = {}

    def get(value: int) -> int:
        if value not in loaded:
            loaded[value] = load_constant_program(value)
        return loaded[value]

    yield get
    for fd in loaded.values():
        os.close(fd)


def assert_indices_match_kernel(dev: TunTapDevice, programs: ProgramLoader, sock: socket.socket) -> None:
    """Every attached queue receives the frames of the program that returns its index; counts match."""
    attached = dev.attached_queues
    assert [q.index for q in attached] == list(range(len(attached)))
    assert all(q.index is None for q in dev.detached_queues)
    assert dev.kernel_queue_counts() == (len(attached), len(dev.detached_queues))
    for queue in attached:
        assert queue.index is not None
        dev.attach_steering_program(programs(queue.index))
        assert queue_of_next_frame(dev, sock, 4000 + queue.index) is queue
    dev.detach_steering_program()


def _recorded(dev: TunTapDevice) -> tuple[int | None, str | None]:
    return dev.steering.steering_program, dev.steering.steering_owner


def test_trivial_program_attach_and_detach(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=2) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        prog = load_constant_program(0)  # r0 = 0; exit
        try:
            dev.attach_steering_program(prog)
            assert _recorded(dev) == (prog, "user")
        finally:
            os.close(prog)  # the kernel holds its own reference
        assert {queue_of_next_frame(dev, sock, port).index for port in range(5000, 5016)} == {0}
        dev.attach_steering_program(programs(1), owner="ebpf-rss")  # replacing needs no detach
        assert _recorded(dev) == (programs(1), "ebpf-rss")
        assert {queue_of_next_frame(dev, sock, port).index for port in range(5000, 5016)} == {1}
        dev.detach_steering_program()
        assert _recorded(dev) == (None, None)
        dev.detach_steering_program()  # detaching twice is fine
        seen = {queue_of_next_frame(dev, sock, port).index for port in range(5000, 5064)}
        assert seen <= {0, 1}


def test_queue_numbering_after_detach_attach_close_and_add(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=4) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        q0, q1, q2, q3 = dev.queues
        assert_indices_match_kernel(dev, programs, sock)
        dev.detach_queue(q1)  # the last queue moves into the freed slot
        assert (q0.index, q1.index, q2.index, q3.index) == (0, None, 2, 1)
        assert_indices_match_kernel(dev, programs, sock)
        dev.attach_queue(q1)  # appended
        assert (q0.index, q1.index, q2.index, q3.index) == (0, 3, 2, 1)
        assert_indices_match_kernel(dev, programs, sock)
        q0.close()  # closing an attached queue renumbers like a detach
        assert (q1.index, q2.index, q3.index) == (0, 2, 1)
        assert_indices_match_kernel(dev, programs, sock)
        q4 = dev.add_queue()
        assert q4.index == 3
        assert_indices_match_kernel(dev, programs, sock)
        q2.detach()
        q2.close()  # closing a detached queue moves nothing
        assert (q1.index, q3.index, q4.index) == (0, 1, 2)
        assert_indices_match_kernel(dev, programs, sock)
        assert dev.queues == (q1, q3, q4)


def test_queue_state_is_unchanged_when_the_kernel_refuses(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2) as dev, TunTapDevice.create(queues=1, multi_queue=True) as other:
        q0, q1 = dev.queues
        with pytest.raises(KernelError) as info:
            dev.attach_queue(q0)
        assert info.value.errno == errno.EINVAL and info.value.request == "TUNSETQUEUE"
        dev.detach_queue(q0)
        with pytest.raises(KernelError):
            dev.detach_queue(q0)
        assert (q0.index, q1.index) == (None, 0)
        assert dev.kernel_queue_counts() == (1, 1)
        with pytest.raises(ValidationError):
            dev.attach_queue(other.queues[0])


def test_the_kernel_truncates_the_program_result_to_u16(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=3) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        # From v10 on, 0xffffffff is TUN_STEERINGEBPF_FALLBACK; before (and on mainline) a queue number.
        revision = probe_revision(dev).revision
        by_index = {q.index: q for q in dev.queues}
        for value in (0x10000, 0x10001, 5, 0xFFFFFFFF):
            dev.attach_steering_program(programs(value))
            landed = queue_of_next_frame(dev, sock, 6000)
            expected = steering_program_queue(value, 3, revision)
            if expected is None:  # fell back to automatic selection: any queue
                assert landed in by_index.values(), hex(value)
            else:
                assert landed is by_index[expected], hex(value)
    assert [steering_program_queue(v, 3) for v in (0x10000, 0x10001, 5, 0xFFFFFFFF)] == [0, 1, 2, 0xFFFF % 3]


_OPS = st.lists(
    st.tuples(st.sampled_from(["detach", "attach", "close", "add"]), st.integers(0, 7)), min_size=1, max_size=6
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_random_queue_operations_track_the_kernel(
    netns: NetworkNamespace, programs: ProgramLoader, ops: list[tuple[str, int]]
) -> None:
    with TunTapDevice.create(queues=4) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        for op, pick in ops:
            open_queues = dev.queues
            if op == "add" and not open_queues:
                with pytest.raises(DeviceGoneError):  # the last close deleted the device
                    dev.add_queue()
            elif op == "add":
                if len(open_queues) < 8:
                    dev.add_queue()
            elif open_queues:
                queue: Queue = open_queues[pick % len(open_queues)]
                if op == "close":
                    queue.close()
                elif op == "detach" and queue.attached:
                    dev.detach_queue(queue)
                elif op == "attach" and not queue.attached:
                    dev.attach_queue(queue)
                else:
                    with pytest.raises(KernelError):  # already in that state: nothing changes
                        (dev.detach_queue if op == "detach" else dev.attach_queue)(queue)
            if dev.queues:
                assert_indices_match_kernel(dev, programs, sock)


def test_steering_and_native_rss_exclude_each_other(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=3) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        dev.attach_steering_program(programs(2))
        with pytest.raises(SteeringConflictError) as info:
            dev.steering.ensure_can_enable_native_rss()
        assert info.value.errno == 16
        dev.detach_steering_program()
        dev.steering.native_rss = True  # what hash control records when RSS is on
        with pytest.raises(SteeringConflictError) as info:
            dev.attach_steering_program(programs(1))
        assert info.value.errno == errno.EBUSY and info.value.request == "TUNSETSTEERINGEBPF"
        assert dev.steering.steering_program is None
        dev.steering.native_rss = False
        dev.attach_steering_program(programs(2))
        dev.steering.native_rss = True
        with pytest.raises(SteeringConflictError):
            dev.attach_steering_program(programs(1))
        # No ioctl was issued: the kernel still runs the program returning 2.
        assert queue_of_next_frame(dev, sock, 7000).index == 2
        assert dev.steering.steering_program == programs(2)
        dev.detach_steering_program()  # always allowed
        assert dev.steering.steering_program is None


def test_non_program_fds_are_refused(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=2) as dev:
        read_end, write_end = os.pipe()
        try:
            with pytest.raises(KernelError) as info:
                dev.attach_steering_program(read_end)
        finally:
            os.close(read_end)
            os.close(write_end)
        assert info.value.errno == errno.EINVAL
        assert "SOCKET_FILTER" in info.value.hint
        assert dev.steering.steering_program is None
        with pytest.raises(ValidationError):
            dev.attach_steering_program(-1)
        with pytest.raises(ValidationError):
            dev.set_filter_program(-1)


def test_filter_program_drops_transmitted_frames(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=2) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        dev.set_filter_program(programs(0))  # keep 0 bytes: drop
        sock.sendto(b"dropped", (PEER_ADDR, 8000))
        assert all(q.drain() == [] for q in dev.queues)
        dev.clear_filter_program()
        assert queue_of_next_frame(dev, sock, 8000) in dev.queues


def test_frames_from_a_packet_socket_are_steered_with_their_vlan_tag(
    netns: NetworkNamespace, programs: ProgramLoader
) -> None:
    # Without CONFIG_VLAN_8021Q, tagged frames can still be sent down a TAP through AF_PACKET.
    with TunTapDevice.create(queues=4) as dev:
        wire_tap(netns, dev.name)
        dev.attach_steering_program(programs(3))
        tagged = (
            bytes.fromhex(PEER_MAC.replace(":", ""))
            + dev.link_info().address
            + struct.pack("!HHH", 0x8100, 10, 0x0800)
            + bytes(46)
        )
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as raw:
            raw.bind((dev.name, 0))
            raw.send(tagged)
        (frame,) = next(q for q in dev.queues if q.index == 3).drain()
        assert frame[10:] == tagged
        assert all(q.drain() == [] for q in dev.queues)


def test_queues_opened_by_a_second_object_get_the_next_numbers(
    netns: NetworkNamespace, programs: ProgramLoader
) -> None:
    with TunTapDevice.create(queues=2) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        with TunTapDevice.open(dev.name, queues=2) as second:
            assert [q.index for q in second.queues] == [2, 3]
            for queue in second.queues:
                assert queue.index is not None
                second.attach_steering_program(programs(queue.index))
                assert queue_of_next_frame(second, sock, 9000) is queue
            second.detach_steering_program()


def test_adopted_fds_keep_their_kernel_numbers(netns: NetworkNamespace, programs: ProgramLoader) -> None:
    with TunTapDevice.create(queues=3) as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        with TunTapDevice.adopt([os.dup(q.fd) for q in dev.queues]) as adopted:
            assert_indices_match_kernel(adopted, programs, sock)
