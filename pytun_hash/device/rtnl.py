"""A small rtnetlink client on the standard library: links, addresses, neighbours, tun link data.

Why not ``/sys/class/net``: sysfs shows the network namespace it was *mounted* in, not the
namespace of the calling thread, so a thread that entered another namespace reads the wrong
device (or none). A netlink socket belongs to the namespace of the thread that created it.

Every function here opens its own socket in the calling thread's namespace unless a
:class:`RtnlSocket` is passed; errors are :class:`~pytun_hash.errors.KernelError` subclasses
named after the rtnetlink request (``"RTM_GETLINK"`` ...).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from types import TracebackType

import attrs

from pytun_hash._abi.tun import IFNAMSIZ, TunFlag
from pytun_hash.errors import DecodeError, DeviceNotFoundError, KernelError, ValidationError, kernel_error

__all__ = [
    "LinkInfo",
    "RtnlSocket",
    "TunLinkData",
    "add_address",
    "add_neighbour",
    "add_vlan",
    "delete_link",
    "get_link",
    "list_links",
    "set_link_mtu",
    "set_link_up",
    "thread_netns_inode",
    "tun_flags_of",
]

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/neighbour.h (kernel names).
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWNEIGH = 28
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_NUM_TX_QUEUES = 31
IFLA_NUM_RX_QUEUES = 32
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_VLAN_ID = 1
IFLA_VLAN_PROTOCOL = 5
IFLA_TUN_OWNER = 1
IFLA_TUN_GROUP = 2
IFLA_TUN_TYPE = 3
IFLA_TUN_PI = 4
IFLA_TUN_VNET_HDR = 5
IFLA_TUN_PERSIST = 6
IFLA_TUN_MULTI_QUEUE = 7
IFLA_TUN_NUM_QUEUES = 8
IFLA_TUN_NUM_DISABLED_QUEUES = 9
IFA_ADDRESS = 1
IFA_LOCAL = 2
NDA_DST = 1
NDA_LLADDR = 2
NUD_PERMANENT = 0x80
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
IFF_UP = 0x1
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

_NLMSGHDR = struct.Struct("=IHHII")
_NLMSGERR = struct.Struct("=i")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTATTR = struct.Struct("=HH")
_RECV_SIZE = 1 << 16
_SYSFS_MAX = 4096


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (_align4(length) - length)


def _attr_str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode("utf-8", "surrogateescape") + b"\0")


def _parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    """Parse a run of ``struct rtattr``; the last occurrence of a type wins."""
    view = memoryview(data)
    found: dict[int, bytes] = {}
    pos = 0
    while pos + _RTATTR.size <= len(view):
        length, kind = _RTATTR.unpack_from(view, pos)
        if length < _RTATTR.size or pos + length > len(view):
            break
        found[kind & NLA_TYPE_MASK] = bytes(view[pos + _RTATTR.size : pos + length])
        pos += _align4(length)
    return found


def _u8(raw: bytes | None) -> int | None:
    return raw[0] if raw else None


def _u32(raw: bytes | None) -> int | None:
    return int(struct.unpack_from("=I", raw)[0]) if raw and len(raw) >= 4 else None


def _ifname(name: str) -> str:
    rule = f"interface name must be 1..{IFNAMSIZ - 1} bytes of UTF-8 text without '/', NUL or spaces, got {name!r}"
    if not isinstance(name, str):
        raise ValidationError("name", rule)
    try:
        # Names are bytes to the kernel; bytes that are not UTF-8 travel as os.fsdecode's surrogates.
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValidationError("name", rule) from None
    # A NUL ends the name in the kernel: "lo\0x" would silently name "lo".
    if not raw or len(raw) >= IFNAMSIZ or "/" in name or "\0" in name or any(c.isspace() for c in name):
        raise ValidationError("name", rule)
    return name


@attrs.frozen
class TunLinkData:
    """What rtnetlink reports about a tun device (``IFLA_INFO_DATA`` of kind ``"tun"``).

    Attributes:
        type: ``TunFlag.IFF_TUN`` or ``TunFlag.IFF_TAP``.
        packet_info: True when frames carry the 4-byte ``struct tun_pi`` (no ``IFF_NO_PI``).
        vnet_hdr: ``IFF_VNET_HDR``.
        persist: ``IFF_PERSIST``.
        multi_queue: ``IFF_MULTI_QUEUE``.
        owner: owning uid, or None when unset.
        group: owning gid, or None when unset.
        numqueues: attached queues (multi-queue devices only; None otherwise).
        numdisabled: queues detached with ``TUNSETQUEUE`` (multi-queue devices only).
    """

    type: TunFlag
    packet_info: bool
    vnet_hdr: bool
    persist: bool
    multi_queue: bool
    owner: int | None = None
    group: int | None = None
    numqueues: int | None = None
    numdisabled: int | None = None

    @property
    def flags(self) -> TunFlag:
        """The device flags these fields imply, as ``TUNSETIFF`` spells them."""
        flags = self.type
        if not self.packet_info:
            flags |= TunFlag.IFF_NO_PI
        if self.vnet_hdr:
            flags |= TunFlag.IFF_VNET_HDR
        if self.persist:
            flags |= TunFlag.IFF_PERSIST
        if self.multi_queue:
            flags |= TunFlag.IFF_MULTI_QUEUE
        return flags


@attrs.frozen
class LinkInfo:
    """One network interface as ``RTM_GETLINK`` reports it.

    Attributes:
        index: ifindex in the namespace the query ran in.
        name: interface name.
        flags: ``IFF_*`` interface flags (``IFF_UP`` = 1 ...), not tun flags.
        mtu: MTU in bytes.
        address: link-layer address (6 bytes for a TAP, empty for a TUN).
        kind: ``IFLA_INFO_KIND`` (``"tun"``, ``"vlan"`` ...), None for devices without one.
        num_tx_queues: ``IFLA_NUM_TX_QUEUES`` (256 for multi-queue tun devices).
        num_rx_queues: ``IFLA_NUM_RX_QUEUES``.
        tun: tun data when ``kind == "tun"``, else None.
    """

    index: int
    name: str
    flags: int
    mtu: int | None
    address: bytes
    kind: str | None
    num_tx_queues: int | None
    num_rx_queues: int | None
    tun: TunLinkData | None

    @property
    def up(self) -> bool:
        """Whether ``IFF_UP`` is set."""
        return bool(self.flags & IFF_UP)


def _parse_link(payload: bytes | memoryview) -> LinkInfo:
    """Decode an ``RTM_NEWLINK`` payload (``struct ifinfomsg`` and attributes).

    Raises:
        DecodeError: when the payload is shorter than ``struct ifinfomsg``.
    """
    if len(payload) < _IFINFOMSG.size:
        raise DecodeError("ifinfomsg", f"an RTM_NEWLINK payload needs {_IFINFOMSG.size} bytes, got {len(payload)}")
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
    top = _parse_attrs(memoryview(payload)[_IFINFOMSG.size :])
    kind: str | None = None
    tun: TunLinkData | None = None
    linkinfo = top.get(IFLA_LINKINFO)
    if linkinfo is not None:
        info = _parse_attrs(linkinfo)
        raw_kind = info.get(IFLA_INFO_KIND)
        if raw_kind is not None:
            kind = raw_kind.rstrip(b"\0").decode("utf-8", "surrogateescape")
        data = info.get(IFLA_INFO_DATA)
        if kind == "tun" and data is not None:
            t = _parse_attrs(data)
            tun = TunLinkData(
                type=TunFlag((_u8(t.get(IFLA_TUN_TYPE)) or 0) & 0x3),
                packet_info=bool(_u8(t.get(IFLA_TUN_PI))),
                vnet_hdr=bool(_u8(t.get(IFLA_TUN_VNET_HDR))),
                persist=bool(_u8(t.get(IFLA_TUN_PERSIST))),
                multi_queue=bool(_u8(t.get(IFLA_TUN_MULTI_QUEUE))),
                owner=_u32(t.get(IFLA_TUN_OWNER)),
                group=_u32(t.get(IFLA_TUN_GROUP)),
                numqueues=_u32(t.get(IFLA_TUN_NUM_QUEUES)),
                numdisabled=_u32(t.get(IFLA_TUN_NUM_DISABLED_QUEUES)),
            )
    return LinkInfo(
        index=index,
        name=(top.get(IFLA_IFNAME) or b"").rstrip(b"\0").decode("utf-8", "surrogateescape"),
        flags=flags,
        mtu=_u32(top.get(IFLA_MTU)),
        address=top.get(IFLA_ADDRESS) or b"",
        kind=kind,
        num_tx_queues=_u32(top.get(IFLA_NUM_TX_QUEUES)),
        num_rx_queues=_u32(top.get(IFLA_NUM_RX_QUEUES)),
        tun=tun,
    )


class RtnlSocket:
    """A ``NETLINK_ROUTE`` socket in the calling thread's network namespace (context manager).

    The socket keeps that namespace for its whole life, whatever the thread does later.

    Raises:
        KernelError: when the socket cannot be created.
    """

    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        except OSError as exc:
            raise kernel_error(exc.errno or errno.EIO, "socket(AF_NETLINK)") from None
        try:
            self._sock.bind((0, 0))
        except OSError as exc:
            self._sock.close()
            raise kernel_error(exc.errno or errno.EIO, "bind(AF_NETLINK)") from None
        self._seq = 0

    def __enter__(self) -> RtnlSocket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    def request(self, msg_type: int, flags: int, payload: bytes, *, name: str, hint: str | None = None) -> list[bytes]:
        """Send one request and collect the payloads of its answers (all parts of a dump).

        Args:
            msg_type: ``RTM_*`` message type.
            flags: ``NLM_F_*`` flags besides ``NLM_F_REQUEST`` (add ``NLM_F_ACK`` for writes).
            payload: the family header and attributes.
            name: request name used in errors (``"RTM_NEWADDR"``).
            hint: the sentence for errors; a generic one when None.

        Returns:
            The payloads of the data messages (empty for an acknowledged write).

        Raises:
            KernelError: with the errno the kernel answered (``ENODEV`` for an unknown link ...).
        """
        self._seq += 1
        seq = self._seq
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), msg_type, NLM_F_REQUEST | flags, seq, 0)
        try:
            self._sock.send(header + payload)
        except OSError as exc:
            raise kernel_error(exc.errno or errno.EIO, name, hint) from None
        dump = (flags & NLM_F_DUMP) == NLM_F_DUMP
        wants_ack = bool(flags & NLM_F_ACK)
        answers: list[bytes] = []
        while True:
            try:
                data = self._sock.recv(_RECV_SIZE)
            except OSError as exc:
                raise kernel_error(exc.errno or errno.EIO, name, hint) from None
            for mtype, mflags, mseq, body in _iter_messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    if len(body) < _NLMSGERR.size:
                        raise kernel_error(errno.EIO, name, "the kernel sent a truncated netlink error message")
                    (code,) = _NLMSGERR.unpack_from(body)
                    if code:
                        raise kernel_error(-code, name, hint)
                    return answers
                if mtype == NLMSG_DONE:
                    return answers
                answers.append(body)
                if not dump and not wants_ack and not mflags & NLM_F_MULTI:
                    return answers


def _iter_messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, mtype, mflags, seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size:
            return
        yield mtype, mflags, seq, data[pos + _NLMSGHDR.size : pos + length]
        pos += _align4(length)


class _Borrowed:
    """Use the caller's socket, or open (and close) a private one."""

    def __init__(self, sock: RtnlSocket | None) -> None:
        self._given = sock
        self._own: RtnlSocket | None = None

    def __enter__(self) -> RtnlSocket:
        if self._given is not None:
            return self._given
        self._own = RtnlSocket()
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


