"""The guest's hashing structures, byte-exact and little-endian: the device configuration's RSS fields
and the control-queue commands ``VIRTIO_NET_CTRL_MQ_RSS_CONFIG`` and ``VIRTIO_NET_CTRL_MQ_HASH_CONFIG``.

A VMM reads a command's payload from the control queue (everything after the two-byte
``virtio_net_ctrl_hdr``), decodes it here, and gets either a validated command whose ``config`` is a
:class:`~pytun_hash.config.VnetHashConfig` ready for the host, or a :class:`VirtioCommandError` naming
the rule the guest broke (answer ``VIRTIO_NET_ERR``, as QEMU does). The rules are those the virtio
specification sets for the driver, checked as a device checks them, against the limits the device
advertised (:class:`VirtioNetRssDeviceConfig`); :data:`RULES` lists them with their stable ids.

Queue numbers in the commands are receive-queue numbers (receive queue ``i`` is virtqueue ``2i``). A
VMM that, like QEMU, attaches one TAP queue per queue pair in order gives receive queue ``i`` to TAP
queue ``i``, so the numbers go into :class:`~pytun_hash.config.VnetHashConfig` unchanged (docs/virtio.md).

Pure: no I/O. Sources: virtio 1.2/1.3 section 5.1 (``struct virtio_net_config``,
``struct virtio_net_rss_config``, ``struct virtio_net_hash_config``), Linux ``drivers/net/virtio_net.c``
(``virtnet_commit_rss_command``, ``virtnet_init_default_rss``) and QEMU ``hw/net/virtio-net.c``
(``virtio_net_handle_rss``, ``virtio_net_handle_mq``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import attrs

from pytun_hash._abi.virtio_net import HashType
from pytun_hash.config import MAX_INDIRECTION_TABLE_LENGTH, VnetHashConfig
from pytun_hash.errors import DecodeError, ValidationError, shorten
from pytun_hash.keys import MAX_KEY_SIZE
from pytun_hash.virtio.constants import (
    VIRTIO_NET_CTRL_MQ,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
    VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
    VirtioNetCtrlAck,
    VirtioNetCtrlMq,
    VirtioNetFeature,
)

__all__ = [
    "DEFAULT_LIMITS",
    "RULES",
    "VIRTIO_NET_CONFIG_SIZE",
    "CtrlMqResult",
    "HashCommand",
    "RssCommand",
    "VirtioCommandError",
    "VirtioNetRssDeviceConfig",
    "decode_device_config",
    "decode_hash_config",
    "decode_rss_config",
    "encode_device_config",
    "encode_hash_config",
    "encode_rss_config",
    "handle_ctrl_mq",
    "linux_default_rss_config",
]

#: Every rule a decoder checks, by its stable id, with what it requires (virtio 1.2 section 5.1.6.5.7,
#: and QEMU's ``virtio_net_handle_rss`` where the specification says nothing).
RULES: Mapping[str, str] = {
    "payload-truncated": "the payload holds every field the structure's own lengths call for",
    "payload-trailing-bytes": "the payload ends with the last key byte (the length is exact)",
    "hash-types-unsupported": "hash_types names only bits the device offers in supported_hash_types",
    "table-length-power-of-two": "indirection_table_mask + 1 (the table's length) is a power of two",
    "table-length-exceeds-max": "the table has at most rss_max_indirection_table_length entries",
    "max-tx-vq-out-of-range": "max_tx_vq is in 1..max_virtqueue_pairs",
    "key-length-exceeds-max": "hash_key_length is at most rss_max_key_size",
    "key-missing": "hash_key_length is not 0 while hash_types is not 0 (QEMU: 'No key provided')",
    "unclassified-queue-out-of-range": "unclassified_queue is a receive queue in use (< max_tx_vq)",
    "table-entry-out-of-range": "every indirection_table entry is a receive queue in use (< max_tx_vq)",
    "reserved-not-zero": "virtio_net_hash_config's reserved fields are zero (checked only when asked: Linux "
    "sends max_tx_vq there)",
    "feature-not-negotiated": "the command's feature (VIRTIO_NET_F_RSS, _HASH_REPORT, _MQ) was negotiated",
    "command-unknown": "the class is VIRTIO_NET_CTRL_MQ and the command one of its three",
    "vq-pairs-out-of-range": "VQ_PAIRS_SET's virtqueue_pairs is in 1..max_virtqueue_pairs",
}

#: Bytes of ``struct virtio_net_config`` up to and including ``supported_hash_types``.
VIRTIO_NET_CONFIG_SIZE = 24

# struct virtio_net_config: mac[6] @0, status @6, max_virtqueue_pairs @8, mtu @10, speed @12,
# duplex @16, rss_max_key_size @17, rss_max_indirection_table_length @18, supported_hash_types @20.
_NET_CONFIG = struct.Struct("<6sHHHIBBHI")
# The part of virtio_net_rss_config before the table, and the part between table and key.
_RSS_HEAD = struct.Struct("<IHH")  # hash_types, indirection_table_mask, unclassified_queue
_RSS_TAIL = struct.Struct("<HB")  # max_tx_vq, hash_key_length
# virtio_net_hash_config: hash_types, reserved[4], hash_key_length (the RSS layout with one table entry).
_HASH_HEAD = struct.Struct("<I4HB")
# virtio_net_ctrl_mq (VQ_PAIRS_SET).
_VQ_PAIRS = struct.Struct("<H")

_SPEED_UNKNOWN = 0xFFFFFFFF
_DUPLEX_UNKNOWN = 0xFF


class VirtioCommandError(DecodeError):
    """A guest's command breaks a rule of the virtio specification: the device answers ``VIRTIO_NET_ERR``.

    Attributes:
        rule_id: the stable id of the broken rule (a key of :data:`RULES`, e.g. ``"table-length-power-of-two"``).
        field: the offending field as the specification names it (``"indirection_table[3]"``).
        rule: the broken rule as a sentence, with the values found.
    """

    def __init__(self, rule_id: str, field: str | None, sentence: str) -> None:
        self.rule_id = rule_id
        super().__init__(field, f"{sentence} [{rule_id}]")
        self.sentence = sentence

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.rule_id, self.field, self.sentence))


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(field, f"expected an integer in {low}..{high}, got {shorten(value)}")


def _hash_types(value: object) -> HashType:
    """Only the nine defined bits: a device config or a command with others is not one this package knows."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("supported_hash_types", f"expected hash type bits, got {shorten(value)}")
    if value & ~int(HashType.all_known()) or value < 0:
        raise ValidationError("supported_hash_types", f"unknown hash type bits in {shorten(value)}")
    return HashType(value)


