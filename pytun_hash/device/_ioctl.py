"""The only place that calls ``fcntl.ioctl`` on tun queue fds.

Every ``OSError`` becomes a :class:`~pytun_hash.errors.KernelError` subclass carrying the errno,
the request name and a sentence saying what to do; the sentences here are specific to the
request (``TUNSETIFF`` ``EINVAL`` names the flags that differ from the existing device's).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import struct

from pytun_hash._abi import ioctl_request
from pytun_hash._abi.revision import Revision
from pytun_hash._abi.tun import TunFlag
from pytun_hash.errors import (
    BusyError,
    DeviceFlagsMismatchError,
    KernelError,
    PrivilegeError,
    UnsupportedError,
    ValidationError,
    kernel_error,
)

__all__ = [
    "describe_flags",
    "int_argument",
    "ioctl_get_int",
    "ioctl_int",
    "ioctl_ptr",
    "ioctl_request_ptr",
    "ioctl_set_int",
    "request_number",
    "translate_error",
]

_CAP_NET_ADMIN = "run as root or grant CAP_NET_ADMIN in the user namespace that owns the device's network namespace"

# (request, errno) -> (error class, sentence). TUNSETIFF EINVAL/EBUSY are built from the request.
_HINTS: dict[tuple[str, int], tuple[type[KernelError], str]] = {
    ("TUNSETIFF", errno.EEXIST): (
        KernelError,
        "this fd is already bound to a device; open /dev/net/tun again for another queue",
    ),
    ("TUNSETIFF", errno.EPERM): (
        PrivilegeError,
        f"creating or attaching a TUN/TAP device needs CAP_NET_ADMIN: {_CAP_NET_ADMIN}, or be the "
        "owner/group set with TUNSETOWNER/TUNSETGROUP on a persistent device",
    ),
    ("TUNSETIFF", errno.E2BIG): (
        KernelError,
        "the device already has 256 queues (MAX_TAP_QUEUES); close or reuse a queue",
    ),
    ("TUNSETQUEUE", errno.EINVAL): (
        KernelError,
        "the queue is already in the requested state (attached for IFF_ATTACH_QUEUE, detached for "
        "IFF_DETACH_QUEUE), or the device is not multi-queue",
    ),
    ("TUNSETQUEUE", errno.EPERM): (PrivilegeError, f"re-attaching a queue needs CAP_NET_ADMIN: {_CAP_NET_ADMIN}"),
    ("TUNSETVNETBE", errno.EINVAL): (
        UnsupportedError,
        "this kernel was built without CONFIG_TUN_VNET_CROSS_LE, so big-endian vnet headers are not "
        "available; use little-endian headers (TUNSETVNETLE) instead",
    ),
    ("TUNGETVNETBE", errno.EINVAL): (
        UnsupportedError,
        "this kernel was built without CONFIG_TUN_VNET_CROSS_LE; vnet headers are little-endian or host-endian only",
    ),
    ("TUNSETVNETHDRSZ", errno.EINVAL): (
        KernelError,
        "the vnet header size must be at least 10 bytes (sizeof(struct virtio_net_hdr))",
    ),
    ("TUNSETOFFLOAD", errno.EINVAL): (
        KernelError,
        "the kernel does not know one of the offload bits, or a TSO/UFO/USO bit was set without TUN_F_CSUM",
    ),
    ("TUNSETSTEERINGEBPF", errno.EINVAL): (
        KernelError,
        "the fd is not a loaded BPF_PROG_TYPE_SOCKET_FILTER program; pass such a program's fd, or -1 to detach",
    ),
    ("TUNSETFILTEREBPF", errno.EINVAL): (
        KernelError,
        "the fd is not a loaded BPF_PROG_TYPE_SOCKET_FILTER program; pass such a program's fd, or -1 to detach",
    ),
    ("TUNSETSTEERINGEBPF", errno.EFAULT): (KernelError, "the argument must point to an int program fd"),
    ("TUNGETDEVNETNS", errno.EPERM): (
        PrivilegeError,
        f"reading the device's network namespace needs CAP_NET_ADMIN: {_CAP_NET_ADMIN}",
    ),
    ("TUNSETOWNER", errno.EINVAL): (KernelError, "the uid has no mapping in the caller's user namespace"),
    ("TUNSETGROUP", errno.EINVAL): (KernelError, "the gid has no mapping in the caller's user namespace"),
    ("TUNSETCARRIER", errno.EPERM): (PrivilegeError, f"changing the carrier needs CAP_NET_ADMIN: {_CAP_NET_ADMIN}"),
}

_TYPE_MASK = TunFlag.IFF_TUN | TunFlag.IFF_TAP
# Flags TUNSETIFF compares against an existing device (tun.c tun_set_iff) and flags worth naming.
_COMPARED = (TunFlag.IFF_TUN, TunFlag.IFF_TAP, TunFlag.IFF_MULTI_QUEUE)
_INFORMATIVE = (TunFlag.IFF_VNET_HDR, TunFlag.IFF_NO_PI)


@functools.cache
def request_number(name: str, revision: Revision = Revision.RFC) -> int:
    """The request number of ioctl ``name`` on this machine.

    Raises:
        ValueError: for a name that is neither a TUN ioctl nor a hash ioctl of ``revision``.
    """
    return ioctl_request(name, revision=revision)


def describe_flags(flags: int) -> str:
    """``"IFF_TAP|IFF_NO_PI"`` for a flag word; ``"0"`` when empty."""
    names = [member.name for member in TunFlag if member.name and member.value & flags]
    return "|".join(names) or "0"


def _decode_ifreq(buf: bytes | bytearray | None) -> tuple[str, TunFlag] | None:
    """The refused request's name and flags; None when ``buf`` is not a ``struct ifreq``."""
    # primitives issues its ioctls through this module, so it can only be imported once both are loaded.
    from pytun_hash.device.primitives import decode_ifreq

    if buf is None:
        return None
    try:
        return decode_ifreq(buf)
    except ValueError:
        return None