def get_link(name: str | None = None, *, index: int | None = None, sock: RtnlSocket | None = None) -> LinkInfo:
    """Return the link called ``name`` (or with ``index``) in the calling thread's namespace.

    Raises:
        KernelError: ``ENODEV`` when there is no such link.
        ValidationError: when neither or both of ``name`` and ``index`` are given.
    """
    if (name is None) == (index is None):
        raise ValidationError("name", "give exactly one of name and index")
    if name is not None:
        payload = _ifinfo() + _attr_str(IFLA_IFNAME, _ifname(name))
        what = f"no link named {name!r} in this network namespace"
    else:
        payload = _ifinfo(index or 0)
        what = f"no link with index {index} in this network namespace"
    with _Borrowed(sock) as s:
        answers = s.request(RTM_GETLINK, 0, payload, name="RTM_GETLINK", hint=what)
    if not answers:
        raise DeviceNotFoundError(errno.ENODEV, "RTM_GETLINK", what)
    return _parse_link(answers[0])


def list_links(*, kind: str | None = None, sock: RtnlSocket | None = None) -> list[LinkInfo]:
    """Return every link of the calling thread's namespace (only those of ``kind`` when given).

    Raises:
        KernelError: when the dump fails.
    """
    with _Borrowed(sock) as s:
        answers = s.request(RTM_GETLINK, NLM_F_DUMP, _ifinfo(), name="RTM_GETLINK")
    links = [_parse_link(a) for a in answers]
    return [link for link in links if kind is None or link.kind == kind]


