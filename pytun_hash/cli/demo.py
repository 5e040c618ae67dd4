"""``pytun-hash demo``: RSS on a real multi-queue TAP, checked packet by packet against the model.

Steps: enter a private (anonymous) network namespace; create a 4-queue TAP with 20-byte
little-endian vnet headers; give it IPv4 and IPv6 addresses (no ARP, no neighbour discovery,
so only the demo's packets appear); put an RSS config (round-robin table over the queues, a
key drawn from ``--seed``, all six IPv4/IPv6 hash types, hash reports on) in force through the
best backend available; send a spread of TCP (SYN) and UDP flows over IPv4 and IPv6 plus an
ICMP echo each, from the namespace's own stack; read every queue; and compare each packet's
queue, hash value and hash report with what the software model predicts under the rules of
the backend and revision in force (the RFC's on an RFC kernel, the virtio specification's
otherwise; ``--semantics`` forces either). Hash reports come from the kernel when it writes
them (native backend); with eBPF steering the kernel cannot write them, so they are computed in
user space.

``--emulate REVISION`` runs all of it through the native backend on an emulated kernel of that
revision (:class:`pytun_hash.testing.KernelEmulator`, data path included): the native path, end
to end, on any kernel.

Exit status 0 only when every packet arrived exactly once on its predicted queue (and every
kernel report matched); 1 otherwise; 3 without the privileges it needs (it says which).
Everything it creates lives in the private namespace and is gone when it exits.

JSON keys: ``ok``, ``device``, ``queues``, ``backend``, ``revision``, ``reason``, ``semantics``, ``config``,
``reports`` (``kernel``/``computed``), ``flows``, ``sent``, ``received``, ``matched``,
``emulated`` (null, or {``revision``, ``devices``, ``recorded``, ``matched``, ``reads``,
``passed_reads``} with ``--emulate``),
``mismatches`` (list of {``flow``, ``queue``, ``predicted``, ``problem``}), ``missing`` (flows
never seen), ``duplicates``, ``foreign`` (frames of no demo flow), ``per_queue`` (list of
{``queue``, ``packets``, ``predicted``, ``matched``, ``samples`` (list of {``flow``, ``hash``,
``report``})}), ``elapsed_s``.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import time
import warnings
from collections import Counter
from typing import Any

from pytun_hash import traffic
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport
from pytun_hash.backend import Backend
from pytun_hash.bpf.report import HashReporter
from pytun_hash.cli.charts import bar, blocks_for
from pytun_hash.cli.common import add_backend_argument, config_summary, int_arg, parse_revision, parse_semantics
from pytun_hash.cli.interrupts import guarded
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text, table
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.tap import TUN_PATH
from pytun_hash.hashing import Hashing
from pytun_hash.model import FlowHash, Semantics, classify, queue_for_flow
from pytun_hash.model.vnet import read_hash_fields
from pytun_hash.traffic import DEFAULT_ADDRESSING, Capture, Flow

__all__ = ["add_parser", "missing_privileges", "run"]

# Capability numbers (linux/capability.h) the demo needs, and what for.
_NEEDS = (
    (21, "CAP_SYS_ADMIN", "a private network namespace (unshare) and loading eBPF"),
    (12, "CAP_NET_ADMIN", "creating and configuring the TAP device"),
    (13, "CAP_NET_RAW", "sending ICMP echo requests"),
)
_SAMPLES = 2


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``demo``."""
    p = sub.add_parser(
        "demo",
        parents=parents,
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--queues", type=int_arg, default=4, metavar="N", help="queues of the TAP (2..16, default 4)")
    p.add_argument("--flows", type=int_arg, default=64, metavar="N", help="TCP/UDP flows to send (1..4096, default 64)")
    p.add_argument("--seed", type=int_arg, default=1, help="seed for the key and the ports (default 1)")
    add_backend_argument(p)
    p.add_argument(
        "--emulate",
        type=parse_revision,
        metavar="REVISION",
        help="run the whole demo through the native backend on an emulated kernel of that revision "
        "(rfc, v3 ... v11, v12; pytun_hash.testing.KernelEmulator, data path included)",
    )
    p.add_argument(
        "--semantics",
        type=parse_semantics,
        metavar="{spec,rfc-2023}",
        help="predict with these rules instead of those of the backend and revision in force",
    )
    p.set_defaults(handler=run)


def _effective_capabilities() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_privileges() -> list[str]:
    """What the calling process lacks for the demo, as sentences; empty when it can run."""
    caps = _effective_capabilities()
    missing = [f"{name} for {why}" for bit, name, why in _NEEDS if not caps >> bit & 1]
    if not os.access(TUN_PATH, os.R_OK | os.W_OK):
        missing.append(f"read/write access to {TUN_PATH}")
    return missing


def _report_name(raw: int) -> str:
    try:
        return HashReport(raw).name
    except ValueError:
        return f"unknown report {raw}"


def _analyse(
    capture: Capture,
    flows: list[Flow],
    config: VnetHashConfig,
    queues: int,
    reporter: HashReporter | None,
    semantics: Semantics,
) -> dict[str, Any]:
    """Compare every captured frame with the model under ``semantics``: queue, hash value and report."""
    per_queue: dict[int, dict[str, Any]] = {
        q: {"queue": q, "packets": 0, "predicted": 0, "matched": 0, "samples": []} for q in range(queues)
    }
    seen: Counter[Flow] = Counter()
    mismatches: list[dict[str, Any]] = []
    foreign = matched = 0
    for item in capture.match(flows):
        frame = item.frame
        expected: FlowHash = classify(frame.frame, config.types, config.key, l2=capture.framing, semantics=semantics)
        predicted = queue_for_flow(config, expected, queues, semantics=semantics)
        name = str(item.flow) if item.flow is not None else f"(not a demo flow) {frame.frame[:34].hex()}"
        if item.flow is None:
            foreign += 1
        else:
            seen[item.flow] += 1
        per_queue[predicted]["predicted"] += 1
        slot = per_queue.setdefault(
            frame.queue, {"queue": frame.queue, "packets": 0, "predicted": 0, "matched": 0, "samples": []}
        )
        slot["packets"] += 1
        # The demo's TAP has no packet information: the vnet header starts the buffer.
        value, raw = read_hash_fields(reporter.filled(frame.buffer) if reporter is not None else frame.buffer)
        problems = []
        if frame.queue != predicted:
            problems.append(f"on queue {frame.queue}, predicted {predicted}")
        if (value, raw) != (expected.hash_value, int(expected.report)):
            problems.append(
                f"kernel reported {value:#010x} {_report_name(raw)}, "
                f"model {expected.hash_value:#010x} {expected.report.name}"
            )
        if problems:
            mismatches.append(
                {"flow": name, "queue": frame.queue, "predicted": predicted, "problem": "; ".join(problems)}
            )
        else:
            matched += 1
            slot["matched"] += 1
        if len(slot["samples"]) < _SAMPLES:
            slot["samples"].append({"flow": name, "hash": f"{value:#010x}", "report": _report_name(raw)})
    missing = [str(f) for f in flows if seen[f] == 0]
    duplicates = [str(f) for f in flows if seen[f] > 1]
    return {
        "received": len(capture.frames),
        "matched": matched,
        "mismatches": mismatches,
        "missing": missing,
        "duplicates": duplicates,
        "foreign": foreign,
        "per_queue": [per_queue[q] for q in sorted(per_queue)],
    }


def _check_arguments(args: argparse.Namespace) -> None:
    if not 2 <= args.queues <= 16:
        raise CliError(f"--queues must be 2..16, got {args.queues}", "RSS needs at least two queues")
    if not 1 <= args.flows <= 4096:
        raise CliError(f"--flows must be 1..4096, got {args.flows}", "the default is 64")


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``demo``; see the module documentation."""
    _check_arguments(args)
    missing = missing_privileges()
    if missing:
        raise CliError(
            f"demo needs root; this process lacks {', '.join(missing)}",
            "run it as root: `sudo pytun-hash demo` (or `sudo make demo`)",
            ExitCode.KERNEL,
        )
    if args.emulate is not None and args.backend is Backend.EBPF:
        raise CliError("--emulate runs the native backend; it cannot be combined with --backend ebpf")
    started = time.monotonic()
    document = _demo(args, out) if args.emulate is None else _emulated(args, out)
    document["elapsed_s"] = round(time.monotonic() - started, 3)
    return out.result(
        document,
        lambda: _render(document, blocks=blocks_for(out.stdout)),
        ExitCode.OK if document["ok"] else ExitCode.MISMATCH,
    )


def _emulated(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    # The testing package is only needed here: plain demos never import it.
    from pytun_hash.testing import EmulatorError, KernelEmulator

    try:
        with guarded(lambda: KernelEmulator(args.emulate, timeout=120.0)) as emu:
            document = emu.run(_demo, args, out)
            stats = emu.data_path_stats()
    except EmulatorError as exc:
        raise CliError(f"the kernel emulator failed: {exc}", "run the demo without --emulate") from exc
    document["emulated"] = {"revision": args.emulate.value, **stats}
    return document


def _demo(args: argparse.Namespace, out: Output) -> dict[str, Any]:
    rng = random.Random(args.seed)
    config = VnetHashConfig.round_robin(args.queues, key=rng.randbytes(40), report=True)
    addressing = DEFAULT_ADDRESSING
    flows = traffic.spread_flows(args.flows, addressing=addressing, seed=args.seed)
    flows += [
        Flow(socket.IPPROTO_ICMP, addressing.ipv4_local, addressing.ipv4_peer),
        Flow(socket.IPPROTO_ICMPV6, addressing.ipv6_local, addressing.ipv6_peer),
    ]
    # Each resource is made and entered, and later left, as one step SIGINT/SIGTERM cannot cut in two:
    # an interrupted demo leaves no device, namespace or program behind (see cli.interrupts.guarded).
    with out.progress("demo steps", total=4) as progress, guarded(lambda: NetworkNamespace(ipv6=False)) as ns:
        with guarded(lambda: TunTapDevice.create("pthdemo%d", queues=args.queues, vnet_hdr=True)) as device:
            device.set_vnet_hdr_size(VIRTIO_NET_HDR_V1_HASH_SIZE)
            device.set_vnet_le(True)
            traffic.wire(ns, device, addressing)
            progress.update(1)
            with guarded(lambda: _enable(device, config, args, out)) as hashing:
                progress.update(2)
                sent = traffic.send(ns, flows)
                capture = traffic.collect(device, expected=sent, timeout=2.0)
                progress.update(3)
                semantics = args.semantics or hashing.semantics
                reporter = hashing.reporter
                result = _analyse(capture, flows, config, args.queues, reporter, semantics)
                choice = hashing.choice
            name = device.name
        progress.update(4)
    ok = (
        result["matched"] == result["received"]
        and not result["missing"]
        and not result["duplicates"]
        and result["received"] == sent + result["foreign"]
    )
    document: dict[str, Any] = {
        "ok": ok,
        "device": name,
        "queues": args.queues,
        "backend": choice.backend.value,
        "revision": choice.revision.value if choice.revision else None,
        "reason": choice.reason,
        "semantics": semantics.value,
        "config": config.to_mapping(),
        "reports": "computed" if reporter is not None else "kernel",
        "flows": len(flows),
        "sent": sent,
        **result,
        "emulated": None,
    }
    return document


def _enable(device: TunTapDevice, config: VnetHashConfig, args: argparse.Namespace, out: Output) -> Hashing:
    """Put ``config`` in force on the demo's device, and say what warnings that gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.emulate is not None:
            hashing = Hashing.enable(device, config, backend=Backend.NATIVE, revision=args.emulate, record=False)
        else:
            # The scratch device dies with the demo's namespace: nothing to keep for others.
            hashing = Hashing.enable(device, config, backend=args.backend, record=False)
    for warning in caught:
        out.warn(str(warning.message))
    return hashing


def _queue_chart(per_queue: list[dict[str, Any]], *, blocks: bool) -> str:
    """Observed and predicted packets per queue as bars, one above the other, so a queue that got
    more or less than predicted shows as bars of different lengths; all scaled to the busiest."""
    largest = max((max(q["packets"], q["predicted"]) for q in per_queue), default=0)
    rows = []
    for q in per_queue:
        rows.append((q["queue"], "observed", q["packets"], bar(q["packets"], largest, blocks=blocks)))
        rows.append(("", "predicted", q["predicted"], bar(q["predicted"], largest, blocks=blocks)))
    return table(("queue", "", "packets", ""), rows)


def _render(doc: dict[str, Any], *, blocks: bool) -> str:
    source = (
        "computed in user space (eBPF steering cannot write them)"
        if doc["reports"] == "computed"
        else "from the kernel"
    )
    lines = [
        f"pytun-hash demo: {doc['queues']}-queue TAP {doc['device']} in a private network namespace",
        f"backend: {doc['backend']} ({doc['reason']}); predicted with the {doc['semantics']} rules",
        *(
            [
                f"kernel:  emulated {doc['emulated']['revision']} (pytun_hash.testing.KernelEmulator): "
                f"{doc['emulated']['reads']} reads answered with that revision's headers"
            ]
            if doc["emulated"]
            else []
        ),
        f"config:  {config_summary(VnetHashConfig.from_mapping(doc['config']))}",
        f"sent {doc['sent']} packets ({doc['flows'] - 2} TCP/UDP flows over IPv4 and IPv6, 2 ICMP echoes); "
        f"hash reports {source}",
        "",
    ]
    rows = []
    for q in doc["per_queue"]:
        samples = ", ".join(f"{s['hash']} {s['report']}" for s in q["samples"]) or "-"
        rows.append((q["queue"], q["packets"], q["predicted"], f"{q['matched']}/{q['packets']}", samples))
    lines.append(table(("queue", "observed", "predicted", "matched", "sample hash reports"), rows))
    lines.append("")
    lines.append(_queue_chart(doc["per_queue"], blocks=blocks))
    lines.append("")
    for m in doc["mismatches"][:10]:
        lines.append(f"MISMATCH {m['flow']}: {m['problem']}")
    for f in doc["missing"][:10]:
        lines.append(f"MISSING  {f}: never read from any queue")
    for f in doc["duplicates"][:10]:
        lines.append(f"DUPLICATE {f}: read more than once")
    verdict = "every packet on its predicted queue" if doc["ok"] else "MISMATCHES FOUND"
    lines.append(
        f"result: {doc['matched']}/{doc['received']} packets matched ({doc['foreign']} not from the demo); "
        f"{verdict}; {doc['elapsed_s']:.2f} s"
    )
    return "\n".join(lines)
