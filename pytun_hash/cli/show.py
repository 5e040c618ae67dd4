"""``pytun-hash show``: what hashing is in force on a device, as ``ethtool -x`` shows RSS.

``show --dev NAME`` reads the device's record (under its lock) and prints the backend and
revision, RSS and hash reports on/off, the hash types, the indirection table (rows of 8 entries
as ``ethtool -x`` prints them, and the entries per queue), the key, the unclassified queue, the
pinned program's id and path, who applied it and when, and whether the kernel objects back the
record up (``verified``).

What ``show`` can verify: for eBPF, that the pinned program is the recorded one and that the
active slot of the pinned maps holds the recorded config. It reads the configuration in force back
from those maps, so when someone wrote another one through them since (a VMM ``pytun-hash handoff``
gave them to), ``show`` prints that one, says so, and ``verified`` is false.
Which program a tun device runs cannot be asked of the kernel, so a program attached since by
someone else is not seen; native hash configurations cannot be read back at all (``verified``
is false: the record is all there is).

Nothing recorded: ``backend`` is null (exit 0): the kernel default (automatic queue selection)
is in force, unless a program someone else attached (QEMU, libvirt) steers. A stale record (its
device deleted, or deleted and created again under the same name) is reported and removed.

JSON keys: ``device``, ``backend``, ``revision``, ``config`` (as ``apply --json`` prints it),
``owner``, ``applied_at``, ``verified``, ``read_back`` (eBPF: the config read back from the pinned
maps, as ``config``; null for native, or when they cannot be read), ``ebpf`` (``pin_dir``, ``program``, ``maps``,
``program_id``; or null), ``stale`` (the stale records found and removed: ``reason``, ``detail``),
``note`` (the sentence when nothing is recorded, else null), ``queues`` (``count``, null when
unknown; ``source``: ``intent`` (recorded by ``create``), ``attached``, ``single-queue`` or
``unknown``; ``attached``: the queues attached now).
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from pytun_hash._abi import HashType
from pytun_hash.cli.common import tun_link
from pytun_hash.cli.output import Output, help_text, pairs
from pytun_hash.cli.state import owner_document, pins_document, warn_stale
from pytun_hash.config import ETHTOOL_FLOW_TYPES, VnetHashConfig
from pytun_hash.device.record import DeviceId, Record, link_index
from pytun_hash.hashing.state import (
    QueueCount,
    StateLocation,
    checked_record,
    in_force,
    queue_count,
    sweep_recreated,
)

__all__ = ["add_parser", "indirection_rows", "run_show"]

_NOTHING = (
    "nothing recorded: the kernel default (automatic queue selection) is in force, unless a steering "
    "program someone else attached (QEMU, libvirt) steers"
)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``show``."""
    p = sub.add_parser(
        "show",
        parents=parents,
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dev", metavar="NAME", required=True, help="the TUN/TAP device")
    p.set_defaults(handler=run_show)


def indirection_rows(table: tuple[int, ...] | list[int]) -> list[str]:
    """The table as ``ethtool -x`` prints it: ``"    0:      0     1 ..."``, 8 entries a row."""
    rows = []
    for start in range(0, len(table), 8):
        rows.append(f"{start:5d}: " + "".join(f" {q:5d}" for q in table[start : start + 8]))
    return rows


_ETHTOOL_NAME = {member: name for name, member in ETHTOOL_FLOW_TYPES.items()}


def _types_text(config: VnetHashConfig) -> str:
    """Hash types by name, with ethtool's flow-type name where it has one: ``TCPV4 (tcp4)``."""
    named = [
        f"{m.name} ({_ETHTOOL_NAME[m]})" if m in _ETHTOOL_NAME else m.name or "" for m in HashType if m in config.types
    ]
    return ", ".join(named) or "none"


def _rings(name: str) -> int | None:
    """Queues attached now (as ``ethtool -x`` counts RX rings); None when the kernel does not say."""
    link = tun_link(name)
    if link.tun is None:
        return None
    return link.tun.numqueues if link.tun.multi_queue else 1


def _text(
    name: str,
    record: Record | None,
    found: VnetHashConfig | None,
    verified: bool,
    stale: list[str],
    rings: int | None,
    queues: QueueCount,
) -> str:
    lines = [f"{s}; removed, not in force" for s in stale]
    if record is None:
        lines.append(f"{name}: {_NOTHING}")
        lines.append(f"  queues  {queues.describe()}")
        return "\n".join(lines)
    written_since = found is not None and not verified
    # What steers now: read back from the pinned maps when they can be read.
    config = found if found is not None else record.config
    table = config.indirection_table
    # ethtool -x's own block first, in its words, so its readers find what they know.
    ring_text = "no queue attached now" if rings == 0 else f"{rings} RX ring(s)" if rings else "RX rings unknown"
    if config.rss:
        lines.append(f"RX flow hash indirection table for {name} with {ring_text}:")
        lines.extend(indirection_rows(table))
    else:
        lines.append(f"RX flow hash indirection table for {name}: none (RSS off: automatic queue selection)")
    lines.append("RSS hash key:")
    lines.append(":".join(f"{b:02x}" for b in config.key))
    lines.append("RSS hash function:")
    lines.append(f"    toeplitz: {'on' if config.rss or config.report else 'off'}")
    lines.append("    xor: off")
    lines.append("    crc32: off")
    counts = Counter(table)
    backend = record.backend + (f" (revision {record.revision.value})" if record.revision else "")
    rows: list[tuple[str, object]] = [
        ("backend", backend),
        ("queues", queues.describe()),
        ("rss", "on" if config.rss else "off"),
        ("hash reports", "on" if config.report else "off"),
        ("hash types", _types_text(config)),
        ("unclassified queue", config.unclassified_queue),
    ]
    if config.rss:
        rows.append(("entries per queue", ", ".join(f"{q}: {counts[q]}" for q in sorted(counts))))
    if record.ebpf is not None:
        rows.append(("program id", record.ebpf.program_id))
        rows.append(("pinned at", record.ebpf.program))
    owner = record.owner
    rows.append(("owner", f"pid {owner.pid}, uid {owner.uid}: {' '.join(owner.command)}"))
    rows.append(("applied at", record.applied_at))
    if verified:
        rows.append(("verified", "yes: the pinned objects hold this"))
    elif written_since:
        rows.append(
            (
                "verified",
                "no: the pinned maps hold another configuration than the one applied, written through them "
                "since (a VMM they were handed to); shown above is the one in force",
            )
        )
    elif record.ebpf is not None and config.rss:
        rows.append(
            (
                "verified",
                "no: the pins are not the recorded program and maps, or their active slot holds no "
                "configuration pytun_hash wrote (`pytun-hash disable` takes them off)",
            )
        )
    else:
        rows.append(("verified", "no (the record is all there is)"))
    lines.append(f"pytun_hash on {name}:")
    lines.append(pairs(rows, indent="  "))
    return "\n".join(lines)


def run_show(args: argparse.Namespace, out: Output) -> int:
    """Run ``show``; see the module documentation."""
    rings = _rings(args.dev)
    queues = queue_count(args.dev)
    store = StateLocation.from_environment().store()
    ident = DeviceId.of_link(args.dev)
    stale = sweep_recreated(store, ident)
    with store.lock(ident):
        checked = checked_record(store, ident, link_index_now=link_index(args.dev))
        if checked.stale is not None:
            stale.append(checked.stale)
        record = checked.record
        found = in_force(record) if record is not None else None
        verified = record is not None and found == record.config
    warn_stale(stale, out)
    document: dict[str, Any] = {
        "device": args.dev,
        "backend": record.backend if record else None,
        "revision": record.revision.value if record and record.revision else None,
        "config": record.config.to_mapping() if record else None,
        "owner": owner_document(record) if record else None,
        "applied_at": record.applied_at if record else None,
        "verified": verified,
        "read_back": found.to_mapping() if found is not None else None,
        "ebpf": pins_document(record.ebpf) if record else None,
        "stale": [{"reason": s.reason.value, "detail": s.detail} for s in stale],
        "note": None if record else _NOTHING,
        "queues": {"count": queues.count, "source": queues.source, "attached": queues.attached},
    }
    return out.result(
        document, lambda: _text(args.dev, record, found, verified, [str(s) for s in stale], rings, queues)
    )