def _index_of(name: str, sock: RtnlSocket) -> int:
    return get_link(name, sock=sock).index


def set_link_up(name: str, up: bool = True, *, sock: RtnlSocket | None = None) -> None:
    """Set ``IFF_UP`` on link ``name`` (or clear it when ``up`` is False).

    Raises:
        KernelError: ``ENODEV`` for an unknown link, ``EPERM`` without CAP_NET_ADMIN.
    """
    with _Borrowed(sock) as s:
        payload = _ifinfo(_index_of(name, s), IFF_UP if up else 0, IFF_UP)
        s.request(RTM_NEWLINK, NLM_F_ACK, payload, name="RTM_NEWLINK")


def set_link_mtu(name: str, mtu: int, *, sock: RtnlSocket | None = None) -> None:
    """Set the MTU of link ``name`` in bytes.

    Raises:
        KernelError: ``EINVAL`` for an MTU outside the device's range, ``ENODEV`` for an unknown link.
    """
    with _Borrowed(sock) as s:
        payload = _ifinfo(_index_of(name, s)) + _attr(IFLA_MTU, struct.pack("=I", mtu))
        s.request(RTM_NEWLINK, NLM_F_ACK, payload, name="RTM_NEWLINK", hint=f"MTU {mtu} is outside the range of {name}")


