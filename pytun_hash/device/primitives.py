"""fd-level primitives of ``/dev/net/tun``: opening it, interface names, ``struct ifreq``, ``TUNSETIFF`` flags.

Everything here works on a bare fd or a name and keeps no state; :class:`~pytun_hash.device.tap.TunTapDevice`
builds devices from it, and :mod:`pytun_hash.device._ioctl` decodes a refused ``struct ifreq``
with the same :func:`decode_ifreq` that reads a granted one.
"""

from __future__ import annotations

import enum
import errno
import os
import struct

from pytun_hash._abi.tun import IFNAMSIZ, TunFlag, ifreq
from pytun_hash.device import rtnl
from pytun_hash.device._ioctl import ioctl_int, ioctl_ptr, translate_error
from pytun_hash.device.netns import thread_netns_inode
from pytun_hash.errors import (
    DeviceGoneError,
    DeviceNotFoundError,
    KernelError,
    PrivilegeError,
    UnsupportedError,
    ValidationError,
)

__all__ = [
    "DEVICE_FLAGS",
    "IFREQ_FLAGS_END",
    "MAX_TAP_QUEUES",
    "TUN_PATH",
    "DeviceMode",
    "check_name",
    "decode_ifreq",
    "encode_ifreq",
    "existing_tun_link",
    "fd_netns_inode",
    "get_iff",
    "kernel_features",
    "open_tun",
    "request_flags",
]

TUN_PATH = "/dev/net/tun"
#: tun.c ``MAX_TAP_QUEUES``: ``TUNSETIFF`` answers ``E2BIG`` beyond it.
MAX_TAP_QUEUES = 256
#: Bytes of ``struct ifreq`` that tun reads: ``ifr_name[IFNAMSIZ]`` then the 16-bit ``ifr_flags``.
IFREQ_FLAGS_END = IFNAMSIZ + 2

#: Flags a caller chooses at ``TUNSETIFF`` time and the device keeps (tun.c ``TUN_FEATURES`` + type).
DEVICE_FLAGS = (
    TunFlag.IFF_TUN
    | TunFlag.IFF_TAP
    | TunFlag.IFF_NO_PI
    | TunFlag.IFF_VNET_HDR
    | TunFlag.IFF_MULTI_QUEUE
    | TunFlag.IFF_NAPI
    | TunFlag.IFF_NAPI_FRAGS
)


class DeviceMode(enum.Enum):
    """Layer of the frames on the queues: ``TAP`` = Ethernet, ``TUN`` = raw IP."""

    TUN = "tun"
    TAP = "tap"

    @property
    def flag(self) -> TunFlag:
        """``IFF_TUN`` or ``IFF_TAP``."""
        return TunFlag.IFF_TUN if self is DeviceMode.TUN else TunFlag.IFF_TAP

    @classmethod
    def from_flags(cls, flags: int) -> DeviceMode:
        """The mode named by ``IFF_TUN``/``IFF_TAP`` in ``flags``.

        Raises:
            ValidationError: when neither or both bits are set.
        """
        tun, tap = bool(flags & TunFlag.IFF_TUN), bool(flags & TunFlag.IFF_TAP)
        if tun == tap:
            raise ValidationError("flags", f"exactly one of IFF_TUN and IFF_TAP must be set, got {flags:#x}")
        return cls.TUN if tun else cls.TAP


def request_flags(mode: DeviceMode, *, vnet_hdr: bool, packet_info: bool, multi_queue: bool, napi: bool) -> TunFlag:
    """The ``TUNSETIFF`` flag word for a device of ``mode`` with these options (no ``IFF_TUN_EXCL``)."""
    flags = mode.flag
    if not packet_info:
        flags |= TunFlag.IFF_NO_PI
    if vnet_hdr:
        flags |= TunFlag.IFF_VNET_HDR
    if multi_queue:
        flags |= TunFlag.IFF_MULTI_QUEUE
    if napi:
        flags |= TunFlag.IFF_NAPI
    return flags


def check_name(name: str) -> bytes:
    """The bytes the kernel gets for interface name (or ``%d`` template) ``name``.

    Raises:
        ValidationError: for a name that is not text, empty, ``IFNAMSIZ`` (16) bytes or longer,
            holding ``/``, ``:``, NUL or white space, or with a ``%`` other than one ``%d``.
    """
    if not isinstance(name, str):
        raise ValidationError("name", f"expected the interface name as text, got {type(name).__name__}")
    try:
        # Names are bytes to the kernel; bytes that are not UTF-8 travel as os.fsdecode's surrogates.
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValidationError("name", f"the interface name {name!r} cannot be encoded as bytes") from None
    # A NUL would end the name early in the kernel: "tap0\0x" would silently mean "tap0".
    bad = b"/:\0"
    if not raw or len(raw) >= IFNAMSIZ or any(c in bad for c in raw) or any(chr(c).isspace() for c in raw):
        raise ValidationError(
            "name", f"interface names are 1..{IFNAMSIZ - 1} bytes without '/', ':', NUL or spaces, got {name!r}"
        )
    if raw.count(b"%") > 1 or (b"%" in raw and b"%d" not in raw):
        raise ValidationError("name", "a name template may hold one '%d' and no other '%'")
    return raw


def encode_ifreq(name: str, flags: int) -> bytearray:
    """A whole ``struct ifreq`` (40 bytes on 64-bit, padding zero) with ``ifr_name`` and the low 16 flag bits.

    Raises:
        ValidationError: for a bad name (see :func:`check_name`).
    """
    req = ifreq()
    req.ifr_name = check_name(name)
    # ifr_flags is a C short: the kernel's u16 flag word travels as its two's-complement value.
    req.ifr_flags = struct.unpack("=h", struct.pack("=H", flags & 0xFFFF))[0]
    return bytearray(bytes(req))


