"""``pytun-hash predict``: receive queues from the software model, for flows or a capture.

``predict`` names the receive queue for flows (``FLOW`` arguments, ``PROTO,SRC[:PORT],DST[:PORT]``)
or for every packet of a capture (``--pcap``: pcap or pcapng; Ethernet, raw IP or Linux cooked SLL/SLL2
link types), under a config given like ``apply``'s
(``--config`` and/or flags; a key is required), with ``--queues`` attached queues (default: enough
for the table), and prints a per-queue histogram.

``--dev NAME`` predicts for a live device: its attached queue count, and the rules of what is in
force on it (the running kernel's hash revision, probed on a scratch device, as ``apply``'s auto
backend chooses; ``--backend``/``--revision`` say otherwise; ``--semantics`` forces the rules).

The histogram has a row per queue: its packets; how many of them are unclassified (report NONE:
not IP, or no enabled hash type matched, so the rules' fallback chose the queue, which is
``unclassified_queue`` under the specification); their share; and a bar scaled to the busiest queue.

JSON keys of ``predict``: ``queues``, ``config``, ``semantics``, ``semantics_source``, ``histogram`` (list of
{``queue``, ``packets``, ``unclassified``}), ``reports`` (report name -> packets); for flows ``flows``
(list of {``flow``, ``hash``, ``report``, ``queue``}); for a capture ``pcap`` {``file``, ``linktype``,
``packets``, ``truncated``, ``unparsed``, ``format`` (pcap/pcapng), ``linktypes``, ``engine``
(batch/scalar)}, and ``packets`` (list of {``index``, ``flow``, ``hash``, ``report``, ``queue``},
``flow`` being null for a frame with no IP flow the model can parse) with ``--per-packet``.

Engines and memory: with numpy installed ``predict --pcap`` predicts 65,536 packets at a time from 4 MiB
pieces of the file (engine ``batch``: millions of packets a second, peak memory under 200 MiB whatever
the capture's size); without numpy frame by frame (engine ``scalar``); the documents are the same but
for ``pcap.engine``. It keeps a counter per queue and report type, never the packets: ``--per-packet``
output, text and JSON, is written packet by packet as the file is read, from small pieces, so its peak
memory is that of the interpreter with the package loaded plus less than 2 MiB, whatever the capture's
size. On a terminal, progress shows packets done, the (estimated: ``~``) total, the share and the
rate. The ``--per-packet --json`` document is streamed, so ``ok`` is its last key (after
``packets``, ``pcap``, ``histogram`` and ``reports``); an error found mid-file ends the same
document with ``error`` and ``ok``: false.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING, Any

from pytun_hash._abi.revision import Revision
from pytun_hash._abi.virtio_net import HashReport
from pytun_hash.backend import Backend
from pytun_hash.cli.charts import bar, blocks_for
from pytun_hash.cli.common import (
    add_backend_argument,
    add_config_arguments,
    check_queue_count,
    config_from_args,
    config_summary,
    int_arg,
    parse_flow,
    parse_revision,
    parse_semantics,
    tun_link,
)
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text, table
from pytun_hash.errors import PrivilegeError
from pytun_hash.model.classify import FlowHash, Semantics, classify, classify_parsed, queue_for_flow
from pytun_hash.model.flow import parsed_flow_text
from pytun_hash.model.packet import Framing, parse_frame
from pytun_hash.model.semantics import semantics_for

if TYPE_CHECKING:
    from pytun_hash.config import VnetHashConfig

__all__ = ["add_parser", "run_predict"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``predict``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "predict",
        parents=parents,
        description=help_text(__doc__, "predict"),
        formatter_class=fmt,
    )
    p.add_argument(
        "flows",
        nargs="*",
        metavar="FLOW",
        help="PROTO,SRC[:PORT],DST[:PORT], e.g. tcp,10.0.0.1:80,10.0.0.2:5000",
    )
    p.add_argument(
        "--pcap",
        metavar="FILE",
        help="capture file: pcap or pcapng; Ethernet, raw IP or Linux cooked (SLL, SLL2) link types",
    )
    p.add_argument(
        "--per-packet",
        action="store_true",
        help="with --pcap: list every packet, written as it is read (memory does not grow with the capture)",
    )
    p.add_argument(
        "--queues",
        type=int_arg,
        metavar="N",
        help="attached queues, 1..65536 (default: highest queue in the table + 1)",
    )
    add_config_arguments(p, key_help="Toeplitz key: hex, microsoft or symmetric (required unless in --config)")
    p.add_argument(
        "--semantics",
        type=parse_semantics,
        default=None,
        metavar="{spec,rfc-2023}",
        help="whose rules (default: those in force on --dev, else the virtio specification)",
    )
    live = p.add_argument_group("predicting for a live device")
    live.add_argument(
        "--dev",
        metavar="NAME",
        help="predict for this device: its attached queue count, and the rules of the backend and revision in "
        "force (the kernel's revision, found on a scratch device in a private namespace, as apply's auto "
        "backend chooses; root)",
    )
    add_backend_argument(live, "with --dev: the backend the device was configured with (default auto, as apply)")
    live.add_argument(
        "--revision", type=parse_revision, metavar="REVISION", help="with --dev: the native revision, not probed"
    )
    p.set_defaults(handler=run_predict)


def _queue_count(args: argparse.Namespace, config: VnetHashConfig) -> int:
    if args.queues is None:
        return config.max_queue + 1
    # The histogram has a row per queue: bounded by the queues a device can have, not by the user.
    return check_queue_count(args.queues)


class _Tally:
    """What ``predict`` counts: packets per queue, the unclassified among them, packets per report type.

    Only counters: ``predict --pcap`` keeps nothing else of a packet.
    """

    def __init__(self, queues: int) -> None:
        self.queues = queues
        self.packets: Counter[int] = Counter()
        self.unclassified: Counter[int] = Counter()
        self.reports: Counter[str] = Counter()

    def add(self, result: FlowHash, queue: int) -> None:
        """Count a packet classified as ``result`` and put on ``queue``."""
        self.packets[queue] += 1
        # Report NONE is the model's "no enabled type matched": the queue came from the fallback rule.
        if result.report is HashReport.NONE:
            self.unclassified[queue] += 1
        self.reports[result.report.name] += 1

    def histogram(self) -> list[dict[str, int]]:
        """The JSON ``histogram``: a row per queue."""
        return [
            {"queue": q, "packets": self.packets.get(q, 0), "unclassified": self.unclassified.get(q, 0)}
            for q in range(self.queues)
        ]

    def report_counts(self) -> dict[str, int]:
        """The JSON ``reports``: packets per report type, by name."""
        return dict(sorted(self.reports.items()))


def _semantics(args: argparse.Namespace) -> tuple[Semantics, str]:
    """The rules to predict with, and a sentence saying where they come from."""
    if args.semantics is not None:
        return args.semantics, "named with --semantics"
    if args.dev is None:
        if args.revision is not None or args.backend is not Backend.AUTO:
            raise CliError("--backend and --revision describe a live device: give --dev NAME too", "add --dev NAME")
        return Semantics.SPEC, "the virtio specification (no --dev)"
    if args.backend is Backend.EBPF:
        return semantics_for(None), "the eBPF backend (named)"
    revision = args.revision or _kernel_revision()
    if revision is None:
        if args.backend is Backend.NATIVE:
            raise CliError("--backend native, but this kernel has no hash ioctls", "drop --backend, or name --revision")
        return semantics_for(None), "the eBPF backend (this kernel lacks the hash ioctls)"
    how = "named" if args.revision is not None else "probed"
    return semantics_for(revision), f"native revision {revision.value} ({how})"


def _kernel_revision() -> Revision | None:
    """The hash revision of the running kernel, probed on a scratch TAP in a private namespace."""
    # Imported here: predicting without --dev never loads device code.
    from pytun_hash.device import NetworkNamespace, TunTapDevice
    from pytun_hash.device.hashctl import probe_revision

    try:
        with NetworkNamespace(ipv6=False), TunTapDevice.create("pthprobe%d", queues=1) as scratch:
            return probe_revision(scratch).revision
    except PrivilegeError as exc:
        raise CliError(
            f"cannot probe the kernel's hash revision: {exc}",
            "run as root, or name the rules with --revision R or --semantics",
            ExitCode.KERNEL,
        ) from exc


def _device_queues(name: str) -> int:
    """The queues device ``name`` is made for (:func:`~pytun_hash.hashing.state.queue_count`).

    Raises:
        CliError: when there is no such TUN/TAP device, or its queue count cannot be known.
    """
    # Imported here: hash and predict without --dev never load the state layer (and eBPF with it).
    from pytun_hash.hashing.state import queue_count

    tun_link(name)
    count = queue_count(name)
    if count.count is None:
        raise CliError(
            f"{name} has no queue attached and no recorded queue count",
            "give --queues N (the queues the VMM will attach), or start the VMM first",
        )
    return count.count


def _predict_one(config: VnetHashConfig, flow: FlowHash, queues: int, semantics: Semantics) -> int:
    return queue_for_flow(config, flow, queues, semantics=semantics)


def run_predict(args: argparse.Namespace, out: Output) -> int:
    """Run ``predict``; see the module documentation."""
    if not args.flows and not args.pcap:
        raise CliError(
            "predict needs FLOW arguments or --pcap FILE",
            "e.g. predict --key microsoft --queues 4 tcp,10.0.0.1:1,10.0.0.2:2",
        )
    if args.flows and args.pcap:
        raise CliError("give FLOW arguments or --pcap, not both", "run predict twice")
    if args.per_packet and not args.pcap:
        raise CliError("--per-packet needs --pcap", "drop --per-packet")
    device_queues = _device_queues(args.dev) if args.dev is not None and args.queues is None else None
    config = config_from_args(args, queues=args.queues if args.queues is not None else device_queues, key_required=True)
    if not config.rss:
        raise CliError(
            "the config has rss off: without RSS the kernel picks queues by its own flow hash (not modelled)",
            "enable RSS (--rss, or rss = true in the file)",
        )
    queues = _queue_count(args, config)
    semantics, source = _semantics(args)
    if device_queues is not None and args.queues is None:
        queues = device_queues
    tally = _Tally(queues)
    document: dict[str, Any] = {
        "queues": queues,
        "config": config.to_mapping(),
        "semantics": semantics.value,
        "semantics_source": source,
    }
    if args.pcap:
        _predict_pcap(args, out, config, semantics, document, tally)
        return int(ExitCode.OK)
    # The flows come from the argument vector, which the kernel bounds (ARG_MAX): no need to stream them.
    rows = []
    for text in args.flows:
        flow = parse_flow(text)
        result = classify(flow.ip_packet(), config.types, config.key, l2=Framing.IP, semantics=semantics)
        queue = _predict_one(config, result, queues, semantics)
        tally.add(result, queue)
        rows.append(
            {
                "flow": str(flow),
                "hash": f"{result.hash_value:#010x}",
                "report": result.report.name,
                "queue": queue,
            }
        )
    document["flows"] = rows
    document["histogram"] = tally.histogram()
    document["reports"] = tally.report_counts()

    def render() -> str:
        lines = [f"config: {config_summary(config)}", f"{queues} queue(s), {semantics.value} rules"]
        lines.append(table(("flow", "hash", "report", "queue"), [tuple(r.values()) for r in rows]))
        lines.append(_summary(tally, blocks_for(out.stdout)))
        return "\n".join(lines)

    out.result(document, render)
    return int(ExitCode.OK)


def _summary(tally: _Tally, blocks: bool) -> str:
    """The per-queue histogram (bars scaled to the busiest queue) and the report counts, as text."""
    total = sum(tally.packets.values())
    largest = max(tally.packets.values(), default=0)
    hist = []
    for q in range(tally.queues):
        n = tally.packets.get(q, 0)
        share = n / total if total else 0.0
        hist.append((q, n, tally.unclassified.get(q, 0), f"{share:6.1%}", bar(n, largest, blocks=blocks)))
    shown = ", ".join(f"{k} {v}" for k, v in tally.report_counts().items())
    return table(("queue", "packets", "unclassified", "share", ""), hist) + "\nreports: " + shown


# Column widths of the per-packet table, fixed because rows are printed before the widest is known.
# 50 holds any IPv4 flow (tcp 255.255.255.255:65535 -> ...); a longer IPv6 one pushes its line.
_PACKET_COLUMNS = (("packet", 8), ("flow", 50), ("hash", 10), ("report", 8), ("queue", 5))
# What the flow column says of a frame the model cannot parse (not IP, malformed, cut short).
_NO_FLOW = "(no IP flow)"


def _packet_line(*cells: object) -> str:
    return "  ".join(str(c).ljust(w) for c, (_, w) in zip(cells, _PACKET_COLUMNS, strict=True)).rstrip()


def _predict_pcap(
    args: argparse.Namespace,
    out: Output,
    config: VnetHashConfig,
    semantics: Semantics,
    document: dict[str, Any],
    tally: _Tally,
) -> None:
    """Predict every packet of ``--pcap`` (pcap or pcapng) and print the result.

    Bounded memory: the reader yields records from one piece of the file at a time and
    ``--per-packet`` entries are written as they are made (:meth:`Output.stream`), so only the
    counters outlive a packet. With numpy the batch engine classifies whole chunks at once
    (:mod:`pytun_hash.cli.pcapcmd`); without it the scalar engine goes frame by frame. Both give the
    same document but for ``pcap.engine``.
    """
    # Imported here: only predict --pcap reads captures (the batch engine loads numpy).
    from pytun_hash.capture.reader import CaptureReader
    from pytun_hash.cli.pcapcmd import BATCH, CaptureProgress, choose_engine, pcap_member, predict_batch

    queues = tally.queues
    head = [f"config: {config_summary(config)}", f"{queues} queue(s), {semantics.value} rules"]
    engine = choose_engine()
    with CaptureReader(args.pcap) as reader, CaptureProgress(out, reader) as progress:
        stream = None
        if args.per_packet:
            header = _packet_line(*(name for name, _ in _PACKET_COLUMNS))
            rule = "  ".join("-" * w for _, w in _PACKET_COLUMNS)
            stream = out.stream(document, "packets", "\n".join([*head, header, rule]))
        if engine == BATCH:
            truncated = predict_batch(reader, config, semantics, tally, progress, stream, _packet_line, _NO_FLOW)
        else:
            for index, packet in enumerate(reader):
                frame, framing = packet.frame, packet.framing
                if stream is None:
                    result = classify(frame, config.types, config.key, l2=framing, semantics=semantics)
                    tally.add(result, _predict_one(config, result, queues, semantics))
                else:
                    # Parsed once, for the flow's addresses and the classification alike.
                    parsed = parse_frame(frame, framing)
                    result = classify_parsed(parsed, config.types, config.key, semantics=semantics)
                    queue = _predict_one(config, result, queues, semantics)
                    tally.add(result, queue)
                    flow = None if parsed is None else parsed_flow_text(parsed)
                    value = f"{result.hash_value:#010x}"
                    entry = {"index": index, "flow": flow, "hash": value, "report": result.report.name, "queue": queue}
                    stream.entry(entry, _packet_line(index, flow or _NO_FLOW, value, result.report.name, queue))
                if index % 4096 == 0:
                    progress.update(index)
            truncated = reader.truncated
        # The last report (if any) counts every packet, not those up to the last chunk.
        progress.finish(reader.count)
        pcap = pcap_member(reader, engine, truncated, tally.reports.get(HashReport.NONE.name, 0))
    tail = {"pcap": pcap, "histogram": tally.histogram(), "reports": tally.report_counts()}
    described = (
        f"{pcap['file']}: link type {pcap['linktype']}, {pcap['packets']} packets "
        f"({pcap['truncated']} truncated by the capture, {pcap['unparsed']} not hashed)"
    )
    summary = _summary(tally, blocks_for(out.stdout))
    if stream is not None:
        stream.finish(tail, f"{described}\n{summary}")
    else:
        out.result({**document, **tail}, "\n".join([*head, described, summary]))
