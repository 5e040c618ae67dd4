"""What the CLI keeps across processes: the device's record, its pins, and what is in force.

``apply``, ``disable`` and ``show`` share these helpers. Every change happens under the device's
record lock (:meth:`RecordStore.lock`), so concurrent commands on one device run one after the
other. The roots come from the environment (for tests and unusual hosts):

* ``PYTUN_HASH_STATE_DIR``: the record store's root (default ``/run/pytun_hash``);
* ``PYTUN_HASH_BPFFS``: the bpf filesystem pytun_hash pins below (default ``/sys/fs/bpf``; mounted
  when it is not a bpffs yet).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from typing import Any

from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps
from pytun_hash.bpf.pin import BPFFS_ROOT, get_pinned_map, get_pinned_program, pin, remove_pin_dir, unpin
from pytun_hash.bpf.rss_program import CONFIG_VALUE_SIZE, config_value
from pytun_hash.cli.output import Output
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.record import (
    DEFAULT_RECORD_ROOT,
    DeviceId,
    EbpfPins,
    Record,
    RecordStore,
    StaleRecord,
    link_index,
)
from pytun_hash.errors import KernelError, ValidationError

__all__ = [
    "BPFFS_ENV",
    "STATE_ENV",
    "bpffs_root",
    "forget_stale",
    "in_force",
    "now",
    "reconfigure_pinned",
    "record_store",
    "sweep_recreated",
    "unpin_record",
    "verify",
]

STATE_ENV = "PYTUN_HASH_STATE_DIR"
BPFFS_ENV = "PYTUN_HASH_BPFFS"


def record_store() -> RecordStore:
    """The record store at ``$PYTUN_HASH_STATE_DIR`` (default ``/run/pytun_hash``)."""
    return RecordStore(os.environ.get(STATE_ENV) or DEFAULT_RECORD_ROOT)


def bpffs_root() -> str:
    """The bpffs pytun_hash pins below: ``$PYTUN_HASH_BPFFS`` (default ``/sys/fs/bpf``)."""
    return os.environ.get(BPFFS_ENV) or BPFFS_ROOT


def now() -> str:
    """The time now, UTC ISO 8601 with microseconds (as records write it)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def unpin_record(record: Record) -> list[str]:
    """Remove the pins an eBPF record names (its pin directory); nothing for other records."""
    if record.ebpf is None:
        return []
    return remove_pin_dir(record.ebpf.pin_dir)


def forget_stale(stale: StaleRecord, out: Output) -> None:
    """Report a stale record (already removed from the store) and drop the pins it left.

    A gone or re-created device took its steering program with it, so the old pins only keep
    dead objects alive. A record whose program was unpinned by someone else has nothing left to
    remove.
    """
    out.warn(f"{stale}; it was removed and is not used")
    with contextlib.suppress(KernelError):
        unpin_record(stale.record)


def current_record(store: RecordStore, ident: DeviceId, name: str, out: Output) -> Record | None:
    """The trustworthy record of ``ident`` (the caller holds its lock); a stale one is reported and dropped."""
    checked = store.read_checked(ident, link_index_now=link_index(name))
    if checked.stale is not None:
        forget_stale(checked.stale, out)
    return checked.record


def sweep_recreated(store: RecordStore, ident: DeviceId, out: Output) -> list[StaleRecord]:
    """Find, report and remove the records of earlier devices of ``ident``'s name in its namespace.

    Records are kept per ifindex, so a device deleted and created again under the same name has
    a new (empty) record while the old one lies next to it: that one is stale (``device-recreated``),
    its pins only keep the deleted device's program alive. Call it before taking ``ident``'s lock.
    """
    found: list[StaleRecord] = []
    for other in store.devices(ident.netns):
        if other.name != ident.name or other.ifindex == ident.ifindex:
            continue
        with store.lock(other):
            checked = store.read_checked(other, link_index_now=link_index(other.name))
        if checked.stale is not None:
            forget_stale(checked.stale, out)
            found.append(checked.stale)
    return found


def reconfigure_pinned(pins: EbpfPins, config: VnetHashConfig) -> EbpfPins:
    """Switch the pinned steering program to ``config`` in place: a new inner config map, filled
    while no program sees it, swapped into the pinned outer map's slot (atomic), and pinned as
    ``config`` instead of the old one. The program stays attached throughout.

    Raises:
        ValidationError: for a config the program cannot implement, or pins without an outer map.
        BpfError: when a pinned object is missing or the swap fails (nothing changed then).
    """
    value = config_value(config)
    outer_path = pins.map_path("outer")
    config_path = pins.map_path("config")
    with get_pinned_map(outer_path) as outer:
        if not isinstance(outer, ArrayOfMaps):
            raise ValidationError("ebpf.maps.outer", f"{outer_path} is not the program's outer map")
        with ArrayMap.create(CONFIG_VALUE_SIZE, 1, name="pth_rss_cfg") as new:
            new.update(0, value)
            outer.set(0, new)
            unpin(config_path, missing_ok=True)
            pin(new, config_path)
    return pins


def verify(record: Record) -> bool:
    """Whether the kernel objects back the record up: the pinned program is the recorded one (by
    id), the pinned outer map's slot holds the pinned config map, and that map's value is the
    recorded config. False for native records (the kernel cannot be asked) and for unpinned eBPF
    records. Whether the pinned program is the one attached to the device cannot be asked either:
    the kernel has no query for a tun device's steering program.
    """
    pins = record.ebpf
    if record.backend != "ebpf" or pins is None or not record.config.rss:
        return False
    try:
        with get_pinned_program(pins.program) as program:
            if program.id != pins.program_id:
                return False
        with get_pinned_map(pins.map_path("outer")) as outer, get_pinned_map(pins.map_path("config")) as inner:
            if not isinstance(outer, ArrayOfMaps) or not isinstance(inner, ArrayMap):
                return False
            if outer.lookup_id(0) != inner.id:
                return False
            return inner.lookup(0) == config_value(record.config)
    except (KernelError, ValidationError):
        return False


def in_force(record: Record | None) -> dict[str, Any] | None:
    """What the record says is in force, as JSON (``None`` when nothing is recorded)."""
    if record is None:
        return None
    return {
        "backend": record.backend,
        "revision": None if record.revision is None else record.revision.value,
        "config": record.config.to_mapping(),
        "owner": owner_document(record),
        "applied_at": record.applied_at,
        "ebpf": pins_document(record.ebpf),
    }


def owner_document(record: Record) -> dict[str, Any]:
    """The record's owner as JSON."""
    o = record.owner
    return {"pid": o.pid, "uid": o.uid, "command": list(o.command), "name": o.name}


def pins_document(pins: EbpfPins | None) -> dict[str, Any] | None:
    """An eBPF record's pins as JSON."""
    if pins is None:
        return None
    return {"pin_dir": pins.pin_dir, "program": pins.program, "maps": dict(pins.maps), "program_id": pins.program_id}


def device_id(name: str) -> DeviceId:
    """The device's id in this namespace (after ``_device_queue_count`` checked it exists)."""
    return DeviceId.of_link(name)
