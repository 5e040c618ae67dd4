"""Anonymous network namespaces for tests and demos, without a shell and without ``/run/netns``.

Thread affinity: a network namespace is a property of a *thread* on Linux. ``unshare`` and
``setns`` move only the calling thread; other threads of the process stay where they are, but
a thread *started* by a thread that is inside begins its life inside too (it inherits its
creator's namespace). What a thread creates while inside a namespace (sockets, tun devices through
``/dev/net/tun``, netlink sockets, subprocesses) belongs to that namespace for its whole life,
even after the thread leaves. :class:`NetworkNamespace` therefore records the thread that
entered it and must be left by that same thread; :meth:`NetworkNamespace.run` (and every
helper method) runs code inside the namespace from any thread by starting a short-lived
thread that enters it.

The namespace has no name and no bind mount: it dies when its last user is gone (the saved
namespace fd, threads inside it, sockets and tun fds created in it), and every tun device in
it goes with it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from pytun_hash import _sys
from pytun_hash._sys import CLONE_NEWNET
from pytun_hash.device import rtnl
from pytun_hash.errors import KernelError, PrivilegeError, PytunHashError, ValidationError, kernel_error

__all__ = [
    "CLONE_NEWNET",
    "NetworkNamespace",
    "enter_netns",
    "call_on_thread",
    "open_thread_netns",
    "read_sysctl",
    "run_in_netns",
    "thread_netns_inode",
    "unshare_netns",
    "write_sysctl",
]

T = TypeVar("T")

_THREAD_NETNS = "/proc/thread-self/ns/net"
_SYSCTL_MAX = 65536


def thread_netns_inode() -> int:
    """Inode number that identifies the calling thread's network namespace."""
    return rtnl.thread_netns_inode()


def open_thread_netns() -> int:
    """Open the calling thread's network namespace; returns an ``O_CLOEXEC`` fd the caller must close.

    Raises:
        KernelError: when ``/proc/thread-self/ns/net`` cannot be opened (no procfs).
    """
    try:
        return os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise kernel_error(exc.errno or errno.EIO, f"open({_THREAD_NETNS})", "mount procfs on /proc") from None


def unshare_netns() -> None:
    """Move the calling thread into a new, empty network namespace (``unshare(CLONE_NEWNET)``).

    Raises:
        PrivilegeError: ``EPERM`` without CAP_SYS_ADMIN (in a container, seccomp may forbid it too).
        KernelError: for other failures.
    """
    try:
        _sys.unshare(CLONE_NEWNET)
    except OSError as exc:
        err = exc.errno or errno.EIO
        if err == errno.EPERM:
            raise PrivilegeError(
                err,
                "unshare(CLONE_NEWNET)",
                "a new network namespace needs CAP_SYS_ADMIN (run as root, or inside a user namespace you own)",
            ) from None
        raise kernel_error(err, "unshare(CLONE_NEWNET)") from None


def enter_netns(ns_fd: int) -> None:
    """Move the calling thread into the network namespace open at ``ns_fd`` (``setns``).

    Raises:
        PrivilegeError: ``EPERM`` without CAP_SYS_ADMIN over the target namespace.
        KernelError: ``EINVAL`` when ``ns_fd`` is not a network namespace, ``EBADF`` when closed.
    """
    try:
        _sys.setns(ns_fd, CLONE_NEWNET)
    except OSError as exc:
        err = exc.errno or errno.EIO
        if err == errno.EPERM:
            raise PrivilegeError(
                err, "setns(CLONE_NEWNET)", "entering a network namespace needs CAP_SYS_ADMIN"
            ) from None
        if err == errno.EINVAL:
            raise KernelError(err, "setns(CLONE_NEWNET)", "the fd is not a network namespace fd") from None
        raise kernel_error(err, "setns(CLONE_NEWNET)") from None


