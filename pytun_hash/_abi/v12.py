"""UAPI of revision v12 of the tun hashing series (30 May 2025).

The single setter was split in three; the flags word is gone (the ioctl chosen says
what is enabled). The setters are encoded ``_IOR`` although they read from user space,
like ``TUNSETSTEERINGEBPF``.
"""

from __future__ import annotations

import ctypes

from pytun_hash._abi.ioc import IocDir
from pytun_hash._abi.tun import IoctlDef

HASH_IOCTLS: tuple[IoctlDef, ...] = (
    IoctlDef("TUNGETVNETHASHTYPES", IocDir.READ, 228, "__u32"),
    IoctlDef("TUNSETVNETREPORTINGAUTOMQ", IocDir.READ, 229, "__u32"),
    IoctlDef("TUNSETVNETREPORTINGRSS", IocDir.READ, 230, "struct tun_vnet_rss"),
    IoctlDef("TUNSETVNETRSS", IocDir.READ, 231, "struct tun_vnet_rss"),
)


class tun_vnet_rss(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct tun_vnet_rss`` (8 bytes, no padding)."""

    _fields_ = (
        ("hash_types", ctypes.c_uint32),
        ("indirection_table_mask", ctypes.c_uint16),
        ("unclassified_queue", ctypes.c_uint16),
    )
