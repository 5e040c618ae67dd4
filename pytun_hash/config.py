"""Typed, validated, revision-free hashing configuration and kernel capabilities.

A :class:`VnetHashConfig` says *what* the device should do (RSS on or off, hash reports
on or off, hash types, indirection table, key, unclassified queue). Codecs in
:mod:`pytun_hash.codec` turn it into the bytes each kernel revision reads. Pure: no I/O.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence, Set, Sized
from typing import Any

import attrs

from pytun_hash._abi.revision import Revision, require_revision
from pytun_hash._abi.virtio_net import HashType
from pytun_hash.errors import PytunHashWarning, ValidationError, shorten
from pytun_hash.hashtypes import DEFAULT_HASH_TYPES, ETHTOOL_FLOW_TYPES, parse_hash_types
from pytun_hash.keys import MAX_KEY_SIZE, MICROSOFT_RSS_KEY, generate_key

__all__ = [
    "MAX_INDIRECTION_TABLE_LENGTH",
    "MAX_KEY_SIZE",
    "WeakKeyWarning",
    "ETHTOOL_FLOW_TYPES",
    "MICROSOFT_RSS_KEY",
    "VnetHashCapability",
    "VnetHashConfig",
    "check_table_length",
    "generate_key",
    "short_key_warning",
    "parse_hash_types",
    "weighted_table",
]

MAX_INDIRECTION_TABLE_LENGTH = 128

MAX_QUEUE = 0xFFFF


def weighted_table(weights: Sequence[int], length: int = MAX_INDIRECTION_TABLE_LENGTH) -> tuple[int, ...]:
    """An indirection table spreading ``length`` entries over queues in proportion to ``weights``, as
    ``ethtool -X DEV weight W0 W1 ...`` fills a device's table (queue ``j`` gets about
    ``length * W[j] / sum(W)`` consecutive entries; a weight of 0 gives a queue none).

    Args:
        weights: one non-negative weight per queue, from queue 0; their sum at most ``length``.
        length: table entries, a power of two from 1 to 128.

    Raises:
        ValidationError: for a bad length, a negative or non-integer weight, all weights 0, more than
            65536 weights, or a sum above ``length`` (ethtool's own rules).
    """
    check_table_length(length, "indirection_table")
    if isinstance(weights, str | bytes) or len(weights) > MAX_QUEUE + 1:
        raise ValidationError("weights", f"expected at most {MAX_QUEUE + 1} weights, got {shorten(weights)}")
    for j, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValidationError(f"weights[{j}]", f"expected an integer >= 0, got {shorten(w)}")
    total = sum(weights)
    if total == 0:
        raise ValidationError("weights", "at least one weight must be non-zero")
    if total > length:
        raise ValidationError("weights", f"the weights add up to {total}, more than the table's {length} entries")
    table: list[int] = []
    queue, partial = -1, 0
    for i in range(length):
        # ethtool's fill: the next queue starts once i reaches its share of the table so far.
        while i >= length * partial // total:
            queue += 1
            partial += weights[queue]
        table.append(queue)
    return tuple(table)


def check_table_length(length: int, field: str = "indirection_table") -> None:
    """Refuse an indirection table length that is not a power of two from 1 to :data:`MAX_INDIRECTION_TABLE_LENGTH`.

    The one owner of the rule: callers that build a table from a user's length check it here first.

    Raises:
        ValidationError: naming ``field``.
    """
    if not 1 <= length <= MAX_INDIRECTION_TABLE_LENGTH or length & (length - 1):
        raise ValidationError(
            field, f"length must be a power of two from 1 to {MAX_INDIRECTION_TABLE_LENGTH}, got {shorten(length)}"
        )


def _types_converter(value: object) -> HashType:
    return parse_hash_types(value)


def _table_converter(value: object) -> tuple[int, ...]:
    # Text, bytes, mappings and sets iterate, but not as an ordered list of queue numbers.
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping, Set)) or not isinstance(value, Iterable):
        raise ValidationError("indirection_table", "expected a sequence of queue numbers")
    rule = f"length must be a power of two from 1 to {MAX_INDIRECTION_TABLE_LENGTH}"
    if isinstance(value, Sized):
        # Checked before copying, so range(10**12) is refused instead of exhausting memory.
        if len(value) > MAX_INDIRECTION_TABLE_LENGTH:
            raise ValidationError("indirection_table", f"{rule}, got {len(value)}")
        return tuple(value)
    table: list[Any] = []
    for entry in value:
        # An iterator of unknown length stops at the first entry past the limit.
        if len(table) == MAX_INDIRECTION_TABLE_LENGTH:
            raise ValidationError("indirection_table", f"{rule}, got more")
        table.append(entry)
    return tuple(table)


def _key_converter(value: object) -> bytes:
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value.replace(":", "").replace(" ", ""))
        except ValueError:
            raise ValidationError("key", "a key given as text must be hexadecimal") from None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValidationError("key", f"expected bytes or a hex string, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) > MAX_KEY_SIZE:
        raise ValidationError("key", f"at most {MAX_KEY_SIZE} bytes, got {len(raw)}")
    if 0 < len(raw) < MAX_KEY_SIZE:
        warnings.warn(short_key_warning(len(raw)), WeakKeyWarning, stacklevel=3)
    # Shorter keys are zero-padded: on the wire and in the Toeplitz model alike, missing key
    # bits count as zero, so storing the padded form keeps every representation equal.
    return raw.ljust(MAX_KEY_SIZE, b"\0")


class WeakKeyWarning(PytunHashWarning):
    """A Toeplitz key that spreads flows worse than a random 40-byte key would: a short (zero-padded) key."""


def short_key_warning(length: int) -> str:
    """What a key of ``length`` bytes (1..39; zero-padded to 40) costs, as one sentence."""
    bits = 8 * length
    # Input bit i is hashed with key bits i..i+31: past the key's last byte they are all zero.
    return (
        f"the key has {length} byte(s), zero-padded to {MAX_KEY_SIZE}: only the first {bits} input bits "
        f"change the hash (of 96 for IPv4/TCP, 288 for IPv6/TCP), so flows that agree in them share a "
        f"queue; give {MAX_KEY_SIZE} bytes (--key random, or generate_key())"
    )


def _check_queue(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, f"expected an integer queue number, got {shorten(value)}")
    if not 0 <= value <= MAX_QUEUE:
        raise ValidationError(field, f"queue number must be in 0..{MAX_QUEUE}, got {shorten(value)}")


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValidationError(field, f"expected true or false, got {shorten(value)}")


@attrs.frozen
class VnetHashConfig:
    """The meaning of a virtio-net hashing configuration, independent of any kernel revision.

    Attributes:
        rss: steer received packets through ``indirection_table`` (receive side scaling).
        report: report the hash value and type in the 20-byte ``virtio_net_hdr_v1_hash``.
        types: the :class:`HashType` bits that may be hashed.
        indirection_table: queue numbers; the length is a power of two from 1 to 128.
        key: the Toeplitz key, 40 bytes (a shorter key given at construction is zero-padded).
        unclassified_queue: where RSS sends packets it could not hash.

    Raises:
        ValidationError: on construction, naming the field and the broken rule.
    """

    rss: bool = False
    report: bool = False
    types: HashType = attrs.field(default=HashType(0), converter=_types_converter)
    indirection_table: tuple[int, ...] = attrs.field(default=(0,), converter=_table_converter)
    key: bytes = attrs.field(default=b"", converter=_key_converter)
    unclassified_queue: int = 0

    def __attrs_post_init__(self) -> None:
        _check_bool("rss", self.rss)
        _check_bool("report", self.report)
        check_table_length(len(self.indirection_table))
        for i, q in enumerate(self.indirection_table):
            _check_queue(f"indirection_table[{i}]", q)
        _check_queue("unclassified_queue", self.unclassified_queue)
        if (self.rss or self.report) and not self.types:
            raise ValidationError("types", "must name at least one hash type when rss or report is enabled")

    @property
    def indirection_table_mask(self) -> int:
        """``len(indirection_table) - 1``: the mask applied to the hash to index the table."""
        return len(self.indirection_table) - 1

    @property
    def enabled(self) -> bool:
        """True when RSS or hash reporting is on."""
        return self.rss or self.report

    @property
    def max_queue(self) -> int:
        """The highest queue number the config steers to (table entries and unclassified queue)."""
        return max(max(self.indirection_table), self.unclassified_queue)

    @classmethod
    def disabled(cls) -> VnetHashConfig:
        """A configuration with RSS and hash reporting off."""
        return cls()

    @classmethod
    def round_robin(
        cls,
        num_queues: int,
        *,
        key: bytes | None = None,
        types: HashType | int | Sequence[str] = DEFAULT_HASH_TYPES,
        table_length: int = MAX_INDIRECTION_TABLE_LENGTH,
        report: bool = False,
        unclassified_queue: int = 0,
    ) -> VnetHashConfig:
        """RSS over queues ``0..num_queues-1``: entry ``i`` of the table is ``i % num_queues``.

        Args:
            num_queues: number of receive queues, 1..65536.
            key: the Toeplitz key; None generates a random one with :func:`generate_key`.
            types: hash types to enable (default: all six the kernel series supports).
            table_length: power of two from 1 to 128.
            report: also report hashes.
            unclassified_queue: where unhashable packets go.

        Raises:
            ValidationError: for out-of-range arguments.
        """
        if isinstance(num_queues, bool) or not isinstance(num_queues, int) or not 1 <= num_queues <= MAX_QUEUE + 1:
            raise ValidationError("num_queues", f"must be in 1..{MAX_QUEUE + 1}, got {shorten(num_queues)}")
        if isinstance(table_length, bool) or not isinstance(table_length, int):
            raise ValidationError("indirection_table", f"table_length must be an integer, got {shorten(table_length)}")
        # Before the table is built: a huge table_length would be allocated first otherwise.
        check_table_length(table_length)
        return cls(
            rss=True,
            report=report,
            types=types,
            indirection_table=tuple(i % num_queues for i in range(table_length)),
            key=generate_key() if key is None else key,
            unclassified_queue=unclassified_queue,
        )

    def replace(self, **changes: Any) -> VnetHashConfig:
        """Return a copy with ``changes`` applied, validated again.

        Raises:
            ValidationError: when the result is invalid or a change names no field.
        """
        fields = {f.name for f in attrs.fields(type(self))}
        unknown = sorted(k for k in changes if k not in fields)
        if unknown:
            raise ValidationError(
                unknown[0], f"unknown field {shorten(unknown[0])}; known fields: {', '.join(sorted(fields))}"
            )
        return attrs.evolve(self, **changes)

    def to_mapping(self) -> dict[str, Any]:
        """A JSON/TOML-friendly dict: types as a list of names, the key as hex."""
        return {
            "rss": self.rss,
            "report": self.report,
            "types": [m.name for m in HashType if m in self.types],
            "indirection_table": list(self.indirection_table),
            "key": self.key.hex(),
            "unclassified_queue": self.unclassified_queue,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> VnetHashConfig:
        """Build a config from a mapping as produced by :meth:`to_mapping` (or read from JSON/TOML).

        ``types`` may be a list of names, a ``"|"``-separated string or an integer; ``key`` is hex
        text; missing fields take their defaults. Unknown fields are rejected.

        Raises:
            ValidationError: naming the offending field.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(None, f"expected a mapping (table/object), got {type(data).__name__}")
        fields = {f.name for f in attrs.fields(cls)}
        # str() of a huge integer key raises ValueError; shorten() describes it instead.
        unknown = sorted(k if isinstance(k, str) else shorten(k) for k in data if k not in fields)
        if unknown:
            raise ValidationError(
                unknown[0], f"unknown field {shorten(unknown[0])}; known fields: {', '.join(sorted(fields))}"
            )
        kwargs = dict(data)
        if "key" in kwargs and not isinstance(kwargs["key"], (str, bytes, bytearray)):
            raise ValidationError("key", "expected a hexadecimal string")
        return cls(**kwargs)


@attrs.frozen
class VnetHashCapability:
    """What a kernel reports it can do, in the shape of one revision's get-ioctl.

    Attributes:
        revision: the UAPI revision the capability was read from (a :class:`Revision` member).
        types: the hash types the kernel supports.
        max_indirection_table_length: the largest table (RFC only; None when the revision
            does not report it).
        rss: the kernel supports RSS (v3-v11 report it in flags; RFC and v12 always do).
        report: the kernel supports hash reporting (same).

    Raises:
        ValidationError: on construction, naming the field (a revision that is not a member,
            unknown type bits, a negative table length, non-bool flags).
    """

    revision: Revision = attrs.field(converter=require_revision)
    types: HashType = attrs.field(converter=_types_converter)
    max_indirection_table_length: int | None = None
    rss: bool = True
    report: bool = True

    def __attrs_post_init__(self) -> None:
        limit = self.max_indirection_table_length
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValidationError(
                "max_indirection_table_length", f"expected None or an integer >= 0, got {shorten(limit)}"
            )
        _check_bool("rss", self.rss)
        _check_bool("report", self.report)

    def violations(self, config: VnetHashConfig) -> list[str]:
        """Every way ``config`` exceeds this capability, as sentences; empty when it fits."""
        problems: list[str] = []
        extra = config.types & ~self.types
        if config.enabled and extra:
            problems.append(
                f"types: {extra!r} not supported by this kernel (supported: {self.types!r}); "
                "remove them from the config"
            )
        limit = self.max_indirection_table_length
        if limit is not None and len(config.indirection_table) > limit:
            problems.append(
                f"indirection_table: {len(config.indirection_table)} entries, the kernel allows at most {limit}"
            )
        if config.rss and not self.rss:
            problems.append("rss: this kernel does not support RSS (only hash reporting)")
        if config.report and not self.report:
            problems.append("report: this kernel does not support hash reporting")
        return problems

    def check(self, config: VnetHashConfig) -> None:
        """Raise if ``config`` exceeds this capability.

        Raises:
            ValidationError: listing every violation.
        """
        problems = self.violations(config)
        if problems:
            raise ValidationError("config", "; ".join(problems))
