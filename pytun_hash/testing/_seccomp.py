"""Raw seccomp user notification and cross-task memory access, through ctypes.

Only the pieces the kernel emulator needs: a classic-BPF filter that turns chosen ioctl
requests into user notifications, its installation on the calling thread, the listener's
``RECV``/``ID_VALID``/``SEND`` ioctls, ``process_vm_readv``/``process_vm_writev`` for the
target's memory and ``pidfd_getfd`` for its file descriptors.

Why ``process_vm_readv`` and not ``/proc/<tid>/mem``: ``/proc/<tid>/mem`` accesses memory
with ``FOLL_FORCE`` (the default ``proc_mem.force_override``), so it reads and even writes
``PROT_NONE`` and read-only pages. ``copy_from_user``/``copy_to_user`` fault there, and
``process_vm_readv``/``process_vm_writev`` (no ``FOLL_FORCE``) fault the same way, so they
give ``EFAULT`` exactly where the kernel would. Measured on Linux 6.18 x86-64.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
import sys
from collections.abc import Iterable

import attrs

from pytun_hash import _sys
from pytun_hash._abi.ioc import IocDir, layout_for
from pytun_hash._sys import PR_SET_NO_NEW_PRIVS
from pytun_hash.testing._errors import EmulatorError

__all__ = [
    "SECCOMP_USER_NOTIF_FLAG_CONTINUE",
    "Notification",
    "SeccompArch",
    "build_filter",
    "install_listener",
    "notif_id_valid",
    "notif_recv",
    "notif_send",
    "pidfd_getfd",
    "read_memory",
    "seccomp_arch",
    "set_sync_wake_up",
    "write_memory",
]

# linux/seccomp.h
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

# linux/filter.h classic BPF opcodes
_BPF_LD_W_ABS = 0x20
_BPF_JMP_JEQ_K = 0x15
_BPF_JMP_JGE_K = 0x35
_BPF_RET_K = 0x06

# struct seccomp_data offsets
_DATA_NR = 0
_DATA_ARCH = 4
_DATA_ARGS = 16

_NR_PIDFD_GETFD = 438  # the same on every architecture (unified syscall numbering since 5.x)


@attrs.frozen
class SeccompArch:
    """What a seccomp filter must match on one architecture.

    Attributes:
        machine: ``platform.machine()`` spelling.
        audit_arch: ``AUDIT_ARCH_*`` value in ``seccomp_data.arch``.
        nr_ioctl: the ``ioctl`` syscall number.
        nr_seccomp: the ``seccomp`` syscall number.
    """

    machine: str
    audit_arch: int
    nr_ioctl: int
    nr_seccomp: int
    nr_read: int
    nr_readv: int


# Only x86_64 is exercised by the test suite; the others follow the kernel's tables.
_ARCHES = {
    "x86_64": SeccompArch("x86_64", 0xC000003E, 16, 317, 0, 19),
    "aarch64": SeccompArch("aarch64", 0xC00000B7, 29, 277, 63, 65),
    "riscv64": SeccompArch("riscv64", 0xC00000F3, 29, 277, 63, 65),
}


def seccomp_arch(machine: str | None = None) -> SeccompArch:
    """The :class:`SeccompArch` of ``machine`` (None = this host).

    Raises:
        EmulatorError: for an architecture the emulator has no syscall table for.
    """
    name = platform.machine() if machine is None else machine
    try:
        return _ARCHES[name]
    except KeyError:
        raise EmulatorError(
            f"the kernel emulator has no seccomp tables for {name!r} (known: {', '.join(sorted(_ARCHES))})"
        ) from None


#: Reads shorter than this reach the kernel without a notification (see :func:`build_filter`).
MIN_TRAPPED_READ = 10


def build_filter(arch: SeccompArch, requests: Iterable[int], *, reads: bool = False) -> bytes:
    """A classic-BPF program: ``ioctl`` with the low 32 bits of ``cmd`` in ``requests`` -> USER_NOTIF, else ALLOW.

    The kernel truncates ``cmd`` to ``unsigned int``, so only the low word of ``args[1]`` is
    compared; exact values are matched because Python itself issues other ``'T'`` ioctls
    (``TCGETS``, ``FIONBIO``). With ``reads``, every ``readv`` and every ``read`` of at least
    :data:`MIN_TRAPPED_READ` bytes is a notification too (the filter cannot tell a tun fd from
    another; the supervisor lets the others continue).

    Shorter reads are let through by the filter itself, because the C library makes some while
    the thread holds the GIL, and a supervisor in the same process, which needs the GIL to answer,
    would wait for it forever: glibc's ``free()`` reads one byte of
    ``/proc/sys/vm/overcommit_memory`` the first time it shrinks a thread's heap. A tun read that
    short is answered the same by the kernel: below the vnet header (10 bytes at least) it fails
    with ``EINVAL`` (the frame dropped), and without a vnet header there is nothing to emulate.

    Raises:
        EmulatorError: when ``requests`` is empty or too long for 8-bit jump offsets.
    """
    cmds = sorted({r & 0xFFFFFFFF for r in requests})
    if not cmds or len(cmds) > 200:
        raise EmulatorError(f"cannot build a seccomp filter for {len(cmds)} requests (1..200 allowed)")
    little = sys.byteorder == "little"
    cmd_low = _DATA_ARGS + 8 + (0 if little else 4)
    count_low, count_high = _DATA_ARGS + 16 + (0 if little else 4), _DATA_ARGS + 16 + (4 if little else 0)
    # Instructions by label; jumps are resolved to forward offsets once every position is known.
    body: list[tuple[int, int | str, int | str, int]] = [
        (_BPF_LD_W_ABS, 0, 0, _DATA_ARCH),
        (_BPF_JMP_JEQ_K, 0, "allow", arch.audit_arch),
        (_BPF_LD_W_ABS, 0, 0, _DATA_NR),
    ]
    if reads:
        body += [
            (_BPF_JMP_JEQ_K, "notif", 0, arch.nr_readv),
            (_BPF_JMP_JEQ_K, 0, "ioctl", arch.nr_read),
            (_BPF_LD_W_ABS, 0, 0, count_high),
            (_BPF_JMP_JEQ_K, 0, "notif", 0),
            (_BPF_LD_W_ABS, 0, 0, count_low),
            (_BPF_JMP_JGE_K, "notif", "allow", MIN_TRAPPED_READ),
        ]
    labels = {"ioctl": len(body)}
    body += [
        (_BPF_JMP_JEQ_K, 0, "allow", arch.nr_ioctl),
        (_BPF_LD_W_ABS, 0, 0, cmd_low),
    ]
    body += [(_BPF_JMP_JEQ_K, "notif", 0, cmd) for cmd in cmds]
    labels["allow"] = len(body)
    body.append((_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    labels["notif"] = len(body)
    body.append((_BPF_RET_K, 0, 0, SECCOMP_RET_USER_NOTIF))

    def offset(at: int, target: int | str) -> int:
        return target if isinstance(target, int) else labels[target] - at - 1

    return b"".join(
        struct.pack("=HBBI", code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(body)
    )


class _sock_fprog(ctypes.Structure):  # noqa: N801 - kernel name
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install_listener(arch: SeccompArch, program: bytes) -> int:
    """Install ``program`` on the *calling thread only* and return the new listener fd (O_CLOEXEC).

    Sets ``no_new_privs`` first (needed without CAP_SYS_ADMIN). Both are irreversible for the
    thread, so call this only from a disposable thread or process.

    Raises:
        EmulatorError: when ``prctl`` or ``seccomp`` fails (the errno is in the message).
    """
    try:
        _sys.prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise EmulatorError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {exc.strerror}") from None
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _sock_fprog(len(program) // 8, ctypes.addressof(buf))
    try:
        listener = _sys.syscall(
            arch.nr_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(prog)
        )
    except OSError as exc:
        raise EmulatorError(
            f"seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER) failed: {exc.strerror} "
            "(needs CONFIG_SECCOMP_FILTER and Linux >= 5.0; blocked inside some container profiles)"
        ) from None
    set_sync_wake_up(listener)
    return listener


def set_sync_wake_up(listener: int) -> bool:
    """Ask for synchronous wake-ups on ``listener`` (``SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP``, Linux >= 6.6).

    A trapped call then wakes the supervisor on the target's CPU and the answer wakes the target on
    the supervisor's, instead of each through another CPU: on a 2-vCPU VM that halves the round trip
    (an emulated ``TUNGETVNETHASHCAP`` took 217 us without, 112 us with). The trap is a hand-over
    between two threads of which one waits, which is what the flag is for.

    Returns:
        Whether the kernel took the flag (False on older kernels: they answer ``EINVAL``).
    """
    try:
        _retry_ioctl(listener, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    except OSError:
        return False
    return True


class seccomp_data(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct seccomp_data`` (64 bytes)."""

    _fields_ = (
        ("nr", ctypes.c_int),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class seccomp_notif(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct seccomp_notif`` (80 bytes)."""

    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("data", seccomp_data),
    )


class seccomp_notif_resp(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct seccomp_notif_resp`` (24 bytes)."""

    _fields_ = (
        ("id", ctypes.c_uint64),
        ("val", ctypes.c_int64),
        ("error", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    )


# The same layouts as precompiled structs, for the supervisor's hot path (a ctypes structure per
# notification costs it 3 us more); checked against the ctypes definitions once.
_NOTIF = struct.Struct("=QIIiIQ6Q")
_NOTIF_RESP = struct.Struct("=QqiI")
_NOTIF_ID = struct.Struct("=Q")
assert _NOTIF.size == ctypes.sizeof(seccomp_notif) and _NOTIF_RESP.size == ctypes.sizeof(seccomp_notif_resp)

_SECCOMP_IOC_MAGIC = ord("!")
_LAYOUT = layout_for()
SECCOMP_IOCTL_NOTIF_RECV = _LAYOUT.encode(
    IocDir.READ | IocDir.WRITE, _SECCOMP_IOC_MAGIC, 0, ctypes.sizeof(seccomp_notif)
)
SECCOMP_IOCTL_NOTIF_SEND = _LAYOUT.encode(
    IocDir.READ | IocDir.WRITE, _SECCOMP_IOC_MAGIC, 1, ctypes.sizeof(seccomp_notif_resp)
)
SECCOMP_IOCTL_NOTIF_ID_VALID = _LAYOUT.encode(IocDir.WRITE, _SECCOMP_IOC_MAGIC, 2, 8)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _LAYOUT.encode(IocDir.WRITE, _SECCOMP_IOC_MAGIC, 4, 8)
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1 << 0
# Kernels before 5.9 only know the first, wrongly encoded (_IOR) number; newer ones accept both.
_SECCOMP_IOCTL_NOTIF_ID_VALID_WRONG_DIR = _LAYOUT.encode(IocDir.READ, _SECCOMP_IOC_MAGIC, 2, 8)


@attrs.frozen
class Notification:
    """One received notification: a trapped ``ioctl(fd, request, arg)`` (or ``read``/``readv``) of task ``tid``.

    For ``read(fd, buf, count)`` and ``readv(fd, iov, iovcnt)``, ``request`` holds the second and
    ``arg`` the third argument; ``nr`` says which system call it is.
    """

    id: int
    tid: int
    fd: int
    request: int
    arg: int
    nr: int = -1


def _retry_ioctl(fd: int, request: int, arg: bytes | bytearray | int) -> None:
    while True:
        try:
            if isinstance(arg, bytearray):
                fcntl.ioctl(fd, request, arg, True)
            else:
                fcntl.ioctl(fd, request, arg)
        except InterruptedError:
            continue
        return


def notif_recv(listener: int, nr_ioctl: int | None = None) -> Notification | None:
    """Receive one notification; None when it vanished (the target was killed or interrupted).

    ``nr_ioctl`` is this architecture's ``ioctl`` number (None: looked up); a supervisor passes it,
    as this runs once per trapped call.

    Raises:
        OSError: for any other failure of ``SECCOMP_IOCTL_NOTIF_RECV``.
    """
    # The kernel refuses a non-zeroed buffer (EINVAL).
    buf = bytearray(_NOTIF.size)
    try:
        _retry_ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    notif_id, pid, _flags, nr, _arch, _ip, fd, second, third, *_ = _NOTIF.unpack_from(buf)
    # ioctl(2) takes an unsigned int cmd: only the low word counts, as in the filter; read's and
    # readv's second arguments are whole pointers. The fd is an int.
    if nr == (seccomp_arch().nr_ioctl if nr_ioctl is None else nr_ioctl):
        second &= 0xFFFFFFFF
    return Notification(notif_id, pid, (fd & 0xFFFFFFFF) - ((fd & 0x80000000) << 1), second, third, nr)


def notif_id_valid(listener: int, notif_id: int) -> bool:
    """True while the notification is still pending (its target is still blocked in the call)."""
    arg = _NOTIF_ID.pack(notif_id)
    try:
        _retry_ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, arg)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            return False
        try:
            _retry_ioctl(listener, _SECCOMP_IOCTL_NOTIF_ID_VALID_WRONG_DIR, arg)
        except OSError:
            return False
    return True


def notif_send(listener: int, notif_id: int, *, val: int = 0, error: int = 0, flags: int = 0) -> bool:
    """Answer a notification: return ``val``, or fail with ``error`` (a positive errno); False if it vanished.

    Raises:
        OSError: for failures other than ``ENOENT`` (the target went away).
    """
    try:
        _retry_ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, _NOTIF_RESP.pack(notif_id, val, -error, flags))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


class _iovec(ctypes.Structure):  # noqa: N801 - kernel name
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


_PROCESS_VM_ARGTYPES = (
    ctypes.c_int,
    ctypes.POINTER(_iovec),
    ctypes.c_ulong,
    ctypes.POINTER(_iovec),
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_process_vm_readv = _sys.function("process_vm_readv", ctypes.c_ssize_t, *_PROCESS_VM_ARGTYPES)
_process_vm_writev = _sys.function("process_vm_writev", ctypes.c_ssize_t, *_PROCESS_VM_ARGTYPES)


def read_memory(tid: int, address: int, length: int) -> bytes | None:
    """Read ``length`` bytes at ``address`` of task ``tid``; None when any byte is unreadable.

    Raises:
        OSError: when the task cannot be accessed at all (``ESRCH``, ``EPERM``).
    """
    data = read_memory_prefix(tid, address, length)
    return data if len(data) == length else None


def read_memory_prefix(tid: int, address: int, length: int) -> bytes:
    """The readable start of the ``length`` bytes at ``address`` of task ``tid`` (all of them, fewer
    when a later page is unmapped, none when the first byte is unreadable).

    Raises:
        OSError: when the task cannot be accessed at all (``ESRCH``, ``EPERM``).
    """
    if length == 0:
        return b""
    buf = ctypes.create_string_buffer(length)
    local = _iovec(ctypes.addressof(buf), length)
    remote = _iovec(address, length)
    n = _process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        err = ctypes.get_errno()
        if err == errno.EFAULT:
            return b""
        raise OSError(err, f"process_vm_readv({tid}): {os.strerror(err)}")
    return buf.raw[:n]


def write_memory(tid: int, address: int, data: bytes) -> bool:
    """Write ``data`` at ``address`` of task ``tid``; False when any byte is not writable.

    A partial write may have happened when False is returned, as with ``copy_to_user``.

    Raises:
        OSError: when the task cannot be accessed at all (``ESRCH``, ``EPERM``).
    """
    if not data:
        return True
    buf = ctypes.create_string_buffer(data, len(data))
    local = _iovec(ctypes.addressof(buf), len(data))
    remote = _iovec(address, len(data))
    n = _process_vm_writev(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        err = ctypes.get_errno()
        if err == errno.EFAULT:
            return False
        raise OSError(err, f"process_vm_writev({tid}): {os.strerror(err)}")
    return int(n) == len(data)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate file descriptor ``target_fd`` of the process behind ``pidfd`` into this process (O_CLOEXEC).

    Raises:
        OSError: ``EBADF`` when the target has no such fd, ``EPERM`` without ptrace access.
    """
    try:
        return _sys.syscall(_NR_PIDFD_GETFD, pidfd, target_fd, 0)
    except OSError as exc:
        raise OSError(exc.errno, f"pidfd_getfd({target_fd}): {exc.strerror}") from None