@attrs.frozen
class VirtioNetRssDeviceConfig:
    """The RSS fields of ``struct virtio_net_config``: what a device advertises, and the limits its
    commands are checked against.

    Attributes:
        max_virtqueue_pairs: queue pairs the device has (1..0x8000); RSS commands' ``max_tx_vq`` and queue
            numbers must stay below it.
        rss_max_key_size: the longest key, bytes (0..255; the spec asks at least 40 of a device offering
            RSS or hash reports; this package holds at most 40, so a larger limit acts as 40).
        rss_max_indirection_table_length: the longest table, entries (0..65535; at least 128 with RSS;
            this package holds at most 128, so a larger limit acts as 128).
        supported_hash_types: the :class:`~pytun_hash.HashType` bits the device can hash.

    Raises:
        ValidationError: on construction, for a value outside its field's range or unknown hash type bits.
    """

    max_virtqueue_pairs: int
    rss_max_key_size: int = MAX_KEY_SIZE
    rss_max_indirection_table_length: int = MAX_INDIRECTION_TABLE_LENGTH
    supported_hash_types: HashType = attrs.field(default=HashType.all_known(), converter=_hash_types)

    def __attrs_post_init__(self) -> None:
        _check_int(
            "max_virtqueue_pairs",
            self.max_virtqueue_pairs,
            VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
            VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
        )
        _check_int("rss_max_key_size", self.rss_max_key_size, 0, 0xFF)
        _check_int("rss_max_indirection_table_length", self.rss_max_indirection_table_length, 0, 0xFFFF)

    @property
    def key_limit(self) -> int:
        """The longest key a command may carry, bytes: ``rss_max_key_size``, at most 40."""
        return min(self.rss_max_key_size, MAX_KEY_SIZE)

    @property
    def table_limit(self) -> int:
        """The longest table a command may carry, entries: ``rss_max_indirection_table_length``, at most 128."""
        return min(self.rss_max_indirection_table_length, MAX_INDIRECTION_TABLE_LENGTH)

    def to_mapping(self) -> dict[str, Any]:
        """A JSON-friendly dict (hash types as a list of names)."""
        return {
            "max_virtqueue_pairs": self.max_virtqueue_pairs,
            "rss_max_key_size": self.rss_max_key_size,
            "rss_max_indirection_table_length": self.rss_max_indirection_table_length,
            "supported_hash_types": [m.name for m in HashType if m in self.supported_hash_types],
        }


