"""The emulator's data path, per revision: queue choice, hash fields, read-time conditions, steering rules.

Frames are sent from the test's namespace through a real multi-queue TAP; they are read inside
:meth:`KernelEmulator.run` (the filtered worker), where the emulator answers each read as the
emulated revision's kernel would. The expected values come from the software model under the
revision's semantics (:func:`pytun_hash.model.semantics_for`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytun_hash import HashReport, Revision, TunTapDevice, VnetHashConfig, ioctl_request
from pytun_hash.bpf.maps import QueueMap
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.device.hashctl import HashControl
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.model import classify, queue_for_flow, semantics_for
from pytun_hash.testing import EmulatorMode, KernelEmulator
from tests.device.traffic import PEER_ADDR, udp_socket, wire_tap
from tests.testing.helpers import load_socket_filter

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

FILL = 0xAA
ALL = list(Revision)
RSS = VnetHashConfig(rss=True, report=True, types=0x3F, indirection_table=(0, 1, 2, 3) * 4, key=MICROSOFT_RSS_KEY)
NUM_BUFFERS = {Revision.RFC: 0, Revision.V3: 1, Revision.V10: 0, Revision.V12: 0}

Read = tuple[int, int, bytes]  # (queue index, bytes returned, the whole buffer)


@pytest.fixture(autouse=True)
def _needs(need_seccomp: None, need_bpf: None) -> None:
    """Seccomp user notification and bpf(2) (root), probed by tests/testing/conftest.py."""


@contextmanager
def rig(
    netns: NetworkNamespace, revision: Revision, *, queues: int = 4, hdr: int = 20
) -> Iterator[tuple[TunTapDevice, KernelEmulator, socket.socket, HashControl]]:
    with (
        TunTapDevice.create("dp%d", queues=queues) as dev,
        KernelEmulator(revision) as emu,
        udp_socket() as sock,
    ):
        dev.set_vnet_hdr_size(hdr)
        dev.set_vnet_le(True)
        wire_tap(netns, dev.name)
        control = emu.run(HashControl, dev, revision=revision)
        yield dev, emu, sock, control


def read_queued(dev: TunTapDevice, size: int = 2048) -> list[Read]:
    """Inside the emulator: every queued frame, each read with readv into a buffer filled with FILL."""
    found: list[Read] = []
    for queue in dev.attached_queues:
        while select.select([queue.fd], [], [], 0)[0]:
            buf = bytearray([FILL]) * size
            n = os.readv(queue.fd, [buf])
            found.append((queue.index or 0, n, bytes(buf)))
    return found


def send(sock: socket.socket, ports: range | list[int]) -> None:
    for port in ports:
        sock.sendto(b"pytun-hash", (PEER_ADDR, port))


def hash_fields(buf: bytes) -> tuple[int, int, int]:
    """num_buffers, hash_value, hash_report of a 20-byte header at the start of ``buf``."""
    num_buffers, value, report = struct.unpack_from("<HIH", buf, 10)
    return num_buffers, value, report


@pytest.mark.parametrize("revision", ALL)
def test_queue_and_hash_fields_follow_the_revision(netns: NetworkNamespace, revision: Revision) -> None:
    semantics = semantics_for(revision)
    with rig(netns, revision) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        send(sock, range(7000, 7040))
        got = emu.run(read_queued, dev)
        stats = emu.data_path_stats()
    assert len(got) == 40
    for queue, n, buf in got:
        frame = buf[20:n]
        flow = classify(frame, RSS.types, RSS.key, semantics=semantics)
        assert flow.report is HashReport.UDPV4
        assert queue == queue_for_flow(RSS, flow, 4, semantics=semantics)
        assert hash_fields(buf) == (NUM_BUFFERS[revision], flow.hash_value, int(flow.report))
    assert len({q for q, _, _ in got}) == 4
    assert stats["reads"] == 40 and stats["matched"] == 40


@pytest.mark.parametrize("revision", ALL)
def test_every_later_configuration_steers_too(netns: NetworkNamespace, revision: Revision) -> None:
    # The RFC's SET with RSS detaches whatever steering program is attached, the emulator's own
    # too: the emulator must attach it again, or the device falls back to automatic selection.
    with rig(netns, revision) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        for queue in (3, 1, 2):
            emu.run(control.apply, RSS.replace(indirection_table=(queue,) * 16))
            send(sock, range(7200, 7220))
            got = emu.run(read_queued, dev)
            assert [q for q, _, _ in got] == [queue] * 20, (revision, queue)


def test_trapped_calls_without_traffic_pop_nothing(netns: NetworkNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    # The recorder counts what it pushed in an mmapped map: with no frame sent since the queue map
    # was last drained, a trapped call reads that count and makes no bpf(2) call to collect.
    pops = 0
    real_pop = QueueMap.pop

    def counting_pop(self: QueueMap) -> bytes | None:
        nonlocal pops
        pops += 1
        return real_pop(self)

    monkeypatch.setattr(QueueMap, "pop", counting_pop)
    with rig(netns, Revision.RFC) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        before = pops
        for _ in range(20):
            emu.run(control.apply, RSS)
        assert pops == before
        send(sock, range(7300, 7305))
        got = emu.run(read_queued, dev)
        assert [hash_fields(buf)[2] for _, _, buf in got] == [int(HashReport.UDPV4)] * 5
        # The five records and the empty queue behind them: popped once each, then idle again.
        assert pops == before + 6
        emu.run(control.apply, RSS)
        assert pops == before + 6


def test_process_mode_emulates_the_data_path_too(netns: NetworkNamespace) -> None:
    semantics = semantics_for(Revision.RFC)
    with (
        TunTapDevice.create("dp%d", queues=4) as dev,
        KernelEmulator(Revision.RFC, mode=EmulatorMode.PROCESS) as emu,
        udp_socket() as sock,
    ):
        dev.set_vnet_hdr_size(20)
        dev.set_vnet_le(True)
        wire_tap(netns, dev.name)
        emu.run(HashControl(dev, revision=Revision.RFC, read_capability=False).apply, RSS)
        send(sock, range(7050, 7066))
        got = emu.run(read_queued, dev)  # read in the forked child
    assert len(got) == 16
    for queue, n, buf in got:
        flow = classify(buf[20:n], RSS.types, RSS.key, semantics=semantics)
        assert queue == queue_for_flow(RSS, flow, 4, semantics=semantics)
        assert hash_fields(buf) == (0, flow.hash_value, int(flow.report))


def test_rfc_checks_report_when_hashed_and_when_read(netns: NetworkNamespace) -> None:
    with rig(netns, Revision.RFC, hdr=24) as (dev, emu, sock, control):
        # Hashed with REPORT, read after REPORT was cleared: a 10-byte header, the rest skipped.
        emu.run(control.apply, RSS)
        send(sock, [7100])
        emu.run(control.apply, RSS.replace(report=False))
        ((_, n, buf),) = emu.run(read_queued, dev)
        assert buf[10:24] == bytes([FILL]) * 14 and n > 24
        # Queued while hashing was off, read after REPORT was set: never marked.
        emu.run(control.disable)
        send(sock, [7101])
        emu.run(control.apply, RSS)
        ((_, _, buf),) = emu.run(read_queued, dev)
        assert buf[10:24] == bytes([FILL]) * 14
        # Hashed and read with REPORT: 20 bytes written, bytes 20..23 skipped.
        send(sock, [7102])
        ((_, n, buf),) = emu.run(read_queued, dev)
        flow = classify(buf[24:n], RSS.types, RSS.key, semantics=semantics_for(Revision.RFC))
        assert hash_fields(buf) == (0, flow.hash_value, int(flow.report)) and flow.hash_value
        assert buf[20:24] == bytes([FILL]) * 4


def _rfc_rss_set(fd: int, queue: int, *, report: bool = False) -> None:
    """The RFC's TUNSETVNETHASH with RSS, a one-entry table naming ``queue`` and the full key."""
    head = struct.pack("=B3xIHH", 0x01 | (0x02 if report else 0), 0x3F, 0, 0)
    fcntl.ioctl(fd, 0x400454E5, bytearray(head + struct.pack("=H", queue) + MICROSOFT_RSS_KEY), True)


