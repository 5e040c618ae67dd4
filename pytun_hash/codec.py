"""Byte-exact codecs between :class:`VnetHashConfig` and what each kernel revision reads and writes.

Pure: no I/O. The device layer issues the calls of :func:`ioctl_plan` as they are; the
seccomp emulator and the tests use :func:`kernel_read_length` and the decoders.

Wire rules common to all revisions:

* Structures are host-endian; the RFC's indirection table is host-endian too, while the
  key is a byte string. Hidden and explicit padding is always sent as zero.
* The full 40-byte key is always sent. The kernel series sizes the key with
  ``40 if types & 0x7 else 4`` (it tests *report* values against *type* bits), so a type
  set with no IPv4 bit loads only 4 key bytes. On the RFC revision the other 36 keep their
  previous values, so :func:`ioctl_plan` first loads the whole key with hashing off and an
  IPv4 type set. Later revisions allocate a fresh container per call, leaving those 36
  bytes uninitialised; no call sequence can fix that, so such configs are refused there.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from collections.abc import Sequence

import attrs

from pytun_hash._abi import hash_ioctls, ioctl_def, layout_for, rfc, v3, v12
from pytun_hash._abi.ioc import byteorder_for
from pytun_hash._abi.layout import ByteOrder, pack, padding_offsets, unpack
from pytun_hash._abi.revision import Revision, require_revision
from pytun_hash._abi.virtio_net import HashType
from pytun_hash.config import (
    MAX_INDIRECTION_TABLE_LENGTH,
    MAX_KEY_SIZE,
    VnetHashCapability,
    VnetHashConfig,
)
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.keys import kernel_key_length, spec_key_length

__all__ = [
    "IoctlCall",
    "decode_capability",
    "decode_plan",
    "decode_vnet_hash",
    "default_capability",
    "encode_capability",
    "get_request_name",
    "ioctl_plan",
    "kernel_key_length",
    "kernel_read_length",
    "kernel_write_length",
    "spec_key_length",
]

_IPV4_FAMILY = HashType.IPV4 | HashType.TCPV4 | HashType.UDPV4
_RFC_FLAGS = rfc.TunVnetHashFlag
_V3_FLAGS = v3.TunVnetHashFlag
_RFC_HDR = ctypes.sizeof(rfc.tun_vnet_hash)
_V3_HDR = ctypes.sizeof(v3.tun_vnet_hash)
_V3_RSS = ctypes.sizeof(v3.tun_vnet_hash_rss)
_V12_RSS = ctypes.sizeof(v12.tun_vnet_rss)
_CAP = ctypes.sizeof(rfc.tun_vnet_hash_cap)


@attrs.frozen
class IoctlCall:
    """One ioctl of a plan: request name, request number and the exact argument bytes.

    Attributes:
        name: the kernel's macro name (``"TUNSETVNETHASH"``).
        request: the request number for the target architecture.
        payload: the bytes the argument pointer points at (for by-value ioctls: the value,
            host-endian, 4 bytes).
        purpose: why the call is in the plan, for dry-run output.
    """

    name: str
    request: int
    payload: bytes
    purpose: str = ""


def _u16(order: ByteOrder) -> str:
    return "<" if order == "little" else ">"


def _table_bytes(table: Sequence[int], order: ByteOrder) -> bytes:
    return struct.pack(f"{_u16(order)}{len(table)}H", *table)


def _rfc_set_payload(
    flags: int, types: int, table: Sequence[int], unclassified: int, key: bytes, order: ByteOrder
) -> bytes:
    head = pack(
        rfc.tun_vnet_hash,
        order,
        flags=flags,
        types=types,
        indirection_table_mask=len(table) - 1,
        unclassified_queue=unclassified,
    )
    return head + _table_bytes(table, order) + key


def _v3_flags(config: VnetHashConfig) -> int:
    return (_V3_FLAGS.TUN_VNET_HASH_REPORT if config.report else 0) | (_V3_FLAGS.TUN_VNET_HASH_RSS if config.rss else 0)


def _refuse_short_key(config: VnetHashConfig, revision: Revision) -> None:
    if config.rss and not config.types & _IPV4_FAMILY:
        raise ValidationError(
            "types",
            f"on {revision.title} kernels a type set without an IPv4 type (IPV4, TCPV4, UDPV4) makes the kernel "
            "load only 4 of the 40 key bytes and leave the rest uninitialised (a kernel bug); add an IPv4 type, "
            "or use the eBPF backend",
        )


def ioctl_plan(
    config: VnetHashConfig, revision: Revision = Revision.RFC, *, arch: str | None = None
) -> tuple[IoctlCall, ...]:
    """The ioctl calls, in order, that put ``config`` in force on a kernel of ``revision``.

    Args:
        config: the configuration.
        revision: the kernel's UAPI revision.
        arch: the target machine (``platform.machine()`` spelling) for request numbers and byte
            order; None = this host.

    Raises:
        ValidationError: when ``revision`` cannot express ``config`` exactly (for example an RSS
            type set without IPv4 types on v3+, see the module docstring), ``config`` is not a
            :class:`VnetHashConfig`, ``revision`` not a :class:`Revision` or ``arch`` unknown.
    """
    if not isinstance(config, VnetHashConfig):
        raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
    revision = require_revision(revision)
    layout = layout_for(arch)
    order = byteorder_for(arch)

    def call(name: str, payload: bytes, purpose: str) -> IoctlCall:
        return IoctlCall(name, ioctl_def(name, revision).request(layout), payload, purpose)

    key = config.key
    if revision is Revision.RFC:
        flags = (_RFC_FLAGS.TUN_VNET_HASH_RSS if config.rss else 0) | (
            _RFC_FLAGS.TUN_VNET_HASH_REPORT if config.report else 0
        )
        calls: list[IoctlCall] = []
        if kernel_key_length(config.types) < MAX_KEY_SIZE:
            calls.append(
                call(
                    "TUNSETVNETHASH",
                    _rfc_set_payload(0, int(HashType.IPV4), (0,), 0, key, order),
                    "load all 40 key bytes with hashing off (the kernel copies only 4 for this type set)",
                )
            )
        calls.append(
            call(
                "TUNSETVNETHASH",
                _rfc_set_payload(
                    flags, int(config.types), config.indirection_table, config.unclassified_queue, key, order
                ),
                "set flags, types, indirection table and key",
            )
        )
        return tuple(calls)
    if revision.abi is Revision.V3:
        _refuse_short_key(config, revision)
        e = _u16(order)
        payload = pack(v3.tun_vnet_hash, order, flags=_v3_flags(config), types=int(config.types))
        if config.rss:
            payload += pack(
                v3.tun_vnet_hash_rss,
                order,
                indirection_table_mask=config.indirection_table_mask,
                unclassified_queue=config.unclassified_queue,
            )
            payload += _table_bytes(config.indirection_table, order) + key
        return (call("TUNSETVNETHASH", payload, "set flags and types" + (", table and key" if config.rss else "")),)
    _refuse_short_key(config, revision)
    e = _u16(order)
    if not config.rss:
        types = int(config.types) if config.report else 0
        what = "report hashes, steer by automq" if config.report else "disable hashing"
        return (call("TUNSETVNETREPORTINGAUTOMQ", struct.pack(f"{e}I", types), what),)
    name = "TUNSETVNETREPORTINGRSS" if config.report else "TUNSETVNETRSS"
    payload = pack(
        v12.tun_vnet_rss,
        order,
        hash_types=int(config.types),
        indirection_table_mask=config.indirection_table_mask,
        unclassified_queue=config.unclassified_queue,
    )
    payload += _table_bytes(config.indirection_table, order) + key
    return (call(name, payload, "RSS with hash reports" if config.report else "RSS without hash reports"),)


def get_request_name(revision: Revision) -> str:
    """The name of ``revision``'s capability (get) ioctl, the one used to probe for it.

    Raises:
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    return hash_ioctls(revision)[0].name