#: What decoding checks against when no limits are given: everything this package can hold (40-byte
#: keys, 128-entry tables, every hash type, 0x8000 queue pairs).
DEFAULT_LIMITS = VirtioNetRssDeviceConfig(max_virtqueue_pairs=VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)


def encode_device_config(
    config: VirtioNetRssDeviceConfig,
    *,
    mac: bytes = bytes(6),
    status: int = 0,
    mtu: int = 0,
    speed: int = _SPEED_UNKNOWN,
    duplex: int = _DUPLEX_UNKNOWN,
) -> bytes:
    """The 24 bytes of ``struct virtio_net_config`` (little-endian) up to ``supported_hash_types``.

    Args:
        config: the RSS fields.
        mac: the 6-byte MAC address.
        status: ``VIRTIO_NET_S_*`` bits (le16).
        mtu: the MTU, bytes (le16).
        speed: megabits per second (le32; 0xffffffff unknown, the default).
        duplex: 0 half, 1 full, 0xff unknown (the default).

    Raises:
        ValidationError: for a MAC that is not 6 bytes, or a field outside its width.
    """
    if not isinstance(mac, (bytes, bytearray)) or len(mac) != 6:
        raise ValidationError("mac", f"expected 6 bytes, got {shorten(mac)}")
    _check_int("status", status, 0, 0xFFFF)
    _check_int("mtu", mtu, 0, 0xFFFF)
    _check_int("speed", speed, 0, 0xFFFFFFFF)
    _check_int("duplex", duplex, 0, 0xFF)
    return _NET_CONFIG.pack(
        bytes(mac),
        status,
        config.max_virtqueue_pairs,
        mtu,
        speed,
        duplex,
        config.rss_max_key_size,
        config.rss_max_indirection_table_length,
        int(config.supported_hash_types),
    )


