"""``QueueReader``: frames with their hash fields filled the same way on both backends.

The eBPF backend runs on this kernel; the native one under the seccomp kernel emulator, whose data
path writes the hash fields as the emulated revision's kernel would. The same flows, read through
the same code, must land on the queue the model predicts and carry the model's hash and report in
the semantics in force.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    Backend,
    Hashing,
    HashReport,
    QueueReader,
    ReceivedFrame,
    Revision,
    ValidationError,
    VnetHashConfig,
    classify,
    predict_queue,
)
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.testing import FakeTunTap, KernelEmulator
from tests.device.traffic import PEER_ADDR, udp_socket, wire_tap

CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=16, report=True)
PORTS = range(9000, 9040)


@pytest.fixture
def wired(netns: NetworkNamespace) -> Iterator[tuple[TunTapDevice, socket.socket]]:
    with TunTapDevice.create("rd%d", queues=4, vnet_hdr=True) as dev, udp_socket() as sock:
        dev.set_vnet_hdr_size(20)
        dev.set_vnet_le(True)
        wire_tap(netns, dev.name)
        yield dev, sock


def _send_and_read(sock: socket.socket, reader: QueueReader) -> list[ReceivedFrame]:
    for port in PORTS:
        sock.sendto(b"reader", (PEER_ADDR, port))
    return list(reader.frames())


def _check(frames: list[ReceivedFrame], hashing: Hashing, *, computed: bool) -> list[tuple[int, int]]:
    """Every frame on the predicted queue with the model's fields; the (hash, report) pairs in order."""
    assert len(frames) == len(PORTS)
    semantics = hashing.semantics
    seen = []
    for got in frames:
        expected = classify(got.frame, CONFIG.types, CONFIG.key, semantics=semantics)
        assert (got.hash_value, got.hash_report) == (expected.hash_value, expected.report)
        assert got.hash_report is HashReport.UDPV4 and got.computed is computed
        assert got.queue == predict_queue(CONFIG, got.frame, 4, semantics=semantics)
        assert got.buffer.endswith(got.frame) and len(got.buffer) == len(got.frame) + 20
        seen.append((got.hash_value, int(got.hash_report)))
    return sorted(seen)


@pytest.mark.kernel
@pytest.mark.bpf
def test_ebpf_frames_carry_the_reports_user_space_computed(wired: tuple[TunTapDevice, socket.socket]) -> None:
    dev, sock = wired
    with Hashing.enable(dev, CONFIG, backend=Backend.EBPF, record=False) as hashing:
        reader = QueueReader(hashing)
        assert hashing.reports_in_user_space
        _check(_send_and_read(sock, reader), hashing, computed=True)
        # The reader follows a reconfiguration: everything on queue 3 now.
        hashing.reconfigure(CONFIG.replace(indirection_table=(3,)))
        assert {f.queue for f in _send_and_read(sock, reader)} == {3}


@pytest.mark.kernel
@pytest.mark.bpf
@pytest.mark.parametrize("revision", [Revision.V12, Revision.V10])
def test_native_and_ebpf_frames_read_the_same(wired: tuple[TunTapDevice, socket.socket], revision: Revision) -> None:
    # Plain UDP/IPv4 hashes the same in every semantics: the reader's output is backend-blind.
    dev, sock = wired
    with Hashing.enable(dev, CONFIG, backend=Backend.EBPF, record=False) as hashing:
        from_ebpf = _check(_send_and_read(sock, QueueReader(hashing)), hashing, computed=True)
    with KernelEmulator(revision) as emu:
        hashing = emu.run(Hashing.enable, dev, CONFIG, backend=Backend.NATIVE, revision=revision, record=False)
        try:
            assert not hashing.reports_in_user_space
            reader = QueueReader(hashing)
            from_kernel = _check(emu.run(_send_and_read, sock, reader), hashing, computed=False)
        finally:
            emu.run(hashing.close)
    assert from_kernel == from_ebpf


def test_a_reader_needs_a_real_device() -> None:
    with FakeTunTap(Revision.V12) as fake:
        fake.set_vnet_hdr_size(20)
        with Hashing.enable(fake, CONFIG, record=False) as hashing, pytest.raises(ValidationError, match="real TUN"):
            QueueReader(hashing)


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_vmm_without_hashing_reads_through_its_slot_writer(wired: tuple[TunTapDevice, socket.socket]) -> None:
    # The unprivileged VMM's case: no Hashing object, only the maps it writes (pytun_hash.bpf.shared).
    dev, sock = wired
    with EbpfRss.load(CONFIG) as rss:
        rss.attach(dev)
        try:
            reader = QueueReader(rss.writer, device=dev)
            frames = _send_and_read(sock, reader)
            assert len(frames) == len(PORTS) and all(f.computed for f in frames)
            for got in frames:
                want = classify(got.frame, CONFIG.types, CONFIG.key)
                assert (got.hash_value, got.hash_report) == (want.hash_value, want.report)
                assert got.queue == predict_queue(CONFIG, got.frame, 4)
            rss.writer.write(CONFIG.replace(indirection_table=(1,)))
            assert {f.queue for f in _send_and_read(sock, reader)} == {1}
        finally:
            rss.detach()
    with pytest.raises(ValidationError, match="needs the device"):
        QueueReader(rss.writer)