def _as_payload(payload: object) -> bytes:
    # bytes(n) of an int would build n zero bytes (gigabytes for a large n): take bytes-likes only.
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DecodeError("payload", f"expected bytes, got {type(payload).__name__}")
    return bytes(payload)


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise DecodeError("payload", f"{what} needs at least {size} bytes, got {len(payload)}")


def kernel_read_length(revision: Revision, name: str, header: bytes) -> int:
    """Bytes a ``revision`` kernel copies from user space for ioctl ``name``, given the payload's start.

    ``header`` must hold at least the fixed part the kernel reads first (RFC: 12 bytes;
    v3-v11: 8, or 12 when the RSS flag is set; v12: 4 for AUTOMQ, 8 for the RSS setters).
    Get-ioctls read nothing (0).

    Raises:
        DecodeError: when ``header`` is too short to tell.
        ValidationError: (a ValueError) when ``name`` is not an ioctl of ``revision``, or
            ``revision`` is not a :class:`Revision` member.
    """
    ioctl_def(name, revision)
    order = _HOST
    header = bytes(header)
    if name in ("TUNGETVNETHASHCAP", "TUNGETVNETHASHTYPES"):
        return 0
    if revision is Revision.RFC:
        _need(header, _RFC_HDR, "struct tun_vnet_hash")
        rfc_hdr = unpack(rfc.tun_vnet_hash, header, order)
        return _RFC_HDR + 2 * (int(rfc_hdr.indirection_table_mask) + 1) + kernel_key_length(rfc_hdr.types)
    if revision.abi is Revision.V3:
        _need(header, _V3_HDR, "struct tun_vnet_hash")
        v3_hdr = unpack(v3.tun_vnet_hash, header, order)
        if not v3_hdr.flags & _V3_FLAGS.TUN_VNET_HASH_RSS:
            return _V3_HDR
        _need(header, _V3_HDR + _V3_RSS, "struct tun_vnet_hash + struct tun_vnet_hash_rss")
        mask = unpack(v3.tun_vnet_hash_rss, header, order, _V3_HDR).indirection_table_mask
        return _V3_HDR + _V3_RSS + 2 * (int(mask) + 1) + kernel_key_length(v3_hdr.types)
    if name == "TUNSETVNETREPORTINGAUTOMQ":
        return 4
    _need(header, _V12_RSS, "struct tun_vnet_rss")
    rss = unpack(v12.tun_vnet_rss, header, order)
    return _V12_RSS + 2 * (int(rss.indirection_table_mask) + 1) + kernel_key_length(rss.hash_types)