def run_in_netns(ns_fd: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)`` inside the network namespace open at ``ns_fd``; return its result.

    When the calling thread is already there, ``fn`` runs directly. Otherwise a short-lived
    thread enters the namespace, runs ``fn`` and ends; the caller's thread never moves. Whatever
    ``fn`` raises is re-raised here. An interruption (Ctrl-C) of the caller is raised once the helper
    has ended (:func:`call_on_thread`), so nothing ``fn`` makes appears after it; what ``fn`` returned
    then is dropped: to release it, ``fn`` must leave it where the caller finds it.

    Raises:
        PrivilegeError, KernelError: when the helper thread cannot enter the namespace.
    """
    if os.fstat(ns_fd).st_ino == thread_netns_inode():
        return fn(*args, **kwargs)

    def inside() -> T:
        enter_netns(ns_fd)
        return fn(*args, **kwargs)

    return call_on_thread(inside, name="pytun-hash-netns")


def call_on_thread(fn: Callable[[], T], *, name: str, daemon: bool = True) -> T:
    """Call ``fn()`` on a new thread and return its result; whatever it raises is re-raised here.

    When the wait is interrupted (Ctrl-C, SIGTERM), the thread is still waited for, and the
    interruption raised once it has ended: it may be making something for its caller (a device, a
    socket in a namespace), and the caller's cleanup must not run first and leave that behind.
    Further interruptions during that wait are dropped. (Not ``Thread.join``: on Python 3.11 an
    interrupted ``join`` marks a thread that is still running as stopped.)

    Raises:
        KeyboardInterrupt: (or :class:`~pytun_hash.errors.Terminated`) once the thread has ended.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def body() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=body, name=name, daemon=daemon)
    worker.start()
    try:
        finished.wait()
    except BaseException:
        while not finished.is_set():
            with contextlib.suppress(KeyboardInterrupt):
                finished.wait()
        raise
    worker.join()  # its work is done: only its exit is left
    if failure:
        raise failure[0]
    return outcome[0]


def _sysctl_path(key: str) -> str:
    if not isinstance(key, str) or "\0" in key:
        raise ValidationError("key", f"not a sysctl name: {key!r}")
    parts = key.split("/") if "/" in key else key.split(".")
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValidationError("key", f"not a sysctl name: {key!r} (use net.ipv4.ip_forward or net/ipv4/ip_forward)")
    return "/proc/sys/" + "/".join(parts)


def write_sysctl(key: str, value: str | int) -> None:
    """Write ``value`` to sysctl ``key`` in the calling thread's namespace.

    ``key`` is dotted (``"net.ipv6.conf.default.disable_ipv6"``) or a path below ``/proc/sys``
    (needed when an interface name contains a dot).

    Raises:
        ValidationError: for a malformed key.
        KernelError: ``ENOENT`` for an unknown key, ``EINVAL`` for a rejected value.
    """
    path = _sysctl_path(key)
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{value}\n")
    except OSError as exc:
        raise kernel_error(
            exc.errno or errno.EIO, f"sysctl {key}", f"check that {path} exists and accepts {value!r}"
        ) from None


def read_sysctl(key: str) -> str:
    """Read sysctl ``key`` in the calling thread's namespace, without the trailing newline.

    Raises:
        ValidationError: for a malformed key.
        KernelError: ``ENOENT`` for an unknown key.
    """
    path = _sysctl_path(key)
    try:
        with open(path, encoding="ascii") as f:
            return f.read(_SYSCTL_MAX).rstrip("\n")  # a sysctl value is at most a page
    except OSError as exc:
        raise kernel_error(exc.errno or errno.EIO, f"sysctl {key}", f"check that {path} exists") from None