def delete_link(name: str, *, sock: RtnlSocket | None = None) -> None:
    """Delete link ``name`` (``ip link del``). Queue fds of a deleted tun device then answer ``EBADFD``.

    Raises:
        KernelError: ``ENODEV`` for an unknown link, ``EPERM`` without CAP_NET_ADMIN.
    """
    with _Borrowed(sock) as s:
        payload = _ifinfo(_index_of(name, s))
        s.request(RTM_DELLINK, NLM_F_ACK, payload, name="RTM_DELLINK")


def add_vlan(
    parent: str, name: str, vlan_id: int, *, protocol: int = ETH_P_8021Q, sock: RtnlSocket | None = None
) -> None:
    """Create VLAN device ``name`` with tag ``vlan_id`` on ``parent`` (``ip link add ... type vlan``).

    Args:
        parent: the lower device (a TAP, for tagged frames on its queues).
        name: the new device's name.
        vlan_id: 1..4094.
        protocol: ``ETH_P_8021Q`` (0x8100) or ``ETH_P_8021AD`` (0x88a8).

    Raises:
        ValidationError: for a VLAN id or protocol out of range.
        KernelError: ``EEXIST`` when ``name`` exists, ``ENODEV`` for an unknown parent,
            ``EOPNOTSUPP`` when the kernel has no VLAN support.
    """
    if not 1 <= vlan_id <= 4094:
        raise ValidationError("vlan_id", f"must be 1..4094, got {vlan_id}")
    if protocol not in (ETH_P_8021Q, ETH_P_8021AD):
        raise ValidationError("protocol", f"must be 0x8100 or 0x88a8, got {protocol:#x}")
    with _Borrowed(sock) as s:
        data = _attr(IFLA_VLAN_ID, struct.pack("=H", vlan_id)) + _attr(IFLA_VLAN_PROTOCOL, struct.pack(">H", protocol))
        info = _attr_str(IFLA_INFO_KIND, "vlan") + _attr(IFLA_INFO_DATA | NLA_F_NESTED, data)
        payload = (
            _ifinfo()
            + _attr(IFLA_LINK, struct.pack("=I", _index_of(parent, s)))
            + _attr_str(IFLA_IFNAME, _ifname(name))
            + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        )
        try:
            s.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, payload, name="RTM_NEWLINK")
        except KernelError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            raise KernelError(
                exc.errno,
                "RTM_NEWLINK",
                "this kernel has no VLAN devices (CONFIG_VLAN_8021Q / module 8021q); send tagged frames "
                "through an AF_PACKET socket on the parent instead",
            ) from None