def test_rfc_rss_sets_never_leave_the_device_without_the_emulators_program(
    netns: NetworkNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RFC's SET with RSS detaches the code's program; while the emulator's steers, the code has
    none: the real device keeps the emulator's program throughout (no detach and attach again, so
    no moment of automatic selection), and the program follows each new table in place."""
    steering: list[int] = []
    real_ioctl = fcntl.ioctl
    request = ioctl_request("TUNSETSTEERINGEBPF")

    def recording(fd: int, req: int, arg: object = 0, *rest: object) -> object:
        if req == request and isinstance(arg, (bytes, bytearray)):
            steering.append(struct.unpack("=i", bytes(arg[:4]))[0])
        return real_ioctl(fd, req, arg, *rest)  # type: ignore[call-overload]

    with rig(netns, Revision.RFC) as (dev, emu, sock, _control):
        fd = dev.attached_queues[0].fd
        emu.run(_rfc_rss_set, fd, 1)
        monkeypatch.setattr(fcntl, "ioctl", recording)
        for queue in (1, 3, 2):
            emu.run(_rfc_rss_set, fd, queue)
            send(sock, range(7900, 7916))
            assert {q for q, _, _ in emu.run(read_queued, dev)} == {queue}
        monkeypatch.undo()
        assert steering == []
        assert not emu.device_state(dev.name).steering_attached


def test_the_cross_endian_build_option_is_asked_once(netns: NetworkNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether the kernel has CONFIG_TUN_VNET_CROSS_LE cannot change while it runs: a report SET on
    a device not in little-endian mode asks TUNGETVNETBE each time only where the kernel has it."""
    from pytun_hash.testing import emulator as emulator_module

    be = ioctl_request("TUNGETVNETBE")
    asked: list[int] = []
    real = emulator_module._ioctl_errno

    def counting(fd: int, request: int, arg: bytes | int) -> tuple[int, bytes | int]:
        if request == be:
            asked.append(fd)
        return real(fd, request, arg)

    with rig(netns, Revision.RFC) as (dev, emu, _sock, _control):
        fd = dev.attached_queues[0].fd
        dev.set_vnet_le(False)
        try:
            fcntl.ioctl(fd, be, bytes(4))
            cross_endian = True
        except OSError as exc:
            assert exc.errno == errno.EINVAL
            cross_endian = False
        monkeypatch.setattr(emulator_module, "_ioctl_errno", counting)
        for queue in (1, 2, 3):
            emu.run(_rfc_rss_set, fd, queue, report=True)
        assert emu.failures == ()
        # Neither little-endian mode nor big-endian mode: the host's order, which the RFC needs little.
        expected = 0 if sys.byteorder == "little" else errno.EINVAL
        assert [c.errno for c in emu.calls[-3:]] == [expected] * 3
    assert len(asked) == (3 if cross_endian else 1)


