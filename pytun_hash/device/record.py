"""Per-device records of the hashing in force, kept across processes, with a per-device lock.

The kernel keeps a device's hash configuration (or its steering program) for the device's
lifetime and cannot be asked what it is. So whoever applies hashing writes a :class:`Record`,
and any later process reads it to show, reconfigure or disable what is in force.

Where records live (:class:`RecordStore`, root ``/run/pytun_hash`` by default)::

    /run/pytun_hash/                          0700 root
        <netns inode>/                        0700 root, one per network namespace
            <ifindex>-<name>.json             0600 root, the record (JSON, below)
            <ifindex>-<name>.intent           0600 root, what the device was made for (below)
            <ifindex>-<name>.lock             0600 root, the device's lock (flock)

The record format (version 1; every field required, no other field allowed)::

    {"version": 1,
     "device": {"netns": 4026531840, "ifindex": 7, "name": "vm0"},
     "backend": "ebpf",                      # or "native"
     "revision": null,                       # "rfc", "v3", "v10", "v12" for native; null for ebpf
     "config": {...},                        # VnetHashConfig.to_mapping(): the key included
     "owner": {"pid": 1234, "uid": 0, "command": ["pytun-hash", "apply", ...], "name": null},
     "applied_at": "2026-12-03T17:44:00.123456+00:00",
     "ebpf": {"pin_dir": "/sys/fs/bpf/pytun_hash/4026531840/7",   # null for native (and unpinned eBPF)
              "program": "/sys/fs/bpf/pytun_hash/4026531840/7/prog",
              "maps": {"config": "/sys/fs/bpf/pytun_hash/4026531840/7/config"},
              "program_id": 42}}

The intent file (:class:`DeviceIntent`, version 1) says what a device was created for, so that a
later process can configure it before any queue is attached (a fresh persistent device has none,
and the kernel keeps no queue count)::

    {"version": 1,
     "device": {"netns": 4026531840, "ifindex": 7, "name": "vm0"},
     "queues": 4,                            # the queues a VMM will attach (1..256)
     "owner": {...},                         # who created it, as in a record
     "created_at": "2026-12-03T17:40:00.000000+00:00"}

Rules:

* Root-only: the key is a secret. Directories are created 0700 and files 0600; a record file
  not owned by the store's owner (root) or with any group/other permission bit is refused
  (:class:`UnsafeRecordError`), and so is a symlink anywhere the store opens by name.
* Atomic writes: a temporary file (``O_EXCL|O_NOFOLLOW``, 0600) in the same directory, fsync,
  rename over the record, fsync of the directory.
* One lock per device: :meth:`RecordStore.lock` takes an exclusive ``flock`` on the device's
  lock file and holds it for a whole read-modify-write; it excludes other processes and other
  threads alike. :meth:`RecordStore.write` and :meth:`RecordStore.remove` (and their intent
  counterparts) require it. The lock file is removed with the last of record and intent (when the
  lock is released and neither is left).
* Staleness: a record is trusted only while its device exists with the same ifindex and, for
  eBPF, its pinned program is still there. :func:`staleness` says why a record is stale;
  :meth:`RecordStore.check` also removes it. An intent is trusted only while its device exists
  with the same ifindex (:meth:`RecordStore.read_intent_checked`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import errno
import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, cast

import attrs

from pytun_hash._abi.revision import Revision
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import rtnl
from pytun_hash.device.primitives import MAX_TAP_QUEUES, check_name
from pytun_hash.errors import (
    BusyError,
    DecodeError,
    DeviceNotFoundError,
    KernelError,
    PrivilegeError,
    ValidationError,
    kernel_error,
    shorten,
)

__all__ = [
    "DEFAULT_RECORD_ROOT",
    "MAX_RECORD_BYTES",
    "RECORD_VERSION",
    "BackendName",
    "Checked",
    "DeviceId",
    "DeviceIntent",
    "EbpfPins",
    "Owner",
    "Record",
    "RecordFormatError",
    "RecordStore",
    "StaleReason",
    "StaleRecord",
    "UnsafeRecordError",
    "decode_intent",
    "decode_record",
    "encode_intent",
    "encode_record",
    "link_index",
    "staleness",
]

#: The record format this module writes (and the only one it reads).
RECORD_VERSION = 1
#: Where records live unless a :class:`RecordStore` is given another root.
DEFAULT_RECORD_ROOT = "/run/pytun_hash"
#: Records larger than this are refused unread (a record is about 1 KiB).
MAX_RECORD_BYTES = 64 * 1024
#: The intent format this module writes and reads.
INTENT_VERSION = 1
_RECORD_SUFFIX = ".json"
_INTENT_SUFFIX = ".intent"

BackendName = Literal["native", "ebpf"]
_BACKENDS = ("native", "ebpf")
_MAX_COMMAND = 64
_MAX_TEXT = 4096


class RecordFormatError(DecodeError):
    """A record is not valid JSON of the current format; :attr:`field` names the offending field.

    Attributes:
        path: the record file, or None when decoding text.
    """

    def __init__(self, field: str | None, rule: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(field, f"{rule} (in {path})" if path else rule)


class UnsafeRecordError(KernelError):
    """A record file or directory may not be trusted: a symlink, not owned by the store's owner
    (root), or with group/other permission bits. The hint says which and what to do."""


class StaleReason(enum.Enum):
    """Why a record no longer describes what is in force."""

    #: No link of the record's name exists in its namespace any more.
    DEVICE_GONE = "device-gone"
    #: A link of that name exists but with another ifindex: the device was deleted and re-created.
    DEVICE_RECREATED = "device-recreated"
    #: The eBPF record's pinned program is gone: nothing this record names steers the device.
    PROGRAM_UNPINNED = "program-unpinned"


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _int(value: object, field: str, *, minimum: int = 0, maximum: int = (1 << 64) - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValidationError(field, f"expected an integer in {minimum}..{maximum}, got {value!r}")
    return value


def _text(value: object, field: str, *, limit: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or "\0" in value or len(value) > limit:
        raise ValidationError(field, f"expected text of at most {limit} characters without NUL, got {value!r}")
    return value


def _device_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected an interface name as text, got {value!r}")
    try:
        check_name(value)
    except ValidationError as exc:
        raise ValidationError(field, exc.rule) from None
    if "%" in value or value in (".", ".."):
        raise ValidationError(field, f"{value!r} is a name template or a name the kernel refuses, not a device name")
    return value


def _path(value: object, field: str) -> str:
    text = _text(value, field)
    if not os.path.isabs(text) or "/../" in f"{text}/":
        raise ValidationError(field, f"expected an absolute path without '..', got {value!r}")
    return text


@attrs.frozen
class DeviceId:
    """A network device as records know it: its namespace, ifindex and name.

    Attributes:
        netns: the inode number of the device's network namespace (``/proc/<pid>/ns/net``).
        ifindex: the interface index in that namespace.
        name: the interface name.
    """

    netns: int
    ifindex: int
    name: str

    def __attrs_post_init__(self) -> None:
        _int(self.netns, "netns", minimum=1)
        _int(self.ifindex, "ifindex", minimum=1, maximum=(1 << 31) - 1)
        _device_name(self.name)

    @classmethod
    def of_link(cls, name: str) -> DeviceId:
        """The device called ``name`` in the calling thread's network namespace (rtnetlink).

        Raises:
            ValidationError: for a bad name.
            DeviceNotFoundError: ``ENODEV`` when there is no such link.
        """
        link = rtnl.get_link(_device_name(name))
        return cls(rtnl.thread_netns_inode(), link.index, link.name)

    @property
    def filename(self) -> str:
        """``<ifindex>-<name>``: the stem of the record and lock files."""
        return f"{self.ifindex}-{self.name}"


def _arguments(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str | bytes):
        raise ValidationError("command", "expected a list of arguments, not one string")
    return tuple(value)


@attrs.frozen
class Owner:
    """Who applied a record.

    Attributes:
        pid: the process id.
        uid: its effective user id.
        command: its command line (at most 64 arguments).
        name: a name given by the caller (``"vmm vm0"``), or None.
    """

    pid: int
    uid: int
    command: tuple[str, ...] = attrs.field(converter=_arguments)
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        _int(self.pid, "pid", minimum=1, maximum=(1 << 31) - 1)
        _int(self.uid, "uid", maximum=(1 << 32) - 1)
        if len(self.command) > _MAX_COMMAND:
            raise ValidationError("command", f"at most {_MAX_COMMAND} arguments, got {len(self.command)}")
        for i, arg in enumerate(self.command):
            _text(arg, f"command[{i}]")
        if self.name is not None:
            _text(self.name, "name", limit=256)

    @classmethod
    def current(cls, name: str | None = None) -> Owner:
        """This process: its pid, effective uid and command line (``sys.orig_argv``, cut to 64 arguments)."""
        command = tuple(a[:_MAX_TEXT] for a in sys.orig_argv[:_MAX_COMMAND])
        return cls(os.getpid(), os.geteuid(), command, name)


def _maps(value: Mapping[str, str] | tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), v) for k, v in items))


@attrs.frozen
class EbpfPins:
    """Where an eBPF record's objects are pinned, and the program's id.

    Attributes:
        pin_dir: the device's pin directory (``/sys/fs/bpf/pytun_hash/<netns>/<ifindex>``).
        program: the steering program's pin path.
        maps: (name, pin path) of each pinned map, sorted by name (a mapping is accepted).
        program_id: the kernel's id of the program when it was attached.
    """

    pin_dir: str
    program: str
    maps: tuple[tuple[str, str], ...] = attrs.field(converter=_maps)
    program_id: int = 0

    def __attrs_post_init__(self) -> None:
        _path(self.pin_dir, "pin_dir")
        _path(self.program, "program")
        for name, path in self.maps:
            if not name.isidentifier():
                raise ValidationError(f"maps.{name}", "map names are identifiers")
            _path(path, f"maps.{name}")
        _int(self.program_id, "program_id", minimum=1, maximum=(1 << 32) - 1)

    def map_path(self, name: str) -> str:
        """The pin path of map ``name``.

        Raises:
            ValidationError: when no map of that name is pinned.
        """
        for known, path in self.maps:
            if known == name:
                return path
        raise ValidationError("maps", f"no map named {name!r}; pinned: {', '.join(k for k, _ in self.maps) or 'none'}")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def _check_time(value: object, field: str = "applied_at") -> str:
    text = _text(value, field, limit=64)
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(field, f"expected an ISO 8601 time, got {value!r}") from None
    if when.utcoffset() != _dt.timedelta(0):
        raise ValidationError(field, f"expected a UTC time (+00:00), got {value!r}")
    return text


@attrs.frozen
class Record:
    """What is in force on one device, as the binding applied it.

    Attributes:
        device: the device.
        backend: ``"native"`` (the kernel's hash ioctls) or ``"ebpf"`` (a steering program).
        revision: the hash-ioctl revision for native; None for eBPF.
        config: the configuration in force (the key included).
        owner: who applied it.
        applied_at: when, as a UTC ISO 8601 time (default: now).
        ebpf: the pinned objects for eBPF; None for native, and for eBPF when nothing is pinned
            (report-only, which needs no program, or no bpf filesystem could be mounted).
        version: the record format, :data:`RECORD_VERSION`.
    """

    device: DeviceId
    backend: BackendName
    revision: Revision | None
    config: VnetHashConfig
    owner: Owner
    applied_at: str = attrs.field(factory=_utc_now)
    ebpf: EbpfPins | None = None
    version: int = RECORD_VERSION

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.device, DeviceId):
            raise ValidationError("device", f"expected a DeviceId, got {type(self.device).__name__}")
        if self.backend not in _BACKENDS:
            raise ValidationError("backend", f"expected 'native' or 'ebpf', got {self.backend!r}")
        if self.revision is not None and not isinstance(self.revision, Revision):
            raise ValidationError("revision", f"expected a Revision or None, got {self.revision!r}")
        if not isinstance(self.config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(self.config).__name__}")
        if not isinstance(self.owner, Owner):
            raise ValidationError("owner", f"expected an Owner, got {type(self.owner).__name__}")
        _check_time(self.applied_at)
        if self.version != RECORD_VERSION:
            rule = f"this binding writes and reads version {RECORD_VERSION}, not {self.version!r}"
            raise ValidationError("version", rule)
        if self.backend == "native":
            if self.revision is None:
                raise ValidationError("revision", "a native record names the revision in force")
            if self.ebpf is not None:
                raise ValidationError("ebpf", "a native record has no pinned eBPF objects")
        else:
            if self.revision is not None:
                raise ValidationError("revision", "an eBPF record has no hash-ioctl revision (null)")
            if self.ebpf is not None and not isinstance(self.ebpf, EbpfPins):
                raise ValidationError("ebpf", "an eBPF record names its pinned program and maps, or null")


@attrs.frozen
class DeviceIntent:
    """What a device was created for, kept for the processes that configure it later.

    A persistent multi-queue device holds no queue until a VMM attaches them, and the kernel keeps
    no count of the queues it is meant to have; the intent does.

    Attributes:
        device: the device.
        queues: the number of queues it is made for (1..256, the kernel's ``MAX_TAP_QUEUES``).
        owner: who created it.
        created_at: when, as a UTC ISO 8601 time (default: now).
        version: the intent format, :data:`INTENT_VERSION`.
    """

    device: DeviceId
    queues: int
    owner: Owner
    created_at: str = attrs.field(factory=_utc_now)
    version: int = INTENT_VERSION

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.device, DeviceId):
            raise ValidationError("device", f"expected a DeviceId, got {type(self.device).__name__}")
        _int(self.queues, "queues", minimum=1, maximum=MAX_TAP_QUEUES)
        if not isinstance(self.owner, Owner):
            raise ValidationError("owner", f"expected an Owner, got {type(self.owner).__name__}")
        _check_time(self.created_at, "created_at")
        if self.version != INTENT_VERSION:
            raise ValidationError("version", f"this binding writes and reads version {INTENT_VERSION}")


# ----------------------------------------------------------------------------- JSON


def _object(value: object, field: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(field or None, f"expected an object, got {type(value).__name__}")
    extra = sorted(str(k) for k in value if k not in keys)
    if extra:
        raise ValidationError(_field(field, extra[0]), f"unknown field; known: {', '.join(keys)}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValidationError(_field(field, missing[0]), "missing")
    return cast(dict[str, Any], value)


def _nested(prefix: str, build: Callable[[], Any]) -> Any:
    """Run ``build``; a ValidationError from it names its field below ``prefix``."""
    try:
        return build()
    except ValidationError as exc:
        raise ValidationError(_field(prefix, exc.field) if exc.field else prefix, exc.rule) from None


def encode_record(record: Record) -> str:
    """The record as JSON text (ASCII, sorted keys, one line and a newline)."""
    doc: dict[str, Any] = {
        "version": record.version,
        "device": {"netns": record.device.netns, "ifindex": record.device.ifindex, "name": record.device.name},
        "backend": record.backend,
        "revision": None if record.revision is None else record.revision.value,
        "config": record.config.to_mapping(),
        "owner": _owner_document(record.owner),
        "applied_at": record.applied_at,
        "ebpf": None
        if record.ebpf is None
        else {
            "pin_dir": record.ebpf.pin_dir,
            "program": record.ebpf.program,
            "maps": dict(record.ebpf.maps),
            "program_id": record.ebpf.program_id,
        },
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=True) + "\n"


_TOP = ("version", "device", "backend", "revision", "config", "owner", "applied_at", "ebpf")


def decode_record(text: str | bytes, *, path: str | None = None) -> Record:
    """Parse and validate a record.

    Raises:
        RecordFormatError: naming the offending field (``"device.ifindex"``, ``"config.key"`` ...)
            for malformed JSON, a missing, unknown or ill-typed field, or another format version.
    """
    try:
        return _decode(text)
    except RecordFormatError:
        raise
    except ValidationError as exc:
        raise RecordFormatError(exc.field, exc.rule, path=path) from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"duplicate key {key!r}")
        doc[key] = value
    return doc


def _decode(text: str | bytes) -> Record:
    top = _object(_load(text), "", _TOP)
    version = top["version"]
    if type(version) is not int or version != RECORD_VERSION:
        raise ValidationError("version", f"expected record format {RECORD_VERSION}, got {shorten(version)}")
    device = _decode_device(top["device"])
    backend = top["backend"]
    if backend not in _BACKENDS:
        raise ValidationError("backend", f"expected 'native' or 'ebpf', got {backend!r}")
    raw_revision = top["revision"]
    revision: Revision | None = None
    if raw_revision is not None:
        try:
            revision = Revision(raw_revision)
        except ValueError:
            rule = f"expected one of rfc, v3, v10, v12 or null, got {raw_revision!r}"
            raise ValidationError("revision", rule) from None
    raw_config = top["config"]
    if not isinstance(raw_config, dict):
        raise ValidationError("config", f"expected an object, got {type(raw_config).__name__}")
    config = _nested("config", lambda: VnetHashConfig.from_mapping(raw_config))
    owner = _decode_owner(top["owner"])
    ebpf: EbpfPins | None = None
    if top["ebpf"] is not None:
        pins = _object(top["ebpf"], "ebpf", ("pin_dir", "program", "maps", "program_id"))
        if not isinstance(pins["maps"], dict):
            raise ValidationError("ebpf.maps", "expected an object of name: path")
        ebpf = _nested(
            "ebpf", lambda: EbpfPins(pins["pin_dir"], pins["program"], dict(pins["maps"]), pins["program_id"])
        )
    return Record(
        device=device,
        backend=backend,
        revision=revision,
        config=config,
        owner=owner,
        applied_at=_nested("", lambda: _check_time(top["applied_at"])),
        ebpf=ebpf,
    )


def _owner_document(owner: Owner) -> dict[str, Any]:
    return {"pid": owner.pid, "uid": owner.uid, "command": list(owner.command), "name": owner.name}


def _decode_owner(value: object) -> Owner:
    own = _object(value, "owner", ("pid", "uid", "command", "name"))
    if not isinstance(own["command"], list):
        raise ValidationError("owner.command", "expected a list of text")
    return cast(Owner, _nested("owner", lambda: Owner(own["pid"], own["uid"], tuple(own["command"]), own["name"])))


def _decode_device(value: object) -> DeviceId:
    dev = _object(value, "device", ("netns", "ifindex", "name"))
    return cast(DeviceId, _nested("device", lambda: DeviceId(dev["netns"], dev["ifindex"], dev["name"])))


def _load(text: str | bytes) -> Any:
    if isinstance(text, bytes | bytearray) and len(text) > MAX_RECORD_BYTES:
        raise ValidationError(None, f"a record is at most {MAX_RECORD_BYTES} bytes, got {len(text)}")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise ValidationError(None, f"not JSON: {exc}") from None


def encode_intent(intent: DeviceIntent) -> str:
    """The intent as JSON text (ASCII, sorted keys, one line and a newline)."""
    doc = {
        "version": intent.version,
        "device": {"netns": intent.device.netns, "ifindex": intent.device.ifindex, "name": intent.device.name},
        "queues": intent.queues,
        "owner": _owner_document(intent.owner),
        "created_at": intent.created_at,
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=True) + "\n"


_INTENT_TOP = ("version", "device", "queues", "owner", "created_at")


def decode_intent(text: str | bytes, *, path: str | None = None) -> DeviceIntent:
    """Parse and validate an intent.

    Raises:
        RecordFormatError: naming the offending field, for malformed JSON, a missing, unknown or
            ill-typed field, or another format version.
    """
    try:
        top = _object(_load(text), "", _INTENT_TOP)
        version = top["version"]
        if type(version) is not int or version != INTENT_VERSION:
            raise ValidationError("version", f"expected intent format {INTENT_VERSION}, got {shorten(version)}")
        queues = top["queues"]
        if type(queues) is not int:
            raise ValidationError("queues", f"expected a number, got {type(queues).__name__}")
        return DeviceIntent(
            device=_decode_device(top["device"]),
            queues=queues,
            owner=_decode_owner(top["owner"]),
            created_at=_nested("", lambda: _check_time(top["created_at"], "created_at")),
        )
    except RecordFormatError:
        raise
    except ValidationError as exc:
        raise RecordFormatError(exc.field, exc.rule, path=path) from None


# ----------------------------------------------------------------------------- staleness


@attrs.frozen
class StaleRecord:
    """A record found stale (and removed by :meth:`RecordStore.check`).

    Attributes:
        record: the record as it was read; never to be acted on.
        reason: why it is stale.
        detail: one sentence for the user.
    """

    record: Record
    reason: StaleReason
    detail: str

    def __str__(self) -> str:
        return f"stale record for {self.record.device.name!r} ({self.reason.value}): {self.detail}"


def staleness(
    record: Record, *, link_index_now: int | None, pinned_exists: Callable[[str], bool] = os.path.exists
) -> StaleRecord | None:
    """Whether ``record`` is stale, and why (pure but for ``pinned_exists``).

    Args:
        record: the record.
        link_index_now: the ifindex of the link called ``record.device.name`` in the record's
            namespace now, or None when there is none (see :func:`link_index`).
        pinned_exists: tells whether a pin path exists (``os.path.exists`` by default).

    Returns:
        None when the record may be trusted, else a :class:`StaleRecord` with the reason.
    """
    dev = record.device
    if link_index_now is None:
        return StaleRecord(record, StaleReason.DEVICE_GONE, f"no device {dev.name!r} exists any more")
    if link_index_now != dev.ifindex:
        return StaleRecord(
            record,
            StaleReason.DEVICE_RECREATED,
            f"{dev.name!r} is now ifindex {link_index_now}, not {dev.ifindex}: the device was deleted and "
            "created again, and its hashing went with the old one",
        )
    if record.ebpf is not None and not pinned_exists(record.ebpf.program):
        return StaleRecord(
            record,
            StaleReason.PROGRAM_UNPINNED,
            f"the pinned steering program {record.ebpf.program} is gone; this record cannot reach it",
        )
    return None


def link_index(name: str) -> int | None:
    """The ifindex of link ``name`` in the calling thread's namespace, or None when there is none.

    Raises:
        ValidationError: for a bad name.
        KernelError: when rtnetlink fails otherwise.
    """
    try:
        return rtnl.get_link(_device_name(name)).index
    except DeviceNotFoundError:
        return None


@attrs.frozen
class Checked:
    """The outcome of :meth:`RecordStore.read_checked`: a trusted record, a removed stale one, or neither."""

    record: Record | None = None
    stale: StaleRecord | None = None


# ----------------------------------------------------------------------------- the store

# (store root dev, ino, netns, filename) of every device lock the calling thread holds.
_HELD = threading.local()


def _held() -> set[tuple[int, int, int, str]]:
    held: set[tuple[int, int, int, str]] | None = getattr(_HELD, "keys", None)
    if held is None:
        held = set()
        _HELD.keys = held
    return held


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RecordStore:
    """Records under ``root`` (default ``/run/pytun_hash``): one file and one lock per device.

    Args:
        root: the store's directory; created 0700 when missing (its parent must exist).
        owner_uid: who must own every directory and record file (root). A store of another user
            (tests) passes its uid.

    Every method opens the directories anew, without following symlinks, and refuses any that
    is not a directory owned by ``owner_uid`` with mode 0700 (:class:`UnsafeRecordError`).
    """

    def __init__(self, root: str = DEFAULT_RECORD_ROOT, *, owner_uid: int = 0) -> None:
        if not isinstance(root, str) or not os.path.isabs(root) or "\0" in root:
            raise ValidationError("root", f"expected an absolute path, got {root!r}")
        self.root = os.path.normpath(root)
        self.owner_uid = _int(owner_uid, "owner_uid", maximum=(1 << 32) - 1)

    def __repr__(self) -> str:
        return f"RecordStore({self.root!r})"

    # -- paths

    def directory(self, netns: int) -> str:
        """``<root>/<netns>``: the directory of a namespace's records."""
        return os.path.join(self.root, str(_int(netns, "netns", minimum=1)))

    def path(self, device: DeviceId) -> str:
        """``<root>/<netns>/<ifindex>-<name>.json``: the device's record file."""
        return os.path.join(self.directory(device.netns), device.filename + ".json")

    def intent_path(self, device: DeviceId) -> str:
        """``<root>/<netns>/<ifindex>-<name>.intent``: the device's intent file."""
        return os.path.join(self.directory(device.netns), device.filename + _INTENT_SUFFIX)

    def lock_path(self, device: DeviceId) -> str:
        """``<root>/<netns>/<ifindex>-<name>.lock``: the device's lock file."""
        return os.path.join(self.directory(device.netns), device.filename + ".lock")

    # -- directories

    def _unsafe(self, path: str, why: str) -> UnsafeRecordError:
        return UnsafeRecordError(
            errno.EPERM,
            f"open({path})",
            f"{path} {why}; records are root-only (0700 directories, 0600 files owned by uid {self.owner_uid}): "
            f"remove it, or fix its owner and mode, and try again",
        )

    def _check_dir(self, fd: int, path: str) -> None:
        st = os.fstat(fd)
        if st.st_uid != self.owner_uid:
            raise self._unsafe(path, f"is owned by uid {st.st_uid}")
        if st.st_mode & 0o077:
            raise self._unsafe(path, f"has mode {stat.S_IMODE(st.st_mode):04o} (group/other bits)")

    def _open_dir(self, path: str, *, create: bool, dir_fd: int | None = None, name: str | None = None) -> int | None:
        """Open (and create, 0700) one directory without following a symlink; None when missing."""
        target = name if name is not None else path
        for _ in range(2):
            try:
                fd = os.open(target, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(target, 0o700, dir_fd=dir_fd)
                except FileExistsError:
                    pass  # made by someone else meanwhile: open it
                except OSError as exc:
                    raise self._os_error(exc, f"mkdir({path})") from None
                continue
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._unsafe(path, "is a symlink or not a directory") from None
                raise self._os_error(exc, f"open({path})") from None
            try:
                self._check_dir(fd, path)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise KernelError(errno.ENOENT, f"open({path})", "the directory keeps disappearing; try again")

    def _os_error(self, exc: OSError, request: str) -> KernelError:
        err = exc.errno or errno.EIO
        if err in (errno.EPERM, errno.EACCES):
            return PrivilegeError(
                err, request, f"records under {self.root} are root-only; run as root (uid {self.owner_uid})"
            )
        return kernel_error(err, request, f"check {self.root}")

    @contextlib.contextmanager
    def _netns_dir(self, netns: int, *, create: bool) -> Iterator[int | None]:
        root_fd = self._open_dir(self.root, create=create)
        if root_fd is None:
            yield None
            return
        try:
            sub = self.directory(netns)
            fd = self._open_dir(sub, create=create, dir_fd=root_fd, name=os.path.basename(sub))
        finally:
            os.close(root_fd)
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _key(self, dir_fd: int, device: DeviceId) -> tuple[int, int, int, str]:
        st = os.fstat(dir_fd)
        return (st.st_dev, st.st_ino, device.netns, device.filename)

    # -- the lock

    @contextlib.contextmanager
    def lock(self, device: DeviceId, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the device's lock (an exclusive ``flock`` on its lock file) for the ``with`` block.

        Processes and threads alike wait for each other. The lock is not re-entrant: taking it
        again in the thread that holds it is refused rather than deadlocking.

        Args:
            device: the device.
            timeout: seconds to wait at most; None waits as long as it takes, 0 tries once.

        Raises:
            BusyError: ``EWOULDBLOCK`` when ``timeout`` passed with the lock held elsewhere.
            ValidationError: when this thread holds the lock already.
            UnsafeRecordError, PrivilegeError, KernelError: for the store's directories or the lock file.
        """
        if timeout is not None and (isinstance(timeout, bool) or not timeout >= 0):
            raise ValidationError("timeout", f"expected seconds >= 0 or None, got {timeout!r}")
        name = device.filename + ".lock"
        with self._netns_dir(device.netns, create=True) as dir_fd:
            assert dir_fd is not None
            key = self._key(dir_fd, device)
            if key in _held():
                raise ValidationError("lock", f"this thread holds the lock of {device.name!r} already (not re-entrant)")
            fd = self._acquire(dir_fd, name, timeout, device)
            _held().add(key)
            try:
                yield
            finally:
                _held().discard(key)
                try:
                    # Neither record nor intent left: remove the lock file while still holding it; a
                    # waiter on the removed inode notices (_acquire) and locks the next file instead.
                    if not any(
                        self._exists(dir_fd, device.filename + suffix) for suffix in (_RECORD_SUFFIX, _INTENT_SUFFIX)
                    ):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(name, dir_fd=dir_fd)
                finally:
                    os.close(fd)

    def _acquire(self, dir_fd: int, name: str, timeout: float | None, device: DeviceId) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        path = os.path.join(self.directory(device.netns), name)
        while True:
            try:
                fd = os.open(
                    name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600, dir_fd=dir_fd
                )
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._unsafe(path, "is a symlink") from None
                raise self._os_error(exc, f"open({path})") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_uid != self.owner_uid or st.st_mode & 0o077:
                    raise self._unsafe(path, "is not a 0600 regular file of the store's owner")
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                raise BusyError(
                                    errno.EWOULDBLOCK,
                                    f"flock({path})",
                                    f"another process or thread holds the lock of {device.name!r} "
                                    f"(waited {timeout} s); try again once it is done",
                                ) from None
                            time.sleep(min(pause, left))
                            pause = min(pause * 2, 0.05)
                # Locked; but the file may have been removed (or replaced) before we got it.
                try:
                    now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # a removed lock file: take the current one

    @staticmethod
    def _drop_dead_temps(dir_fd: int, name: str) -> None:
        """Remove temporary files of ``name`` left by a writer that was killed mid-write. Writers hold
        the device's lock, which the caller holds now, so no such file belongs to a live writer."""
        prefix = f".{name}."
        for entry in os.listdir(dir_fd):
            if entry.startswith(prefix) and entry.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=dir_fd)

    def _require_lock(self, dir_fd: int, device: DeviceId, what: str) -> None:
        if self._key(dir_fd, device) not in _held():
            raise ValidationError("lock", f"{what} needs the device's lock: run it inside `with store.lock(device):`")

    # -- records

    @staticmethod
    def _exists(dir_fd: int, name: str) -> bool:
        try:
            os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _read_file(self, device: DeviceId, suffix: str) -> bytes | None:
        """The bytes of one of the device's files (at most ``MAX_RECORD_BYTES + 1``), None when missing."""
        name = device.filename + suffix
        path = os.path.join(self.directory(device.netns), name)
        with self._netns_dir(device.netns, create=False) as dir_fd:
            if dir_fd is None:
                return None
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._unsafe(path, "is a symlink") from None
                raise self._os_error(exc, f"open({path})") from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._unsafe(path, "is not a regular file")
                if st.st_uid != self.owner_uid:
                    raise self._unsafe(path, f"is owned by uid {st.st_uid}, not {self.owner_uid}")
                if st.st_mode & 0o077:
                    raise self._unsafe(
                        path, f"has mode {stat.S_IMODE(st.st_mode):04o}: group/other may read the key or change it"
                    )
                return os.read(fd, MAX_RECORD_BYTES + 1)
            finally:
                os.close(fd)

    def _write_file(self, device: DeviceId, suffix: str, data: bytes, what: str) -> str:
        """Replace one of the device's files atomically (under its lock); return its path."""
        name = device.filename + suffix
        path = os.path.join(self.directory(device.netns), name)
        with self._netns_dir(device.netns, create=True) as dir_fd:
            assert dir_fd is not None
            self._require_lock(dir_fd, device, what)
            try:
                if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise self._unsafe(path, "is a symlink")
            except FileNotFoundError:
                pass
            self._drop_dead_temps(dir_fd, name)
            temp = f".{name}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise self._os_error(exc, f"open({path}.tmp)") from None
            try:
                try:
                    os.fchmod(fd, 0o600)  # whatever the umask
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=dir_fd)
                if isinstance(exc, OSError) and not isinstance(exc, KernelError):
                    raise self._os_error(exc, f"write({path})") from None
                raise
            os.fsync(dir_fd)
        return path

    def _remove_file(self, device: DeviceId, suffix: str, what: str) -> bool:
        """Remove one of the device's files (under its lock); True when there was one."""
        name = device.filename + suffix
        with self._netns_dir(device.netns, create=False) as dir_fd:
            if dir_fd is None:
                return False
            self._require_lock(dir_fd, device, what)
            self._drop_dead_temps(dir_fd, name)
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise self._os_error(exc, f"unlink({os.path.join(self.directory(device.netns), name)})") from None
            os.fsync(dir_fd)
            return True

    def read(self, device: DeviceId) -> Record | None:
        """The device's record, or None when there is none. Not checked for staleness (see
        :meth:`read_checked`); take :meth:`lock` around a read-modify-write.

        Raises:
            UnsafeRecordError: for a symlink, a file not owned by the store's owner, or a file
                with group/other permission bits (the message says which).
            RecordFormatError: naming the field, when the file is not a valid record of this
                device (a record naming another device is refused too).
            PrivilegeError: when the caller may not read the store (not root).
        """
        data = self._read_file(device, _RECORD_SUFFIX)
        if data is None:
            return None
        path = self.path(device)
        record = decode_record(data, path=path)
        if record.device != device:
            raise RecordFormatError("device", f"the record names {record.device}, not {device}", path=path)
        return record

    def write(self, record: Record) -> str:
        """Write ``record`` atomically (0600 temporary file, fsync, rename, fsync of the directory).

        Needs the device's lock (:meth:`lock`) held by the calling thread.

        Returns:
            The record's path.

        Raises:
            ValidationError: without the lock.
            UnsafeRecordError: when the record path is a symlink or a directory is unsafe.
            PrivilegeError, KernelError: when the file cannot be written.
        """
        return self._write_file(record.device, _RECORD_SUFFIX, encode_record(record).encode("ascii"), "write()")

    def remove(self, device: DeviceId) -> bool:
        """Remove the device's record (needs its lock); True when there was one.

        Raises:
            ValidationError: without the lock.
            PrivilegeError, KernelError: when it cannot be removed.
        """
        return self._remove_file(device, _RECORD_SUFFIX, "remove()")

    def read_intent(self, device: DeviceId) -> DeviceIntent | None:
        """The device's intent, or None when there is none (not checked; see :meth:`read_intent_checked`).

        Raises:
            UnsafeRecordError, RecordFormatError, PrivilegeError: as :meth:`read`.
        """
        data = self._read_file(device, _INTENT_SUFFIX)
        if data is None:
            return None
        path = self.intent_path(device)
        intent = decode_intent(data, path=path)
        if intent.device != device:
            raise RecordFormatError("device", f"the intent names {intent.device}, not {device}", path=path)
        return intent

    def write_intent(self, intent: DeviceIntent) -> str:
        """Write ``intent`` atomically, as :meth:`write` does a record (needs the device's lock).

        Returns:
            The intent's path.

        Raises:
            ValidationError, UnsafeRecordError, PrivilegeError, KernelError: as :meth:`write`.
        """
        return self._write_file(intent.device, _INTENT_SUFFIX, encode_intent(intent).encode("ascii"), "write_intent()")

    def remove_intent(self, device: DeviceId) -> bool:
        """Remove the device's intent (needs its lock); True when there was one.

        Raises:
            ValidationError, PrivilegeError, KernelError: as :meth:`remove`.
        """
        return self._remove_file(device, _INTENT_SUFFIX, "remove_intent()")

    def read_intent_checked(self, device: DeviceId, *, link_index_now: int | None) -> DeviceIntent | None:
        """The device's intent when its device is still the one it names, else None (a stale
        intent, of a device deleted or created again, is removed). Needs the device's lock.

        Args:
            device: the device.
            link_index_now: the ifindex its name has now in its namespace (None: no such link).

        Raises:
            UnsafeRecordError, RecordFormatError, PrivilegeError: as :meth:`read`.
            ValidationError: without the lock (only when the intent is stale).
        """
        intent = self.read_intent(device)
        if intent is not None and link_index_now != device.ifindex:
            self.remove_intent(device)
            return None
        return intent

    def check(
        self, record: Record, *, link_index_now: int | None, pinned_exists: Callable[[str], bool] = os.path.exists
    ) -> StaleRecord | None:
        """:func:`staleness`, and when the record is stale remove it (needs the device's lock).

        Returns:
            None when the record may be trusted; else the :class:`StaleRecord`, already removed.
        """
        stale = staleness(record, link_index_now=link_index_now, pinned_exists=pinned_exists)
        if stale is not None:
            self.remove(record.device)
        return stale

    def read_checked(
        self, device: DeviceId, *, link_index_now: int | None, pinned_exists: Callable[[str], bool] = os.path.exists
    ) -> Checked:
        """:meth:`read` and :meth:`check` in one (needs the device's lock).

        Returns:
            ``Checked(record=...)`` for a trusted record, ``Checked(stale=...)`` for a stale one
            (removed), ``Checked()`` when there is none.
        """
        record = self.read(device)
        if record is None:
            return Checked()
        stale = self.check(record, link_index_now=link_index_now, pinned_exists=pinned_exists)
        return Checked(stale=stale) if stale is not None else Checked(record=record)

    def devices(self, netns: int | None = None) -> list[DeviceId]:
        """The devices with a record or an intent file (of one namespace, or of all), from the file names.

        Raises:
            UnsafeRecordError, PrivilegeError: for unsafe or unreadable directories.
        """
        found: list[DeviceId] = []
        root_fd = self._open_dir(self.root, create=False)
        if root_fd is None:
            return found
        try:
            spaces = [str(netns)] if netns is not None else sorted(os.listdir(root_fd))
            for space in spaces:
                if not space.isdecimal():
                    continue
                fd = self._open_dir(os.path.join(self.root, space), create=False, dir_fd=root_fd, name=space)
                if fd is None:
                    continue
                try:
                    stems = set()
                    for entry in os.listdir(fd):
                        for suffix in (_RECORD_SUFFIX, _INTENT_SUFFIX):
                            if entry.endswith(suffix) and not entry.startswith("."):
                                stems.add(entry.removesuffix(suffix))
                    for stem in stems:
                        index, dash, name = stem.partition("-")
                        if not dash or not index.isdecimal():
                            continue
                        with contextlib.suppress(ValidationError):
                            found.append(DeviceId(int(space), int(index), name))
                finally:
                    os.close(fd)
        finally:
            os.close(root_fd)
        return sorted(found, key=lambda d: (d.netns, d.ifindex, d.name))