def kernel_write_length(revision: Revision, name: str) -> int:
    """Bytes a ``revision`` kernel copies *to* user space for ioctl ``name`` (8 or 4 for gets, else 0).

    Raises:
        ValidationError: (a ValueError) when ``name`` is not an ioctl of ``revision``, or
            ``revision`` is not a :class:`Revision` member.
    """
    ioctl_def(name, revision)
    if name == "TUNGETVNETHASHCAP":
        return _CAP
    if name == "TUNGETVNETHASHTYPES":
        return 4
    return 0


_HOST: ByteOrder = "little" if sys.byteorder == "little" else "big"


def _host_order() -> str:
    return _u16(_HOST)


def _check_mask(mask: int) -> None:
    n = mask + 1
    if n > MAX_INDIRECTION_TABLE_LENGTH or n & (n - 1):
        raise DecodeError(
            "indirection_table_mask",
            f"{mask:#x}: the table length mask+1 must be a power of two up to {MAX_INDIRECTION_TABLE_LENGTH}",
        )


def _exact(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise DecodeError("payload", f"{what} is exactly {size} bytes, got {len(payload)}")


def _table_and_key(payload: bytes, offset: int, mask: int) -> tuple[tuple[int, ...], bytes]:
    n = mask + 1
    _exact(payload, offset + 2 * n + MAX_KEY_SIZE, f"a payload with {n} table entries and a 40-byte key")
    table = struct.unpack_from(f"{_host_order()}{n}H", payload, offset)
    return tuple(table), payload[offset + 2 * n :]


def _build(**fields: object) -> VnetHashConfig:
    try:
        return VnetHashConfig(**fields)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise DecodeError(exc.field, exc.rule) from None


def _check_flags(flags: int, known: int, field: str = "flags") -> None:
    if flags & ~known:
        raise DecodeError(field, f"unknown flag bits {flags & ~known:#x}")


def _v3_header(payload: bytes) -> tuple[int, int]:
    """``(flags, types)`` of the v3-v11 ``struct tun_vnet_hash`` at the start of ``payload``, checked strictly."""
    head = unpack(v3.tun_vnet_hash, payload, _HOST)
    if any(head.pad):
        raise DecodeError("pad", "tun_vnet_hash.pad must be zero")
    flags = int(head.flags)
    _check_flags(flags, int(_V3_FLAGS.TUN_VNET_HASH_RSS | _V3_FLAGS.TUN_VNET_HASH_REPORT))
    return flags, int(head.types)


def decode_vnet_hash(payload: bytes, revision: Revision = Revision.RFC, *, name: str | None = None) -> VnetHashConfig:
    """Decode one set-ioctl payload of ``revision`` as :func:`ioctl_plan` builds it, strictly.

    Strict means: exact length for the declared mask (with the full 40-byte key), zero padding,
    no unknown flag or type bits, a power-of-two table of at most 128 entries. For v12,
    ``name`` says which setter the payload is for (a 4-byte payload is taken as
    ``TUNSETVNETREPORTINGAUTOMQ``). v3-v11 and v12 do not carry the table, key and unclassified
    queue when RSS is off; those decode as their defaults.

    Raises:
        DecodeError: (a :class:`ValidationError`) for every malformed payload.
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    revision = require_revision(revision)
    payload = _as_payload(payload)
    e = _host_order()
    if revision is Revision.RFC:
        _need(payload, _RFC_HDR, "struct tun_vnet_hash")
        head = unpack(rfc.tun_vnet_hash, payload, _HOST)
        flags, types, mask = int(head.flags), int(head.types), int(head.indirection_table_mask)
        unclassified = int(head.unclassified_queue)
        if any(payload[i] for i in padding_offsets(rfc.tun_vnet_hash)):
            raise DecodeError("padding", "the 3 padding bytes after flags must be zero")
        _check_flags(flags, int(_RFC_FLAGS.TUN_VNET_HASH_RSS | _RFC_FLAGS.TUN_VNET_HASH_REPORT))
        _check_mask(mask)
        table, key = _table_and_key(payload, _RFC_HDR, mask)
        return _build(
            rss=bool(flags & _RFC_FLAGS.TUN_VNET_HASH_RSS),
            report=bool(flags & _RFC_FLAGS.TUN_VNET_HASH_REPORT),
            types=types,
            indirection_table=table,
            key=key,
            unclassified_queue=unclassified,
        )
    if revision.abi is Revision.V3:
        _need(payload, _V3_HDR, "struct tun_vnet_hash")
        flags, types = _v3_header(payload)
        rss = bool(flags & _V3_FLAGS.TUN_VNET_HASH_RSS)
        report = bool(flags & _V3_FLAGS.TUN_VNET_HASH_REPORT)
        if not rss:
            _exact(payload, _V3_HDR, "a payload without the RSS flag")
            return _build(rss=False, report=report, types=types)
        _need(payload, _V3_HDR + _V3_RSS, "struct tun_vnet_hash + struct tun_vnet_hash_rss")
        rss_part = unpack(v3.tun_vnet_hash_rss, payload, _HOST, _V3_HDR)
        mask, unclassified = int(rss_part.indirection_table_mask), int(rss_part.unclassified_queue)
        _check_mask(mask)
        table, key = _table_and_key(payload, _V3_HDR + _V3_RSS, mask)
        return _build(
            rss=True, report=report, types=types, indirection_table=table, key=key, unclassified_queue=unclassified
        )
    if name is None:
        if len(payload) != 4:
            raise DecodeError("name", "a v12 payload longer than 4 bytes needs the setter's name")
        name = "TUNSETVNETREPORTINGAUTOMQ"
    if name == "TUNSETVNETREPORTINGAUTOMQ":
        _exact(payload, 4, "the TUNSETVNETREPORTINGAUTOMQ argument")
        (types,) = struct.unpack(f"{e}I", payload)
        return _build(report=bool(types), types=types)
    if name not in ("TUNSETVNETRSS", "TUNSETVNETREPORTINGRSS"):
        raise DecodeError("name", f"{name!r} is not a v12 set-ioctl")
    _need(payload, _V12_RSS, "struct tun_vnet_rss")
    v12_rss = unpack(v12.tun_vnet_rss, payload, _HOST)
    types, mask = int(v12_rss.hash_types), int(v12_rss.indirection_table_mask)
    unclassified = int(v12_rss.unclassified_queue)
    _check_mask(mask)
    table, key = _table_and_key(payload, _V12_RSS, mask)
    return _build(
        rss=True,
        report=name == "TUNSETVNETREPORTINGRSS",
        types=types,
        indirection_table=table,
        key=key,
        unclassified_queue=unclassified,
    )


def decode_plan(calls: Sequence[IoctlCall], revision: Revision = Revision.RFC) -> VnetHashConfig:
    """The configuration in force after a kernel of ``revision`` executed ``calls`` from a zero state.

    Replays the kernel's own key handling: each call replaces only ``kernel_key_length(types)``
    key bytes on the RFC revision, so this shows what a plan really leaves in force.

    Raises:
        DecodeError: for a malformed payload or an empty plan.
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    revision = require_revision(revision)
    if not calls:
        raise DecodeError("calls", "an empty plan")
    key = bytearray(MAX_KEY_SIZE)
    config = VnetHashConfig()
    for c in calls:
        config = decode_vnet_hash(c.payload, revision, name=c.name)
        n = kernel_key_length(config.types) if revision is Revision.RFC else MAX_KEY_SIZE
        key[:n] = config.key[:n]
    if revision is Revision.RFC or config.rss:
        config = attrs.evolve(config, key=bytes(key))
    return config


def default_capability(revision: Revision) -> VnetHashCapability:
    """What a kernel of ``revision`` reports: six types (0x3f), 128 table entries on the RFC.

    Raises:
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    revision = require_revision(revision)
    return VnetHashCapability(
        revision=revision,
        types=HashType.supported_by_kernel_series(),
        max_indirection_table_length=rfc.TUN_VNET_HASH_MAX_INDIRECTION_TABLE_LENGTH
        if revision is Revision.RFC
        else None,
    )


def encode_capability(cap: VnetHashCapability) -> bytes:
    """The exact bytes ``cap.revision``'s get-ioctl writes for ``cap`` (padding zero).

    Raises:
        ValidationError: when ``cap`` cannot be expressed in its revision (the RFC needs a
            table length in 0..65535).
    """
    e = _host_order()
    if cap.revision is Revision.RFC:
        limit = cap.max_indirection_table_length
        if limit is None or not 0 <= limit <= 0xFFFF:
            raise ValidationError("max_indirection_table_length", "the RFC capability needs a value in 0..65535")
        return pack(rfc.tun_vnet_hash_cap, _HOST, max_indirection_table_length=limit, types=int(cap.types))
    if cap.revision.abi is Revision.V3:
        flags = (_V3_FLAGS.TUN_VNET_HASH_REPORT if cap.report else 0) | (_V3_FLAGS.TUN_VNET_HASH_RSS if cap.rss else 0)
        return pack(v3.tun_vnet_hash, _HOST, flags=flags, types=int(cap.types))
    return struct.pack(f"{e}I", int(cap.types))


def decode_capability(payload: bytes, revision: Revision = Revision.RFC) -> VnetHashCapability:
    """Decode what ``revision``'s get-ioctl wrote, strictly (exact size, zero padding, known bits).

    Raises:
        DecodeError: for a malformed payload.
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    revision = require_revision(revision)
    payload = _as_payload(payload)
    e = _host_order()
    try:
        if revision is Revision.RFC:
            _exact(payload, _CAP, "struct tun_vnet_hash_cap")
            cap = unpack(rfc.tun_vnet_hash_cap, payload, _HOST)
            if any(payload[i] for i in padding_offsets(rfc.tun_vnet_hash_cap)):
                raise DecodeError("padding", "the 2 padding bytes of tun_vnet_hash_cap must be zero")
            return VnetHashCapability(
                revision, int(cap.types), max_indirection_table_length=int(cap.max_indirection_table_length)
            )
        if revision.abi is Revision.V3:
            _exact(payload, _CAP, "struct tun_vnet_hash")
            flags, types = _v3_header(payload)
            return VnetHashCapability(
                revision,
                types,
                rss=bool(flags & _V3_FLAGS.TUN_VNET_HASH_RSS),
                report=bool(flags & _V3_FLAGS.TUN_VNET_HASH_REPORT),
            )
        _exact(payload, 4, "the TUNGETVNETHASHTYPES result")
        (types,) = struct.unpack(f"{e}I", payload)
        return VnetHashCapability(revision, types)
    except DecodeError:
        raise
    except ValidationError as exc:
        raise DecodeError(exc.field, exc.rule) from None
