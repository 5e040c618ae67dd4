"""The one place pytun_hash calls libc directly: the libc handle, ``syscall(2)``, ``setns``, ``unshare``, ``prctl``.

Everything that the standard library does not wrap goes through here: ``bpf(2)``, ``seccomp(2)``
and ``pidfd_getfd(2)`` through :func:`syscall`, network namespaces through :func:`setns` and
:func:`unshare`. Failures are plain :class:`OSError` with the errno (``PermissionError`` for
``EPERM`` ...); the callers turn them into their own typed errors. ctypes releases the GIL
during each call.

Prototypes: :func:`function` gives each caller its own function pointer (``CDLL[name]`` is a
new object every time), so setting ``argtypes`` for one use never changes another's.
"""

from __future__ import annotations

import ctypes
import os

__all__ = [
    "CLONE_NEWNET",
    "PR_SET_NO_NEW_PRIVS",
    "function",
    "libc",
    "prctl",
    "setns",
    "syscall",
    "unshare",
]

#: ``linux/sched.h``: the network namespace flag of ``unshare``/``setns``/``clone``.
CLONE_NEWNET = 0x40000000
#: ``linux/prctl.h``: set ``no_new_privs`` (needed to install a seccomp filter without CAP_SYS_ADMIN).
PR_SET_NO_NEW_PRIVS = 38

#: The C library of this process, with ctypes' per-thread copy of ``errno`` (``ctypes.get_errno``).
libc = ctypes.CDLL(None, use_errno=True)


def function(name: str, restype: type | None, *argtypes: type) -> ctypes._NamedFuncPointer:
    """A new pointer to the libc function ``name`` with the given prototype.

    Args:
        name: the symbol (``"process_vm_readv"``).
        restype: the C return type (``ctypes.c_int`` ...), or None for ``void``.
        argtypes: the C argument types; none given leaves the function variadic (ctypes converts
            Python ints to ``int``, so pass wider values as ctypes objects).
    """
    fn = libc[name]
    fn.restype = restype
    if argtypes:
        fn.argtypes = argtypes
    return fn


_SYSCALL = function("syscall", ctypes.c_long)
_SETNS = function("setns", ctypes.c_int, ctypes.c_int, ctypes.c_int)
_UNSHARE = function("unshare", ctypes.c_int, ctypes.c_int)
_PRCTL = function("prctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def _failed() -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err))


def syscall(nr: int, *args: object) -> int:
    """``syscall(nr, *args)``: its non-negative result, or :class:`OSError` with the errno.

    Python ints are passed as C ``long`` (a syscall argument is one register); ctypes objects
    and ``ctypes.byref(...)`` as they are. ``EINTR`` is raised like any other errno: retrying
    is the caller's decision.

    Raises:
        OSError: when the call returns -1, with the errno it set.
    """
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ret = _SYSCALL(ctypes.c_long(nr), *converted)
    if ret < 0:
        raise _failed()
    return int(ret)


def setns(fd: int, nstype: int) -> None:
    """Move the calling *thread* into the namespace open at ``fd`` (``setns(2)``).

    Args:
        fd: a namespace fd (``/proc/<tid>/ns/net`` ...).
        nstype: the namespace type the fd must be (``CLONE_NEWNET``), or 0 for any.

    Raises:
        OSError: ``EPERM`` without CAP_SYS_ADMIN over the namespace, ``EINVAL`` when ``fd`` is not a
            namespace of that type, ``EBADF`` when it is closed.
    """
    if _SETNS(fd, nstype) != 0:
        raise _failed()


def unshare(flags: int) -> None:
    """Move the calling *thread* into new namespaces of the kinds in ``flags`` (``unshare(2)``).

    Raises:
        OSError: ``EPERM`` without CAP_SYS_ADMIN (or when seccomp forbids it), ``EINVAL`` for bad flags.
    """
    if _UNSHARE(flags) != 0:
        raise _failed()


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)``: its non-negative result.

    Raises:
        OSError: when it returns -1, with the errno.
    """
    ret = _PRCTL(option, arg2, arg3, arg4, arg5)
    if ret < 0:
        raise _failed()
    return int(ret)
