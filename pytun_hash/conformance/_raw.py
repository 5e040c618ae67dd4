"""Raw tools of the ``uapi.*`` rules: ioctls at an address, guarded buffers, byte counts, frames.

The rules measure the kernel, so nothing here checks a payload or interprets an errno: an ioctl is
issued through libc with the caller's request number and a raw address, and its errno comes back
as a number. What the kernel *reads* (or writes) is measured at an unreadable page: a payload is
placed so that exactly ``k`` of its bytes lie before a ``PROT_NONE`` page, and the smallest ``k``
with which the call does not fail with ``EFAULT`` is the number of bytes the kernel copied
(``copy_from_user``/``copy_to_user`` fault on the first inaccessible byte). ``fcntl.ioctl`` cannot
do this: it copies a mutable buffer of up to 1024 bytes into a private buffer of its own, so a
kernel reading past the payload would read that buffer, not fault.

Frames: the ``uapi.atomic-commit`` and ``uapi.exclusion`` rules look at the data path to see which
configuration is in force (the kernel cannot be asked). :class:`FrameSender` transmits crafted
Ethernet/IPv4/UDP frames through a device with a packet socket (the device's queue choice and hash
run as for any transmitted frame) and :func:`marked_frames` reads back the ones carrying a marker.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct
from types import TracebackType

import attrs

from pytun_hash import _sys
from pytun_hash.device import TunTapDevice
from pytun_hash.errors import ValidationError
from pytun_hash.model.flow import internet_checksum

__all__ = [
    "PAGE",
    "FrameSender",
    "GuardedBuffer",
    "Measurement",
    "Observed",
    "ioctl_at",
    "ioctl_int",
    "marked_frames",
    "udp4_frame",
]

#: The page size: the granularity of ``PROT_NONE``.
PAGE = mmap.PAGESIZE

_PROT_NONE, _PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FAILED = ctypes.c_void_p(-1).value
_MMAP = _sys.function(
    "mmap", ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
)
_MPROTECT = _sys.function("mprotect", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_MUNMAP = _sys.function("munmap", ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
# The request is an unsigned long so that numbers with bit 31 set (every _IOR) pass unchanged.
_IOCTL = _sys.function("ioctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def ioctl_at(fd: int, request: int, address: int) -> int:
    """``ioctl(fd, request, (void *)address)`` through libc: 0 on success, else the errno.

    Nothing is raised for a failing call: the errno is the measurement.
    """
    if _IOCTL(fd, request, address) == 0:
        return 0
    return ctypes.get_errno() or errno.EIO


def ioctl_int(fd: int, request: int, value: int) -> int:
    """``ioctl(fd, request, &value)`` with ``value`` a C ``int`` (``TUNSETVNETHDRSZ``, ``TUNSETSTEERINGEBPF``):
    0 on success, else the errno."""
    cell = ctypes.c_int(value)
    return ioctl_at(fd, request, ctypes.addressof(cell))


@attrs.frozen
class Measurement:
    """How many bytes of a payload a call needed accessible (the bytes the kernel copied).

    Attributes:
        count: the smallest number of accessible bytes with which the call did not fail with
            ``EFAULT``; None when it faulted even with the whole payload accessible (the kernel
            copies more than the payload holds).
        errno: the call's errno with ``count`` bytes accessible (0: it succeeded); ``EFAULT``
            when ``count`` is None.
        probes: calls made to find it.
    """

    count: int | None
    errno: int
    probes: int


class GuardedBuffer:
    """Accessible pages followed by one ``PROT_NONE`` page (a context manager; :meth:`close` unmaps).

    A payload is placed so that its first ``k`` bytes end exactly at the inaccessible page: a
    kernel that copies more than ``k`` bytes faults (``EFAULT``) on byte ``k``.

    Args:
        capacity: the largest payload in bytes (rounded up to whole pages).

    Raises:
        ValidationError: for a capacity below 1.
        OSError: when ``mmap`` or ``mprotect`` fails (``ENOMEM``).
    """

    def __init__(self, capacity: int = PAGE) -> None:
        if capacity < 1:
            raise ValidationError("capacity", f"must be at least 1 byte, got {capacity}")
        pages = -(-capacity // PAGE)
        self._length = (pages + 1) * PAGE
        address = _MMAP(None, self._length, _PROT_RW, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if address is None or address == _MAP_FAILED:
            err = ctypes.get_errno()
            raise OSError(err, f"mmap: {os.strerror(err)}")
        self._base: int = address
        #: The first inaccessible byte.
        self.guard: int = self._base + pages * PAGE
        self.capacity = pages * PAGE
        if _MPROTECT(self.guard, PAGE, _PROT_NONE) != 0:
            err = ctypes.get_errno()
            self.close()
            raise OSError(err, f"mprotect: {os.strerror(err)}")

    def place(self, payload: bytes, accessible: int | None = None) -> int:
        """Copy the first ``accessible`` bytes of ``payload`` (all by default) to end at the guard page.

        Returns the payload's address: bytes ``0 .. accessible-1`` are readable and writable there,
        byte ``accessible`` is the first inaccessible one.

        Raises:
            ValidationError: for ``accessible`` outside ``0 .. len(payload)`` or a payload over the capacity.
        """
        count = len(payload) if accessible is None else accessible
        if not 0 <= count <= len(payload):
            raise ValidationError("accessible", f"must be 0..{len(payload)}, got {count}")
        if count > self.capacity:
            raise ValidationError("payload", f"{count} bytes do not fit a {self.capacity}-byte buffer")
        address = self.guard - count
        ctypes.memmove(address, payload, count)
        return address

    def call(self, fd: int, request: int, payload: bytes, accessible: int | None = None) -> tuple[int, bytes]:
        """Issue ``request`` on ``fd`` with ``payload`` placed as by :meth:`place`.

        Returns the errno (0 on success) and the accessible bytes as the call left them (what a
        get-ioctl wrote).

        Raises:
            ValidationError: as :meth:`place`.
        """
        address = self.place(payload, accessible)
        err = ioctl_at(fd, request, address)
        return err, ctypes.string_at(address, self.guard - address)

    def measure(self, fd: int, request: int, payload: bytes) -> Measurement:
        """The bytes of ``payload`` the call copies: the smallest accessible prefix without ``EFAULT``.

        A binary search over the prefix length; it relies on what ``copy_from_user`` guarantees
        (more accessible bytes never make a copy fault), and the answer is exact: with
        ``count - 1`` bytes accessible the call faulted, with ``count`` it did not. Calls that
        succeed change the device's state like any other call.

        Raises:
            ValidationError: for a payload over the capacity.
        """
        probes = 0
        seen: dict[int, int] = {}

        def errno_with(k: int) -> int:
            nonlocal probes
            if k not in seen:
                probes += 1
                seen[k] = self.call(fd, request, payload, k)[0]
            return seen[k]

        if errno_with(len(payload)) == errno.EFAULT:
            return Measurement(None, errno.EFAULT, probes)
        low, high = 0, len(payload)
        while low < high:
            middle = (low + high) // 2
            if errno_with(middle) == errno.EFAULT:
                low = middle + 1
            else:
                high = middle
        return Measurement(low, errno_with(low), probes)

    def close(self) -> None:
        """Unmap the pages (idempotent)."""
        if self._base:
            _MUNMAP(self._base, self._length)
            self._base = 0

    def __enter__(self) -> GuardedBuffer:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# -- frames ---------------------------------------------------------------------------------------

_ETH_P_IP = 0x0800
_IPPROTO_UDP = 17


def udp4_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame (locally administered MACs, IPv4 header checksum filled, UDP's zero).

    Raises:
        OSError: for an address that is not dotted-quad IPv4 (``socket.inet_aton``).
    """
    src_mac, dst_mac = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        64,
        _IPPROTO_UDP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", _ETH_P_IP) + ip + udp


