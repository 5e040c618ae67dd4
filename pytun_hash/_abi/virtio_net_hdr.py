"""``struct virtio_net_hdr``, ``virtio_net_hdr_v1`` and ``virtio_net_hdr_v1_hash`` as ctypes structures.

Their sizes are :mod:`pytun_hash._abi.virtio_net`'s ``VIRTIO_NET_HDR*_SIZE`` (checked by the tests);
the codecs (:mod:`pytun_hash.model.vnet`) choose the byte order of the legacy fields.
"""

from __future__ import annotations

import ctypes

__all__ = ["virtio_net_hdr", "virtio_net_hdr_v1", "virtio_net_hdr_v1_hash"]

# The legacy fields are in the device's configured vnet endianness, so these mirror the
# layout only; codecs choose the byte order.


class virtio_net_hdr(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct virtio_net_hdr`` (10 bytes)."""

    _pack_ = 1
    _fields_ = (
        ("flags", ctypes.c_uint8),
        ("gso_type", ctypes.c_uint8),
        ("hdr_len", ctypes.c_uint16),
        ("gso_size", ctypes.c_uint16),
        ("csum_start", ctypes.c_uint16),
        ("csum_offset", ctypes.c_uint16),
    )


class virtio_net_hdr_v1(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct virtio_net_hdr_v1`` (12 bytes; same layout as ``virtio_net_hdr_mrg_rxbuf``)."""

    _pack_ = 1
    _fields_ = (*virtio_net_hdr._fields_, ("num_buffers", ctypes.c_uint16))


class virtio_net_hdr_v1_hash(ctypes.Structure):  # noqa: N801 - kernel name
    """``struct virtio_net_hdr_v1_hash`` (20 bytes); hash fields are always little-endian."""

    _pack_ = 1
    _fields_ = (
        ("hdr", virtio_net_hdr_v1),
        ("hash_value", ctypes.c_uint32),
        ("hash_report", ctypes.c_uint16),
        ("padding", ctypes.c_uint16),
    )