class NetworkNamespace:
    """Context manager: the calling thread enters a new anonymous network namespace and leaves it on exit.

    On enter: ``unshare(CLONE_NEWNET)``, loopback up (``loopback=True``), IPv6 disabled by
    default on every new interface (``ipv6=False``, so no router solicitation, DAD or MLD frames
    show up on tun queues). On exit the thread returns to the namespace it was in (``setns`` on
    an fd saved before) and every fd this object holds is closed. Nothing appears in
    ``/run/netns``; the namespace dies with its last user.

    Thread affinity: only the thread that entered is inside; it must also be the one that
    leaves (see the module documentation). The helper methods work from any thread.

    Args:
        loopback: bring ``lo`` up.
        ipv6: keep IPv6 enabled on new interfaces; False sets ``net.ipv6.conf.{all,default}.disable_ipv6``.

    Raises (on enter):
        PrivilegeError: without CAP_SYS_ADMIN.
        KernelError: for other failures; the thread is back in its namespace when this is raised.
    """

    def __init__(self, *, loopback: bool = True, ipv6: bool = True) -> None:
        self._loopback = loopback
        self._ipv6 = ipv6
        self._saved_fd: int | None = None
        self._fd: int | None = None
        self._inode: int | None = None
        self._owner: int | None = None
        self._closed = False

    def __enter__(self) -> NetworkNamespace:
        self.enter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("active" if self._fd is not None else "new")
        return f"NetworkNamespace(inode={self._inode}, {state})"

    def enter(self) -> None:
        """Create the namespace and move the calling thread into it (what ``with`` does).

        Raises:
            ValidationError: when this object was entered before.
            PrivilegeError, KernelError: see the class documentation.
        """
        if self._fd is not None or self._closed:
            raise ValidationError("namespace", "a NetworkNamespace can be entered only once; create a new one")
        saved = open_thread_netns()
        try:
            unshare_netns()
        except PytunHashError:
            os.close(saved)
            raise
        self._saved_fd = saved
        self._owner = threading.get_ident()
        try:
            self._fd = open_thread_netns()
            self._inode = os.fstat(self._fd).st_ino
            if not self._ipv6 and os.path.exists("/proc/sys/net/ipv6"):
                write_sysctl("net.ipv6.conf.all.disable_ipv6", 1)
                write_sysctl("net.ipv6.conf.default.disable_ipv6", 1)
            if self._loopback:
                rtnl.set_link_up("lo")
        except BaseException:
            self.close()
            raise

    @property
    def fd(self) -> int:
        """An ``O_CLOEXEC`` fd of the namespace (for ``setns``, or to hand to another process).

        Raises:
            ValidationError: before enter or after close.
        """
        if self._fd is None:
            raise ValidationError("namespace", "the namespace is not active (not entered yet, or closed)")
        return self._fd

    @property
    def inode(self) -> int:
        """The namespace's inode number (compare with :func:`thread_netns_inode`).

        Raises:
            ValidationError: before enter.
        """
        if self._inode is None:
            raise ValidationError("namespace", "the namespace has not been entered yet")
        return self._inode

    @property
    def active(self) -> bool:
        """Whether the namespace is entered and not closed yet."""
        return self._fd is not None

    @property
    def contains_current_thread(self) -> bool:
        """Whether the calling thread is inside this namespace now."""
        return self._inode is not None and self._fd is not None and thread_netns_inode() == self._inode

    def close(self) -> None:
        """Return the entering thread to its previous namespace and close every fd (idempotent).

        Raises:
            ValidationError: when called from a thread other than the one that entered; nothing
                is changed then, so the owner can still close it.
            KernelError: when ``setns`` back fails; the fds are closed anyway.
        """
        if self._closed or self._saved_fd is None:
            self._closed = True
            return
        if threading.get_ident() != self._owner:
            raise ValidationError(
                "thread", "a network namespace must be left by the thread that entered it (setns is per-thread)"
            )
        saved, own = self._saved_fd, self._fd
        self._saved_fd = self._fd = None
        self._closed = True
        try:
            enter_netns(saved)
        finally:
            os.close(saved)
            if own is not None:
                os.close(own)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` inside this namespace from any thread; return its result.

        Raises:
            ValidationError: when the namespace is not active.
            Whatever ``fn`` raises.
        """
        return run_in_netns(self.fd, fn, *args, **kwargs)

    def set_link_up(self, name: str, up: bool = True) -> None:
        """Bring link ``name`` up (down when ``up`` is False). Raises KernelError (``ENODEV`` ...)."""
        self.run(rtnl.set_link_up, name, up)

    def set_link_mtu(self, name: str, mtu: int) -> None:
        """Set link ``name``'s MTU in bytes. Raises KernelError (``EINVAL`` out of range, ``ENODEV``)."""
        self.run(rtnl.set_link_mtu, name, mtu)

    def add_address(self, name: str, cidr: str) -> None:
        """Add ``cidr`` (``"10.77.0.1/24"``) to link ``name``. Raises ValidationError, KernelError."""
        self.run(rtnl.add_address, name, cidr)

    def add_neighbour(self, name: str, ip: str, mac: str) -> None:
        """Add a permanent neighbour ``ip`` -> ``mac`` on ``name`` (no ARP/ND). Raises ValidationError, KernelError."""
        self.run(rtnl.add_neighbour, name, ip, mac)

    def add_vlan(self, parent: str, name: str, vlan_id: int, *, protocol: int = rtnl.ETH_P_8021Q) -> None:
        """Create VLAN device ``name`` (tag ``vlan_id``) on ``parent``. Raises ValidationError, KernelError."""
        self.run(rtnl.add_vlan, parent, name, vlan_id, protocol=protocol)

    def delete_link(self, name: str) -> None:
        """Delete link ``name``. Raises KernelError (``ENODEV``)."""
        self.run(rtnl.delete_link, name)

    def get_link(self, name: str) -> rtnl.LinkInfo:
        """Return link ``name`` as rtnetlink sees it in this namespace. Raises KernelError (``ENODEV``)."""
        return self.run(rtnl.get_link, name)

    def list_links(self, *, kind: str | None = None) -> list[rtnl.LinkInfo]:
        """Every link in this namespace (only ``kind`` ones when given). Raises KernelError."""
        return self.run(rtnl.list_links, kind=kind)

    def write_sysctl(self, key: str, value: str | int) -> None:
        """Write sysctl ``key`` in this namespace (see :func:`write_sysctl`)."""
        self.run(write_sysctl, key, value)

    def read_sysctl(self, key: str) -> str:
        """Read sysctl ``key`` in this namespace (see :func:`read_sysctl`)."""
        return self.run(read_sysctl, key)
