"""``linux/if_tun.h`` as data: ioctl table, interface flags, offload flags, ``ifreq``.

Names are the kernel's. The table is in numeric order, as in the header; each entry
records the ``_IOC`` direction and the C type whose size the macro encodes, so the
request number can be computed for any architecture (see :mod:`pytun_hash._abi.ioc`).
"""

from __future__ import annotations

import ctypes
import enum

import attrs

from pytun_hash._abi.ioc import IocDir, IocLayout
from pytun_hash.errors import ValidationError

TUN_IOC_TYPE = ord("T")
IFNAMSIZ = 16
#: tun.c ``MAX_TAP_QUEUES``: ``TUNSETIFF`` answers ``E2BIG`` beyond it.
MAX_TAP_QUEUES = 256


@attrs.frozen
class IoctlDef:
    """One ioctl macro: ``_IOC(direction, type, nr, sizeof(ctype))``.

    ``ctype`` is a C type name; its size may depend on the architecture's pointer size.
    """

    name: str
    direction: IocDir
    nr: int
    ctype: str
    type_: int = TUN_IOC_TYPE

    def request(self, layout: IocLayout) -> int:
        """The request number for ``layout``."""
        return layout.encode(self.direction, self.type_, self.nr, ctype_size(self.ctype, layout))


def ctype_size(ctype: str, layout: IocLayout) -> int:
    """sizeof(ctype) on an architecture with ``layout``'s pointer size, in bytes.

    Raises:
        ValidationError: (a ValueError) for a C type this table does not know.
    """
    sizes = {
        "": 0,
        "int": 4,
        "unsigned int": 4,
        "__u32": 4,
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        "struct sock_fprog": 2 * layout.pointer_size,
        # RFC and v3-v11 / v12 hash structs: fixed sizes, no pointers.
        "struct tun_vnet_hash(v3)": 8,
        "struct tun_vnet_rss": 8,
    }
    try:
        return sizes[ctype]
    except KeyError:
        raise ValidationError("ctype", f"no size known for C type {ctype!r}") from None


_W, _R, _N = IocDir.WRITE, IocDir.READ, IocDir.NONE

TUN_IOCTLS: tuple[IoctlDef, ...] = (
    IoctlDef("TUNSETNOCSUM", _W, 200, "int"),
    IoctlDef("TUNSETDEBUG", _W, 201, "int"),
    IoctlDef("TUNSETIFF", _W, 202, "int"),
    IoctlDef("TUNSETPERSIST", _W, 203, "int"),
    IoctlDef("TUNSETOWNER", _W, 204, "int"),
    IoctlDef("TUNSETLINK", _W, 205, "int"),
    IoctlDef("TUNSETGROUP", _W, 206, "int"),
    IoctlDef("TUNGETFEATURES", _R, 207, "unsigned int"),
    IoctlDef("TUNSETOFFLOAD", _W, 208, "unsigned int"),
    IoctlDef("TUNSETTXFILTER", _W, 209, "unsigned int"),
    IoctlDef("TUNGETIFF", _R, 210, "unsigned int"),
    IoctlDef("TUNGETSNDBUF", _R, 211, "int"),
    IoctlDef("TUNSETSNDBUF", _W, 212, "int"),
    IoctlDef("TUNATTACHFILTER", _W, 213, "struct sock_fprog"),
    IoctlDef("TUNDETACHFILTER", _W, 214, "struct sock_fprog"),
    IoctlDef("TUNGETVNETHDRSZ", _R, 215, "int"),
    IoctlDef("TUNSETVNETHDRSZ", _W, 216, "int"),
    IoctlDef("TUNSETQUEUE", _W, 217, "int"),
    IoctlDef("TUNSETIFINDEX", _W, 218, "unsigned int"),
    IoctlDef("TUNGETFILTER", _R, 219, "struct sock_fprog"),
    IoctlDef("TUNSETVNETLE", _W, 220, "int"),
    IoctlDef("TUNGETVNETLE", _R, 221, "int"),
    IoctlDef("TUNSETVNETBE", _W, 222, "int"),
    IoctlDef("TUNGETVNETBE", _R, 223, "int"),
    # Encoded _IOR although they set: the argument is a pointer to an int fd.
    IoctlDef("TUNSETSTEERINGEBPF", _R, 224, "int"),
    IoctlDef("TUNSETFILTEREBPF", _R, 225, "int"),
    IoctlDef("TUNSETCARRIER", _W, 226, "int"),
    IoctlDef("TUNGETDEVNETNS", _N, 227, ""),
)


class TunFlag(enum.IntFlag):
    """``IFF_*`` flags of ``struct ifreq.ifr_flags`` as tun uses them (``linux/if_tun.h``)."""

    IFF_TUN = 0x0001
    IFF_TAP = 0x0002
    IFF_NAPI = 0x0010
    IFF_NAPI_FRAGS = 0x0020
    IFF_NO_CARRIER = 0x0040
    IFF_MULTI_QUEUE = 0x0100
    IFF_ATTACH_QUEUE = 0x0200
    IFF_DETACH_QUEUE = 0x0400
    IFF_PERSIST = 0x0800
    IFF_NO_PI = 0x1000
    IFF_ONE_QUEUE = 0x2000
    IFF_VNET_HDR = 0x4000
    IFF_TUN_EXCL = 0x8000
    # Same bit as IFF_NO_PI: TUNGETIFF reports it for devices without packet info.
    IFF_NOFILTER = 0x1000


class TunOffload(enum.IntFlag):
    """``TUN_F_*`` offload bits of ``TUNSETOFFLOAD``."""

    TUN_F_CSUM = 0x01
    TUN_F_TSO4 = 0x02
    TUN_F_TSO6 = 0x04
    TUN_F_TSO_ECN = 0x08
    TUN_F_UFO = 0x10
    TUN_F_USO4 = 0x20
    TUN_F_USO6 = 0x40
    TUN_F_UDP_TUNNEL_GSO = 0x080
    TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100


TUN_PKT_STRIP = 0x0001
# struct tun_pi { __u16 flags; __be16 proto; }
TUN_PI_SIZE = 4


_PTR = ctypes.sizeof(ctypes.c_void_p)
# The ifr_ifru union is as large as struct ifmap (two unsigned longs, a short, three
# chars, rounded to long alignment) or struct sockaddr (16), whichever is larger.
IFR_IFRU_SIZE = max(16, (2 * _PTR + 5 + _PTR - 1) // _PTR * _PTR)


class ifreq(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct ifreq`` as tun uses it: name, then ``ifr_flags`` at offset 16, padded to the union size."""

    _fields_ = (
        ("ifr_name", ctypes.c_char * IFNAMSIZ),
        ("ifr_flags", ctypes.c_short),
        ("_ifr_pad", ctypes.c_ubyte * (IFR_IFRU_SIZE - 2)),
    )
