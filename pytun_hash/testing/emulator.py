"""A seccomp user-notification emulator of the unmerged tun hash ioctls.

:class:`KernelEmulator` runs a function in a disposable *target* (a worker thread of this
process by default, or a forked child) whose seccomp filter turns exactly the trapped ioctl
requests of one revision into user notifications. The thread that called
:meth:`KernelEmulator.run` acts as the supervisor while the function runs: it answers each
trapped call the way that revision's kernel would (:mod:`pytun_hash.testing.kernel` says
exactly how), reading and writing the target's memory with ``process_vm_readv``/``writev``
(so ``EFAULT`` falls where ``copy_from_user`` would fault) and consulting the real device
through the same queue fd. Every other syscall, and every trapped request on an fd that is
not a TUN/TAP device, reaches the real kernel.

Mechanics and their limits:

* Thread mode: only the worker thread is filtered (no TSYNC); it shares the fd table, so the
  supervisor uses the caller's fd numbers directly. ``fcntl.ioctl`` and ctypes release the
  GIL while blocked in the kernel; a C extension that issues a trapped ioctl while holding
  the GIL would deadlock, so use process mode for it. Threads the function starts are
  filtered too; their trapped calls are answered only while :meth:`~KernelEmulator.run`
  supervises. Before each run the worker joins the caller's network namespace.
* Process mode: each :meth:`~KernelEmulator.run` forks a child that installs the filter and
  hands the listener back over a unix socket; the result travels back pickled. fds are
  duplicated from the child with ``pidfd_getfd``. Objects the function creates stay in the
  child (devices it creates vanish when it exits). Forking a multi-threaded process is only
  as safe as the locks the child touches; the child runs only the function and pickling. The
  child dies with its supervisor (``PR_SET_PDEATHSIG``, ``SIGKILL``): killed, the supervisor
  leaves no child running behind, unanswered.
* fd ownership: each trapped call is handled on the supervisor's own duplicate of the target's
  fd (``F_DUPFD_CLOEXEC`` in thread mode, ``pidfd_getfd`` in process mode), closed when the call
  is answered. The target closing its fd mid-call changes nothing for the call (a syscall holds
  its file in the kernel too); a fd the target no longer has when the supervisor takes the call
  up goes to the kernel, which answers ``EBADF``. A call passed on to the kernel acts on whatever
  the number names by then (the race ``SECCOMP_USER_NOTIF_FLAG_CONTINUE`` documents). The
  listeners, the eventfd and the namespace fds have one owner each and are closed exactly once.
* What the emulator knows: device state changes only through trapped calls. A steering
  program attached from outside :meth:`~KernelEmulator.run` (an unfiltered thread) is
  invisible to it, so the RFC/v3 interplay with steering holds only when every
  ``TUNSETSTEERINGEBPF`` goes through :meth:`~KernelEmulator.run`.
* ``EFAULT`` needs real addresses: ``fcntl.ioctl`` copies a mutable buffer of up to 1024
  bytes into a private 1024-byte buffer, so reads past its end hit readable memory, on a
  real kernel as here. Place payloads in memory you control (``mmap`` + ``PROT_NONE``) and
  pass the address to test faults.
* Requirements: Linux >= 5.5 (``SECCOMP_USER_NOTIF_FLAG_CONTINUE``), >= 5.6 for process mode
  (``pidfd_getfd``), ptrace access to the target (always given for an own thread or child),
  and an architecture in :mod:`pytun_hash.testing._seccomp`'s table (only x86_64 is tested).
* Never hangs: every trapped call is answered. A handler exception answers ``EIO``, is
  logged, and makes :meth:`~KernelEmulator.run` raise :class:`~pytun_hash.testing.EmulatorError`.
  When the supervisor itself fails or the timeout passes, the listener is closed, so the
  target's pending and later trapped calls return ``ENOSYS``; :meth:`~KernelEmulator.run`
  raises :class:`~pytun_hash.testing.EmulatorError`. In thread mode the emulator then refuses
  further runs (its worker is filtered for good); in process mode the child is killed and
  reaped, and the next run forks a fresh one.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import fcntl
import os
import pickle
import queue
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar, cast

import attrs

from pytun_hash import _sys
from pytun_hash._abi import TUN_IOCTLS, TunFlag, ifreq, layout_for
from pytun_hash._abi.revision import Revision
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.config import VnetHashCapability
from pytun_hash.device.rtnl import RtnlSocket, get_link
from pytun_hash.errors import PytunHashError
from pytun_hash.testing import _seccomp
from pytun_hash.testing._errors import EmulatorError
from pytun_hash.testing.datapath import DeviceDataPath
from pytun_hash.testing.kernel import (
    DeviceInfo,
    DeviceKey,
    EmulatedHashState,
    EmulatedKernel,
    KernelErrno,
)

__all__ = ["EmulatedCall", "EmulatorFault", "EmulatorMode", "KernelEmulator", "UserCopy"]

P = ParamSpec("P")
T = TypeVar("T")

_TUN = {d.name: d.request(layout_for()) for d in TUN_IOCTLS}
_TUN_RDEV = os.makedev(10, 200)  # /dev/net/tun
_E = "<" if sys.byteorder == "little" else ">"
_UIO_MAXIOV = 1024
# Bytes of an ioctl argument read at its first copy: more than any revision's largest argument
# (header, a 128-entry table and a 40-byte key: 308 bytes in the RFC's layout).
_PREFETCH = 512
# How long run() waits for the target to notice a closed listener before giving up on it.
_GRACE = 2.0


def _enter(ns_fd: int) -> bool:
    """Move the calling thread into the network namespace open at ``ns_fd``; False when that fails."""
    try:
        _sys.setns(ns_fd, _sys.CLONE_NEWNET)
    except OSError:
        return False
    return True


def _return_home(home: int) -> None:
    """Move the calling thread back into the network namespace it came from (open at ``home``).

    Raises:
        EmulatorError: when it cannot: the thread would go on in the wrong namespace.
    """
    try:
        _sys.setns(home, _sys.CLONE_NEWNET)
    except OSError:
        raise EmulatorError("could not return to the supervisor's network namespace") from None


class EmulatorFault(enum.Enum):
    """A failure :meth:`KernelEmulator.inject` makes the emulator have, to test code's handling of it.

    ``HANDLER_ERROR``: the handler of a trapped ioctl fails: the call is answered ``EIO`` and
    :meth:`~KernelEmulator.run` raises :class:`EmulatorError` (the emulator stays usable).
    ``SUPERVISOR_CRASH``: the supervisor itself fails: the listener is closed, the target's trapped
    calls return ``ENOSYS``, ``run`` raises (in thread mode the emulator is unusable afterwards).
    ``STALL``: the supervisor stops answering: ``run`` gives up after its timeout.
    """

    HANDLER_ERROR = "handler-error"
    SUPERVISOR_CRASH = "supervisor-crash"
    STALL = "stall"


class EmulatorMode(enum.Enum):
    """Where the function under test runs: a worker thread (default) or a forked child process."""

    THREAD = "thread"
    PROCESS = "process"


@attrs.frozen
class UserCopy:
    """One copy between the emulated kernel and the caller's memory.

    Attributes:
        to_user: True for ``copy_to_user``, False for ``copy_from_user``.
        offset: bytes from the ioctl's pointer argument.
        length: bytes the kernel tried to copy.
        ok: False when the copy faulted (the call then failed with ``EFAULT``).
    """

    to_user: bool
    offset: int
    length: int
    ok: bool


@attrs.frozen
class EmulatedCall:
    """One trapped call, as the emulator answered it.

    Attributes:
        index: position in :attr:`KernelEmulator.calls` (restarts at 0 after ``reset_log``).
        name: the ioctl's kernel name (``"TUNSETVNETHASH"``).
        request: the request number (low 32 bits).
        fd: the caller's fd number.
        tid: the calling thread's id.
        arg: the raw pointer argument.
        ifname: the attached device's name, or None when the fd had none.
        copies: the user copies the emulated kernel made, in order.
        errno: 0 on success, else the errno the call failed with.
        result: the value returned on success.
        passed_through: the call went to the real kernel untouched (not a TUN/TAP fd).
        failure: the handler's traceback when it failed (the call then answered ``EIO``).
    """

    index: int
    name: str
    request: int
    fd: int
    tid: int
    arg: int
    ifname: str | None
    copies: tuple[UserCopy, ...]
    errno: int
    result: int
    passed_through: bool = False
    failure: str | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes the kernel copied from the caller in copies that succeeded."""
        return sum(c.length for c in self.copies if c.ok and not c.to_user)

    @property
    def bytes_written(self) -> int:
        """Bytes the kernel copied to the caller in copies that succeeded."""
        return sum(c.length for c in self.copies if c.ok and c.to_user)