def _tunsetiff_busy(buf: bytes | bytearray | None) -> KernelError:
    decoded = _decode_ifreq(buf)
    name = decoded[0] if decoded else "?"
    if decoded and decoded[1] & TunFlag.IFF_TUN_EXCL:
        hint = f"a device named {name!r} already exists and IFF_TUN_EXCL was requested; pick another name"
    else:
        hint = (
            f"the single-queue device {name!r} already has its queue open elsewhere (another process, or an "
            "fd inherited without O_CLOEXEC); close that fd, or create the device with multi_queue=True"
        )
    return BusyError(errno.EBUSY, "TUNSETIFF", hint)


def _tunsetiff_einval(buf: bytes | bytearray | None) -> KernelError:
    from pytun_hash.device import rtnl

    decoded = _decode_ifreq(buf)
    if decoded is None:
        return kernel_error(errno.EINVAL, "TUNSETIFF", "the argument is not a struct ifreq")
    name, requested = decoded
    if not requested & _TYPE_MASK:
        return KernelError(errno.EINVAL, "TUNSETIFF", "the request sets neither IFF_TUN nor IFF_TAP; set exactly one")
    try:
        link = rtnl.get_link(name)
    except (KernelError, ValueError):
        return KernelError(
            errno.EINVAL,
            "TUNSETIFF",
            f"the kernel rejected the interface name {name!r}; use at most 15 bytes, no '/', ':' or "
            "spaces, and at most one %d",
        )
    if link.tun is None:
        return KernelError(
            errno.EINVAL,
            "TUNSETIFF",
            f"{name!r} already exists as a {link.kind or 'non-tun'} device; pick another name",
        )
    try:
        existing = int(rtnl.tun_flags_of(name))
    except KernelError:
        existing = int(link.tun.flags)
    causes = [f for f in _COMPARED if (requested ^ existing) & f]
    others = [f for f in _INFORMATIVE if (requested ^ existing) & f]
    if not causes:
        return KernelError(
            errno.EINVAL,
            "TUNSETIFF",
            f"the kernel refused to attach to {name!r} although its type and multi-queue flag match; "
            "the device may be going away, retry",
            detail=f"requested {describe_flags(requested)}, device has {describe_flags(existing)}",
        )
    parts = []
    for flag in causes + others:
        assert flag.name is not None
        state = (
            "requested but the device lacks it" if requested & flag else "the device has it but it was not requested"
        )
        parts.append(f"{flag.name}: {state}")
    return DeviceFlagsMismatchError(
        errno.EINVAL,
        "TUNSETIFF",
        f"device {name!r} exists with other flags; open it with its own flags "
        f"({describe_flags(existing & ~TunFlag.IFF_PERSIST)}) or delete it first",
        detail="; ".join(parts),
    )


