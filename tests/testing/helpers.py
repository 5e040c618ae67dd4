"""Raw helpers for the emulator tests: TAP devices, guard pages, a trivial eBPF program.

Kept on raw fds and syscalls so the emulator is tested independently of pytun_hash.device.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
import time
from types import TracebackType

from pytun_hash._abi import Revision, TunFlag, ioctl_request

TUNSETIFF = ioctl_request("TUNSETIFF")
TUNGETVNETHDRSZ = ioctl_request("TUNGETVNETHDRSZ")
TUNSETVNETHDRSZ = ioctl_request("TUNSETVNETHDRSZ")
TUNSETSTEERINGEBPF = ioctl_request("TUNSETSTEERINGEBPF")
RFC_CAP = ioctl_request("TUNGETVNETHASHCAP", revision=Revision.RFC)
RFC_SET = ioctl_request("TUNSETVNETHASH", revision=Revision.RFC)
V3_CAP = ioctl_request("TUNGETVNETHASHCAP", revision=Revision.V3)
V3_SET = ioctl_request("TUNSETVNETHASH", revision=Revision.V3)
V12_TYPES = ioctl_request("TUNGETVNETHASHTYPES", revision=Revision.V12)
V12_AUTOMQ = ioctl_request("TUNSETVNETREPORTINGAUTOMQ", revision=Revision.V12)
V12_REPORTINGRSS = ioctl_request("TUNSETVNETREPORTINGRSS", revision=Revision.V12)
V12_RSS = ioctl_request("TUNSETVNETRSS", revision=Revision.V12)

PAGE = mmap.PAGESIZE
_PROT_NONE, _PROT_RW = 0, 3
_MAP_PRIVATE_ANON = 0x02 | 0x20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def open_tap(name: str = "emu%d", *, queues: int = 1, vnet_hdr: bool = True) -> list[int]:
    """Open a TAP device with ``queues`` queue fds (in the calling thread's netns); the caller closes them."""
    flags = TunFlag.IFF_TAP | TunFlag.IFF_NO_PI
    if vnet_hdr:
        flags |= TunFlag.IFF_VNET_HDR
    if queues > 1:
        flags |= TunFlag.IFF_MULTI_QUEUE
    fds: list[int] = []
    try:
        for _ in range(queues):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
            fds.append(fd)
            out = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sh22x", name.encode(), int(flags)))
            name = out[:16].rstrip(b"\0").decode()
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def ifname_of(fd: int) -> str:
    """The device name behind queue fd ``fd`` (TUNGETIFF)."""
    out = fcntl.ioctl(fd, ioctl_request("TUNGETIFF"), bytes(40))
    return out[:16].rstrip(b"\0").decode()


def ioctl_errno(fd: int, request: int, arg: int | bytes | bytearray) -> int:
    """Issue ``ioctl(fd, request, arg)``; return 0 or the errno. A bytearray is passed mutable."""
    try:
        if isinstance(arg, bytearray):
            fcntl.ioctl(fd, request, arg, True)
        else:
            fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        return exc.errno or -1
    return 0


def ioctl_at(fd: int, request: int, address: int) -> int:
    """``ioctl(fd, request, (void *)address)`` through libc; return 0 or the errno."""
    if _libc.ioctl(fd, request, address) == 0:
        return 0
    return ctypes.get_errno()


def get_int(fd: int, request: int) -> int:
    """An ``int`` read by a get-ioctl."""
    value: int = struct.unpack("=i", fcntl.ioctl(fd, request, bytes(4)))[0]
    return value


def set_int(fd: int, request: int, value: int) -> int:
    """Pass a pointer to ``value`` to ``request``; return 0 or the errno."""
    return ioctl_errno(fd, request, struct.pack("=i", value))


class GuardPage:
    """Two anonymous pages; the second is PROT_NONE, so a payload can end exactly at a fault."""

    def __init__(self) -> None:
        addr = _libc.mmap(None, 2 * PAGE, _PROT_RW, _MAP_PRIVATE_ANON, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap failed")
        self.base: int = addr
        if _libc.mprotect(self.base + PAGE, PAGE, _PROT_NONE) != 0:
            _libc.munmap(self.base, 2 * PAGE)
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def place(self, payload: bytes) -> int:
        """Copy ``payload`` so that its last byte is the last readable byte; return its address."""
        if len(payload) > PAGE:
            raise ValueError("payload larger than a page")
        ctypes.memset(self.base, 0, PAGE)
        address = self.base + PAGE - len(payload)
        ctypes.memmove(address, payload, len(payload))
        return address

    def read(self, address: int, length: int) -> bytes:
        """Bytes at ``address`` (inside the readable page)."""
        return ctypes.string_at(address, length)

    def close(self) -> None:
        """Unmap both pages."""
        if self.base:
            _libc.munmap(self.base, 2 * PAGE)
            self.base = 0

    def __enter__(self) -> GuardPage:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


_NR_BPF = 321
_BPF_PROG_LOAD = 5
_BPF_PROG_GET_FD_BY_ID = 13
_BPF_PROG_TYPE_SOCKET_FILTER = 1


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    return int(_libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_long(cmd), attr, ctypes.c_long(len(attr))))


def load_socket_filter(ret: int = 0) -> int:
    """Load ``r0 = ret; exit`` as a SOCKET_FILTER program; return its fd (the caller closes it)."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, ret) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(144)
    struct.pack_into(
        "=IIQQ", attr, 0, _BPF_PROG_TYPE_SOCKET_FILTER, 2, ctypes.addressof(code), ctypes.addressof(license_)
    )
    fd = _bpf(_BPF_PROG_LOAD, attr)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_PROG_LOAD: {os.strerror(err)}")
    return fd


def prog_id(fd: int) -> int:
    """The id of the program behind ``fd`` (from /proc/self/fdinfo)."""
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    raise LookupError(f"fd {fd} is not a bpf program")


def prog_alive(pid: int, *, settle: float = 0.0) -> bool:
    """True when program ``pid`` still exists; waits up to ``settle`` s for it to disappear.

    A program detached from a tun device is released after an RCU grace period, so its id
    vanishes shortly after the detach.
    """
    end = time.monotonic() + settle
    while True:
        attr = ctypes.create_string_buffer(144)
        struct.pack_into("=I", attr, 0, pid)
        fd = _bpf(_BPF_PROG_GET_FD_BY_ID, attr)
        if fd >= 0:
            os.close(fd)
            if time.monotonic() >= end:
                return True
            time.sleep(0.01)
            continue
        err = ctypes.get_errno()
        if err != errno.ENOENT:
            raise OSError(err, f"BPF_PROG_GET_FD_BY_ID: {os.strerror(err)}")
        return False


def open_fds() -> set[int]:
    """The fd numbers open in this process."""
    return {int(n) for n in os.listdir("/proc/self/fd")}
