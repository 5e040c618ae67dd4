"""``pytun-hash apply`` and ``pytun-hash disable``: put a hashing config in force on a device, or remove it.

``apply --dev NAME`` takes the config from ``--config FILE`` (TOML or JSON) and/or flags, picks
the backend (``--backend auto``: the kernel's hash ioctls when it has them, else an eBPF steering
program) and leaves the configuration in force after the command exits, for as long as the
device lives. Without ``--key`` (and no key in the file) a random key is generated; the output
shows it, and ``--save FILE`` stores the whole config for ``predict --config FILE``.

``--save FILE`` is checked and written in full (to a temporary file beside FILE) before anything is
applied, and put at FILE only once the config is in force: a FILE that may not or cannot be written
fails the command (exit 2) with the device unchanged. FILE is created mode 0600 whatever the umask
(it holds the key) and appears atomically (a reader sees the old file or the whole new one). An
existing FILE is refused unless ``--force``, which replaces a regular file only; a symlink (never
followed), FIFO, device or directory at FILE, and directories on /proc, /sys or another
pseudo-filesystem, are always refused. ``--config FILE`` is read only when it is a regular file on a
real file system (not /proc, /sys, debugfs ...), and a read never waits.

To talk to the device the command opens one queue of its own for a few milliseconds. On a
multi-queue device whose queues other processes hold, frames may land on that queue during
the revision probe; with the eBPF backend the queue is detached again before the program
is attached.

``--dry-run`` prints the exact ioctl plan of ``--revision`` (default ``rfc``): names, request
numbers and payload bytes, without opening anything (``--arch`` computes them for another
machine). It works on kernels without the hash ioctls.

Under the device's record lock (see :mod:`pytun_hash.cli.state`) ``apply`` reads the device's
record, puts the config in force and writes the new record (backend, revision, config with the
key, owner, time). With eBPF it pins the program and its control and slots maps under the
device's pin directory (mounting a bpffs first; without one it warns and records no pins); a
second ``apply`` on a pinned program writes the new config into a free slot and makes it active
(the program stays attached, the pins stay);
``--no-rss`` detaches the program (report-only needs none) and records report-only.

JSON keys of ``apply``: ``device``, ``backend`` (``native``/``ebpf``), ``revision``, ``reason``,
``config`` (the config as in a config file), ``reports`` (``kernel``, ``user-space`` or ``off``),
``saved`` (path or null), ``in_force`` (what the record now says: ``backend``, ``revision``,
``config``, ``owner``, ``applied_at``, ``ebpf``), ``at`` (when, under the lock: the record's
``applied_at``). With ``--dry-run``: ``dry_run`` (true), ``revision``, ``arch``,
``config``, ``calls`` (list of {``name``, ``request`` (hex), ``payload`` (hex), ``size``,
``purpose``}), ``backend``.

``disable --dev NAME`` removes what the device's record says pytun_hash put in force (native: the
disabled configuration; eBPF: the steering program is detached and unpinned, and the kernel's
automatic queue selection returns) and removes the record. Which program a tun device runs cannot
be asked of the kernel, so the record is trusted. Without a record nothing is changed: a steering
program someone else attached (QEMU, libvirt) is left alone, unless ``--force`` (then whatever is
attached is detached, or native hashing disabled). JSON keys: ``device``, ``backend`` (null when
nothing was recorded and nothing forced), ``revision``, ``action``, ``in_force`` (null), ``at``.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import warnings
from contextlib import AbstractContextManager
from typing import Any, cast

from pytun_hash._abi import Revision, layout_for
from pytun_hash._files import PendingFile
from pytun_hash.backend import Backend, BackendChoice, choose_backend
from pytun_hash.cli.common import (
    add_backend_argument,
    add_config_arguments,
    config_from_args,
    config_summary,
    int_arg,
    open_device,
    parse_revision,
    tun_link,
)
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text, pairs
from pytun_hash.cli.state import in_force, warn_stale
from pytun_hash.codec import ioctl_plan
from pytun_hash.config import VnetHashConfig
from pytun_hash.configfile import known_key_name, stage_config
from pytun_hash.device.hashctl import QueueFoldWarning
from pytun_hash.device.record import Record
from pytun_hash.device.tap import TunTapDevice
from pytun_hash.errors import ValidationError
from pytun_hash.hashing import Hashing
from pytun_hash.hashing.state import QueueCount, now, queue_count

__all__ = ["add_parsers", "run_apply", "run_disable"]


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``apply`` and ``disable``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "apply",
        parents=parents,
        description=help_text(__doc__, "apply"),
        formatter_class=fmt,
    )
    p.add_argument("--dev", metavar="NAME", help="the TUN/TAP device (not needed with --dry-run)")
    _backend_arguments(p)
    p.add_argument(
        "--queues", type=int_arg, metavar="N", help="round-robin table over N queues (default: the device's)"
    )
    add_config_arguments(p, key_help="Toeplitz key: hex, microsoft, symmetric or random (default: random)")
    p.add_argument("--vnet-hdr-size", type=int_arg, metavar="BYTES", help="set the device's vnet header size first")
    p.add_argument("--vnet-le", action="store_true", help="make the device's vnet headers little-endian first")
    p.add_argument(
        "--save",
        metavar="FILE",
        help="write the applied config to FILE (.toml or .json): mode 0600, atomically, checked before applying; "
        "never an existing file (see --force), a symlink, a FIFO or a device",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --save: replace FILE if it is an existing regular file (never a symlink, FIFO or device)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the ioctl plan of --revision; touch nothing")
    p.add_argument("--arch", metavar="MACHINE", help="with --dry-run: request numbers and byte order of MACHINE")
    p.set_defaults(handler=run_apply)

    d = sub.add_parser(
        "disable",
        parents=parents,
        description=help_text(__doc__, "disable"),
        formatter_class=fmt,
    )
    d.add_argument("--dev", metavar="NAME", required=True, help="the TUN/TAP device")
    d.add_argument(
        "--force",
        action="store_true",
        help="without a record, detach whatever steering program is attached (or disable native hashing)",
    )
    _backend_arguments(d)
    d.set_defaults(handler=run_disable)


def _backend_arguments(p: argparse.ArgumentParser) -> None:
    add_backend_argument(p)
    p.add_argument("--revision", type=parse_revision, metavar="REV", help="hash UAPI revision: rfc, v3..v11, v12")


def _queue_count(name: str) -> QueueCount:
    """How many queues ``name`` is made for (see :func:`~pytun_hash.hashing.state.queue_count`).

    Raises:
        CliError: (exit 3) when there is no such TUN/TAP device.
    """
    tun_link(name, f"create it with `pytun-hash create {name}` (or check the name with `ip link`)")
    return queue_count(name)


def _table_queues(args: argparse.Namespace, count: QueueCount | None) -> int | None:
    """The queue count of a table built from flags: ``--queues``, else the device's (None: none needed).

    Raises:
        CliError: when a table must be built and the device's count cannot be known.
    """
    if args.queues is not None or count is None:
        return cast(int | None, args.queues)
    if count.count is None and _needs_table(args):
        raise CliError(
            f"{args.dev} is a multi-queue device with no queue attached and no recorded queue count, so the "
            "indirection table cannot be built",
            f"give --queues N (the queues your VMM will attach), --equal N or --table; "
            f"`pytun-hash create {args.dev} --queues N` records N",
            field="queues",
        )
    return count.count


def _needs_table(args: argparse.Namespace) -> bool:
    """Whether the flags leave the table to be built from a queue count (no --table, --equal,
    --weight, and no file: a file without a table is told by config_from_args)."""
    return args.table is None and args.equal is None and args.weight is None and not args.config


def _dry_run(args: argparse.Namespace, out: Output) -> int:
    count = _queue_count(args.dev) if args.dev and args.queues is None else None
    config = config_from_args(args, queues=_table_queues(args, count), key_required=False)
    _warn_queues(config, count, args.dev, out)
    revision = args.revision or Revision.RFC
    arch = args.arch or platform.machine()
    try:
        layout_for(arch)
    except ValidationError as exc:
        raise CliError(f"--arch: {exc.rule}", "use a platform.machine() name (x86_64, ppc64 ...)") from None
    calls = ioctl_plan(config, revision, arch=arch)
    document = {
        "dry_run": True,
        "device": args.dev,
        "backend": args.backend.value,
        "revision": revision.value,
        "arch": arch,
        "config": config.to_mapping(),
        "calls": [
            {
                "name": c.name,
                "request": f"{c.request:#010x}",
                "payload": c.payload.hex(),
                "size": len(c.payload),
                "purpose": c.purpose,
            }
            for c in calls
        ],
    }
    if args.backend is Backend.EBPF:
        out.warn(
            "--backend ebpf issues no hash ioctls: it loads a steering program and attaches it with "
            "TUNSETSTEERINGEBPF; the plan shown is what the native backend would send"
        )

    def text() -> str:
        lines = [f"ioctl plan for revision {revision.title} on {arch} (dry run: nothing was opened)"]
        lines.append(f"config: {config_summary(config)}")
        for i, c in enumerate(calls, 1):
            lines.append(f"{i}. {c.name} request {c.request:#010x}, {len(c.payload)} bytes: {c.purpose}")
            payload = c.payload.hex()
            lines.extend(f"     {payload[j : j + 64]}" for j in range(0, len(payload), 64))
        return "\n".join(lines)

    out.result(document, text)
    return int(ExitCode.OK)


def _warn_queues(config: VnetHashConfig, count: QueueCount | None, device: str | None, out: Output) -> None:
    """Warn when the config names a queue the device is not made for (the kernel folds it)."""
    if count is None or count.count is None or not config.rss:
        return
    beyond = sorted({q for q in (*config.indirection_table, config.unclassified_queue) if q >= count.count})
    if beyond:
        shown = ", ".join(str(q) for q in beyond[:8]) + (", ..." if len(beyond) > 8 else "")
        out.warn(
            f"the config names queue(s) {shown}, but {device} has {count.describe()}: the kernel "
            f"steers such entries to queue (entry mod the attached count); use --equal {count.count}, "
            f"or --queues N for the count you mean"
        )


def _warn_known_key(config: VnetHashConfig, out: Output) -> None:
    """Warn when a real device gets a published key: anyone can craft flows that all land on one queue."""
    name = known_key_name(config.key)
    if name is not None and config.rss:
        out.warn(
            f"the key is the published {name} key: anyone who sends traffic can choose flows that all land "
            "on one queue; use it for tests and interoperability, and --key random for real traffic"
        )


def _reports(config: VnetHashConfig, choice: BackendChoice) -> str:
    if not config.report:
        return "off"
    return "kernel" if choice.backend is Backend.NATIVE else "user-space"


def _release_own_queue(device: TunTapDevice, foreign_queues: int) -> None:
    """Detach this command's queue when others hold the device's queues, so no frame lands on it."""
    if device.multi_queue and foreign_queues > 0:
        for queue in device.attached_queues:
            device.detach_queue(queue)


def _in_force_text(record: Record | None, device: str) -> str:
    if record is None:
        return (
            f"in force on {device}: nothing recorded (the kernel default, automatic queue selection, "
            "unless a program someone else attached steers)"
        )
    what = record.backend + (f" (revision {record.revision.value})" if record.revision else "")
    pinned = f", program id {record.ebpf.program_id} pinned at {record.ebpf.program}" if record.ebpf else ""
    return f"in force on {device}: {what}, {config_summary(record.config)}{pinned}"


def _stage_save(args: argparse.Namespace, config: VnetHashConfig) -> AbstractContextManager[PendingFile | None]:
    """The ``--save`` file, written beside its target before anything is applied (or nothing without ``--save``).

    Raises:
        CliError: (field ``save``) when the target may not or cannot be written; nothing was applied.
    """
    if not args.save:
        return contextlib.nullcontext(None)
    try:
        return stage_config(config, args.save, overwrite=args.force)
    except ValidationError as exc:
        raise CliError(
            f"--save: {exc.rule}; nothing was applied",
            "name a new file in a writable directory (--force replaces an existing regular file; "
            "symlinks, FIFOs, devices and files under /proc or /sys are never written)",
            field="save",
        ) from None


def _commit_save(pending: PendingFile, device: str) -> None:
    try:
        pending.commit()
    except ValidationError as exc:
        # Staging checked the target, so only a change made meanwhile (or an I/O error) gets here.
        raise CliError(
            f"--save: {exc.rule}; the configuration IS in force on {device} but was not saved",
            f"`pytun-hash show --dev {device} --json` prints the config in force with its key",
            field="save",
        ) from None


def _apply(
    args: argparse.Namespace, config: VnetHashConfig, foreign: int | None, out: Output
) -> tuple[BackendChoice, Record | None, str]:
    """Put ``config`` in force on ``args.dev``: the backend chosen, the record written and when."""
    with open_device(args.dev) as device:
        if args.vnet_hdr_size is not None:
            device.set_vnet_hdr_size(args.vnet_hdr_size)
        if args.vnet_le:
            device.set_vnet_le(True)
        choice = choose_backend(device, args.backend, revision=args.revision)
        if choice.backend is Backend.EBPF:
            _release_own_queue(device, foreign or 0)
        if config.report and choice.backend is Backend.EBPF:
            out.warn(
                "with eBPF steering the kernel writes no hash reports: whoever reads the queues must "
                "fill them in user space (Hashing.reporter, pytun_hash.bpf.HashReporter)"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                hashing = Hashing.enable(device, config, backend=choice.backend, revision=choice.revision, replace=True)
            except ValidationError as exc:
                if exc.field != "report":
                    raise
                raise CliError(
                    f"invalid report: {exc.rule}",
                    f"add --vnet-hdr-size 20 --vnet-le (or create the device with them: "
                    f"`pytun-hash create {args.dev} --vnet-hdr-size 20 --vnet-le`)",
                    field="report",
                ) from None
            hashing.close(keep=True)
        warn_stale(hashing.stale, out)
        for warning in caught:
            # Counted by the queues attached now, this command's own among them; the command
            # judged the config against the device's intended count already (_warn_queues).
            if issubclass(warning.category, QueueFoldWarning):
                continue
            out.warn(str(warning.message))
        record = hashing.record
        at = record.applied_at if record is not None else now()
    return choice, record, at


def run_apply(args: argparse.Namespace, out: Output) -> int:
    """Run ``apply``; see the module documentation."""
    if args.arch and not args.dry_run:
        raise CliError("--arch only works with --dry-run", "drop --arch, or add --dry-run")
    if args.force and not args.save:
        raise CliError("--force only works with --save", "drop --force, or add --save FILE")
    if args.dry_run:
        return _dry_run(args, out)
    if not args.dev:
        raise CliError("apply needs --dev NAME (or --dry-run)", "name the device, e.g. --dev tap0")
    count = _queue_count(args.dev)
    # Queues other processes hold now (this command attaches one of its own for a moment).
    foreign = count.attached if count.source != "single-queue" else 0
    config = config_from_args(args, queues=_table_queues(args, count), key_required=False)
    _warn_queues(config, count, args.dev, out)
    _warn_known_key(config, out)
    # Staged first, so a target that cannot be written fails the command before the device changes;
    # leaving the block unsuccessfully removes the staged file and leaves the target as it was.
    with _stage_save(args, config) as pending:
        choice, record, at = _apply(args, config, foreign, out)
        if pending is not None:
            _commit_save(pending, args.dev)
    document = {
        "device": args.dev,
        "backend": choice.backend.value,
        "revision": choice.revision.value if choice.revision else None,
        "reason": choice.reason,
        "config": config.to_mapping(),
        "reports": _reports(config, choice),
        "saved": args.save,
        "in_force": in_force(record),
        "at": at,
    }

    def text() -> str:
        rows = [
            ("device", args.dev),
            (
                "backend",
                f"{choice.backend.value}" + (f" (revision {choice.revision.value})" if choice.revision else ""),
            ),
            ("why", choice.reason),
            ("config", config_summary(config)),
            ("hash reports", document["reports"]),
        ]
        if not config.rss and choice.backend is Backend.EBPF:
            rows.append(("steering", "none: report-only, automatic queue selection"))
        if args.save:
            rows.append(("saved to", args.save))
        return (
            f"applied; stays in force while {args.dev} exists\n"
            + pairs(rows, indent="  ")
            + "\n"
            + _in_force_text(record, args.dev)
        )

    out.result(document, text)
    return int(ExitCode.OK)


def run_disable(args: argparse.Namespace, out: Output) -> int:
    """Run ``disable``; see the module documentation."""
    count = _queue_count(args.dev)
    foreign = count.attached if count.source != "single-queue" else 0
    with open_device(args.dev) as device:
        recorded = Hashing.recorded(device)
        backend, revision = args.backend, args.revision
        if recorded is None and args.force:
            # Chosen while this command's queue is attached: a probe needs one.
            forced = choose_backend(device, backend, revision=revision)
            backend, revision = forced.backend, forced.revision
        steered_by_ebpf = recorded.backend == "ebpf" if recorded is not None else backend is Backend.EBPF
        if steered_by_ebpf:
            _release_own_queue(device, foreign or 0)
        removal = Hashing.remove(device, force=args.force, backend=backend, revision=revision)
    warn_stale(removal.stale, out)
    record = removal.record
    name: str | None
    if record is not None:
        name, revision = record.backend, record.revision
        if record.backend == "native":
            action = "hash ioctl: RSS and hash reports off"
        elif record.config.rss:
            action = "steering program detached (TUNSETSTEERINGEBPF -1): automatic queue selection"
        else:
            action = "report-only record removed; no program was attached: automatic queue selection"
    elif removal.forced is not None:
        name, revision = removal.forced.backend.value, removal.forced.revision
        if removal.forced.backend is Backend.NATIVE:
            action = "nothing recorded; --force: hash ioctl: RSS and hash reports off"
        else:
            action = (
                "nothing recorded; --force: whatever steering program was attached is detached "
                "(TUNSETSTEERINGEBPF -1): automatic queue selection"
            )
    else:
        name, revision = None, None
        action = (
            "nothing recorded: pytun_hash put nothing in force, so nothing was changed; a steering "
            "program someone else attached (QEMU, libvirt) is left alone (--force detaches it)"
        )
    document = {
        "device": args.dev,
        "backend": name,
        "revision": revision.value if revision else None,
        "action": action,
        "in_force": None,
        "at": removal.at,
    }
    out.result(document, f"disable {args.dev}: {action}\n" + _in_force_text(None, args.dev))
    return int(ExitCode.OK)
