"""What ``apply``, ``disable`` and ``show`` print of the state kept across processes.

The state itself (records, pins, locks, staleness, verification) is
:mod:`pytun_hash.hashing.state`'s; its roots come from ``$PYTUN_HASH_STATE_DIR`` (default
``/run/pytun_hash``) and ``$PYTUN_HASH_BPFFS`` (default ``/sys/fs/bpf``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytun_hash.cli.output import Output
from pytun_hash.device.record import EbpfPins, Record, StaleRecord

__all__ = ["in_force", "owner_document", "pins_document", "warn_stale"]


def warn_stale(stale: Iterable[StaleRecord], out: Output) -> None:
    """Say which stale records were found (they are removed already, with their pins)."""
    for found in stale:
        out.warn(f"{found}; it was removed and is not used")


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
