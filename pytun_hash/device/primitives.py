"""fd-level primitives of ``/dev/net/tun``: opening and binding fds, names, ``struct ifreq``, ``TUNSETIFF`` flags.

Everything here works on a bare fd or a name and keeps no state; :class:`~pytun_hash.device.tap.TunTapDevice`
builds devices from it, and :mod:`pytun_hash.device._ioctl` decodes a refused ``struct ifreq``
with the same :func:`decode_ifreq` that reads a granted one.
"""

from __future__ import annotations

import enum
import errno
import os
import struct
from collections.abc import Sequence

from pytun_hash._abi.tun import IFNAMSIZ, MAX_TAP_QUEUES, TunFlag, ifreq
from pytun_hash.device import rtnl
from pytun_hash.device._ioctl import describe_flags, ioctl_int, ioctl_ptr, translate_error
from pytun_hash.device.netns import run_in_netns, thread_netns_inode
from pytun_hash.errors import (
    DeviceFlagsMismatchError,
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
    "bind_existing_queue",
    "bind_queues",
    "check_id",
    "check_int",
    "check_kept_flags",
    "check_name",
    "check_queue_count",
    "decode_ifreq",
    "deleted_queue_error",
    "device_netns_fd",
    "encode_ifreq",
    "existing_tun_link",
    "fd_netns_inode",
    "get_iff",
    "identify_queue_fds",
    "kernel_features",
    "learned_flags",
    "link_in_netns",
    "open_tun",
    "request_flags",
    "set_queue",
]

TUN_PATH = "/dev/net/tun"
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


def learned_flags(data: rtnl.TunLinkData, got: int = 0) -> TunFlag:
    """The device's flags from rtnetlink's ``IFLA_TUN_*`` data, plus the NAPI bits of ``TUNGETIFF`` flags ``got``.

    ``TUNGETIFF`` alone cannot tell packet info: ``IFF_NOFILTER`` shares ``IFF_NO_PI``'s bit.
    """
    flags = data.type | TunFlag(got & (TunFlag.IFF_NAPI | TunFlag.IFF_NAPI_FRAGS))
    if not data.packet_info:
        flags |= TunFlag.IFF_NO_PI
    if data.vnet_hdr:
        flags |= TunFlag.IFF_VNET_HDR
    if data.multi_queue:
        flags |= TunFlag.IFF_MULTI_QUEUE
    return TunFlag(flags)


def check_kept_flags(name: str, requested: TunFlag, got: int, data: rtnl.TunLinkData) -> None:
    """Fail when a queue attached to device ``name`` got other flags than ``requested``.

    tun.c applies the requested vnet-header and packet-info flags only when it sets a device up
    (``tun_set_iff`` on a new device); a queue attached to a multi-queue device that already has
    queues silently inherits the device's.

    Args:
        name: the device, for the message.
        requested: the ``TUNSETIFF`` flags asked for.
        got: ``TUNGETIFF``'s flags on the new queue.
        data: the device's rtnetlink data (the only reliable packet-info bit).

    Raises:
        DeviceFlagsMismatchError: ``EINVAL`` naming each flag that differs.
    """
    actual = (got & (TunFlag.IFF_TUN | TunFlag.IFF_TAP | TunFlag.IFF_VNET_HDR | TunFlag.IFF_MULTI_QUEUE)) | (
        0 if data.packet_info else TunFlag.IFF_NO_PI
    )
    compared = TunFlag.IFF_TUN | TunFlag.IFF_TAP | TunFlag.IFF_VNET_HDR | TunFlag.IFF_MULTI_QUEUE | TunFlag.IFF_NO_PI
    differing = (requested ^ actual) & compared
    if not differing:
        return
    parts = []
    for flag in TunFlag:
        if flag & differing and flag is not TunFlag.IFF_NOFILTER:
            state = "requested but the device lacks it" if requested & flag else "the device has it"
            parts.append(f"{flag.name}: {state}")
    raise DeviceFlagsMismatchError(
        errno.EINVAL,
        "TUNSETIFF",
        f"device {name!r} already has queues and kept its own flags ({describe_flags(actual)}); "
        "open it with those flags",
        detail="; ".join(parts),
    )