@pytest.mark.parametrize("revision", [Revision.V10, Revision.V12])
def test_v10_and_later_report_what_was_hashed_whatever_the_flags_at_read_time(
    netns: NetworkNamespace, revision: Revision
) -> None:
    with rig(netns, revision, hdr=24) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        send(sock, [7200])
        emu.run(control.apply, RSS.replace(report=False))
        send(sock, [7201])
        first, second = sorted(emu.run(read_queued, dev), key=lambda r: r[2][24 + 36 : 24 + 38])
    # Each read fills min(20, sz) bytes and zeros the rest: no byte of the buffer is left as it was.
    assert first[2][20:24] == second[2][20:24] == bytes(4)
    flow = classify(first[2][24 : first[1]], RSS.types, RSS.key)
    assert hash_fields(first[2]) == (0, flow.hash_value, int(flow.report))
    assert hash_fields(second[2]) == (0, 0, 0)  # hashed without REPORT: no extension


@pytest.mark.parametrize("revision", ALL)
def test_no_hash_fields_below_a_20_byte_header(netns: NetworkNamespace, revision: Revision) -> None:
    with rig(netns, revision, hdr=20) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        dev.set_vnet_hdr_size(12)
        send(sock, [7300])
        ((_, _, buf),) = emu.run(read_queued, dev)
    if revision is Revision.RFC:
        assert buf[10:12] == bytes([FILL]) * 2  # the RFC writes 10 bytes and skips the rest
    else:
        assert buf[10:12] == struct.pack("<H", NUM_BUFFERS[revision])


@pytest.mark.filterwarnings("ignore::pytun_hash.device.hashctl.HashControlWarning")
@pytest.mark.parametrize("revision", ALL)
def test_nothing_is_hashed_with_a_single_queue(netns: NetworkNamespace, revision: Revision) -> None:
    with rig(netns, revision, queues=1) as (dev, emu, sock, control):
        emu.run(control.apply, RSS)
        send(sock, [7400])
        ((queue, _, buf),) = emu.run(read_queued, dev)
    assert queue == 0
    if revision is Revision.RFC:
        assert buf[10:20] == bytes([FILL]) * 10
    else:
        assert hash_fields(buf) == (NUM_BUFFERS[revision], 0, 0)


