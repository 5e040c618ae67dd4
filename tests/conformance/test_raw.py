"""The uapi rules' raw tools: guarded buffers, byte counts at an unreadable page, frames.

The byte-count tests need no privilege: ``FIONBIO`` reads exactly one ``int`` from user memory
(``get_user``) and ``FIONREAD`` on a pipe writes exactly one, on any Linux kernel.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import termios
from collections.abc import Iterator

import pytest

from pytun_hash.conformance._raw import (
    PAGE,
    FrameSender,
    GuardedBuffer,
    Measurement,
    Observed,
    ioctl_at,
    ioctl_int,
    marked_frames,
    udp4_frame,
)
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.errors import ValidationError


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def buf() -> Iterator[GuardedBuffer]:
    with GuardedBuffer() as guarded:
        yield guarded


def test_place_ends_the_accessible_prefix_at_the_guard_page(buf: GuardedBuffer) -> None:
    payload = bytes(range(1, 33))
    for accessible in (0, 1, 7, 32):
        address = buf.place(payload, accessible)
        assert address == buf.guard - accessible
        assert ctypes.string_at(address, accessible) == payload[:accessible]
    assert buf.place(payload) == buf.guard - len(payload)
    assert buf.guard % PAGE == 0


def test_place_refuses_what_does_not_fit(buf: GuardedBuffer) -> None:
    with pytest.raises(ValidationError, match="accessible"):
        buf.place(b"abc", 4)
    with pytest.raises(ValidationError, match="accessible"):
        buf.place(b"abc", -1)
    with pytest.raises(ValidationError, match="do not fit"):
        buf.place(bytes(buf.capacity + 1))
    with pytest.raises(ValidationError, match="capacity"):
        GuardedBuffer(0)


def test_capacity_is_rounded_up_to_whole_pages() -> None:
    with GuardedBuffer(PAGE + 1) as big:
        assert big.capacity == 2 * PAGE
        big.place(bytes(2 * PAGE))  # fits exactly
    big.close()  # idempotent


def test_measure_finds_the_bytes_a_call_reads(buf: GuardedBuffer, pipe: tuple[int, int]) -> None:
    r, _ = pipe
    # FIONBIO get_user()s one int: 4 bytes, whatever follows.
    m = buf.measure(r, termios.FIONBIO, struct.pack("=i", 1) + bytes(60))
    assert m == Measurement(4, 0, m.probes)
    assert 1 < m.probes <= 8  # a binary search over 65 prefixes, not a scan
    assert not os.get_blocking(r)  # the successful probes did set it
    assert buf.call(r, termios.FIONBIO, struct.pack("=i", 0), 3)[0] == errno.EFAULT
    assert os.get_blocking(r) is False  # a faulting call changed nothing


def test_measure_finds_the_bytes_a_call_writes(buf: GuardedBuffer, pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"12345")
    m = buf.measure(r, termios.FIONREAD, bytes(16))
    assert (m.count, m.errno) == (4, 0)
    err, out = buf.call(r, termios.FIONREAD, bytes(4))
    assert err == 0 and struct.unpack("=i", out) == (5,)


def test_measure_says_when_the_whole_payload_is_not_enough(buf: GuardedBuffer, pipe: tuple[int, int]) -> None:
    m = buf.measure(pipe[0], termios.FIONBIO, b"\1\0")
    assert (m.count, m.errno) == (None, errno.EFAULT)


def test_measure_reports_the_errno_of_a_refusal(buf: GuardedBuffer, pipe: tuple[int, int]) -> None:
    # A request the pipe does not know is refused before anything is read.
    m = buf.measure(pipe[0], 0x5401_0000 | 0x7F, bytes(8))
    assert m.count == 0 and m.errno == errno.ENOTTY


def test_ioctl_at_and_ioctl_int_return_the_errno(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    assert ioctl_int(r, termios.FIONBIO, 1) == 0
    assert not os.get_blocking(r)
    assert ioctl_int(r, termios.FIONBIO, 0) == 0
    assert os.get_blocking(r)
    closed = os.dup(r)
    os.close(closed)
    assert ioctl_at(closed, termios.FIONBIO, 0) == errno.EBADF
    assert ioctl_at(r, termios.FIONBIO, 0) == errno.EFAULT  # a NULL pointer
    # The request goes through unchanged as an unsigned long: bit 31 set, as every _IOR has.
    assert ioctl_at(r, 0x8004_54E4, 0) == errno.ENOTTY


def _ones_complement_sum(data: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_udp4_frame_is_a_valid_ethernet_ipv4_udp_frame() -> None:
    frame = udp4_frame("10.77.0.1", "10.77.0.2", 40000, 4789, b"marker0001")
    assert len(frame) == 14 + 20 + 8 + 10
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[9] == 17
    assert struct.unpack("!H", ip[2:4]) == (20 + 8 + 10,)
    assert ip[12:16] == socket.inet_aton("10.77.0.1") and ip[16:20] == socket.inet_aton("10.77.0.2")
    assert _ones_complement_sum(ip) == 0xFFFF  # the header checksum is right
    assert struct.unpack("!HHH", frame[34:40]) == (40000, 4789, 18)
    assert frame.endswith(b"marker0001")


def test_observed_hash_fields_need_a_20_byte_header() -> None:
    header = bytes(10) + struct.pack("<HIHH", 0, 0xDEADBEEF, 3, 0)
    assert Observed(1, header, b"").hash_fields == (0xDEADBEEF, 3)
    assert Observed(1, header[:12], b"").hash_fields is None


@pytest.mark.kernel
def test_frames_sent_come_back_from_the_queues_with_their_tags(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("raw%d", queues=2, vnet_hdr=True) as dev:
        dev.set_vnet_hdr_size(20)
        netns.set_link_up(dev.name)
        with FrameSender(dev.name) as sender:
            for i in range(8):
                sender.send(udp4_frame("10.77.0.1", "10.77.0.2", 40000 + i, 4789, b"mark-%d" % i))
            sender.send(udp4_frame("10.77.0.1", "10.77.0.2", 1, 2, b"unmarked"))
            seen = marked_frames(dev, b"mark-", 20)
        assert sorted(o.tag for o in seen) == [b"%d" % i for i in range(8)]
        assert {o.queue for o in seen} <= {0, 1}
        assert all(len(o.header) == 20 for o in seen)
        assert not any(q.poll(0) for q in dev.attached_queues)  # the unmarked frame was read and dropped


@pytest.mark.kernel
def test_the_sender_needs_an_existing_device(netns: NetworkNamespace) -> None:
    with pytest.raises(OSError) as missing:
        FrameSender("nosuchdev0")
    assert missing.value.errno == errno.ENODEV


def test_fcntl_ioctl_would_hide_a_short_buffer(pipe: tuple[int, int]) -> None:
    """Why the raw path exists: fcntl.ioctl copies a short mutable buffer into a 1024-byte one of its own."""
    r, _ = pipe
    short = bytearray(2)  # FIONBIO reads 4 bytes: past the end of this buffer
    assert fcntl.ioctl(r, termios.FIONBIO, short, True) == 0
    with GuardedBuffer() as guarded:
        assert guarded.call(r, termios.FIONBIO, bytes(short))[0] == errno.EFAULT