def decode_device_config(
    data: bytes, *, start: int = 0, max_virtqueue_pairs: int | None = None
) -> VirtioNetRssDeviceConfig:
    """The RSS fields of ``struct virtio_net_config`` from its bytes.

    Args:
        data: the structure's bytes from offset ``start`` on; at least up to byte 24 of the structure
            (bytes after it, fields of later specifications, are ignored).
        start: where ``data`` begins in the structure: 0 (``mac``), 8 (``max_virtqueue_pairs``) or 17
            (``rss_max_key_size``).
        max_virtqueue_pairs: with ``start=17`` (the slice lacks the field), the device's queue pairs.

    Raises:
        DecodeError: for a short slice, an unknown hash type bit, or ``max_virtqueue_pairs`` out of 1..0x8000.
        ValidationError: for a ``start`` other than 0, 8 or 17, or ``max_virtqueue_pairs`` missing with 17.
    """
    if start not in (0, 8, 17):
        raise ValidationError("start", f"expected 0, 8 or 17, got {shorten(start)}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValidationError("data", f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    need = VIRTIO_NET_CONFIG_SIZE - start
    if len(raw) < need:
        raise DecodeError("virtio_net_config", f"from offset {start} it needs {need} bytes, got {len(raw)}")
    full = bytes(start) + raw[:need]
    _mac, _status, pairs, _mtu, _speed, _duplex, key_size, table_length, types = _NET_CONFIG.unpack(full)
    if start == 17:
        if max_virtqueue_pairs is None:
            raise ValidationError("max_virtqueue_pairs", "a slice from offset 17 lacks it: pass max_virtqueue_pairs")
        pairs = max_virtqueue_pairs
    try:
        return VirtioNetRssDeviceConfig(pairs, key_size, table_length, types)
    except DecodeError:
        raise
    except ValidationError as exc:
        raise DecodeError(exc.field, exc.rule) from None


def _check_types(types: int, limits: VirtioNetRssDeviceConfig) -> HashType:
    extra = types & ~int(limits.supported_hash_types)
    if extra:
        raise VirtioCommandError(
            "hash-types-unsupported",
            "hash_types",
            f"hash_types {types:#x} has bits {extra:#x} the device does not offer "
            f"(supported_hash_types {int(limits.supported_hash_types):#x})",
        )
    return HashType(types)


def _check_key(key_length: int, types: int, limits: VirtioNetRssDeviceConfig) -> None:
    if key_length > limits.key_limit:
        raise VirtioCommandError(
            "key-length-exceeds-max",
            "hash_key_length",
            f"hash_key_length {key_length} exceeds rss_max_key_size {limits.key_limit}",
        )
    if key_length == 0 and types:
        raise VirtioCommandError(
            "key-missing", "hash_key_length", f"hash_key_length is 0 but hash_types is {types:#x}: no key to hash with"
        )


def _check_length(payload: bytes, total: int, structure: str) -> None:
    if len(payload) < total:
        raise VirtioCommandError(
            "payload-truncated", structure, f"{len(payload)} bytes, but its fields call for {total}"
        )
    if len(payload) > total:
        raise VirtioCommandError(
            "payload-trailing-bytes",
            structure,
            f"{len(payload)} bytes, {len(payload) - total} more than the {total} its fields call for",
        )


def _payload(payload: object) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ValidationError("payload", f"expected bytes, got {type(payload).__name__}")
    return bytes(payload)


def _padded_key(key: bytes) -> bytes:
    # Missing key bits count as zero in Toeplitz, so padding keeps the meaning (and, unlike handing a
    # short key to VnetHashConfig, gives no WeakKeyWarning: a guest's legal choice is not the VMM's mistake).
    return key.ljust(MAX_KEY_SIZE, b"\0")


def _key_field(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValidationError("key", f"expected bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > 0xFF:
        raise ValidationError("key", f"hash_key_length is a u8: at most 255 bytes, got {len(raw)}")
    return raw


def _table_field(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not hasattr(value, "__iter__"):
        raise ValidationError("indirection_table", "expected a sequence of queue numbers")
    table = tuple(value)
    n = len(table)
    if not 1 <= n <= 0x10000 or n & (n - 1):
        raise ValidationError("indirection_table", f"length must be a power of two from 1 to 65536, got {n}")
    for i, q in enumerate(table):
        _check_int(f"indirection_table[{i}]", q, 0, 0xFFFF)
    return table


def _types_field(value: object) -> HashType:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise ValidationError("hash_types", f"expected a le32 of hash type bits, got {shorten(value)}")
    return HashType(value)


@attrs.frozen
class RssCommand:
    """``struct virtio_net_rss_config``: the payload of ``VIRTIO_NET_CTRL_MQ_RSS_CONFIG``, field by field.

    Construction checks only what the structure can hold (field widths, a power-of-two table); what a
    device requires of the guest is checked by :func:`decode_rss_config`.

    Attributes:
        hash_types: the :class:`~pytun_hash.HashType` bits to hash (le32; 0 hashes nothing: every
            packet goes to ``unclassified_queue``, as Linux asks with ``ethtool -K rxhash off``).
        indirection_table: receive queue numbers (le16 each); its length is ``indirection_table_mask + 1``.
        unclassified_queue: the receive queue of packets that are not hashed.
        max_tx_vq: transmit queues the driver uses (le16); the receive queues in use are ``0..max_tx_vq-1``.
        key: the Toeplitz key, exactly ``hash_key_length`` bytes as the guest sent them.
        report: hash reports were negotiated too (``VIRTIO_NET_F_HASH_REPORT``): the command's types and
            key then govern the reports as well (not part of the bytes).

    Raises:
        ValidationError: on construction, for a field its width cannot hold.
    """

    hash_types: HashType = attrs.field(converter=_types_field)
    indirection_table: tuple[int, ...] = attrs.field(converter=_table_field)
    unclassified_queue: int
    max_tx_vq: int
    key: bytes = attrs.field(converter=_key_field)
    report: bool = False

    def __attrs_post_init__(self) -> None:
        _check_int("unclassified_queue", self.unclassified_queue, 0, 0xFFFF)
        _check_int("max_tx_vq", self.max_tx_vq, 0, 0xFFFF)
        if not isinstance(self.report, bool):
            raise ValidationError("report", f"expected true or false, got {shorten(self.report)}")

    @property
    def indirection_table_mask(self) -> int:
        """``len(indirection_table) - 1``, as on the wire."""
        return len(self.indirection_table) - 1

    @property
    def hash_key_length(self) -> int:
        """The key's length as the guest sent it, bytes (the config's key is zero-padded to 40)."""
        return len(self.key)

    @property
    def config(self) -> VnetHashConfig | None:
        """The command as a :class:`~pytun_hash.config.VnetHashConfig` (``rss=True``, ``report`` as
        negotiated, the key zero-padded to 40 bytes), or None when ``hash_types`` is 0.

        A VnetHashConfig needs a hash type to steer by; with none, every packet goes to
        ``unclassified_queue`` and no hash is reported: a VMM gets that from a one-entry table holding
        ``unclassified_queue`` (any hash picks it) without reports.

        Raises:
            ValidationError: for a command that cannot be a config (a key over 40 bytes or a table over
                128 entries: :func:`decode_rss_config` refuses those first).
        """
        if not self.hash_types:
            return None
        return VnetHashConfig(
            rss=True,
            report=self.report,
            types=self.hash_types,
            indirection_table=self.indirection_table,
            key=_padded_key(self.key),
            unclassified_queue=self.unclassified_queue,
        )

    def encode(self) -> bytes:
        """The payload's exact bytes (little-endian), as a driver writes them."""
        table = struct.pack(f"<{len(self.indirection_table)}H", *self.indirection_table)
        return (
            _RSS_HEAD.pack(int(self.hash_types), self.indirection_table_mask, self.unclassified_queue)
            + table
            + _RSS_TAIL.pack(self.max_tx_vq, len(self.key))
            + self.key
        )

    @classmethod
    def from_config(cls, config: VnetHashConfig, *, max_tx_vq: int, hash_key_length: int = MAX_KEY_SIZE) -> RssCommand:
        """The command a driver sends for ``config``.

        Args:
            config: an RSS config (``rss=True``); its ``report`` becomes :attr:`report`.
            max_tx_vq: queue pairs in use, 1..0x8000, above every queue ``config`` steers to.
            hash_key_length: key bytes to send, 1..40 (the rest of ``config.key`` must be zero, so the
                command means the same).

        Raises:
            ValidationError: for a config without RSS, a ``max_tx_vq`` out of range or not above the
                config's queues, a ``hash_key_length`` out of 1..40 or one that drops non-zero key bytes.
        """
        if not isinstance(config, VnetHashConfig) or not config.rss:
            raise ValidationError("rss", "an RSS command needs a VnetHashConfig with rss=True")
        _check_int("max_tx_vq", max_tx_vq, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)
        if config.max_queue >= max_tx_vq:
            raise ValidationError(
                "max_tx_vq",
                f"the config steers to queue {config.max_queue}, so max_tx_vq must exceed it, got {max_tx_vq}",
            )
        key = _truncated_key(config.key, hash_key_length)
        return cls(config.types, config.indirection_table, config.unclassified_queue, max_tx_vq, key, config.report)


def _truncated_key(key: bytes, hash_key_length: int) -> bytes:
    _check_int("hash_key_length", hash_key_length, 1, MAX_KEY_SIZE)
    if any(key[hash_key_length:]):
        raise ValidationError(
            "hash_key_length",
            f"the key has non-zero bytes past its first {hash_key_length}: send at least "
            f"{len(key.rstrip(bytes(1)))} bytes",
        )
    return key[:hash_key_length]


@attrs.frozen
class HashCommand:
    """``struct virtio_net_hash_config``: the payload of ``VIRTIO_NET_CTRL_MQ_HASH_CONFIG`` (hash
    reports without RSS).

    Attributes:
        hash_types: the :class:`~pytun_hash.HashType` bits to hash and report (0: report NONE for all).
        key: the Toeplitz key, exactly ``hash_key_length`` bytes.
        reserved: the four le16 ``reserved`` words (the spec asks zeroes; Linux since 6.14 sends its queue
            pairs in the last one, where the RSS layout has ``max_tx_vq``). Kept so that re-encoding
            gives the guest's bytes back.

    Raises:
        ValidationError: on construction, for a field its width cannot hold.
    """

    hash_types: HashType = attrs.field(converter=_types_field)
    key: bytes = attrs.field(converter=_key_field)
    reserved: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.reserved, tuple) or len(self.reserved) != 4:
            raise ValidationError("reserved", f"expected 4 integers, got {shorten(self.reserved)}")
        for i, word in enumerate(self.reserved):
            _check_int(f"reserved[{i}]", word, 0, 0xFFFF)

    @property
    def hash_key_length(self) -> int:
        """The key's length as the guest sent it, bytes."""
        return len(self.key)

    @property
    def config(self) -> VnetHashConfig | None:
        """The command as a :class:`~pytun_hash.config.VnetHashConfig` (``report=True``, ``rss=False``,
        the key zero-padded to 40), or None when ``hash_types`` is 0 (no hash is computed: every report
        is NONE, which is what a device with reporting off writes).

        Raises:
            ValidationError: for a key over 40 bytes (:func:`decode_hash_config` refuses it first).
        """
        if not self.hash_types:
            return None
        return VnetHashConfig(report=True, types=self.hash_types, key=_padded_key(self.key))

    def encode(self) -> bytes:
        """The payload's exact bytes (little-endian)."""
        return _HASH_HEAD.pack(int(self.hash_types), *self.reserved, len(self.key)) + self.key

    @classmethod
    def from_config(cls, config: VnetHashConfig, *, hash_key_length: int = MAX_KEY_SIZE) -> HashCommand:
        """The command a driver sends for a report-only ``config``.

        Raises:
            ValidationError: for a config with RSS (this command has no table: use :class:`RssCommand`)
                or without reports, or a ``hash_key_length`` out of 1..40 or one that drops non-zero key bytes.
        """
        if not isinstance(config, VnetHashConfig) or config.rss or not config.report:
            raise ValidationError(
                "config", "a hash command carries reports only: a VnetHashConfig with report=True and rss=False"
            )
        return cls(config.types, _truncated_key(config.key, hash_key_length))


def decode_rss_config(
    payload: bytes, *, report: bool = False, limits: VirtioNetRssDeviceConfig | None = None
) -> RssCommand:
    """Decode and validate a ``VIRTIO_NET_CTRL_MQ_RSS_CONFIG`` payload, as a device must.

    The checks run in the order of QEMU's ``virtio_net_handle_rss`` where it has them; the first
    broken rule is raised.

    Args:
        payload: the command's bytes after ``virtio_net_ctrl_hdr``.
        report: ``VIRTIO_NET_F_HASH_REPORT`` was negotiated as well (the config then reports too).
        limits: what the device advertised; None checks against :data:`DEFAULT_LIMITS` (all this
            package can hold).

    Returns:
        The command; its ``config`` is what to put in force (None for ``hash_types`` 0).

    Raises:
        VirtioCommandError: naming the broken rule (:data:`RULES`); answer ``VIRTIO_NET_ERR``.
        ValidationError: when ``payload`` is not bytes.
    """
    raw = _payload(payload)
    lim = DEFAULT_LIMITS if limits is None else limits
    if len(raw) < _RSS_HEAD.size:
        raise VirtioCommandError(
            "payload-truncated",
            "virtio_net_rss_config",
            f"{len(raw)} bytes: hash_types, indirection_table_mask and unclassified_queue need {_RSS_HEAD.size}",
        )
    types, mask, unclassified = _RSS_HEAD.unpack_from(raw)
    hash_types = _check_types(types, lim)
    length = mask + 1
    if length & (length - 1):
        raise VirtioCommandError(
            "table-length-power-of-two",
            "indirection_table_mask",
            f"indirection_table_mask {mask:#x} gives {length} entries, not a power of two",
        )
    if length > lim.table_limit:
        raise VirtioCommandError(
            "table-length-exceeds-max",
            "indirection_table_mask",
            f"indirection_table_mask {mask:#x} gives {length} entries, more than rss_max_indirection_table_length "
            f"{lim.table_limit}",
        )
    tail = _RSS_HEAD.size + 2 * length
    if len(raw) < tail + _RSS_TAIL.size:
        raise VirtioCommandError(
            "payload-truncated",
            "virtio_net_rss_config",
            f"{len(raw)} bytes: a {length}-entry table, max_tx_vq and hash_key_length need {tail + _RSS_TAIL.size}",
        )
    table = struct.unpack_from(f"<{length}H", raw, _RSS_HEAD.size)
    max_tx_vq, key_length = _RSS_TAIL.unpack_from(raw, tail)
    if not 1 <= max_tx_vq <= lim.max_virtqueue_pairs:
        raise VirtioCommandError(
            "max-tx-vq-out-of-range",
            "max_tx_vq",
            f"max_tx_vq {max_tx_vq} is not in 1..{lim.max_virtqueue_pairs} (max_virtqueue_pairs)",
        )
    _check_key(key_length, types, lim)
    start = tail + _RSS_TAIL.size
    _check_length(raw, start + key_length, "virtio_net_rss_config")
    if unclassified >= max_tx_vq:
        raise VirtioCommandError(
            "unclassified-queue-out-of-range",
            "unclassified_queue",
            f"unclassified_queue {unclassified} is not a queue in use (max_tx_vq {max_tx_vq})",
        )
    for i, queue in enumerate(table):
        if queue >= max_tx_vq:
            raise VirtioCommandError(
                "table-entry-out-of-range",
                f"indirection_table[{i}]",
                f"indirection_table[{i}] is {queue}, not a queue in use (max_tx_vq {max_tx_vq})",
            )
    return RssCommand(hash_types, table, unclassified, max_tx_vq, raw[start:], report)


def decode_hash_config(
    payload: bytes, *, limits: VirtioNetRssDeviceConfig | None = None, strict_reserved: bool = False
) -> HashCommand:
    """Decode and validate a ``VIRTIO_NET_CTRL_MQ_HASH_CONFIG`` payload, as a device must.

    Args:
        payload: the command's bytes after ``virtio_net_ctrl_hdr``.
        limits: what the device advertised (``max_virtqueue_pairs`` plays no part); None: :data:`DEFAULT_LIMITS`.
        strict_reserved: refuse non-zero ``reserved`` words ("reserved-not-zero"). Off by default, as in
            QEMU: Linux puts its queue pairs in ``reserved[3]``, and refusing that would cost the guest
            its hash reports.

    Raises:
        VirtioCommandError: naming the broken rule (:data:`RULES`); answer ``VIRTIO_NET_ERR``.
        ValidationError: when ``payload`` is not bytes.
    """
    raw = _payload(payload)
    lim = DEFAULT_LIMITS if limits is None else limits
    if len(raw) < _HASH_HEAD.size:
        raise VirtioCommandError(
            "payload-truncated",
            "virtio_net_hash_config",
            f"{len(raw)} bytes: hash_types, reserved and hash_key_length need {_HASH_HEAD.size}",
        )
    types, *reserved, key_length = _HASH_HEAD.unpack_from(raw)
    hash_types = _check_types(types, lim)
    if strict_reserved and any(reserved):
        raise VirtioCommandError(
            "reserved-not-zero", "reserved", f"reserved is {tuple(reserved)}, the specification asks zeroes"
        )
    _check_key(key_length, types, lim)
    _check_length(raw, _HASH_HEAD.size + key_length, "virtio_net_hash_config")
    words = (reserved[0], reserved[1], reserved[2], reserved[3])
    return HashCommand(hash_types, raw[_HASH_HEAD.size :], words)


def encode_rss_config(config: VnetHashConfig, *, max_tx_vq: int, hash_key_length: int = MAX_KEY_SIZE) -> bytes:
    """The ``VIRTIO_NET_CTRL_MQ_RSS_CONFIG`` payload a driver sends for ``config`` (see
    :meth:`RssCommand.from_config` for the arguments).

    Raises:
        ValidationError: as :meth:`RssCommand.from_config`.
    """
    return RssCommand.from_config(config, max_tx_vq=max_tx_vq, hash_key_length=hash_key_length).encode()


def encode_hash_config(config: VnetHashConfig, *, hash_key_length: int = MAX_KEY_SIZE) -> bytes:
    """The ``VIRTIO_NET_CTRL_MQ_HASH_CONFIG`` payload a driver sends for a report-only ``config``.

    Raises:
        ValidationError: as :meth:`HashCommand.from_config`.
    """
    return HashCommand.from_config(config, hash_key_length=hash_key_length).encode()


def linux_default_rss_config(
    device: VirtioNetRssDeviceConfig, queue_pairs: int, key: bytes, *, rss: bool = True
) -> bytes:
    """The payload Linux's virtio_net sends at probe (``virtnet_init_default_rss`` and
    ``virtnet_commit_rss_command``), for tests and for checking a device against the common guest.

    RSS: ``rss_max_indirection_table_length`` entries filled ``i % queue_pairs``
    (``ethtool_rxfh_indir_default``), ``unclassified_queue`` 0, ``max_tx_vq`` = ``queue_pairs``, the key
    of ``rss_max_key_size`` bytes, hash types = ``supported_hash_types`` without the three ``_EX`` types.
    Without RSS (hash reports only) the hash-config layout: the same types and key, reserved words
    zero but the last, which carries ``queue_pairs`` as Linux 6.14 and later send it.

    Args:
        device: what the device advertises.
        queue_pairs: the driver's queue pairs in use (1..max_virtqueue_pairs).
        key: ``rss_max_key_size`` bytes (Linux fills them with ``netdev_rss_key_fill``: random).
        rss: RSS was negotiated (else only hash reports).

    Raises:
        ValidationError: for ``queue_pairs`` out of range or a key of another length.
    """
    _check_int("queue_pairs", queue_pairs, 1, device.max_virtqueue_pairs)
    if not isinstance(key, bytes) or len(key) != device.rss_max_key_size:
        raise ValidationError("key", f"expected rss_max_key_size ({device.rss_max_key_size}) bytes")
    types = int(device.supported_hash_types) & ~int(HashType.IP_EX | HashType.TCP_EX | HashType.UDP_EX)
    if not rss:
        return HashCommand(types, key, (0, 0, 0, queue_pairs)).encode()
    size = device.rss_max_indirection_table_length
    table = tuple(i % queue_pairs for i in range(size))
    return RssCommand(types, table, 0, queue_pairs, key).encode()


@attrs.frozen
class CtrlMqResult:
    """What :func:`handle_ctrl_mq` made of one control command.

    Attributes:
        ack: the byte to write back (``OK`` or ``ERR``).
        command: the decoded command (:class:`RssCommand`, :class:`HashCommand`) or the queue pairs
            of ``VQ_PAIRS_SET`` (an int); None when refused.
        error: why it was refused, or None.
    """

    ack: VirtioNetCtrlAck
    command: RssCommand | HashCommand | int | None = None
    error: VirtioCommandError | None = None


def handle_ctrl_mq(
    command_class: int,
    command: int,
    payload: bytes,
    *,
    features: VirtioNetFeature,
    limits: VirtioNetRssDeviceConfig,
    strict_reserved: bool = False,
) -> CtrlMqResult:
    """Decode one multiqueue-class control command the way a device answers it: never raises for
    what the guest sent, answers ``ERR`` with the reason instead.

    Args:
        command_class: ``virtio_net_ctrl_hdr.class`` (only ``VIRTIO_NET_CTRL_MQ`` is handled here).
        command: ``virtio_net_ctrl_hdr.cmd``.
        payload: the bytes after the header.
        features: the negotiated features (RSS, HASH_REPORT, MQ decide which commands are allowed).
        limits: what the device advertised.
        strict_reserved: as :func:`decode_hash_config`.

    Raises:
        ValidationError: only when ``payload`` is not bytes (a VMM bug, not a guest's).
    """
    try:
        if command_class != VIRTIO_NET_CTRL_MQ or command not in tuple(VirtioNetCtrlMq):
            raise VirtioCommandError(
                "command-unknown", "cmd", f"class {shorten(command_class)} command {shorten(command)} is not handled"
            )
        kind = VirtioNetCtrlMq(command)
        needed = {
            VirtioNetCtrlMq.RSS_CONFIG: VirtioNetFeature.RSS,
            VirtioNetCtrlMq.HASH_CONFIG: VirtioNetFeature.HASH_REPORT,
            VirtioNetCtrlMq.VQ_PAIRS_SET: VirtioNetFeature.MQ,
        }[kind]
        if needed not in features:
            raise VirtioCommandError(
                "feature-not-negotiated", "cmd", f"{kind.name} needs VIRTIO_NET_F_{needed.name}, not negotiated"
            )
        result: RssCommand | HashCommand | int
        if kind is VirtioNetCtrlMq.RSS_CONFIG:
            result = decode_rss_config(payload, report=VirtioNetFeature.HASH_REPORT in features, limits=limits)
        elif kind is VirtioNetCtrlMq.HASH_CONFIG:
            result = decode_hash_config(payload, limits=limits, strict_reserved=strict_reserved)
        else:
            raw = _payload(payload)
            _check_length(raw, _VQ_PAIRS.size, "virtio_net_ctrl_mq")
            (pairs,) = _VQ_PAIRS.unpack(raw)
            if not VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN <= pairs <= limits.max_virtqueue_pairs:
                raise VirtioCommandError(
                    "vq-pairs-out-of-range",
                    "virtqueue_pairs",
                    f"virtqueue_pairs {pairs} is not in 1..{limits.max_virtqueue_pairs} (max_virtqueue_pairs)",
                )
            result = pairs
    except VirtioCommandError as exc:
        return CtrlMqResult(VirtioNetCtrlAck.ERR, None, exc)
    return CtrlMqResult(VirtioNetCtrlAck.OK, result)