def test_rfc_silently_drops_rss_for_a_steering_program(netns: NetworkNamespace) -> None:
    prog = load_socket_filter(2)
    try:
        with rig(netns, Revision.RFC) as (dev, emu, sock, control):
            emu.run(control.apply, RSS.replace(report=False))
            emu.run(_raw_attach, dev, prog)
            state = emu.device_state(dev.name)
            assert not state.rss and state.steering_attached
            send(sock, range(7500, 7516))
            assert {q for q, _, _ in emu.run(read_queued, dev)} == {2}
    finally:
        os.close(prog)


def test_rfc_rss_set_after_rss_set_keeps_steering(netns: NetworkNamespace) -> None:
    """The RFC's TUNSETVNETHASH with RSS detaches the device's steering program, the emulator's own too.

    Two sets with RSS in a row (no set without RSS between, as HashControl's full-key preload would
    make) must leave the second table steering, not the kernel's automatic spread.
    """
    with rig(netns, Revision.RFC) as (dev, emu, sock, _control):
        for queue in (1, 2):
            head = struct.pack("=B3xIHH", 0x01, 0x3F, 0, 0)  # RSS, types 0x3f, mask 0, unclassified 0
            payload = bytearray(head + struct.pack("=H", queue) + MICROSOFT_RSS_KEY)
            emu.run(fcntl.ioctl, dev.attached_queues[0].fd, 0x400454E5, payload, True)
            send(sock, range(7800, 7816))
            assert {q for q, _, _ in emu.run(read_queued, dev)} == {queue}


@pytest.mark.parametrize("revision", [Revision.V10, Revision.V12])
def test_a_steering_program_takes_precedence_from_v10_on(netns: NetworkNamespace, revision: Revision) -> None:
    prog = load_socket_filter(1)
    try:
        with rig(netns, revision) as (dev, emu, sock, control):
            emu.run(control.apply, RSS)
            emu.run(_raw_attach, dev, prog)
            assert emu.device_state(dev.name).rss
            send(sock, range(7600, 7616))
            steered = emu.run(read_queued, dev)
            # The program chose the queue; nothing was hashed, so nothing is reported.
            assert {q for q, _, _ in steered} == {1}
            assert all(hash_fields(buf)[1:] == (0, 0) for _, _, buf in steered)
            emu.run(_raw_attach, dev, -1)
            send(sock, range(7600, 7664))
            back = emu.run(read_queued, dev)
        assert len({q for q, _, _ in back}) == 4
        for queue, n, buf in back:
            flow = classify(buf[20:n], RSS.types, RSS.key)
            assert queue == queue_for_flow(RSS, flow, 4) and hash_fields(buf)[1] == flow.hash_value
    finally:
        os.close(prog)


def test_v3_to_v9_refuse_a_steering_program_while_rss_is_on(netns: NetworkNamespace) -> None:
    prog = load_socket_filter(1)
    try:
        with rig(netns, Revision.V3) as (dev, emu, sock, control):
            emu.run(control.apply, RSS)
            with pytest.raises(OSError) as refused:
                emu.run(_raw_attach, dev, prog)
            assert refused.value.errno == errno.EBUSY
            send(sock, range(7700, 7764))
            assert len({q for q, _, _ in emu.run(read_queued, dev)}) == 4
    finally:
        os.close(prog)


def _raw_attach(dev: TunTapDevice, prog: int) -> None:
    """TUNSETSTEERINGEBPF straight on a queue fd, around the binding's own exclusion."""
    fcntl.ioctl(dev.attached_queues[0].fd, 0x800454E0, struct.pack("=i", prog))


@pytest.mark.parametrize("revision", [Revision.V10, Revision.V12])
def test_report_only_reports_the_automatic_choice(netns: NetworkNamespace, revision: Revision) -> None:
    with rig(netns, revision) as (dev, emu, sock, control):
        emu.run(control.apply, RSS.replace(rss=False))
        send(sock, range(7800, 7832))
        got = emu.run(read_queued, dev)
    assert len(got) == 32
    for queue, _, buf in got:
        # Frames without an L4 hash report the index of the queue they were steered to.
        assert hash_fields(buf) == (0, queue, int(HashReport.UDPV4))