def translate_error(
    err: int, name: str, *, hint: str | None = None, buf: bytes | bytearray | None = None
) -> KernelError:
    """The :class:`KernelError` for errno ``err`` returned by request ``name``.

    Args:
        err: the errno value.
        name: the request name (``"TUNSETIFF"``, ``"read"`` ...).
        hint: a caller-supplied sentence; it overrides the built-in one (not for TUNSETIFF EINVAL/EBUSY).
        buf: the argument buffer, used to explain ``TUNSETIFF`` failures.
    """
    if name == "TUNSETIFF" and err == errno.EINVAL:
        return _tunsetiff_einval(buf)
    if name == "TUNSETIFF" and err == errno.EBUSY:
        return _tunsetiff_busy(buf)
    specific = _HINTS.get((name, err))
    if specific is not None:
        cls, sentence = specific
        return cls(err, name, hint or sentence)
    return kernel_error(err, name, hint)


def ioctl_int(fd: int, name: str, value: int) -> int:
    """Issue ioctl ``name`` with ``value`` passed by value (``TUNSETOFFLOAD``, ``TUNSETPERSIST`` ...).

    Returns:
        The ioctl's return value (a new fd for ``TUNGETDEVNETNS``, else 0).

    Raises:
        KernelError: a subclass chosen from the errno (see :func:`translate_error`).
        ValidationError: when ``value`` does not fit a C int.
        ValueError: for an unknown ioctl name.
    """
    request = request_number(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(name, f"expected an integer argument, got {value!r}")
    try:
        return fcntl.ioctl(fd, request, value)
    except OverflowError:
        raise ValidationError(name, f"the value {value} does not fit a C int") from None
    except OSError as exc:
        raise translate_error(exc.errno or errno.EIO, name) from None


def ioctl_ptr(fd: int, name: str, buf: bytearray, *, revision: Revision = Revision.RFC, hint: str | None = None) -> int:
    """Issue ioctl ``name`` with a pointer to ``buf``; the kernel may read and write it in place.

    Args:
        fd: a tun queue fd.
        name: a TUN ioctl or a hash ioctl of ``revision``.
        buf: the argument bytes (mutable so the kernel's writes land in it).
        revision: the hash UAPI revision ``name`` belongs to.
        hint: the sentence for errors, replacing the built-in one.

    Returns:
        The ioctl's return value.

    Raises:
        KernelError: a subclass chosen from the errno (see :func:`translate_error`).
        ValueError: for an unknown ioctl name.
    """
    return ioctl_request_ptr(fd, request_number(name, revision), name, buf, hint=hint)


def ioctl_request_ptr(fd: int, request: int, name: str, buf: bytearray, *, hint: str | None = None) -> int:
    """Issue raw request number ``request`` with a pointer to ``buf`` (read and written in place).

    ``fcntl.ioctl`` passes buffers up to 1024 bytes through an internal copy and copies the
    result back; larger ones are passed directly. Either way ``buf`` holds the kernel's writes.

    Raises:
        KernelError: a subclass chosen from the errno, named ``name``.
    """
    try:
        result: int = fcntl.ioctl(fd, request & 0xFFFFFFFF, buf, True)
    except OSError as exc:
        raise translate_error(exc.errno or errno.EIO, name, hint=hint, buf=buf) from None
    return result


def ioctl_get_int(fd: int, name: str) -> int:
    """Issue ioctl ``name`` whose argument points to a C int the kernel fills; return that int.

    Raises:
        KernelError: a subclass chosen from the errno.
    """
    buf = bytearray(4)
    ioctl_ptr(fd, name, buf)
    value: int = struct.unpack("=i", buf)[0]
    return value


def int_argument(name: str, value: int) -> bytearray:
    """The argument of ioctl ``name`` whose pointer leads to a C int holding ``value`` (host order).

    Raises:
        ValidationError: when ``value`` is not an int or does not fit a C int.
    """
    if not isinstance(value, int):
        raise ValidationError(name, f"expected an integer argument, got {value!r}")
    try:
        return bytearray(struct.pack("=i", value))
    except struct.error:
        raise ValidationError(name, f"the value {value} does not fit a C int") from None


def ioctl_set_int(fd: int, name: str, value: int) -> None:
    """Issue ioctl ``name`` whose argument points to a C int holding ``value``.

    Raises:
        KernelError: a subclass chosen from the errno.
        ValidationError: when ``value`` does not fit a C int.
    """
    ioctl_ptr(fd, name, int_argument(name, value))