class _Vanished(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The notification is no longer pending (the target was killed); nothing can be answered."""


def _ioctl_errno(fd: int, request: int, arg: bytes | int) -> tuple[int, bytes | int]:
    try:
        return 0, fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        return exc.errno or errno.EIO, b""


IndexLookup = Callable[[int, int, str], "int | None"]

_IFREQ_SIZE = ctypes.sizeof(ifreq)
_IFR_FLAGS = struct.Struct(f"{_E}H")
_IFR_FLAGS_AT = ifreq.ifr_flags.offset


def _tun_getiff(fd: int) -> tuple[int, tuple[str, int]]:
    """``(0, (name, flags))`` from ``TUNGETIFF`` on tun fd ``fd``, or ``(errno, ("", 0))``.

    Read with a struct, not through :class:`ifreq`: it runs on every trapped call.
    """
    err, out = _ioctl_errno(fd, _TUN["TUNGETIFF"], bytes(_IFREQ_SIZE))
    if err:
        return err, ("", 0)
    assert isinstance(out, bytes)
    name = out[:_IFR_FLAGS_AT].split(b"\0", 1)[0].decode(errors="replace")
    return 0, (name, _IFR_FLAGS.unpack_from(out, _IFR_FLAGS_AT)[0])


def _tun_device(fd: int, index_of: IndexLookup | None = None) -> DeviceInfo | None:
    """The device attached to tun fd ``fd`` (looked up in this thread), or None when there is none.

    ``index_of(ns_fd, ns_inode, name)`` finds the ifindex (default: enter the namespace each time).

    Raises:
        KernelErrno: for an errno other than ``EBADFD`` from ``TUNGETIFF``.
    """
    err, found = _tun_getiff(fd)
    if err == errno.EBADFD:
        return None
    if err:
        raise KernelErrno(err)
    name, flags = found
    netns, ifindex = 0, None
    err, ns = _ioctl_errno(fd, _TUN["TUNGETDEVNETNS"], 0)
    if not err:
        assert isinstance(ns, int)
        try:
            netns = os.fstat(ns).st_ino
            ifindex = (index_of or _ifindex_in)(ns, netns, name)
        finally:
            os.close(ns)
    return DeviceInfo(DeviceKey.of(netns, ifindex, name), name, flags)


def _ifindex_in(ns_fd: int, ns_ino: int, name: str) -> int | None:
    with contextlib.suppress(OSError):
        if os.stat("/proc/thread-self/ns/net").st_ino == ns_ino:
            return socket.if_nametoindex(name)
        # The device lives in another namespace: look its index up there, then come back.
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if not _enter(ns_fd):
                return None
            try:
                return socket.if_nametoindex(name)
            finally:
                _return_home(home)
        finally:
            os.close(home)
    return None


class _IndexSockets:
    """ifindexes by name through one datagram socket per namespace (a socket stays in the namespace it
    was made in), so a trapped call does not enter the device's namespace and come back each time; the
    sockets live as long as the emulator, as its rtnetlink sockets do."""

    _SIOCGIFINDEX = 0x8933

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}

    def __call__(self, ns_fd: int, ns_ino: int, name: str) -> int | None:
        sock = self._socks.get(ns_ino)
        if sock is None:
            made = self._socket_in(ns_fd, ns_ino)
            if made is None:
                return _ifindex_in(ns_fd, ns_ino, name)
            self._socks[ns_ino] = sock = made
        buf = bytearray(_IFREQ_SIZE)
        raw = name.encode(errors="surrogateescape")[:15]
        buf[: len(raw)] = raw
        try:
            fcntl.ioctl(sock.fileno(), self._SIOCGIFINDEX, buf, True)
        except OSError:
            return None
        # ifr_ifindex sits where ifr_flags does: the int after the 16-byte name.
        return int.from_bytes(buf[16:20], sys.byteorder, signed=True)

    @staticmethod
    def _socket_in(ns_fd: int, ns_ino: int) -> socket.socket | None:
        with contextlib.suppress(OSError):
            if os.stat("/proc/thread-self/ns/net").st_ino == ns_ino:
                return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if not _enter(ns_fd):
                    return None
                try:
                    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                finally:
                    _return_home(home)
            finally:
                os.close(home)
        return None

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def _is_tun(fd: int) -> bool:
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == _TUN_RDEV


def _prog_id(fd: int) -> int | None:
    with contextlib.suppress(OSError), open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    return None


class _Target:
    """How the supervisor reaches the target's fds: through a duplicate of its own, in both modes.

    The duplicate is the supervisor's reference to the target's file for one call (``F_DUPFD_CLOEXEC``
    in thread mode, ``pidfd_getfd`` in process mode): the target may close its fd, or the number may
    be reused, while the call is handled, and the call goes on with the file it was made on, as a
    syscall holds its file in the kernel. The supervisor closes only its duplicate, exactly once.
    """

    def __init__(self, pidfd: int | None = None) -> None:
        self.pidfd = pidfd

    def dup(self, fd: int) -> int:
        """This process's own fd for the target's ``fd``; the caller closes it.

        Raises:
            _PassThrough: when the target has no such fd (any more): the kernel answers ``EBADF`` itself.
            KernelErrno: ``ESRCH`` (process mode) when the target is gone.
            OSError: when this process cannot hold another fd (``EMFILE``): the emulator's own failure.
        """
        try:
            if self.pidfd is None:
                return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0)
            return _seccomp.pidfd_getfd(self.pidfd, fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise _PassThrough from None
            if exc.errno == errno.ESRCH:
                raise KernelErrno(errno.ESRCH) from None
            raise

    @contextlib.contextmanager
    def local_fd(self, fd: int) -> Iterator[int]:
        """:meth:`dup` as a block that closes the duplicate when it ends; raises as :meth:`dup`."""
        local = self.dup(fd)
        try:
            yield local
        finally:
            os.close(local)


@attrs.define
class _HostFacts:
    """What the supervisor learned of the running kernel's build, once per emulator."""

    #: False once ``TUNGETVNETBE`` answered ``EINVAL`` (no ``CONFIG_TUN_VNET_CROSS_LE``); None before.
    vnet_cross_endian: bool | None = None


class _TrappedCall:
    """A :class:`~pytun_hash.testing.kernel.Call` for one notification."""

    def __init__(
        self,
        listener: int,
        notif: _seccomp.Notification,
        target: _Target,
        local_fd: int,
        index_of: IndexLookup | None = None,
        host: _HostFacts | None = None,
    ) -> None:
        self._index_of = index_of
        self._host = host if host is not None else _HostFacts()
        self._listener = listener
        self._notif = notif
        self._target = target
        self._fd = local_fd
        self._device: DeviceInfo | None = None
        self._looked_up = False
        self.copies: list[UserCopy] = []
        self._window: bytes | None = None
        #: The device and state the data path was updated to after this call, if it was (reused for the log).
        self.snapshot: tuple[DeviceKey, EmulatedHashState] | None = None
        # Set when the handler changed the real device's steering program (attached, replaced or
        # detached), whatever ioctl it handles: the RFC's TUNSETVNETHASH with RSS detaches too.
        self.steering_changed = False
        #: The program on the real device is the emulated data path's, not one of the code's.
        self.own_steering = False

    @property
    def arg(self) -> int:
        return self._notif.arg

    def _check_valid(self) -> None:
        if not _seccomp.notif_id_valid(self._listener, self._notif.id):
            raise _Vanished

    @property
    def local_fd(self) -> int:
        """The queue fd as this process holds it for the call (the supervisor's duplicate)."""
        return self._fd

    @property
    def looked_up_device(self) -> DeviceInfo | None:
        """The device found by the handler's lookup, if it made one."""
        return self._device

    def lookup(self) -> DeviceInfo | None:
        if not self._looked_up:
            self._device = _tun_device(self._fd, self._index_of)
            self._looked_up = True
        return self._device

    def device(self) -> DeviceInfo:
        dev = self.lookup()
        if dev is None:
            raise KernelErrno(errno.EBADFD)
        return dev

    def copy_from_user(self, offset: int, length: int) -> bytes:
        data = self._prefetched(offset, length)
        if data is None:
            data = _seccomp.read_memory(self._notif.tid, self._notif.arg + offset, length)
            # Checked after the read: had the target died and its tid been recycled, the bytes came
            # from another task and must not be used.
            self._check_valid()
        self.copies.append(UserCopy(False, offset, length, data is not None))
        if data is None:
            raise KernelErrno(errno.EFAULT)
        return data

    def _prefetched(self, offset: int, length: int) -> bytes | None:
        """Bytes ``offset .. offset+length`` of the argument from one read of its readable start.

        A hash ioctl copies in two or three pieces (header, table, key), each a cross-process read
        and a validity check; the first copy reads up to :data:`_PREFETCH` bytes at once and the
        others come from it. A piece beyond what was readable is None: read (and fail) on its own.
        """
        if self._window is None:
            if offset != 0:
                return None
            self._window = _seccomp.read_memory_prefix(self._notif.tid, self._notif.arg, max(length, _PREFETCH))
            self._check_valid()
        if offset + length > len(self._window):
            return None
        return self._window[offset : offset + length]

    def copy_to_user(self, offset: int, data: bytes) -> None:
        self._window = None  # what was read before may be what is written now
        self._check_valid()
        ok = _seccomp.write_memory(self._notif.tid, self._notif.arg + offset, data)
        self.copies.append(UserCopy(True, offset, len(data), ok))
        if not ok:
            raise KernelErrno(errno.EFAULT)

    def _get_int(self, name: str) -> int:
        err, out = _ioctl_errno(self._fd, _TUN[name], bytes(4))
        if err:
            raise KernelErrno(err)
        assert isinstance(out, bytes)
        value: int = struct.unpack(f"{_E}i", out)[0]
        return value

    def vnet_hdr_sz(self) -> int:
        return self._get_int("TUNGETVNETHDRSZ")

    def vnet_is_little_endian(self) -> bool:
        if self._get_int("TUNGETVNETLE"):
            return True
        big = False  # without CONFIG_TUN_VNET_CROSS_LE legacy headers use the host's order
        if self._host.vnet_cross_endian is not False:
            try:
                big = bool(self._get_int("TUNGETVNETBE"))
                self._host.vnet_cross_endian = True
            except KernelErrno as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # A build option: the answer holds for the kernel's lifetime, so it is asked once.
                self._host.vnet_cross_endian = False
        return not big and sys.byteorder == "little"

    def set_steering_ebpf(self, prog_fd: int) -> int | None:
        if prog_fd == -1:
            if self.own_steering:
                # The code has no program attached (the data path's is): nothing of the code's to
                # detach, and the data path keeps or drops its own by the state that follows, without
                # a moment in which no program steers.
                return None
            self._set_int("TUNSETSTEERINGEBPF", -1)
            self.steering_changed = True
            return None
        try:
            with self._target.local_fd(prog_fd) as local:
                self._set_int("TUNSETSTEERINGEBPF", local)
                self.steering_changed = True
                return _prog_id(local)
        except _PassThrough:
            raise KernelErrno(errno.EBADF) from None  # no such program fd, as the kernel's fdget finds

    def set_vnet_hdr_sz(self, size: int) -> None:
        self._set_int("TUNSETVNETHDRSZ", size)

    def _set_int(self, name: str, value: int) -> None:
        err, _ = _ioctl_errno(self._fd, _TUN[name], struct.pack(f"{_E}i", value))
        if err:
            raise KernelErrno(err)


@attrs.define
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    netns_fd: int
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class KernelEmulator:
    """Emulate one revision's tun hash ioctls for code run through :meth:`run`.

    A context manager: :meth:`close` (or leaving the ``with`` block) stops the worker and
    closes every fd the emulator owns.

    Args:
        revision: the UAPI revision to emulate.
        capability: what the capability ioctl reports (None = that revision's kernel).
        timeout: seconds :meth:`run` waits for the function before it gives up (> 0).
        mode: run the function in a worker thread (default) or a forked child process.
        data_path: also emulate the data path of every device whose hash state a trapped call
            changed: queue choice through a steering program and the hash fields of frames read
            from its queues (:mod:`pytun_hash.testing.datapath`). It needs ``bpf(2)`` (root or
            CAP_BPF): None (the default) emulates it where ``bpf(2)`` works and says why not in
            :attr:`data_path_unavailable` otherwise; True requires it (``EmulatorError`` without
            ``bpf(2)``); False turns it off. With it, every ``readv`` of the target and every
            ``read`` of 10 bytes or more is trapped (shorter ones, which glibc makes inside
            ``free()`` with the GIL held, go straight to the kernel); those on other fds
            continue to the kernel untouched.

    Attributes:
        calls: every trapped ioctl since the last :meth:`reset_log`, in order.
        states: ``(call index, snapshot)`` after every call that changed a device's state.
        reads: reads on emulated devices answered by the emulator since the last :meth:`reset_log`.
        passed_reads: reads let through to the kernel untouched since the last :meth:`reset_log`.

    Raises:
        EmulatorError: when the seccomp filter cannot be installed (no seccomp user
            notification, an unsupported architecture), ``timeout`` is not a positive number
            or ``mode`` not an :class:`EmulatorMode`.
        ValidationError: when ``revision`` is not a :class:`~pytun_hash.Revision` or
            ``capability`` does not fit it.
    """

    def __init__(
        self,
        revision: Revision = Revision.RFC,
        *,
        capability: VnetHashCapability | None = None,
        timeout: float = 10.0,
        mode: EmulatorMode = EmulatorMode.THREAD,
        data_path: bool | None = None,
    ) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise EmulatorError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(mode, EmulatorMode):
            raise EmulatorError(f"mode must be an EmulatorMode, got {mode!r}")
        self.revision = revision
        self.mode = mode
        self.timeout = float(timeout)
        self.calls: list[EmulatedCall] = []
        self.states: list[tuple[int, EmulatedHashState]] = []
        self._kernel = EmulatedKernel(revision, capability)
        self._arch = _seccomp.seccomp_arch()
        self.data_path_unavailable: str | None = None
        if data_path is not False:
            self.data_path_unavailable = _bpf_unavailable()
            if self.data_path_unavailable is not None and data_path:
                raise EmulatorError(f"the emulated data path needs bpf(2): {self.data_path_unavailable}")
        self.data_path = data_path is not False and self.data_path_unavailable is None
        self.reads = 0
        self.passed_reads = 0
        self._datapaths: dict[tuple[int, str], DeviceDataPath] = {}
        self._rtnl: dict[int, RtnlSocket] = {}
        self._index_sockets = _IndexSockets()
        self._host = _HostFacts()
        self._live_listeners: set[int] = set()
        self._listener_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._parked: list[threading.Thread] = []
        self._fault: EmulatorFault | None = None
        self._fault_requests: frozenset[str] | None = None
        self._program = _seccomp.build_filter(self._arch, self._kernel.requests, reads=self.data_path)
        self._broken: str | None = None
        self._closed = False
        self._failures: list[str] = []
        self._last_touch: dict[DeviceKey, int] = {}
        self._listener = -1
        self._done_fd = -1
        self._worker: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._busy: _Job | None = None
        self._run_lock = threading.Lock()
        if mode is EmulatorMode.THREAD:
            self._start_worker()

    # -- public API ---------------------------------------------------------------------------

    @property
    def capability(self) -> VnetHashCapability:
        """What the emulated capability ioctl reports."""
        return self._kernel.capability

    @property
    def trapped_requests(self) -> dict[int, str]:
        """The trapped request numbers (low 32 bits) and their names."""
        return dict(self._kernel.requests)

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` in the filtered target and return its result.

        The calling thread supervises until ``fn`` returns. An exception ``fn`` raises is
        re-raised here (in process mode: its pickled copy).

        Raises:
            EmulatorError: when a trapped call's handler failed (it was answered ``EIO``),
                the supervisor failed, ``fn`` did not finish within :attr:`timeout`, the
                emulator is closed or broken, or ``fn``'s result cannot travel back from the
                child (process mode).
        """
        if self._worker is not None and threading.get_ident() == self._worker.ident:
            raise EmulatorError("KernelEmulator.run() called from inside run(): the worker would wait on itself")
        if not self._run_lock.acquire(blocking=False):
            raise EmulatorError("KernelEmulator.run() is already running in another thread")
        try:
            self._check_usable()
            if self.mode is EmulatorMode.PROCESS:
                return self._run_process(fn, args, kwargs)
            return self._run_thread(fn, args, kwargs)
        finally:
            self._run_lock.release()

    def device_state(self, device: int | str) -> EmulatedHashState:
        """The hash state the emulated kernel holds for a device.

        Args:
            device: a queue fd of this process (its device is looked up now; a device no
                trapped call reached yet shows the zero state), or an interface name (the
                device with that name that a trapped call reached most recently).

        Raises:
            EmulatorError: when the fd has no live TUN/TAP device, or no trapped call reached
                a device of that name.
        """
        if isinstance(device, str):
            keys = [k for k in self._last_touch if k.ifname == device]
            if not keys:
                raise EmulatorError(f"no trapped call reached a device named {device!r}")
            return self._kernel.snapshot(max(keys, key=self._last_touch.__getitem__))
        if not _is_tun(device):
            raise EmulatorError(f"fd {device} is not a TUN/TAP queue fd")
        try:
            info = _tun_device(device)
        except KernelErrno as exc:
            raise EmulatorError(f"TUNGETIFF on fd {device} failed: {os.strerror(exc.errno)}") from None
        if info is None:
            raise EmulatorError(f"fd {device} has no live device (never attached, or deleted)")
        return self._kernel.snapshot(info.key)

    @property
    def failures(self) -> tuple[str, ...]:
        """Tracebacks of handler failures since the last :meth:`reset_log`."""
        return tuple(self._failures)

    def reset_log(self) -> None:
        """Forget :attr:`calls`, :attr:`states` and :attr:`failures` (device states are kept)."""
        self.calls.clear()
        self.states.clear()
        self._failures.clear()
        self.reads = 0
        self.passed_reads = 0

    def close(self) -> None:
        """Stop the worker and close every fd the emulator owns; idempotent.

        A worker still stuck in a function that timed out cannot be joined: it exits (and
        closes its completion fd) when that function returns; meanwhile every trapped call
        it makes returns ``ENOSYS``.
        """
        if self._closed:
            return
        self._closed = True
        self._close_listener()
        worker = self._worker
        if worker is not None:
            self._jobs.put(None)
            worker.join(_GRACE if self._busy is None else 0.0)
        for thread in self._parked:
            thread.join(_GRACE)
        self._release_data_paths()

    def __enter__(self) -> KernelEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        status = "closed" if self._closed else ("broken" if self._broken else "ready")
        return f"KernelEmulator({self.revision.value}, {self.mode.value}, {status}, {len(self.calls)} calls)"

    # -- thread mode --------------------------------------------------------------------------

    def _start_worker(self) -> None:
        try:
            self._done_fd = os.eventfd(0, os.EFD_CLOEXEC)
        except OSError as exc:
            self._closed = True
            raise EmulatorError(f"no eventfd for the worker: {exc.strerror}") from None
        started = threading.Event()
        setup_error: list[BaseException] = []

        def main() -> None:
            # The worker must never take a process-directed signal: that would interrupt a
            # pending notification and leave the call half-answered.
            signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            try:
                self._listener = _seccomp.install_listener(self._arch, self._program)
                with self._listener_lock:
                    self._live_listeners.add(self._listener)
            except BaseException as exc:
                setup_error.append(exc)
                return
            finally:
                started.set()
            self._worker_loop()

        self._worker = threading.Thread(target=main, name=f"pytun-hash-emulator-{self.revision.value}", daemon=True)
        self._worker.start()
        try:
            started.wait()
        except BaseException:
            # Interrupted (Ctrl-C) while the worker set up: nobody will close this emulator, so stop
            # the worker and close its listener here before passing the interruption on.
            while not started.is_set():
                with contextlib.suppress(KeyboardInterrupt):
                    started.wait()
            self.close()
            raise
        if setup_error:
            self._worker.join()
            self._worker = None
            os.close(self._done_fd)
            self._done_fd = -1
            self._closed = True
            err = setup_error[0]
            if isinstance(err, EmulatorError):
                raise err
            raise EmulatorError(f"installing the seccomp filter failed: {err!r}") from err

    def _worker_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                # The worker owns the completion fd: closing it here cannot race with a write.
                os.close(self._done_fd)
                return
            try:
                try:
                    here = os.stat("/proc/thread-self/ns/net").st_ino
                    if os.fstat(job.netns_fd).st_ino != here:
                        try:
                            _sys.setns(job.netns_fd, _sys.CLONE_NEWNET)
                        except OSError as exc:
                            raise EmulatorError(
                                f"the worker could not join the caller's network namespace: {exc.strerror}"
                            ) from None
                finally:
                    os.close(job.netns_fd)
                job.result = job.fn(*job.args, **job.kwargs)
            except BaseException as exc:
                job.error = exc
            finally:
                job.done = True
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._done_fd, 1)

    def _run_thread(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise EmulatorError(f"cannot open the caller's network namespace: {exc.strerror}") from None
        job = _Job(fn, args, kwargs, netns_fd)
        failures_before = len(self._failures)
        self._busy = job
        self._jobs.put(job)
        deadline = time.monotonic() + self.timeout
        try:
            self._supervise_thread(job, deadline)
        except BaseException as exc:
            self._break(exc)
            self._await_job(job)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise EmulatorError(f"the emulator's supervisor failed: {self._broken}") from exc
        finally:
            if job.done:
                self._busy = None
        return cast(T, self._result(job.result, job.error, failures_before))

    def _supervise_thread(self, job: _Job, deadline: float) -> None:
        poller = select.poll()
        poller.register(self._listener, select.POLLIN)
        poller.register(self._done_fd, select.POLLIN)
        target = _Target()
        while not job.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the function did not finish within {self.timeout:g} s")
            for fd, events in poller.poll(remaining * 1000):
                if fd == self._listener:
                    if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        raise EmulatorError("the seccomp listener reported an error")
                    self._serve(target)
                elif fd == self._done_fd:
                    os.eventfd_read(self._done_fd)
        # Threads started by fn may still have calls queued; answer what is already there.
        while select.select([self._listener], [], [], 0)[0]:
            self._serve(target)

    def _await_job(self, job: _Job) -> None:
        end = time.monotonic() + min(_GRACE, self.timeout)
        while not job.done and time.monotonic() < end:
            time.sleep(0.005)

    # -- process mode -------------------------------------------------------------------------

    def _run_process(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        try:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise EmulatorError(f"no socket pair for the child: {exc.strerror}") from None
        failures_before = len(self._failures)
        deadline = time.monotonic() + self.timeout
        supervisor = os.getpid()
        try:
            pid = os.fork()
        except BaseException as exc:
            parent.close()
            child.close()
            if isinstance(exc, OSError):
                raise EmulatorError(f"fork() failed: {exc.strerror}") from None
            raise
        if pid == 0:  # pragma: no cover - runs in the child, reported through the socket
            parent.close()
            self._child_main(child, supervisor, fn, args, kwargs)
        child.close()
        pidfd = -1
        listener = -1
        try:
            pidfd = os.pidfd_open(pid)
            listener = self._receive_listener(parent, deadline)
            with self._listener_lock:
                self._live_listeners.add(listener)
            payload = self._supervise_process(parent, listener, _Target(pidfd), deadline)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                if pidfd >= 0:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            if listener >= 0:
                self._forget_listener(listener)
            if isinstance(exc, (KeyboardInterrupt, _ChildSetupError)):
                raise
            raise EmulatorError(f"the emulator's supervisor failed: {type(exc).__name__}: {exc}") from exc
        finally:
            try:
                _reap(pid)
            finally:
                if pidfd >= 0:
                    os.close(pidfd)
                parent.close()
        self._forget_listener(listener)
        try:
            status, value = pickle.loads(payload)
        except Exception as exc:
            raise EmulatorError(f"the child's result could not be unpickled: {exc!r}") from exc
        if status == "ok":
            return cast(T, self._result(value, None, failures_before))
        if status == "err":
            return cast(T, self._result(None, value, failures_before))
        raise EmulatorError(f"the function's {status} could not be pickled: {value}")

    def _child_main(
        self,
        sock: socket.socket,
        supervisor: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:  # pragma: no cover - runs in the child
        code = 0
        try:
            try:
                # The child must not outlive its supervisor: nobody would answer its trapped calls or
                # reap it. PR_SET_PDEATHSIG covers a supervisor that dies from now on; getppid() one
                # that died before (the child was then reparented and the signal will never come).
                _sys.prctl(_sys.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != supervisor:
                    os._exit(1)
                listener = _seccomp.install_listener(self._arch, self._program)
            except BaseException as exc:
                sock.sendall(b"E" + f"{exc}".encode())
                return
            socket.send_fds(sock, [b"L"], [listener])
            os.close(listener)
            try:
                message: tuple[str, Any] = ("ok", fn(*args, **kwargs))
            except BaseException as exc:
                message = ("err", exc)
            try:
                data = pickle.dumps(message)
            except Exception as exc:
                what = "result" if message[0] == "ok" else "exception"
                data = pickle.dumps((what, f"{message[1]!r} ({exc})"))
            sock.sendall(data)
        except BaseException:
            code = 1
        finally:
            sock.close()
            os._exit(code)

    def _receive_listener(self, sock: socket.socket, deadline: float) -> int:
        remaining = deadline - time.monotonic()
        if not select.select([sock], [], [], max(remaining, 0))[0]:
            raise TimeoutError("the child did not install its seccomp filter in time")
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
        for fd in fds:
            os.set_inheritable(fd, False)
        if msg == b"L" and len(fds) == 1:
            return fds[0]
        for fd in fds:
            os.close(fd)
        rest = b"".join(iter(lambda: sock.recv(65536), b""))
        text = (msg + rest)[1:].decode(errors="replace") if msg == b"E" else "no listener received"
        raise _ChildSetupError(f"the child could not install its seccomp filter: {text}")

    def _supervise_process(self, sock: socket.socket, listener: int, target: _Target, deadline: float) -> bytes:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(sock, select.POLLIN)
        chunks: list[bytes] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the function did not finish within {self.timeout:g} s")
            for fd, events in poller.poll(remaining * 1000):
                if fd == listener and events & select.POLLIN:
                    self._serve(target, listener)
                elif fd == sock.fileno():
                    data = sock.recv(1 << 16)
                    if not data:
                        if not chunks:
                            raise EmulatorError("the child exited without a result")
                        return b"".join(chunks)
                    chunks.append(data)

    # -- shared -------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise EmulatorError("the emulator is closed")
        if self._broken:
            raise EmulatorError(f"the emulator is unusable after an earlier failure: {self._broken}")
        if self._busy is not None:
            raise EmulatorError("the worker is still running a function that timed out")

    def _break(self, exc: BaseException) -> None:
        self._broken = f"{type(exc).__name__}: {exc}"
        # A closed listener makes the target's pending and future trapped calls return ENOSYS.
        self._close_listener()

    def _close_listener(self) -> None:
        with self._listener_lock:
            listener, self._listener = self._listener, -1
        if listener >= 0:
            self._forget_listener(listener)

    def _forget_listener(self, listener: int) -> None:
        """Close ``listener`` if the emulator still owns it (idempotent: :attr:`_live_listeners` is the
        ownership record, so racing closers close it once, and never a number reused since)."""
        # Parked reads answer from their own threads: they use a listener only under the same lock.
        with self._listener_lock:
            if listener not in self._live_listeners:
                return
            self._live_listeners.discard(listener)
            os.close(listener)

    def _result(self, value: Any, error: BaseException | None, failures_before: int) -> Any:
        """``value`` or ``error`` of a finished run, unless a handler failed during it."""
        if len(self._failures) > failures_before:
            raise EmulatorError(
                "a trapped call's handler failed and was answered EIO:\n" + self._failures[failures_before]
            ) from error
        if error is not None:
            raise error
        return value

    def _serve(self, target: _Target, listener: int | None = None) -> None:
        """Receive one notification and answer it."""
        listener = self._listener if listener is None else listener
        if self._fault is EmulatorFault.STALL:
            time.sleep(0.01)  # leave the notification pending
            return
        if self._fault is EmulatorFault.SUPERVISOR_CRASH:
            raise EmulatorError("injected fault: the supervisor crashed")
        notif = _seccomp.notif_recv(listener, self._arch.nr_ioctl)
        if notif is None:
            return
        if notif.nr != self._arch.nr_ioctl:
            self._serve_read(notif, target, listener)
            return
        name = self._kernel.requests.get(notif.request) or hex(notif.request)
        copies: tuple[UserCopy, ...] = ()
        touched: DeviceInfo | None = None
        call: _TrappedCall | None = None
        err, val, flags, failure = 0, 0, 0, None
        try:
            # Not target.local_fd(): a generator-based block costs microseconds on every call.
            local = target.dup(notif.fd)
            try:
                if not _is_tun(local):
                    raise _PassThrough
                call = _TrappedCall(listener, notif, target, local, self._index_sockets, self._host)
                try:
                    path = self._data_path_before(call)
                    call.own_steering = path is not None and path.steering_attached
                    if self._fault is EmulatorFault.HANDLER_ERROR and (
                        self._fault_requests is None or name in self._fault_requests
                    ):
                        raise RuntimeError(f"injected fault: the handler of {name} failed")
                    val = self._kernel.handle(name, call)
                    if path is not None and call.steering_changed:
                        # The real call replaced or removed whatever program was attached, the data
                        # path's own included (the RFC's TUNSETVNETHASH with RSS detaches it too).
                        path.steering_replaced()
                    if self.data_path and self._kernel.changed is not None:
                        self._data_path_after(call, local)
                finally:
                    copies = tuple(call.copies)
                    touched = call.looked_up_device
            finally:
                os.close(local)
        except (_PassThrough, KernelErrno) as exc:
            if isinstance(exc, KernelErrno):
                err = exc.errno
            else:
                flags = _seccomp.SECCOMP_USER_NOTIF_FLAG_CONTINUE
        except _Vanished:
            return
        except Exception:
            err = errno.EIO
            failure = traceback.format_exc()
            self._failures.append(failure)
        index = len(self.calls)
        self.calls.append(
            EmulatedCall(
                index=index,
                name=name,
                request=notif.request,
                fd=notif.fd,
                tid=notif.tid,
                arg=notif.arg,
                ifname=touched.ifname if touched is not None else None,
                copies=copies,
                errno=err,
                result=val if not err else -1,
                passed_through=bool(flags),
                failure=failure,
            )
        )
        if touched is not None:
            self._last_touch[touched.key] = index
        changed = self._kernel.changed if not err else None
        if changed is not None:
            taken = call.snapshot if call is not None else None
            state = taken[1] if taken is not None and taken[0] == changed else self._kernel.snapshot(changed)
            self.states.append((index, state))
        self._kernel.changed = None
        self._answer(listener, notif.id, val=val if not err else 0, error=err, flags=flags)

    # -- data path ----------------------------------------------------------------------------

    def _data_path_before(self, call: _TrappedCall) -> DeviceDataPath | None:
        """Before a trapped ioctl: tag the frames queued so far with the state they were hashed under."""
        if not self.data_path or not self._datapaths:
            return None
        dev = call.lookup()
        if dev is None:
            return None
        path = self._datapaths.get((dev.key.netns, dev.ifname))
        if path is not None:
            path.collect(lambda: self._queue_count(call.local_fd, dev.key.netns, dev.ifname))
        return path

    def _data_path_after(self, call: _TrappedCall, local: int) -> None:
        """After a call that changed a device's state: make the real device follow it."""
        dev = call.lookup()
        if dev is None:
            return
        key = (dev.key.netns, dev.ifname)
        path = self._datapaths.get(key)
        if path is None:
            path = self._datapaths[key] = DeviceDataPath(self.revision, dev.ifname, dev.flags)
        state = self._kernel.snapshot(dev.key)
        call.snapshot = (dev.key, state)  # the call's log entry records the same state: taken once
        path.update(local, state)

    def _queue_count(self, fd: int, netns: int, ifname: str) -> int | None:
        """Attached queues of the device behind ``fd`` (rtnetlink in its namespace); None when unknown."""
        sock = self._rtnl.get(netns)
        if sock is None:
            sock = self._rtnl_in(fd, netns)
            if sock is None:
                return None
            self._rtnl[netns] = sock
        try:
            link = get_link(ifname, sock=sock)
        except PytunHashError:
            return None
        if link.tun is None:
            return None
        # The kernel reports the count only for multi-queue devices; the others have exactly one.
        return link.tun.numqueues if link.tun.multi_queue else 1

    @staticmethod
    def _rtnl_in(fd: int, netns: int) -> RtnlSocket | None:
        err, ns = _ioctl_errno(fd, _TUN["TUNGETDEVNETNS"], 0)
        if err:
            return None
        assert isinstance(ns, int)
        try:
            if os.stat("/proc/thread-self/ns/net").st_ino == netns:
                return RtnlSocket()
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if not _enter(ns):
                    return None
                try:
                    return RtnlSocket()  # a netlink socket stays in the namespace it was made in
                finally:
                    _return_home(home)
            finally:
                os.close(home)
        finally:
            os.close(ns)

    def _serve_read(self, notif: _seccomp.Notification, target: _Target, listener: int) -> None:
        """Answer a trapped ``read``/``readv``: emulated on a configured device, else let through."""
        try:
            with target.local_fd(notif.fd) as local:
                found = self._read_path(local)
                if found is None:
                    raise _PassThrough
                path, netns = found
                segments = [(notif.request, notif.arg)] if notif.nr == self._arch.nr_read else self._iovecs(notif)
                blocking = not fcntl.fcntl(local, fcntl.F_GETFL) & os.O_NONBLOCK
                if blocking and not _readable(local):
                    self._park(_Read(notif, os.dup(local), path, netns, listener, segments))
                    return
                self._complete_read(_Read(notif, local, path, netns, listener, segments))
        except (_PassThrough, KernelErrno):
            self.passed_reads += 1
            self._answer(listener, notif.id, flags=_seccomp.SECCOMP_USER_NOTIF_FLAG_CONTINUE)
        except _Vanished:
            return
        except Exception:
            self._failures.append(traceback.format_exc())
            self._answer(listener, notif.id, error=errno.EIO)

    def _read_path(self, fd: int) -> tuple[DeviceDataPath, int] | None:
        """The data path of the device behind ``fd`` and its namespace inode; None when it has none."""
        if not self._datapaths or not _is_tun(fd):
            return None
        err, (name, _) = _tun_getiff(fd)
        if err:
            return None
        err, ns = _ioctl_errno(fd, _TUN["TUNGETDEVNETNS"], 0)
        if err:
            return None
        assert isinstance(ns, int)
        try:
            netns = os.fstat(ns).st_ino
        finally:
            os.close(ns)
        path = self._datapaths.get((netns, name))
        return None if path is None else (path, netns)

    def _complete_read(self, read: _Read) -> None:
        """Read one frame for the target and write what the emulated kernel would have written."""
        notif, local, path, netns, listener, segments = attrs.astuple(read, recurse=False)
        count = sum(length for _, length in segments)
        with self._read_lock:
            try:
                data = os.read(local, count)
            except OSError as exc:
                self._answer(listener, notif.id, error=exc.errno or errno.EIO)
                return
            sz = 0
            if path.flags & TunFlag.IFF_VNET_HDR:
                err, out = _ioctl_errno(local, _TUN["TUNGETVNETHDRSZ"], bytes(4))
                sz = struct.unpack(f"{_E}i", out)[0] if not err and isinstance(out, bytes) else 0
            path.collect(lambda: self._queue_count(local, netns, path.ifname))
            now = path.context
            writes = (
                [(0, data)]
                if now is None
                else path.header_writes(data, count, sz, attrs.evolve(now, numqueues=path.numqueues))
            )
            ok = all(self._scatter(notif.tid, segments, offset, chunk) for offset, chunk in _merged(writes))
            self.reads += 1
            if not ok:
                self._answer(listener, notif.id, error=errno.EFAULT)
                return
            self._answer(listener, notif.id, val=len(data))

    @staticmethod
    def _iovecs(notif: _seccomp.Notification) -> list[tuple[int, int]]:
        count = notif.arg
        if not 0 <= count <= _UIO_MAXIOV:
            raise _PassThrough  # the kernel answers EINVAL itself
        raw = _seccomp.read_memory(notif.tid, notif.request, 16 * count)
        if raw is None:
            raise _PassThrough  # the kernel answers EFAULT itself
        return [struct.unpack_from("=QQ", raw, 16 * i) for i in range(count)]

    @staticmethod
    def _scatter(tid: int, segments: list[tuple[int, int]], offset: int, chunk: bytes) -> bool:
        """Write ``chunk`` at byte ``offset`` of the read's buffers, as ``copy_to_iter`` would."""
        for base, length in segments:
            if not chunk:
                return True
            if offset >= length:
                offset -= length
                continue
            part = chunk[: length - offset]
            if not _seccomp.write_memory(tid, base + offset, part):
                return False
            chunk = chunk[len(part) :]
            offset = 0
        return True

    def _answer(self, listener: int, notif_id: int, *, val: int = 0, error: int = 0, flags: int = 0) -> None:
        """Answer a notification on ``listener`` unless it was closed meanwhile (then nobody waits for it).

        Raises:
            OSError: when ``SECCOMP_IOCTL_NOTIF_SEND`` fails for another reason than a target gone.
        """
        with self._listener_lock:
            if listener in self._live_listeners:
                _seccomp.notif_send(listener, notif_id, val=val, error=error, flags=flags)

    def _pending(self, listener: int, notif_id: int) -> bool:
        """True while the notification waits for an answer on ``listener``, which the emulator still owns."""
        with self._listener_lock:
            return listener in self._live_listeners and _seccomp.notif_id_valid(listener, notif_id)

    def _park(self, read: _Read) -> None:
        """A blocking read with nothing queued: wait for a frame in a helper thread, then answer.

        ``read.local`` is the helper's own duplicate of the queue fd; it closes it when done.
        """
        notif, local, listener = read.notif, read.local, read.listener

        def wait() -> None:
            try:
                while not self._closed:
                    if not self._pending(listener, notif.id):
                        return  # a signal interrupted the read, the target is gone, or the listener closed
                    if _readable(local, 0.05):
                        with self._read_lock:
                            ready = _readable(local)
                        if ready:
                            self._complete_read(read)
                            return
            except Exception:
                self._failures.append(traceback.format_exc())
                with contextlib.suppress(OSError):
                    self._answer(listener, notif.id, error=errno.EIO)
            finally:
                os.close(local)

        thread = threading.Thread(target=wait, name="pytun-hash-emulator-read", daemon=True)
        self._parked = [t for t in self._parked if t.is_alive()]
        self._parked.append(thread)
        thread.start()

    def _release_data_paths(self) -> None:
        """Take the emulator's programs off the devices it still reaches, then free them."""
        if self._datapaths:
            for fd in _tun_fds():
                with contextlib.suppress(OSError):
                    found = self._read_path(fd)
                    if found is not None:
                        found[0].detach(fd)
        for path in self._datapaths.values():
            path.close()
        self._datapaths.clear()
        for sock in self._rtnl.values():
            sock.close()
        self._rtnl.clear()
        self._index_sockets.close()

    def inject(self, fault: EmulatorFault | None, *, requests: Iterable[str] | None = None) -> None:
        """Make the emulator fail in a chosen way from now on (None: stop failing).

        Args:
            fault: what fails (:class:`EmulatorFault`).
            requests: with ``HANDLER_ERROR``, the ioctl names whose handler fails (None: every one).

        Raises:
            EmulatorError: for a ``fault`` that is not an :class:`EmulatorFault`.
        """
        if fault is not None and not isinstance(fault, EmulatorFault):
            raise EmulatorError(f"fault must be an EmulatorFault or None, got {fault!r}")
        self._fault = fault
        self._fault_requests = None if requests is None else frozenset(requests)

    def data_path_stats(self) -> dict[str, int]:
        """Counters of the emulated data path: devices, frames recorded and matched, reads emulated and passed."""
        return {
            "devices": len(self._datapaths),
            "recorded": sum(p.recorded for p in self._datapaths.values()),
            "matched": sum(p.matched for p in self._datapaths.values()),
            "reads": self.reads,
            "passed_reads": self.passed_reads,
        }


def _reap(pid: int) -> None:
    """Wait for child ``pid`` to end, even when the wait is interrupted (Ctrl-C, SIGTERM): the child is
    then killed, reaped, and the interruption passed on. A child reaped elsewhere counts as reaped.

    Raises:
        KeyboardInterrupt: (or :class:`~pytun_hash.errors.Terminated`) once the child is reaped.
    """
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        except KeyboardInterrupt as exc:
            interrupted = interrupted or exc
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            continue
        break
    if interrupted is not None:
        raise interrupted


def _merged(writes: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Adjacent byte ranges joined, so each contiguous run is one copy into the target."""
    out: list[tuple[int, bytes]] = []
    for offset, chunk in writes:
        if out and out[-1][0] + len(out[-1][1]) == offset:
            out[-1] = (out[-1][0], out[-1][1] + chunk)
        elif chunk:
            out.append((offset, chunk))
    return out


def _bpf_unavailable() -> str | None:
    """Why this process cannot create BPF maps (no CAP_BPF, no bpf(2)), or None when it can."""
    try:
        with ArrayMap.create(4, 1):
            return None
    except PytunHashError as exc:
        return str(exc)


def _readable(fd: int, timeout: float = 0.0) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _tun_fds() -> list[int]:
    found = []
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError, ValueError):
            fd = int(entry)
            if _is_tun(fd):
                found.append(fd)
    return found


@attrs.frozen
class _Read:
    """A trapped ``read``/``readv`` on an emulated device, as the supervisor answers it."""

    notif: _seccomp.Notification
    local: int  # the queue fd as this process holds it
    path: DeviceDataPath
    netns: int
    listener: int
    segments: list[tuple[int, int]]  # (address, length) of the caller's buffers, in order


class _PassThrough(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The trapped call is not for a TUN/TAP fd: let the real kernel run it."""


class _ChildSetupError(EmulatorError):
    """The forked child could not install its filter; the emulator stays usable."""
