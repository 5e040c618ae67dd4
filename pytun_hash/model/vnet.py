"""virtio-net headers as tun/tap queues read and write them: codecs, split and build.

Three layouts exist (``include/uapi/linux/virtio_net.h``):

* ``virtio_net_hdr`` (10 bytes): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset;
* ``virtio_net_hdr_v1`` (12 bytes): the above plus num_buffers;
* ``virtio_net_hdr_v1_hash`` (20 bytes): the above plus hash_value (u32), hash_report (u16) and
  2 bytes of padding.

The legacy fields (hdr_len, gso_size, csum_start, csum_offset) are in the device's configured
vnet endianness (``TUNSETVNETLE``/``TUNSETVNETBE``; little-endian on x86 kernels without
cross-endian support). num_buffers, hash_value and hash_report are always little-endian.

A queue's vnet header size (``TUNSETVNETHDRSZ``) may exceed the layout the kernel fills: the
frame then starts at the header size and the bytes in between are padding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import attrs

from pytun_hash._abi.virtio_net import (
    VIRTIO_NET_HDR_SIZE,
    VIRTIO_NET_HDR_V1_HASH_SIZE,
    VIRTIO_NET_HDR_V1_SIZE,
    HashReport,
    VirtioNetHdrFlag,
)
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.model._bytes import BytesLike

__all__ = [
    "VNET_HDR_LAYOUTS",
    "VnetHeader",
    "build_frame",
    "default_layout",
    "hash_tail",
    "read_hash_fields",
    "split_frame",
    "write_hash_fields",
]

#: The header layouts, by size in bytes: virtio_net_hdr, virtio_net_hdr_v1, virtio_net_hdr_v1_hash.
VNET_HDR_LAYOUTS = (VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_V1_SIZE, VIRTIO_NET_HDR_V1_HASH_SIZE)

_LEGACY_LE = struct.Struct("<BBHHHH")
_LEGACY_BE = struct.Struct(">BBHHHH")
_NUM_BUFFERS = struct.Struct("<H")
_HASH = struct.Struct("<IHH")
# Offsets of the always-little-endian parts.
_NUM_BUFFERS_OFFSET = VIRTIO_NET_HDR_SIZE
_HASH_OFFSET = VIRTIO_NET_HDR_V1_SIZE


def read_hash_fields(buffer: BytesLike, offset: int = 0) -> tuple[int, int]:
    """``(hash_value, hash_report)`` of the ``virtio_net_hdr_v1_hash`` at byte ``offset`` of ``buffer``.

    The report is returned raw (an int): a kernel may write a value :class:`HashReport` lacks.

    Raises:
        struct.error: when ``buffer`` holds fewer than ``offset + 20`` bytes.
    """
    value, report, _padding = _HASH.unpack_from(buffer, offset + _HASH_OFFSET)
    return int(value), int(report)


def write_hash_fields(buffer: bytearray | memoryview, value: int, report: int, offset: int = 0) -> None:
    """Write ``hash_value``, ``hash_report`` and zero padding into the header at byte ``offset``, in place.

    Raises:
        struct.error: for a buffer too short, or values out of the u32/u16 ranges.
    """
    _HASH.pack_into(buffer, offset + _HASH_OFFSET, value, report, 0)


def hash_tail(num_buffers: int, value: int, report: int) -> bytes:
    """Bytes 10..19 of a ``virtio_net_hdr_v1_hash``: num_buffers, hash_value, hash_report, zero padding.

    Raises:
        struct.error: for values out of range.
    """
    return _NUM_BUFFERS.pack(num_buffers) + _HASH.pack(value, report, 0)


def _unsigned(bits: int) -> Callable[[object, attrs.Attribute[int], int], None]:
    limit = 1 << bits

    def check(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
            raise ValidationError(attribute.name, f"must be an integer in 0..{limit - 1}, got {value!r}")

    return check


def _flags(value: int) -> VirtioNetHdrFlag:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValidationError("flags", f"must be an integer in 0..255, got {value!r}")
    return VirtioNetHdrFlag(value)


def _report(value: HashReport | int) -> HashReport:
    if isinstance(value, HashReport):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("hash_report", f"expected a HashReport, got {value!r}")
    try:
        return HashReport(value)
    except ValueError:
        raise ValidationError("hash_report", f"{value} is not a VIRTIO_NET_HASH_REPORT_* value") from None


def _check_layout(layout: int) -> None:
    if layout not in VNET_HDR_LAYOUTS:
        raise ValidationError("layout", f"must be one of {VNET_HDR_LAYOUTS} (bytes), got {layout!r}")


def default_layout(vnet_hdr_size: int) -> int:
    """The largest header layout that fits in ``vnet_hdr_size`` bytes (10, 12 or 20).

    Raises:
        ValidationError: when ``vnet_hdr_size`` is below 10 (the kernel's minimum).
    """
    if isinstance(vnet_hdr_size, bool) or not isinstance(vnet_hdr_size, int) or vnet_hdr_size < VIRTIO_NET_HDR_SIZE:
        raise ValidationError(
            "vnet_hdr_size", f"must be an integer >= {VIRTIO_NET_HDR_SIZE} (sizeof(struct virtio_net_hdr))"
        )
    return max(layout for layout in VNET_HDR_LAYOUTS if layout <= vnet_hdr_size)


@attrs.frozen
class VnetHeader:
    """One virtio-net header, independent of its layout and byte order.

    Attributes:
        flags: ``VIRTIO_NET_HDR_F_*`` bits (u8).
        gso_type: ``VIRTIO_NET_HDR_GSO_*`` value, possibly with the ECN bit 0x80 (u8).
        hdr_len: length of the headers to copy into each segment, bytes (u16).
        gso_size: segment payload size, bytes (u16).
        csum_start: offset where checksumming starts, bytes (u16).
        csum_offset: offset of the checksum field after ``csum_start``, bytes (u16).
        num_buffers: merged receive buffers (u16; layouts 12 and 20).
        hash_value: the reported hash (u32; layout 20).
        hash_report: the reported :class:`~pytun_hash.HashReport` (layout 20).
        hash_padding: the padding after ``hash_report`` (u16; kept for byte-exact round trips).

    Raises:
        ValidationError: on construction, for out-of-range fields.
    """

    flags: VirtioNetHdrFlag = attrs.field(default=VirtioNetHdrFlag(0), converter=_flags)
    gso_type: int = attrs.field(default=0, validator=_unsigned(8))
    hdr_len: int = attrs.field(default=0, validator=_unsigned(16))
    gso_size: int = attrs.field(default=0, validator=_unsigned(16))
    csum_start: int = attrs.field(default=0, validator=_unsigned(16))
    csum_offset: int = attrs.field(default=0, validator=_unsigned(16))
    num_buffers: int = attrs.field(default=0, validator=_unsigned(16))
    hash_value: int = attrs.field(default=0, validator=_unsigned(32))
    hash_report: HashReport = attrs.field(default=HashReport.NONE, converter=_report)
    hash_padding: int = attrs.field(default=0, validator=_unsigned(16))

    def encode(self, layout: int = VIRTIO_NET_HDR_V1_HASH_SIZE, *, little_endian: bool = True) -> bytes:
        """The header as ``layout`` bytes (10, 12 or 20).

        Args:
            layout: which struct to encode.
            little_endian: the device's vnet endianness, for the legacy fields only.

        Raises:
            ValidationError: for an unknown layout, or when a non-zero field does not fit in it
                (for example a hash in a 12-byte header).
        """
        _check_layout(layout)
        if layout < VIRTIO_NET_HDR_V1_SIZE and self.num_buffers:
            raise ValidationError("num_buffers", f"does not fit in a {layout}-byte header")
        if layout < VIRTIO_NET_HDR_V1_HASH_SIZE:
            for name in ("hash_value", "hash_report", "hash_padding"):
                if getattr(self, name):
                    raise ValidationError(name, f"does not fit in a {layout}-byte header")
        legacy = _LEGACY_LE if little_endian else _LEGACY_BE
        out = legacy.pack(
            int(self.flags), self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset
        )
        if layout >= VIRTIO_NET_HDR_V1_SIZE:
            out += _NUM_BUFFERS.pack(self.num_buffers)
        if layout >= VIRTIO_NET_HDR_V1_HASH_SIZE:
            out += _HASH.pack(self.hash_value, int(self.hash_report), self.hash_padding)
        return out

    @classmethod
    def decode(
        cls, data: BytesLike, layout: int = VIRTIO_NET_HDR_V1_HASH_SIZE, *, little_endian: bool = True
    ) -> VnetHeader:
        """Decode the first ``layout`` bytes of ``data`` (bytes-like) as a header.

        Args:
            data: at least ``layout`` bytes; more are ignored.
            layout: which struct the bytes hold (10, 12 or 20).
            little_endian: the device's vnet endianness, for the legacy fields only.

        Raises:
            ValidationError: for an unknown layout.
            DecodeError: when ``data`` is shorter than ``layout`` or holds an unknown hash report value.
        """
        _check_layout(layout)
        if len(data) < layout:
            raise DecodeError("data", f"a {layout}-byte vnet header needs {layout} bytes, got {len(data)}")
        legacy = _LEGACY_LE if little_endian else _LEGACY_BE
        flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = legacy.unpack_from(data, 0)
        num_buffers = hash_value = report = padding = 0
        if layout >= VIRTIO_NET_HDR_V1_SIZE:
            (num_buffers,) = _NUM_BUFFERS.unpack_from(data, _NUM_BUFFERS_OFFSET)
        if layout >= VIRTIO_NET_HDR_V1_HASH_SIZE:
            hash_value, report, padding = _HASH.unpack_from(data, _HASH_OFFSET)
            if report not in HashReport._value2member_map_:
                raise DecodeError("hash_report", f"{report} is not a VIRTIO_NET_HASH_REPORT_* value")
        return cls(
            flags=flags,
            gso_type=gso_type,
            hdr_len=hdr_len,
            gso_size=gso_size,
            csum_start=csum_start,
            csum_offset=csum_offset,
            num_buffers=num_buffers,
            hash_value=hash_value,
            hash_report=HashReport(report),
            hash_padding=padding,
        )


def split_frame(
    buffer: BytesLike, vnet_hdr_size: int, *, layout: int | None = None, little_endian: bool = True
) -> tuple[VnetHeader, bytes]:
    """Split a buffer read from a queue into its vnet header and its frame.

    Args:
        buffer: what ``read()`` returned (bytes-like).
        vnet_hdr_size: the queue's vnet header size (``TUNGETVNETHDRSZ``), bytes; the frame starts there.
        layout: the header struct to decode (10, 12 or 20); default: the largest that fits in
            ``vnet_hdr_size`` (:func:`default_layout`).
        little_endian: the device's vnet endianness, for the legacy fields.

    Returns:
        ``(header, frame)``.

    Raises:
        ValidationError: for a header size below 10 or a layout larger than the header size.
        DecodeError: when ``buffer`` is shorter than ``vnet_hdr_size`` or the header is invalid.
    """
    chosen = default_layout(vnet_hdr_size) if layout is None else layout
    _check_layout(chosen)
    if chosen > vnet_hdr_size:
        raise ValidationError("layout", f"a {chosen}-byte layout does not fit in a {vnet_hdr_size}-byte vnet header")
    if len(buffer) < vnet_hdr_size:
        raise DecodeError("buffer", f"{len(buffer)} bytes is shorter than the {vnet_hdr_size}-byte vnet header")
    header = VnetHeader.decode(buffer, chosen, little_endian=little_endian)
    return header, bytes(buffer[vnet_hdr_size:])


def build_frame(
    frame: BytesLike,
    header: VnetHeader | None = None,
    *,
    vnet_hdr_size: int = VIRTIO_NET_HDR_SIZE,
    layout: int | None = None,
    little_endian: bool = True,
) -> bytes:
    """The bytes to ``write()`` to a queue: the header, zero padding up to ``vnet_hdr_size``, the frame.

    Args:
        frame: the frame (bytes-like).
        header: the header; None writes an all-zero one (no offloads).
        vnet_hdr_size: the queue's vnet header size, bytes.
        layout: the struct to encode (default: the largest that fits, :func:`default_layout`).
        little_endian: the device's vnet endianness, for the legacy fields.

    Raises:
        ValidationError: for a header size below 10, a layout larger than it, or header fields
            that do not fit the layout.
    """
    chosen = default_layout(vnet_hdr_size) if layout is None else layout
    _check_layout(chosen)
    if chosen > vnet_hdr_size:
        raise ValidationError("layout", f"a {chosen}-byte layout does not fit in a {vnet_hdr_size}-byte vnet header")
    encoded = (header or VnetHeader()).encode(chosen, little_endian=little_endian)
    return encoded + bytes(vnet_hdr_size - chosen) + bytes(frame)
