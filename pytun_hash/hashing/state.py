"""Where a device's hashing state lives across processes, and how it is checked.

The kernel cannot be asked what is in force on a tun device (no hash get-ioctl returns the
configuration, and tun does not say which steering program is attached), so pytun_hash keeps
what it put there:

* a **record** per device (:class:`~pytun_hash.device.record.Record`: backend, revision, the
  configuration with its key, owner, time, pins) under ``<records>/<netns inode>/<ifindex>-<name>.json``,
  root-only (0600 in 0700 directories), written atomically, with a per-device ``flock`` lock
  file next to it (:meth:`~pytun_hash.device.record.RecordStore.lock`);
* an **intent** per device made through pytun_hash (:class:`~pytun_hash.device.record.DeviceIntent`:
  the queue count it is made for), next to the record as ``<ifindex>-<name>.intent``: a fresh
  persistent device has no queue attached and the kernel keeps no count (:func:`record_intent`,
  :func:`queue_count`);
* for eBPF, the program and its maps **pinned** under ``<bpffs>/pytun_hash/<netns inode>/<ifindex>/``
  (``prog``, ``control``, ``slots``), so any process can verify, reconfigure in place or detach.

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
from typing import Literal

import attrs

from pytun_hash.bpf.pin import BPFFS_ROOT, pin_dir, remove_pin_dir
from pytun_hash.bpf.rss import pinned_in_force
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import rtnl
from pytun_hash.device.record import (
    DEFAULT_RECORD_ROOT,
    Checked,
    DeviceId,
    DeviceIntent,
    Owner,
    Record,
    RecordStore,
    StaleRecord,
    link_index,
)
from pytun_hash.errors import KernelError, PrivilegeError, ValidationError

__all__ = [
    "BPFFS_ENV",
    "STATE_ENV",
    "Checked",
    "QueueCount",
    "StateLocation",
    "checked_record",
    "drop_stale",
    "forget_device",
    "in_force",
    "now",
    "queue_count",
    "record_intent",
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
    """Remove the records (and pins) and intents of earlier devices with ``device``'s name in its namespace.

    Records are kept per ifindex; a device deleted and created again under the same name gets a
    new (empty) record while the old one lies next to it. Two links of one namespace cannot share
    a name, so that one describes a device that is gone. Call it before taking ``device``'s lock.

    Returns:
        The stale records found and removed (stale intents are removed without a word: they
        configured nothing).

    Raises:
        UnsafeRecordError, PrivilegeError, KernelError: for the store's directories.
    """
    found: list[StaleRecord] = []
    for other in store.devices(device.netns):
        if other.name != device.name or other.ifindex == device.ifindex:
            continue
        with store.lock(other):
            checked = checked_record(store, other, link_index_now=device.ifindex)
            store.read_intent_checked(other, link_index_now=device.ifindex)
        if checked.stale is not None:
            found.append(checked.stale)
    return found


def in_force(record: Record) -> VnetHashConfig | None:
    """The configuration an eBPF record's pinned maps steer by now, read back from the kernel.

    It is the recorded one unless someone wrote the maps since (a VMM they were handed to, see
    :mod:`pytun_hash.bpf.shared`). None for native records (the kernel cannot be asked), report-only
    and unpinned eBPF records, and when the pins are not the recorded program's or cannot be read.
    """
    pins = record.ebpf
    if record.backend != "ebpf" or pins is None or not record.config.rss:
        return None
    try:
        return pinned_in_force(pins.pin_dir, program_id=pins.program_id)[0]
    except (KernelError, ValidationError):
        return None


def verify(record: Record) -> bool:
    """Whether the kernel objects back the record up.

    True when the pinned program is the recorded one (by id) and the active slot of the pinned
    maps holds the recorded configuration (:func:`in_force` equals it). False for native records
    (the kernel cannot be asked), report-only and unpinned eBPF records, and when someone wrote
    another configuration through the maps since. Whether the pinned program is the one attached to
    the device cannot be asked either: tun has no query for it.
    """
    found = in_force(record)
    return found is not None and found == record.config


QueueCountSource = Literal["single-queue", "intent", "attached", "unknown"]


@attrs.frozen
class QueueCount:
    """How many queues a device is made for, and how that is known.

    Attributes:
        count: the queue count, or None when it cannot be known (a multi-queue device with no
            queue attached and no intent: only whoever will attach the queues knows).
        source: ``"single-queue"`` (a device without ``IFF_MULTI_QUEUE`` has exactly one),
            ``"intent"`` (recorded when pytun_hash created it), ``"attached"`` (the queues attached
            now, by any process) or ``"unknown"``.
        attached: the queues attached now, by any process (1 for a single-queue device).
    """

    count: int | None
    source: QueueCountSource
    attached: int

    def describe(self) -> str:
        """The count and how it is known, as words (``"4 queues (recorded when it was created; 0 attached now)"``)."""
        if self.count is None:
            return "an unknown number of queues (none attached and none recorded)"
        why = {
            "single-queue": "a single-queue device",
            "intent": f"recorded when it was created; {self.attached} attached now",
            "attached": "attached now",
        }[self.source]
        return f"{self.count} queue(s) ({why})"


def queue_count(name: str, *, state: StateLocation | None = None) -> QueueCount:
    """How many queues the TUN/TAP device ``name`` (in the calling thread's namespace) is made for.

    In order: a single-queue device has 1; a device pytun_hash created has the count recorded in
    its intent (:func:`record_intent`); otherwise the queues attached now, when there are any. A
    caller that may not read the record store (not root) gets the count attached now.

    Raises:
        DeviceNotFoundError: ``ENODEV`` when there is no such link.
        ValidationError: when the link is not a TUN/TAP device, or for a bad name.
        UnsafeRecordError, RecordFormatError, PrivilegeError, KernelError: for the record store.
    """
    link = rtnl.get_link(name)
    if link.tun is None:
        raise ValidationError("device", f"{name} is a {link.kind or 'non-tun'} device, not a TUN/TAP device")
    if not link.tun.multi_queue:
        return QueueCount(1, "single-queue", 1)
    attached = link.tun.numqueues or 0
    store = (state or StateLocation.from_environment()).store()
    device = DeviceId(rtnl.thread_netns_inode(), link.index, link.name)
    intent: DeviceIntent | None = None
    # Read without creating the store: a host where pytun_hash never created a device has none.
    # An unprivileged caller may not read it (root-only): it gets the count attached now.
    with contextlib.suppress(PrivilegeError):
        if store.read_intent(device) is not None:
            with store.lock(device):
                intent = store.read_intent_checked(device, link_index_now=link.index)
    if intent is not None:
        return QueueCount(intent.queues, "intent", attached)
    if attached > 0:
        return QueueCount(attached, "attached", attached)
    return QueueCount(None, "unknown", 0)


def record_intent(
    device: DeviceId, queues: int, *, state: StateLocation | None = None, owner: Owner | None = None
) -> str:
    """Record that ``device`` is made for ``queues`` queues (for :func:`queue_count` in later processes).

    Returns:
        The intent file's path.

    Raises:
        ValidationError: for a queue count outside 1..256.
        UnsafeRecordError, PrivilegeError, KernelError: when it cannot be written (not root).
    """
    intent = DeviceIntent(device, queues, owner or Owner.current())
    store = (state or StateLocation.from_environment()).store()
    with store.lock(device):
        return store.write_intent(intent)


def forget_device(device: DeviceId, *, state: StateLocation | None = None) -> StaleRecord | None:
    """Remove what is kept for ``device`` once it is deleted: its intent, and its record with its pins
    (stale now: the device took its hashing with it). Nothing is removed while the device exists.

    Returns:
        The record removed, as a :class:`StaleRecord`, or None when there was none (or the device
        still exists).

    Raises:
        UnsafeRecordError, RecordFormatError, PrivilegeError, KernelError: for the record store.
    """
    if link_index(device.name) == device.ifindex:
        return None
    store = (state or StateLocation.from_environment()).store()
    if store.read_intent(device) is None and store.read(device) is None:
        return None
    with store.lock(device):
        store.remove_intent(device)
        checked = checked_record(store, device, link_index_now=link_index(device.name))
    return checked.stale