def check_int(field: str, value: object) -> None:
    """Raise ValidationError (``field``) unless ``value`` is an int (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected an integer, got {value!r}")


def check_id(field: str, value: object) -> None:
    """Raise ValidationError (``field``) unless ``value`` is a uid/gid >= 0 or None (not set)."""
    if value is None:
        return
    check_int(field, value)
    assert isinstance(value, int)
    if value < 0:
        raise ValidationError(field, f"must be >= 0, got {value}")


def check_queue_count(queues: int, multi_queue: bool) -> None:
    """Raise ValidationError (``queues``) unless ``1 <= queues <= MAX_TAP_QUEUES``, and 1 without multi-queue."""
    if not 1 <= queues <= MAX_TAP_QUEUES:
        raise ValidationError("queues", f"must be 1..{MAX_TAP_QUEUES}, got {queues}")
    if queues > 1 and not multi_queue:
        raise ValidationError("queues", "more than one queue needs multi_queue=True (IFF_MULTI_QUEUE)")


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


def bind_queues(
    name: str, flags: TunFlag, count: int, *, nonblocking: bool, exclusive: bool = False
) -> tuple[str, list[int]]:
    """Open ``count`` fds of ``/dev/net/tun`` and bind each to device ``name`` (``TUNSETIFF``).

    The first creates the device (filling in a ``%d`` template) or attaches to an existing one;
    the others attach to it. The kernel numbers them in this order, after any queues already there.

    Args:
        name: interface name or template.
        flags: the ``TUNSETIFF`` flags (:func:`request_flags`).
        count: how many fds, >= 1.
        nonblocking: open them with ``O_NONBLOCK``.
        exclusive: ``IFF_TUN_EXCL`` on the first: fail when ``name`` exists.

    Returns:
        The device's name as the kernel filled it in, and the fds (``O_CLOEXEC``), queue order.
        On failure every fd opened here is closed.

    Raises:
        DeviceFlagsMismatchError: ``EINVAL`` when the device exists with another type or multi-queue flag.
        BusyError: ``EBUSY`` when a single-queue device's queue is held elsewhere, or ``exclusive``
            and the name exists.
        PrivilegeError, UnsupportedError: as :func:`open_tun`, or without CAP_NET_ADMIN.
        KernelError: ``E2BIG`` beyond :data:`MAX_TAP_QUEUES`, other errors.
    """
    fds: list[int] = []
    try:
        fds.append(open_tun(nonblocking))
        buf = encode_ifreq(name, flags | (TunFlag.IFF_TUN_EXCL if exclusive else 0))
        ioctl_ptr(fds[0], "TUNSETIFF", buf)
        actual, _ = decode_ifreq(buf)
        for _ in range(count - 1):
            fds.append(open_tun(nonblocking))
            ioctl_ptr(fds[-1], "TUNSETIFF", encode_ifreq(actual, flags))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return actual, fds


def bind_existing_queue(name: str, flags: TunFlag, *, nonblocking: bool) -> int:
    """One more fd bound to the existing device ``name`` in the calling thread's namespace; never creates one.

    ``TUNSETIFF`` would create a device of that name if the old one had gone, so the link is
    looked up before and after, and a new ifindex means the device was deleted meanwhile.

    Raises:
        DeviceGoneError: ``EBADFD`` when the device is gone (or was replaced meanwhile).
        BusyError, DeviceFlagsMismatchError, PrivilegeError, KernelError: as :func:`bind_queues`.
    """
    before = existing_tun_link(name, gone=True)
    fd = open_tun(nonblocking)
    try:
        ioctl_ptr(fd, "TUNSETIFF", encode_ifreq(name, flags))
        if rtnl.get_link(name).index != before.index:
            raise DeviceGoneError(errno.EBADFD, "TUNSETIFF", f"device {name!r} was deleted meanwhile; create it again")
    except BaseException:
        os.close(fd)
        raise
    return fd


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


def identify_queue_fds(fds: Sequence[int]) -> tuple[str, list[TunFlag]]:
    """The device that queue fds ``fds`` are bound to, and each fd's ``TUNGETIFF`` flags, in order.

    Raises:
        ValidationError: for no fds, a value that is not an fd number, the same fd twice, or fds
            of different devices (by name, or by network namespace).
        DeviceGoneError: ``EBADFD`` for an fd with no live device.
        KernelError: ``EBADF`` for a closed fd, ``ENOTTY`` (UnsupportedError) for a non-tun fd.
    """
    if not fds:
        raise ValidationError("fds", "give at least one queue fd")
    for i, fd in enumerate(fds):
        if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
            raise ValidationError(f"fds[{i}]", f"expected a file descriptor number >= 0, got {fd!r}")
    if len(set(fds)) != len(fds):
        raise ValidationError("fds", "the same fd was given twice")
    infos = [get_iff(fd) for fd in fds]
    names = {n for n, _ in infos}
    namespaces = {fd_netns_inode(fd) for fd in fds}
    if len(names) != 1 or len(namespaces) > 1:
        raise ValidationError("fds", f"the fds belong to different devices: {sorted(names)}")
    return infos[0][0], [flags for _name, flags in infos]


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


def set_queue(fd: int, name: str, flag: TunFlag) -> None:
    """``TUNSETQUEUE`` on queue ``fd`` of device ``name``: ``IFF_ATTACH_QUEUE`` or ``IFF_DETACH_QUEUE``.

    tun.c answers ``EINVAL`` both for a queue already in that state and for a deleted device's
    queue; ``TUNGETIFF``, which answers ``EBADFD`` for the latter, tells them apart.

    Raises:
        KernelError: ``EINVAL`` when the queue is in that state already or the device is single-queue.
        DeviceGoneError: ``EBADFD`` when the device was deleted.
        PrivilegeError: ``EPERM`` re-attaching without CAP_NET_ADMIN.
    """
    try:
        ioctl_ptr(fd, "TUNSETQUEUE", encode_ifreq(name, flag))
    except KernelError as exc:
        if exc.errno != errno.EINVAL:
            raise
        try:
            get_iff(fd)
        except DeviceGoneError:
            raise deleted_queue_error(name) from None
        except KernelError:
            pass  # the original error says more
        raise


def deleted_queue_error(name: str) -> DeviceGoneError:
    """What ``TUNSETQUEUE`` on a queue of the deleted device ``name`` means (tun.c answers ``EINVAL``)."""
    return DeviceGoneError(
        errno.EBADFD,
        "TUNSETQUEUE",
        f"device {name!r} was deleted (the kernel answers EINVAL for its queues); create it again",
    )


def device_netns_fd(fd: int) -> int | None:
    """``TUNGETDEVNETNS``: an fd (``O_CLOEXEC``) of the network namespace of the device behind ``fd``.

    Returns None without CAP_NET_ADMIN, which the kernel requires to say.

    Raises:
        DeviceGoneError: ``EBADFD`` when the fd has no device.
        KernelError: for other errors.
    """
    try:
        return ioctl_int(fd, "TUNGETDEVNETNS", 0)
    except PrivilegeError:
        return None


def link_in_netns(name: str, ns_fd: int | None) -> rtnl.LinkInfo:
    """Link ``name`` as rtnetlink reports it in the namespace open at ``ns_fd`` (closed here), or here for None.

    Raises:
        KernelError: ``ENODEV`` when there is no such link; other rtnetlink or namespace errors.
    """
    if ns_fd is None:
        return rtnl.get_link(name)
    try:
        return run_in_netns(ns_fd, rtnl.get_link, name)
    finally:
        os.close(ns_fd)


def fd_netns_inode(fd: int) -> int:
    """Inode of the network namespace of the device behind queue ``fd`` (``TUNGETDEVNETNS``).

    Without CAP_NET_ADMIN the kernel refuses to say, and the calling thread's namespace is
    returned instead.

    Raises:
        DeviceGoneError: ``EBADFD`` when the fd has no device.
        KernelError: for other errors.
    """
    ns_fd = device_netns_fd(fd)
    if ns_fd is None:
        return thread_netns_inode()
    try:
        return os.fstat(ns_fd).st_ino
    finally:
        os.close(ns_fd)