def test_rfc_report_only_reports_toeplitz(netns: NetworkNamespace) -> None:
    config = RSS.replace(rss=False)
    with rig(netns, Revision.RFC) as (dev, emu, sock, control):
        emu.run(control.apply, config)
        send(sock, range(7800, 7808))
        got = emu.run(read_queued, dev)
    for _, n, buf in got:
        flow = classify(buf[20:n], config.types, config.key, semantics=semantics_for(Revision.RFC))
        assert hash_fields(buf) == (0, flow.hash_value, int(flow.report))


def test_other_reads_return_exactly_what_the_kernel_returned(netns: NetworkNamespace) -> None:
    payload = bytes(range(256)) * 4
    with rig(netns, Revision.V12) as (_dev, emu, sock, control):
        emu.run(control.apply, RSS)
        with TunTapDevice.create("other%d", queues=1) as other:
            other.set_vnet_hdr_size(20)
            wire_tap_other = other.name
            netns.add_address(wire_tap_other, "10.78.0.1/24")
            netns.set_link_up(wire_tap_other)
            netns.add_neighbour(wire_tap_other, "10.78.0.2", "02:00:00:00:00:03")
            sock.sendto(b"unconfigured", ("10.78.0.2", 9000))
            r, w = os.pipe()
            try:
                os.write(w, payload)

                def body() -> tuple[bytes, list[Read]]:
                    return os.read(r, len(payload)), read_queued(other)

                from_pipe, from_other = emu.run(body)
            finally:
                os.close(r)
                os.close(w)
    assert from_pipe == payload
    ((_, n, buf),) = from_other
    # The unconfigured device's read went to the kernel untouched: 6.18 zeroes the whole header.
    assert buf[:20] == bytes(20) and buf[n:] == bytes([FILL]) * (len(buf) - n)
    assert emu.reads == 0 and emu.passed_reads >= 2


def test_reads_under_ten_bytes_never_reach_the_supervisor(netns: NetworkNamespace) -> None:
    """The filter lets them through itself: glibc makes one (1 byte of /proc/sys/vm/overcommit_memory,
    the first time free() shrinks a thread's heap) while the thread holds the GIL, which an in-process
    supervisor needs to answer it: the run hung. A tun read that short fails alike either way."""
    with KernelEmulator(Revision.RFC, data_path=True) as emu:
        r, w = os.pipe()
        try:
            os.write(w, bytes(range(40)))

            def body() -> list[bytes]:
                return [os.read(r, 1), os.read(r, 9), os.read(r, 10), os.read(r, 20)]

            got = emu.run(body)
        finally:
            os.close(r)
            os.close(w)
    assert b"".join(got) == bytes(range(40))
    assert emu.passed_reads == 2  # the 10- and 20-byte reads were trapped and let continue
    with open("/proc/sys/vm/overcommit_memory", "rb") as setting:
        expected = setting.read(1)
    with KernelEmulator(Revision.RFC, data_path=True) as emu:
        fd = os.open("/proc/sys/vm/overcommit_memory", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # What glibc does, here through ctypes, which keeps the GIL for the call (PyDLL).
            read = ctypes.PyDLL(None).read
            read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
            cell = ctypes.create_string_buffer(1)
            assert emu.run(read, fd, cell, 1) == 1
        finally:
            os.close(fd)
    assert cell.raw == expected and emu.passed_reads == 0


def test_a_blocking_read_waits_for_its_frame(netns: NetworkNamespace) -> None:
    config = RSS.replace(indirection_table=(0,))  # every frame to queue 0
    with rig(netns, Revision.V12, queues=2) as (dev, emu, sock, control):
        emu.run(control.apply, config)
        queue = next(q for q in dev.attached_queues if q.index == 0)
        os.set_blocking(queue.fd, True)
        sent: list[float] = []

        def later() -> None:
            # Stamped before the send: the reader may return before this thread runs again.
            sent.append(time.monotonic())
            send(sock, [7900])

        timer = threading.Timer(0.2, later)

        def body() -> tuple[bytes, float]:
            timer.start()
            data = os.read(queue.fd, 2048)
            return data, time.monotonic()

        try:
            data, returned = emu.run(body)
        finally:
            timer.join()
        # The read was issued before the frame existed and answered once it arrived.
        assert sent and returned >= sent[0]
        assert emu.reads == 1 and len(data) > 20
        flow = classify(data[20:], config.types, config.key)
        assert hash_fields(data) == (0, flow.hash_value, int(flow.report))
