"""UAPI of the RFC "tun: Introduce virtio-net hashing feature" (8 Oct 2023), exact.

Both structures have *hidden* padding (2 bytes in ``tun_vnet_hash_cap``, 3 in
``tun_vnet_hash``); ctypes reproduces it through natural alignment and always
zero-fills it.
"""

from __future__ import annotations

import ctypes
import enum

from pytun_hash._abi.ioc import IocDir
from pytun_hash._abi.tun import IoctlDef


class TunVnetHashFlag(enum.IntFlag):
    """RFC ``TUN_VNET_HASH_*`` flags of ``tun_vnet_hash.flags``."""

    TUN_VNET_HASH_RSS = 0x01
    TUN_VNET_HASH_REPORT = 0x02


TUN_VNET_HASH_MAX_INDIRECTION_TABLE_LENGTH = 128
TUN_VNET_HASH_MAX_KEY_SIZE = 40

HASH_IOCTLS: tuple[IoctlDef, ...] = (
    # _IO although it copies 8 bytes out, _IOW(unsigned int) although it reads 18..308.
    IoctlDef("TUNGETVNETHASHCAP", IocDir.NONE, 228, ""),
    IoctlDef("TUNSETVNETHASH", IocDir.WRITE, 229, "unsigned int"),
)


class tun_vnet_hash_cap(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct tun_vnet_hash_cap`` (8 bytes; 2 hidden padding bytes at offset 2)."""

    _fields_ = (
        ("max_indirection_table_length", ctypes.c_uint16),
        ("types", ctypes.c_uint32),
    )


class tun_vnet_hash(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct tun_vnet_hash`` (12 bytes; 3 hidden padding bytes at offset 1)."""

    _fields_ = (
        ("flags", ctypes.c_uint8),
        ("types", ctypes.c_uint32),
        ("indirection_table_mask", ctypes.c_uint16),
        ("unclassified_queue", ctypes.c_uint16),
    )
