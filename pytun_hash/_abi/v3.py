"""UAPI of revisions v3 to v11 of the tun hashing series (Sep 2024 - Mar 2025).

``tun_vnet_hash`` shrank to 8 bytes with explicit padding; the RSS parameters moved
to ``tun_vnet_hash_rss``, which (with the table and key) follows only when RSS is set.
The flag values are swapped with respect to the RFC.
"""

from __future__ import annotations

import ctypes
import enum

from pytun_hash._abi.ioc import IocDir
from pytun_hash._abi.tun import IoctlDef


class TunVnetHashFlag(enum.IntFlag):
    """v3-v11 ``TUN_VNET_HASH_*`` flags of ``tun_vnet_hash.flags``."""

    TUN_VNET_HASH_REPORT = 0x0001
    TUN_VNET_HASH_RSS = 0x0002


# v10+: a steering program may return this to fall back to RSS/automq.
TUN_STEERINGEBPF_FALLBACK = -1

HASH_IOCTLS: tuple[IoctlDef, ...] = (
    IoctlDef("TUNGETVNETHASHCAP", IocDir.READ, 228, "struct tun_vnet_hash(v3)"),
    IoctlDef("TUNSETVNETHASH", IocDir.WRITE, 229, "struct tun_vnet_hash(v3)"),
)


class tun_vnet_hash(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct tun_vnet_hash`` (8 bytes): flags, explicit ``pad[2]``, types."""

    _fields_ = (
        ("flags", ctypes.c_uint16),
        ("pad", ctypes.c_uint8 * 2),
        ("types", ctypes.c_uint32),
    )


class tun_vnet_hash_rss(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct tun_vnet_hash_rss`` (4 bytes)."""

    _fields_ = (
        ("indirection_table_mask", ctypes.c_uint16),
        ("unclassified_queue", ctypes.c_uint16),
    )
