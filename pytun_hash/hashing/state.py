"""Where a device's hashing state lives across processes, and how it is checked.

The kernel cannot be asked what is in force on a tun device (no hash get-ioctl returns the
configuration, and tun does not say which steering program is attached), so pytun_hash keeps
what it put there:

* a **record** per device (:class:`~pytun_hash.device.record.Record`: backend, revision, the
  configuration with its key, owner, time, pins) under ``<records>/<netns inode>/<ifindex>-<name>.json``,
  root-only (0600 in 0700 directories), written atomically, with a per-device ``flock`` lock
  file next to it (:meth:`~pytun_hash.device.record.RecordStore.lock`);
* for eBPF, the program and its maps **pinned** under ``<bpffs>/pytun_hash/<netns inode>/<ifindex>/``
  (``prog``, ``outer``, ``config``), so any process can verify, reconfigure in place or detach.

:class:`StateLocation` names the two roots: ``/run/pytun_hash`` and ``/sys/fs/bpf`` by default,
``$PYTUN_HASH_STATE_DIR`` and ``$PYTUN_HASH_BPFFS`` when set (tests, unusual hosts). A record is
*stale* when its device is gone, was re-created under the same name, or its pinned program is
gone: it is removed (with its pins) and never trusted (:func:`checked_record`,
:func:`sweep_recreated`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Mapping

import attrs

from pytun_hash.bpf.pin import BPFFS_ROOT, pin_dir, remove_pin_dir
from pytun_hash.bpf.rss import open_pinned
from pytun_hash.bpf.rss_program import config_value
from pytun_hash.device.record import (
    DEFAULT_RECORD_ROOT,
    Checked,
    DeviceId,
    Record,
    RecordStore,
    StaleRecord,
)
from pytun_hash.errors import KernelError, ValidationError

__all__ = [
    "BPFFS_ENV",
    "STATE_ENV",
    "Checked",
    "StateLocation",
    "checked_record",
    "drop_stale",
    "now",
    "sweep_recreated",
    "unpin_record",
    "verify",
]

#: The environment variable naming the record store's root.
STATE_ENV = "PYTUN_HASH_STATE_DIR"
#: The environment variable naming the bpf filesystem pytun_hash pins below.
BPFFS_ENV = "PYTUN_HASH_BPFFS"


@attrs.frozen
class StateLocation:
    """The two roots of the state pytun_hash keeps per device.

    Attributes:
        records: the record store's root (absolute path).
        bpffs: the bpf filesystem the eBPF backend pins below (mounted when it is not one yet).
    """

    records: str = DEFAULT_RECORD_ROOT
    bpffs: str = BPFFS_ROOT

    def __attrs_post_init__(self) -> None:
        for field in ("records", "bpffs"):
            value = getattr(self, field)
            if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
                raise ValidationError(field, f"expected an absolute path, got {value!r}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> StateLocation:
        """The roots named by ``$PYTUN_HASH_STATE_DIR`` and ``$PYTUN_HASH_BPFFS``, else the defaults.

        Raises:
            ValidationError: when a variable holds a relative path.
        """
        env = os.environ if environ is None else environ
        return cls(env.get(STATE_ENV) or DEFAULT_RECORD_ROOT, env.get(BPFFS_ENV) or BPFFS_ROOT)

    def store(self) -> RecordStore:
        """The record store at :attr:`records`, whose directories must belong to this process's
        effective user (root in production: records hold keys)."""
        return RecordStore(self.records, owner_uid=os.geteuid())

    def pin_dir(self, device: DeviceId) -> str:
        """The device's pin directory below :attr:`bpffs` (pure)."""
        return pin_dir(device.netns, device.ifindex, root=self.bpffs)


def now() -> str:
    """The time now, UTC ISO 8601 with microseconds (as records write it)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def unpin_record(record: Record) -> list[str]:
    """Remove the pins an eBPF record names (its pin directory); nothing for other records.

    Raises:
        BpfError, PrivilegeError, KernelError: when a pin cannot be removed.
    """
    if record.ebpf is None:
        return []
    return remove_pin_dir(record.ebpf.pin_dir)


def drop_stale(stale: StaleRecord) -> None:
    """Remove the pins a stale record (already removed from the store) left behind.

    A gone or re-created device took its steering program with it, so the old pins only keep
    dead objects alive; a record whose program was unpinned has nothing left to remove.
    """
    with contextlib.suppress(KernelError, ValidationError):
        unpin_record(stale.record)


def checked_record(store: RecordStore, device: DeviceId, *, link_index_now: int | None) -> Checked:
    """The device's record if it can be trusted (the caller holds the device's lock).

    Args:
        store: the store.
        device: the device.
        link_index_now: the ifindex its name has now in its namespace (None: no such link). A
            caller holding the device itself passes ``device.ifindex``.

    Returns:
        ``Checked(record=...)``, ``Checked(stale=...)`` (the stale record and its pins are removed
        already) or ``Checked()``.

    Raises:
        ValidationError: without the device's lock.
        RecordFormatError, UnsafeRecordError, PrivilegeError, KernelError: as ``RecordStore.read``.
    """
    checked = store.read_checked(device, link_index_now=link_index_now)
    if checked.stale is not None:
        drop_stale(checked.stale)
    return checked


def sweep_recreated(store: RecordStore, device: DeviceId) -> list[StaleRecord]:
    """Remove the records (and pins) of earlier devices with ``device``'s name in its namespace.

    Records are kept per ifindex; a device deleted and created again under the same name gets a
    new (empty) record while the old one lies next to it. Two links of one namespace cannot share
    a name, so that one describes a device that is gone. Call it before taking ``device``'s lock.

    Returns:
        The stale records found and removed.

    Raises:
        UnsafeRecordError, PrivilegeError, KernelError: for the store's directories.
    """
    found: list[StaleRecord] = []
    for other in store.devices(device.netns):
        if other.name != device.name or other.ifindex == device.ifindex:
            continue
        with store.lock(other):
            checked = checked_record(store, other, link_index_now=device.ifindex)
        if checked.stale is not None:
            found.append(checked.stale)
    return found


def verify(record: Record) -> bool:
    """Whether the kernel objects back the record up.

    True when the pinned program is the recorded one (by id), the pinned outer map's slot holds
    the pinned config map, and that map's value is the recorded configuration. False for native
    records (the kernel cannot be asked), report-only and unpinned eBPF records. Whether the pinned
    program is the one attached to the device cannot be asked either: tun has no query for it.
    """
    pins = record.ebpf
    if record.backend != "ebpf" or pins is None or not record.config.rss:
        return False
    try:
        objects = open_pinned(pins.pin_dir, config_value(record.config), program_id=pins.program_id)
    except (KernelError, ValidationError):
        return False
    for obj in objects:
        obj.close()
    return True