def decode_ifreq(buf: bytes | bytearray) -> tuple[str, TunFlag]:
    """``(ifr_name, ifr_flags)`` of a ``struct ifreq``; the name's non-UTF-8 bytes become surrogates.

    Raises:
        ValueError: for a buffer shorter than :data:`IFREQ_FLAGS_END` (18) bytes.
    """
    if len(buf) < IFREQ_FLAGS_END:
        raise ValueError(f"a struct ifreq holds at least {IFREQ_FLAGS_END} bytes, got {len(buf)}")
    name = bytes(buf[:IFNAMSIZ]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    (flags,) = struct.unpack_from("=H", buf, IFNAMSIZ)
    return name, TunFlag(flags)


def open_tun(nonblocking: bool) -> int:
    """Open ``/dev/net/tun`` with ``O_CLOEXEC`` (and ``O_NONBLOCK``); the fd is bound to no device yet.

    Raises:
        PrivilegeError: ``EACCES``/``EPERM`` on the node.
        UnsupportedError: when the tun driver or its node is missing.
        KernelError: for other errors.
    """
    mode = os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0)
    try:
        return os.open(TUN_PATH, mode)
    except OSError as exc:
        err = exc.errno or errno.EIO
        if err in (errno.EACCES, errno.EPERM):
            raise PrivilegeError(
                err,
                f"open({TUN_PATH})",
                f"{TUN_PATH} is not accessible to this user: run as root, or make the node accessible "
                "(mode 0666) and grant CAP_NET_ADMIN",
            ) from None
        if err in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise UnsupportedError(
                err,
                f"open({TUN_PATH})",
                "the tun driver is not available: load it (modprobe tun) or create the node "
                f"(mknod {TUN_PATH} c 10 200); in a container, pass the device in",
            ) from None
        raise translate_error(err, f"open({TUN_PATH})") from None


def get_iff(fd: int) -> tuple[str, TunFlag]:
    """``TUNGETIFF`` on queue ``fd``: the device name and flags as the kernel reports them for that fd.

    The flags include ``IFF_DETACH_QUEUE`` for a detached queue. ``IFF_NOFILTER`` (the same bit as
    ``IFF_NO_PI``) is set whenever no classic socket filter is attached, so the ``IFF_NO_PI`` bit
    here does not tell whether frames carry packet info: see
    :meth:`~pytun_hash.device.tap.TunTapDevice.link_info`.

    Raises:
        DeviceGoneError: ``EBADFD`` when the fd has no device (never attached, or deleted).
        KernelError: for other errors.
    """
    buf = bytearray(bytes(ifreq()))
    ioctl_ptr(fd, "TUNGETIFF", buf)
    return decode_ifreq(buf)


def kernel_features() -> TunFlag:
    """``TUNGETFEATURES`` on a fresh ``/dev/net/tun`` fd: the flags ``TUNSETIFF`` accepts on this kernel.

    Raises:
        PrivilegeError: when ``/dev/net/tun`` cannot be opened.
        UnsupportedError: when the tun driver is missing.
    """
    fd = open_tun(nonblocking=True)
    try:
        buf = bytearray(4)
        ioctl_ptr(fd, "TUNGETFEATURES", buf)
        return TunFlag(struct.unpack("=I", buf)[0])
    finally:
        os.close(fd)


def existing_tun_link(name: str, *, gone: bool = False) -> rtnl.LinkInfo:
    """The tun link ``name`` in the calling thread's network namespace (rtnetlink, no fd opened).

    Args:
        name: the exact interface name.
        gone: the caller held the device before, so an absent or foreign link means it was deleted.

    Raises:
        DeviceNotFoundError: ``ENODEV`` when there is no such link (and not ``gone``).
        DeviceGoneError: ``EBADFD`` when ``gone`` and the link is absent or no longer a tun link.
        KernelError: ``EINVAL`` for a link of another kind.
    """
    try:
        link = rtnl.get_link(name)
    except KernelError as exc:
        if exc.errno != errno.ENODEV:
            raise
        if gone:
            raise DeviceGoneError(errno.EBADFD, "TUNSETIFF", f"device {name!r} was deleted; create it again") from None
        raise DeviceNotFoundError(
            errno.ENODEV,
            "TUNSETIFF",
            f"there is no device named {name!r} in this thread's network namespace; create it with "
            "TunTapDevice.create()",
        ) from None
    if link.tun is None:
        if gone:
            raise DeviceGoneError(
                errno.EBADFD, "TUNSETIFF", f"device {name!r} was deleted and the name reused by a non-tun device"
            )
        raise KernelError(
            errno.EINVAL, "TUNSETIFF", f"{name!r} is a {link.kind or 'non-tun'} device, not a TUN/TAP device"
        )
    return link


def fd_netns_inode(fd: int) -> int:
    """Inode of the network namespace of the device behind queue ``fd`` (``TUNGETDEVNETNS``).

    Without CAP_NET_ADMIN the kernel refuses to say, and the calling thread's namespace is
    returned instead.

    Raises:
        DeviceGoneError: ``EBADFD`` when the fd has no device.
        KernelError: for other errors.
    """
    try:
        ns_fd = ioctl_int(fd, "TUNGETDEVNETNS", 0)
    except PrivilegeError:
        return thread_netns_inode()
    try:
        return os.fstat(ns_fd).st_ino
    finally:
        os.close(ns_fd)
