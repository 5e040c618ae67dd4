"""The one place pytun_hash calls libc directly: the libc handle, ``syscall(2)``, ``setns``, ``unshare``,
``prctl``, ``mount``/``umount2``, ``statfs``/``fstatfs`` and ``renameat2``.

Everything that the standard library does not wrap goes through here: ``bpf(2)``, ``seccomp(2)``
and ``pidfd_getfd(2)`` through :func:`syscall`, network namespaces through :func:`setns` and
:func:`unshare`, the bpf filesystem through :func:`mount` and :func:`statfs_type`, the file system
of an open file through :func:`fstatfs_type`, a rename that never replaces through :func:`renameat2`. Failures are
plain :class:`OSError` with the errno (``PermissionError`` for ``EPERM`` ...); the callers turn
them into their own typed errors. ctypes releases the GIL during each call.

Prototypes: :func:`function` gives each caller its own function pointer (``CDLL[name]`` is a
new object every time), so setting ``argtypes`` for one use never changes another's.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "MNT_DETACH",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_REC",
    "PR_SET_NO_NEW_PRIVS",
    "RENAME_NOREPLACE",
    "fstatfs_type",
    "PR_SET_PDEATHSIG",
    "function",
    "libc",
    "mount",
    "prctl",
    "renameat2",
    "setns",
    "statfs_type",
    "syscall",
    "umount2",
    "unshare",
]

#: ``linux/sched.h``: the network namespace flag of ``unshare``/``setns``/``clone``.
CLONE_NEWNET = 0x40000000
#: ``linux/sched.h``: the mount namespace flag of ``unshare``/``clone``.
CLONE_NEWNS = 0x00020000
#: ``linux/mount.h``: ``mount(2)`` flags.
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
#: ``linux/fs.h``: ``umount2(2)`` flag: detach now, clean up when no longer busy.
MNT_DETACH = 0x2
#: ``linux/prctl.h``: set ``no_new_privs`` (needed to install a seccomp filter without CAP_SYS_ADMIN).
PR_SET_NO_NEW_PRIVS = 38
#: ``linux/fs.h``: ``renameat2(2)`` flag: fail with ``EEXIST`` instead of replacing the target.
RENAME_NOREPLACE = 0x1
#: ``linux/prctl.h``: the signal the calling process gets when the thread that created it exits.
PR_SET_PDEATHSIG = 1

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
_MOUNT = function(
    "mount", ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p
)
_UMOUNT2 = function("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_STATFS = function("statfs", ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_FSTATFS = function("fstatfs", ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# ``struct statfs`` starts with ``f_type`` on every Linux ABI: a ``long`` (``__fsword_t``), except
# s390x's ``unsigned int``. 256 bytes hold the whole structure everywhere (120 on x86-64).
_STATFS_SIZE = 256
_F_TYPE = ctypes.c_uint if os.uname().machine == "s390x" else ctypes.c_long


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


def _path(value: str | None, what: str) -> bytes | None:
    """``value`` as the bytes libc gets; a NUL would silently cut a ``char *`` short, so it is refused."""
    if value is None:
        return None
    raw = os.fsencode(value)
    if b"\0" in raw:
        raise ValueError(f"{what} contains a NUL byte: {value!r}")
    return raw


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """``mount(2)``: mount ``source`` of type ``fstype`` on ``target`` (or change a mount's flags).

    Args:
        source: the device or a name (``"bpf"``); None for flag changes (``MS_PRIVATE`` ...).
        target: the mount point.
        fstype: the file system type (``"bpf"``, ``"tmpfs"``), or None.
        flags: ``MS_*`` flags.
        data: the file system's options (``"mode=0700"``), or None.

    Raises:
        ValueError: for a NUL byte in any string.
        OSError: ``EPERM`` without CAP_SYS_ADMIN, ``ENODEV`` for an unknown file system type,
            ``ENOENT``/``ENOTDIR`` for a bad target, ...
    """
    args = (_path(source, "source"), _path(target, "target"), _path(fstype, "fstype"))
    if _MOUNT(*args, flags, _path(data, "data")) != 0:
        raise _failed()


def umount2(target: str, flags: int = 0) -> None:
    """``umount2(2)``: unmount the file system mounted on ``target``.

    Raises:
        ValueError: for a NUL byte in ``target``.
        OSError: ``EINVAL`` when ``target`` is not a mount point, ``EBUSY`` while it is in use, ``EPERM``.
    """
    if _UMOUNT2(_path(target, "target"), flags) != 0:
        raise _failed()


def statfs_type(path: str) -> int:
    """The magic number of the file system ``path`` is on (``statfs(2)``'s ``f_type``; follows symlinks).

    Raises:
        ValueError: for a NUL byte in ``path``.
        OSError: ``ENOENT`` when ``path`` does not exist, ``EACCES`` ...
    """
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _STATFS(_path(path, "path"), buf) != 0:
        raise _failed()
    return int(_F_TYPE.from_buffer(buf).value) & 0xFFFFFFFF


def fstatfs_type(fd: int) -> int:
    """The magic number of the file system the open file ``fd`` is on (``fstatfs(2)``'s ``f_type``).

    Works on ``O_PATH`` descriptors too, so a file can be judged before it is really opened.

    Raises:
        OSError: ``EBADF`` when ``fd`` is not open, ``ENOSYS`` ...
    """
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _FSTATFS(fd, buf) != 0:
        raise _failed()
    return int(_F_TYPE.from_buffer(buf).value) & 0xFFFFFFFF


def renameat2(src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int) -> None:
    """``renameat2(2)``: rename ``src`` (relative to ``src_dir_fd``) to ``dst`` (relative to ``dst_dir_fd``).

    Looked up at the first call: a C library older than glibc 2.28 lacks the wrapper, and only
    callers that need ``RENAME_NOREPLACE`` should fail for it.

    Args:
        src_dir_fd: the directory fd ``src`` is relative to.
        src: the name to rename.
        dst_dir_fd: the directory fd ``dst`` is relative to.
        dst: the new name.
        flags: ``RENAME_NOREPLACE`` or 0.

    Raises:
        ValueError: for a NUL byte in a name.
        OSError: ``EEXIST`` when ``RENAME_NOREPLACE`` finds ``dst``, ``EINVAL`` when the file system
            does not support the flag, ``ENOSYS`` when the C library or kernel lacks the call, ...
    """
    try:
        call = _renameat2()
    except AttributeError:
        raise OSError(errno.ENOSYS, "the C library has no renameat2") from None
    if call(src_dir_fd, _path(src, "src"), dst_dir_fd, _path(dst, "dst"), flags) != 0:
        raise _failed()


@functools.cache
def _renameat2() -> ctypes._NamedFuncPointer:
    return function(
        "renameat2", ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    )