def add_address(name: str, cidr: str, *, sock: RtnlSocket | None = None) -> None:
    """Add address ``cidr`` (``"10.77.0.1/24"``, ``"fd00::1/64"``) to link ``name``; an existing one is kept.

    Raises:
        ValidationError: for a malformed ``cidr``.
        KernelError: ``ENODEV`` for an unknown link.
    """
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise ValidationError("cidr", str(exc)) from None
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    raw = iface.ip.packed
    with _Borrowed(sock) as s:
        header = _IFADDRMSG.pack(family, iface.network.prefixlen, 0, 0, _index_of(name, s))
        payload = header + _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        s.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, payload, name="RTM_NEWADDR")


def add_neighbour(name: str, ip: str, mac: str, *, sock: RtnlSocket | None = None) -> None:
    """Add or replace a permanent neighbour entry ``ip`` -> ``mac`` on link ``name`` (no ARP/ND then).

    Raises:
        ValidationError: for a malformed ``ip`` or ``mac``.
        KernelError: ``ENODEV`` for an unknown link.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise ValidationError("ip", str(exc)) from None
    try:
        lladdr = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    except ValueError:
        lladdr = b""
    if len(lladdr) != 6:
        raise ValidationError("mac", f"expected six hex octets like 02:00:00:00:00:02, got {mac!r}")
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    with _Borrowed(sock) as s:
        header = _NDMSG.pack(family, _index_of(name, s), NUD_PERMANENT, 0, 0)
        payload = header + _attr(NDA_DST, addr.packed) + _attr(NDA_LLADDR, lladdr)
        s.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, payload, name="RTM_NEWNEIGH")


def thread_netns_inode() -> int:
    """Inode number of the calling thread's network namespace (``/proc/thread-self/ns/net``)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


_TUN_FLAG_MASK = (
    TunFlag.IFF_TUN
    | TunFlag.IFF_TAP
    | TunFlag.IFF_NO_PI
    | TunFlag.IFF_VNET_HDR
    | TunFlag.IFF_PERSIST
    | TunFlag.IFF_MULTI_QUEUE
)


def _read_sysfs(name: str, leaf: str) -> str | None:
    try:
        with open(f"/sys/class/net/{name}/{leaf}", encoding="ascii") as f:
            return f.read(_SYSFS_MAX).strip()  # sysfs attributes are at most a page
    except (OSError, UnicodeDecodeError):
        return None


def _sysfs_tun_flags(link: LinkInfo, derived: TunFlag) -> TunFlag | None:
    """``/sys/class/net/<if>/tun_flags`` if that file describes *this* link, else None.

    sysfs may belong to another namespace; it is trusted only when ifindex, MAC address and
    every flag netlink also reports agree.
    """
    raw_flags = _read_sysfs(link.name, "tun_flags")
    raw_index = _read_sysfs(link.name, "ifindex")
    raw_addr = _read_sysfs(link.name, "address")
    if raw_flags is None or raw_index is None or raw_addr is None:
        return None
    try:
        flags = int(raw_flags, 16)
        index = int(raw_index)
        addr = bytes.fromhex(raw_addr.replace(":", ""))
    except ValueError:
        return None
    if index != link.index or addr != link.address or (flags & _TUN_FLAG_MASK) != (derived & _TUN_FLAG_MASK):
        return None
    return TunFlag(flags)


def tun_flags_of(name: str, *, sock: RtnlSocket | None = None) -> TunFlag:
    """The flags of tun device ``name`` in the calling thread's namespace.

    Reads ``/sys/class/net/<name>/tun_flags`` when sysfs shows this very device (it then
    includes ``IFF_NAPI``/``IFF_NAPI_FRAGS``); otherwise rebuilds the flags from rtnetlink
    (type, ``IFF_NO_PI``, ``IFF_VNET_HDR``, ``IFF_PERSIST``, ``IFF_MULTI_QUEUE``).

    Raises:
        KernelError: ``ENODEV`` when there is no such link; ``EINVAL`` when it is not a tun device.
    """
    link = get_link(name, sock=sock)
    if link.tun is None:
        raise KernelError(
            errno.EINVAL, "RTM_GETLINK", f"{name!r} is a {link.kind or 'non-tun'} device, not a TUN/TAP device"
        )
    derived = link.tun.flags
    from_sysfs = _sysfs_tun_flags(link, derived)
    return derived if from_sysfs is None else from_sysfs
