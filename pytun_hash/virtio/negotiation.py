"""What a VMM may advertise to its guest on a given host, and whether a guest can move between two hosts.

A host's hashing is described by :class:`HostCapability`: the native hash ioctls of one revision (their
capability), pytun_hash's eBPF steering program, or nothing. :func:`advertised` turns it into the
virtio side: feature bits and the RSS fields of ``struct virtio_net_config``. :func:`compare` says
whether a guest that negotiated against host A's advertisement can be migrated to host B: B must offer
every feature bit and hash type A advertised, a key size and table length at least A's, and as many
queue pairs. :func:`host_from_probe` reads the host from ``pytun-hash probe --json``'s document.

The eBPF backend steers but cannot write hash reports into the vnet header; pytun_hash computes them
in user space (:class:`pytun_hash.bpf.HashReporter`) for frames the VMM reads itself. So an eBPF host
advertises ``VIRTIO_NET_F_HASH_REPORT`` only when the VMM's data path goes through user space
(``user_space_reports=True``, the default); a vhost-net data path must say False (its frames reach the
guest past any user space, and QEMU's own eBPF RSS has the same limit).

Pure: no I/O (the probe document is a mapping already read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from pytun_hash._abi.revision import Revision
from pytun_hash._abi.rfc import TUN_VNET_HASH_MAX_INDIRECTION_TABLE_LENGTH
from pytun_hash._abi.virtio_net import HashType
from pytun_hash.config import MAX_INDIRECTION_TABLE_LENGTH, VnetHashCapability
from pytun_hash.errors import ValidationError, shorten
from pytun_hash.hashtypes import parse_hash_types
from pytun_hash.keys import MAX_KEY_SIZE
from pytun_hash.virtio.commands import VirtioNetRssDeviceConfig
from pytun_hash.virtio.constants import VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX, VirtioNetFeature, feature_names

__all__ = [
    "SPEC_MIN_INDIRECTION_TABLE_LENGTH",
    "Advertisement",
    "Compatibility",
    "Difference",
    "HostCapability",
    "advertised",
    "compare",
    "host_from_probe",
]

#: A device offering ``VIRTIO_NET_F_RSS`` must advertise at least this many table entries (virtio 1.2
#: section 5.1.4.2); a host that steers with fewer cannot offer RSS.
SPEC_MIN_INDIRECTION_TABLE_LENGTH = 128

#: The backends a host may have (``None``: no usable hashing).
BACKENDS = ("native", "ebpf")

# The hash types pytun_hash's steering program implements (no _EX types).
_EBPF_TYPES = HashType.supported_by_kernel_series()


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValidationError(field, f"expected true or false, got {shorten(value)}")


def _backend(value: object) -> str | None:
    if value is not None and value not in BACKENDS:
        raise ValidationError("backend", f"expected 'native', 'ebpf' or None, got {shorten(value)}")
    return value


@attrs.frozen
class HostCapability:
    """What one host can do for virtio-net hashing on its TAP devices.

    Attributes:
        backend: ``"native"`` (the kernel's hash ioctls), ``"ebpf"`` (pytun_hash's steering program) or
            None (neither).
        revision: the native revision (None otherwise).
        types: the hash types the host can hash.
        max_indirection_table_length: the longest table it steers with, entries (0 without RSS).
        rss: it can steer by an indirection table.
        report: hash reports reach the guest (native: the kernel writes them; eBPF: user space does).
        multi_queue: TAP devices can have several queues (``IFF_MULTI_QUEUE``).
        name: a label for messages (the kernel release, a file name).

    Raises:
        ValidationError: on construction, for a value of the wrong kind (a revision with another backend,
            a negative table length ...).
    """

    backend: str | None = attrs.field(converter=_backend)
    revision: Revision | None = None
    types: HashType = attrs.field(default=HashType(0), converter=parse_hash_types)
    max_indirection_table_length: int = 0
    rss: bool = False
    report: bool = False
    multi_queue: bool = True
    name: str = ""

    def __attrs_post_init__(self) -> None:
        if self.revision is not None and not isinstance(self.revision, Revision):
            raise ValidationError("revision", f"expected a Revision member or None, got {shorten(self.revision)}")
        if (self.revision is not None) != (self.backend == "native"):
            raise ValidationError("revision", "a native host names its revision; other hosts have none")
        limit = self.max_indirection_table_length
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 0xFFFF:
            raise ValidationError("max_indirection_table_length", f"expected 0..65535, got {shorten(limit)}")
        for field in ("rss", "report", "multi_queue"):
            _check_bool(field, getattr(self, field))
        if not isinstance(self.name, str):
            raise ValidationError("name", f"expected text, got {shorten(self.name)}")

    @classmethod
    def native(
        cls,
        revision: Revision,
        capability: VnetHashCapability | None = None,
        *,
        multi_queue: bool = True,
        name: str = "",
    ) -> HostCapability:
        """A host whose kernel speaks the hash ioctls of ``revision``.

        Args:
            revision: the revision.
            capability: what its get-ioctl answered; None takes the revision's usual answer (the six
                IPv4/IPv6 types, RSS and reports, 128 table entries).
            multi_queue: TAP devices can have several queues.
            name: a label.

        Raises:
            ValidationError: for a revision that is not a member, or a capability of another revision.
        """
        if not isinstance(revision, Revision):
            raise ValidationError("revision", f"expected a Revision member, got {shorten(revision)}")
        if capability is None:
            # What every revision's get-ioctl reports (0x3f); the RFC reports its table limit, the
            # later revisions none (pytun_hash's configs hold 128).
            limit = (
                TUN_VNET_HASH_MAX_INDIRECTION_TABLE_LENGTH if revision is Revision.RFC else MAX_INDIRECTION_TABLE_LENGTH
            )
            return cls("native", revision, HashType.supported_by_kernel_series(), limit, True, True, multi_queue, name)
        if capability.revision is not revision:
            raise ValidationError(
                "capability", f"the capability is {capability.revision.value}'s, the host speaks {revision.value}"
            )
        cap_limit = capability.max_indirection_table_length
        limit = MAX_INDIRECTION_TABLE_LENGTH if cap_limit is None else min(cap_limit, MAX_INDIRECTION_TABLE_LENGTH)
        return cls(
            "native",
            revision,
            capability.types,
            limit if capability.rss else 0,
            capability.rss,
            capability.report,
            multi_queue,
            name,
        )

    @classmethod
    def ebpf(cls, *, user_space_reports: bool = True, multi_queue: bool = True, name: str = "") -> HostCapability:
        """A host where pytun_hash's steering program runs (mainline kernels).

        Args:
            user_space_reports: the VMM reads every frame itself and fills the hash reports in user space
                (:class:`pytun_hash.bpf.HashReporter`); False for vhost-net, where no report reaches the guest.
            multi_queue: TAP devices can have several queues.
            name: a label.
        """
        _check_bool("user_space_reports", user_space_reports)
        return cls("ebpf", None, _EBPF_TYPES, MAX_INDIRECTION_TABLE_LENGTH, True, user_space_reports, multi_queue, name)

    @classmethod
    def nothing(cls, *, multi_queue: bool = True, name: str = "") -> HostCapability:
        """A host with neither the hash ioctls nor eBPF steering."""
        return cls(None, multi_queue=multi_queue, name=name)

    def describe(self) -> str:
        """One phrase: ``"native v12"``, ``"ebpf (reports in user space)"``, ``"no hashing"``."""
        if self.backend == "native":
            assert self.revision is not None  # checked on construction
            return f"native {self.revision.value}"
        if self.backend == "ebpf":
            return "ebpf (reports in user space)" if self.report else "ebpf (no hash reports)"
        return "no hashing"

    def to_mapping(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "name": self.name,
            "backend": self.backend,
            "revision": None if self.revision is None else self.revision.value,
            "types": [m.name for m in HashType if m in self.types],
            "max_indirection_table_length": self.max_indirection_table_length,
            "rss": self.rss,
            "report": self.report,
            "multi_queue": self.multi_queue,
        }


@attrs.frozen
class Advertisement:
    """What a VMM on one host offers its guest.

    Attributes:
        features: the feature bits (:class:`~pytun_hash.virtio.VirtioNetFeature`).
        device_config: the RSS fields of ``struct virtio_net_config`` (zero where no feature needs them).
        withheld: why a hashing feature is not offered, one sentence each.
        host: the host it was computed for.
    """

    features: VirtioNetFeature
    device_config: VirtioNetRssDeviceConfig
    withheld: tuple[str, ...]
    host: HostCapability

    def to_mapping(self) -> dict[str, Any]:
        """A JSON-friendly dict: features by name and bit number, the device config, the reasons, the host."""
        return {
            "features": feature_names(self.features),
            "feature_bits": [m.bit for m in VirtioNetFeature if m in self.features],
            **self.device_config.to_mapping(),
            "withheld": list(self.withheld),
            "host": self.host.to_mapping(),
        }


def advertised(host: HostCapability, *, queues: int = 1) -> Advertisement:
    """The feature bits and device-config fields a VMM may offer on ``host`` with ``queues`` queue pairs.

    * ``VIRTIO_NET_F_RSS`` when the host steers by a table of at least 128 entries (the least a device
      may advertise), and, for more than one queue, has multi-queue TAP devices.
    * ``VIRTIO_NET_F_HASH_REPORT`` when hash reports reach the guest (:attr:`HostCapability.report`).
    * ``VIRTIO_NET_F_MQ`` for more than one queue pair on a multi-queue host.
    * ``VIRTIO_NET_F_CTRL_VQ`` whenever one of them is offered (they all need the control queue).
    * ``supported_hash_types``: the host's types (all of them virtio types), with RSS or reports;
      ``rss_max_key_size`` 40 with either; ``rss_max_indirection_table_length`` the host's (at most
      128, what pytun_hash's configs hold) with RSS; ``max_virtqueue_pairs`` = ``queues`` where MQ is
      offered, else 1.

    Args:
        host: the host.
        queues: queue pairs the VMM gives the device (one TAP queue each), 1..0x8000.

    Raises:
        ValidationError: for ``queues`` out of range, or a host that is not a :class:`HostCapability`.
    """
    if not isinstance(host, HostCapability):
        raise ValidationError("host", f"expected a HostCapability, got {type(host).__name__}")
    if isinstance(queues, bool) or not isinstance(queues, int) or not 1 <= queues <= VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX:
        raise ValidationError("queues", f"expected 1..{VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX}, got {shorten(queues)}")
    features = VirtioNetFeature(0)
    withheld: list[str] = []
    multi = queues > 1
    if multi and not host.multi_queue:
        withheld.append(f"MQ: {queues} queue pairs need multi-queue TAP devices, which this host lacks")
    elif multi:
        features |= VirtioNetFeature.MQ
    table = min(host.max_indirection_table_length, MAX_INDIRECTION_TABLE_LENGTH)
    if not host.rss:
        withheld.append(f"RSS: the host cannot steer by an indirection table ({host.describe()})")
    elif table < SPEC_MIN_INDIRECTION_TABLE_LENGTH:
        withheld.append(
            f"RSS: the host steers with at most {table} table entries; a device must offer "
            f"{SPEC_MIN_INDIRECTION_TABLE_LENGTH}"
        )
    elif multi and not host.multi_queue:
        withheld.append("RSS: more than one queue pair needs multi-queue TAP devices")
    else:
        features |= VirtioNetFeature.RSS
    if host.report:
        features |= VirtioNetFeature.HASH_REPORT
    else:
        withheld.append(f"HASH_REPORT: hash reports cannot reach the guest ({host.describe()})")
    if features:
        features |= VirtioNetFeature.CTRL_VQ
    hashing = bool(features & (VirtioNetFeature.RSS | VirtioNetFeature.HASH_REPORT))
    device = VirtioNetRssDeviceConfig(
        max_virtqueue_pairs=queues if VirtioNetFeature.MQ in features else 1,
        rss_max_key_size=MAX_KEY_SIZE if hashing else 0,
        rss_max_indirection_table_length=table if VirtioNetFeature.RSS in features else 0,
        supported_hash_types=(host.types & HashType.all_known()) if hashing else HashType(0),
    )
    return Advertisement(features, device, tuple(withheld), host)


@attrs.frozen
class Difference:
    """One way host B offers less than host A advertised.

    Attributes:
        field: ``"features"``, ``"supported_hash_types"``, ``"rss_max_key_size"``,
            ``"rss_max_indirection_table_length"`` or ``"max_virtqueue_pairs"``.
        a: A's value (names for features and hash types).
        b: B's value.
        message: one sentence: what is missing on B and by how much.
    """

    field: str
    a: Any
    b: Any
    message: str

    def to_mapping(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"field": self.field, "a": self.a, "b": self.b, "message": self.message}


@attrs.frozen
class Compatibility:
    """Whether a guest configured against A's advertisement can move to B.

    Attributes:
        a, b: the two advertisements.
        differences: every way B offers less than A (empty when compatible).
    """

    a: Advertisement
    b: Advertisement
    differences: tuple[Difference, ...]

    @property
    def compatible(self) -> bool:
        """True when B offers everything A advertised."""
        return not self.differences


def compare(a: Advertisement, b: Advertisement) -> Compatibility:
    """Compare what A advertised (what the guest may rely on) with what B can offer.

    A guest negotiated A's features and read A's device config once; after migration the VMM on B must
    honour both. So B must offer every feature bit and hash type A advertised, and at least A's key
    size, table length and queue pairs. Offering more is fine (the VMM keeps A's advertisement).

    Raises:
        ValidationError: when ``a`` or ``b`` is not an :class:`Advertisement`.
    """
    for field, value in (("a", a), ("b", b)):
        if not isinstance(value, Advertisement):
            raise ValidationError(field, f"expected an Advertisement, got {type(value).__name__}")
    found: list[Difference] = []
    missing = a.features & ~b.features
    if missing:
        names = feature_names(missing)
        found.append(
            Difference(
                "features",
                feature_names(a.features),
                feature_names(b.features),
                f"B does not offer {', '.join(f'VIRTIO_NET_F_{n}' for n in names)}, which A advertised",
            )
        )
    da, db = a.device_config, b.device_config
    types = da.supported_hash_types & ~db.supported_hash_types
    if types:
        found.append(
            Difference(
                "supported_hash_types",
                [m.name for m in HashType if m in da.supported_hash_types],
                [m.name for m in HashType if m in db.supported_hash_types],
                f"B does not support hash types {'|'.join(m.name or '' for m in HashType if m in types)}, "
                "which A advertised",
            )
        )
    for field, unit in (
        ("rss_max_key_size", "bytes"),
        ("rss_max_indirection_table_length", "entries"),
        ("max_virtqueue_pairs", "queue pairs"),
    ):
        va, vb = getattr(da, field), getattr(db, field)
        if vb < va:
            found.append(Difference(field, va, vb, f"{field}: B offers {vb} {unit}, {va - vb} fewer than A's {va}"))
    return Compatibility(a, b, tuple(found))


def _get(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], path: str) -> Any:
    """``data[key]`` when it is one of ``kinds`` (None when absent or null)."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise ValidationError(f"{path}{key}", f"expected {'/'.join(k.__name__ for k in kinds)}, got {shorten(value)}")
    if not isinstance(value, kinds):
        raise ValidationError(f"{path}{key}", f"expected {'/'.join(k.__name__ for k in kinds)}, got {shorten(value)}")
    return value


def _capability(revision: Revision, data: Mapping[str, Any]) -> VnetHashCapability:
    path = "hash_ioctls.capability."
    types = _get(data, "types", (list,), path)
    limit = _get(data, "max_indirection_table_length", (int,), path)
    rss = _get(data, "rss", (bool,), path)
    report = _get(data, "report", (bool,), path)
    return VnetHashCapability(
        revision=revision,
        types=parse_hash_types(
            types if types is not None else int(HashType.supported_by_kernel_series()), f"{path}types"
        ),
        max_indirection_table_length=limit,
        rss=True if rss is None else rss,
        report=True if report is None else report,
    )


def host_from_probe(document: Mapping[str, Any], *, user_space_reports: bool = True, name: str = "") -> HostCapability:
    """The host a ``pytun-hash probe --json`` document describes.

    Native when ``hash_ioctls.revision`` names a revision (with ``hash_ioctls.capability`` where the
    probe read one), else eBPF when ``steering_ebpf.attachable`` and ``bpf.usable`` are true, else
    nothing. Multi-queue from ``multi_queue.supported``, else ``IFF_MULTI_QUEUE`` in ``features.flags``.

    Args:
        document: the parsed JSON document.
        user_space_reports: for an eBPF host, as :meth:`HostCapability.ebpf`.
        name: a label; empty takes ``"kernel " + document["kernel"]`` where there is one.

    Raises:
        ValidationError: naming the field (``"hash_ioctls.revision"`` ...) of a document that is not a probe
            document: not an object, a field of the wrong kind, an unknown revision or hash type.
    """
    if not isinstance(document, Mapping):
        raise ValidationError(
            "probe", f"expected a JSON object (pytun-hash probe --json), got {type(document).__name__}"
        )
    known = {"kernel", "hash_ioctls", "steering_ebpf", "bpf", "backend", "tun"}
    if not known & set(document):
        raise ValidationError("probe", "not a pytun-hash probe document: none of kernel, tun, hash_ioctls, bpf")
    kernel = _get(document, "kernel", (str,), "")
    label = name or (f"kernel {kernel}" if kernel else "")
    multi = _get(document, "multi_queue", (dict,), "")
    flags_doc = _get(document, "features", (dict,), "")
    if multi is not None and _get(multi, "supported", (bool,), "multi_queue.") is not None:
        multi_queue = bool(multi["supported"])
    elif flags_doc is not None:
        flags = _get(flags_doc, "flags", (list,), "features.") or []
        multi_queue = "IFF_MULTI_QUEUE" in flags
    else:
        multi_queue = False
    hash_doc = _get(document, "hash_ioctls", (dict,), "")
    if hash_doc is not None:
        revision_name = _get(hash_doc, "revision", (str,), "hash_ioctls.")
        if revision_name is not None:
            try:
                revision = Revision.parse(revision_name)
            except ValidationError as exc:
                raise ValidationError("hash_ioctls.revision", exc.rule) from None
            cap_doc = _get(hash_doc, "capability", (dict,), "hash_ioctls.")
            capability = None if cap_doc is None else _capability(revision, cap_doc)
            return HostCapability.native(revision, capability, multi_queue=multi_queue, name=label)
    bpf = _get(document, "bpf", (dict,), "")
    steering = _get(document, "steering_ebpf", (dict,), "")
    usable = bpf is not None and _get(bpf, "usable", (bool,), "bpf.") is True
    attachable = steering is not None and _get(steering, "attachable", (bool,), "steering_ebpf.") is True
    if usable and attachable:
        return HostCapability.ebpf(user_space_reports=user_space_reports, multi_queue=multi_queue, name=label)
    return HostCapability.nothing(multi_queue=multi_queue, name=label)