class FrameSender:
    """A packet socket that transmits whole Ethernet frames through device ``ifname`` (context manager).

    Created in the calling thread's network namespace, which must hold the device; the device must
    be up. Frames go through the device's transmit path: queue choice (steering program, hash) as
    for any frame the stack sends.

    Raises:
        OSError: when the socket cannot be made (``EPERM`` without CAP_NET_RAW) or bound (``ENODEV``).
    """

    def __init__(self, ifname: str) -> None:
        # Protocol 0: the socket receives nothing, so it never queues the frames it sends.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            self._sock.bind((ifname, 0))
        except OSError:
            self._sock.close()
            raise

    def send(self, frame: bytes) -> None:
        """Transmit one frame (synchronously: it is on its queue when this returns).

        Raises:
            OSError: when the device refuses it (``ENETDOWN`` while down, ``ENXIO`` once deleted).
        """
        self._sock.send(frame)

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@attrs.frozen
class Observed:
    """One marked frame as read from a queue.

    Attributes:
        queue: the kernel index of the queue it was read from.
        header: the vnet header bytes in front of it.
        tag: what followed the marker in the frame's payload.
    """

    queue: int
    header: bytes
    tag: bytes

    @property
    def hash_fields(self) -> tuple[int, int] | None:
        """``(hash_value, hash_report)`` of a ``virtio_net_hdr_v1_hash`` header (None under 20 bytes)."""
        if len(self.header) < 20:
            return None
        value, report = struct.unpack_from("<IH", self.header, 12)
        return value, report


def marked_frames(device: TunTapDevice, marker: bytes, vnet_hdr_size: int) -> list[Observed]:
    """Read every frame queued on ``device``'s attached queues now; return those carrying ``marker``.

    Other frames (stack noise) are read and dropped. The tag is the payload bytes after the marker.

    Raises:
        KernelError: when a queue cannot be read.
    """
    found: list[Observed] = []
    for queue in device.attached_queues:
        for raw in queue.drain():
            frame = raw[vnet_hdr_size:]
            at = frame.find(marker)
            if at >= 0:
                found.append(Observed(queue.index or 0, raw[:vnet_hdr_size], frame[at + len(marker) :]))
    return found
