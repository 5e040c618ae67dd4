"""The ``data.*`` rules: hash values, reports and queues of frames sent through a scratch device.

Each rule builds frames (:mod:`pytun_hash.model.frames`, :class:`~pytun_hash.traffic.Flow`), puts a
configuration in force on a scratch 4-queue TAP with the revision's raw set-ioctl (or, in eBPF
mode, pytun_hash's steering program), sends the frames through the TAP with ``AF_PACKET`` and reads
every queue (:mod:`pytun_hash.conformance._frames`). What a frame should get comes from the software
model under the virtio specification (``Semantics.SPEC``: :func:`~pytun_hash.model.classify`), from
Microsoft's published vectors, or, for ``data.read-time-report``, from the revision's documented
UAPI.

How the rules keep out of each other's way, so that one kernel bug is one deviation:

* Only ``data.toeplitz`` judges the Toeplitz convention. Elsewhere a reported value passes when it
  is the hash of the fields the spec selects under the standard convention *or* with the input's
  32-bit words loaded in host order (the RFC's convention); the evidence says which.
* Only ``data.queue`` and ``data.unclassified`` judge queues in the report modes, and ``data.queue``
  computes the expected queue from the hash the kernel reported, so a wrong hash is not also a wrong
  queue. Zero table entries appear only in ``data.unclassified``, which judges what they mean.
* Every type set applied includes an IPv4 type: the series' key-length helper copies only 4 key
  bytes for type sets without one (in every revision), and ``uapi.key-length`` judges that.
* In eBPF mode the kernel writes no hash reports (user space computes them), so rules judge queues
  only, with tables whose entries expose hash bits (``i % 3``, unclassified queue 3 on 4 queues;
  ``data.toeplitz`` adds four tables that show bits 0-6 exactly). ``data.single-queue-report`` and
  ``data.read-time-report`` are about reports and skip there.

What each revision is expected to show (emulated: the kernel emulator's documented behaviour of
that revision, :mod:`pytun_hash.testing.kernel` and :mod:`pytun_hash.testing.datapath`):

========================  =========  ======================================================================
rule                      RFC        v3-v9, v10-v11, v12
========================  =========  ======================================================================
data.toeplitz             deviation  pass: the input is loaded big-endian from v3 (the v10 selftest expects
                                     the standard values); the RFC hashes each 32-bit word byte-reversed
data.classification       pass       pass: all revisions pick TCP, then UDP, then IP, by the enabled bits
data.queue                pass       pass: ``table[hash & mask] % queues`` everywhere (the RFC too, for
                                     non-zero entries)
data.unclassified         deviation  pass: from v3 report NONE goes to ``unclassified_queue`` and a zero
                                     entry is queue 0; the RFC sends unclassified frames to ``table[0]``
                                     and replaces zero entries by ``unclassified_queue``
data.fragments            deviation  pass: from v5 a fragment skips the TCP/UDP choice. v3 and v4 hashed
                                     fragments as the RFC does (TCP/UDP, ports 0) and would deviate here;
                                     the ``V3`` revision stands for v3-v9 and its emulator follows v6-v9
data.ipv6-extensions      pass       pass: extension headers are skipped (the _EX types are outside every
                                     revision's capability, 0x3f, so they stay off)
data.vlan                 pass       pass (the spec is silent on VLAN tags: the project's choice, up to
                                     two tags skipped as the kernel's flow dissector does)
data.key-bytes            pass       pass: with an IPv4 type every revision copies all 40 key bytes
data.single-queue-report  deviation  deviation: every revision hashes in tun's ``ndo_select_queue`` (the
                                     RFC verified on a kernel; v3+ as their code reads, and as the emulator
                                     models it), which the core calls only with 2 or more queues: with one
                                     queue no report (the RFC leaves the hash fields unwritten, v3+ zeros)
data.read-time-report     pass       pass (basis: the revision's UAPI; the RFC decides at read time
                                     whether to write the 20-byte header and skips bytes past it, v3+
                                     decide at transmit time and zero-fill up to the header size)
========================  =========  ======================================================================

In eBPF mode every rule passes on a correct program, except the two report rules, which skip;
``data.key-bytes`` there checks bytes 3-39 only: bytes 0-2 reach hash bits 8-31 alone, and the
queue shows bits 0-6 (a table has at most 128 entries).

Rules raise nothing of their own: a kernel call that fails (``OSError``, ``PytunHashError``) ends the
rule, and the runner reports it as a deviation with the error as evidence.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from pytun_hash._abi import Revision
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport, HashType
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.conformance._frames import FILL, Bench, Probe, Seen
from pytun_hash.conformance.context import Context, Mode
from pytun_hash.conformance.rules import Basis, RuleResult, Status, rule
from pytun_hash.model import FlowHash, classify, queue_for_flow, rfc_input, toeplitz_hash
from pytun_hash.model import frames as fr
from pytun_hash.model.packet import ETH_P_8021AD, ETH_P_8021Q, parse_frame
from pytun_hash.model.vectors import MICROSOFT_IPV4, MICROSOFT_IPV6
from pytun_hash.traffic import Flow

__all__: list[str] = []

_ALL = HashType.supported_by_kernel_series()
_QUEUES = 4
# The default table: in eBPF mode, where only queues are seen, its entries show the hash (mod 3)
# and leave queue 3 to frames with no hash.
_TABLE = tuple(i % 3 for i in range(128))
_UNCLASSIFIED = 3
# At most this many departed cases go into a rule's evidence (the counts cover all of them).
_CASES = 4
_MARK = b"pytun-hash conformance "
_serial = itertools.count()


# ----------------------------------------------------------------------------- building frames


def _payload() -> bytes:
    """A payload no other frame of the run carries: frames are matched to what was sent by their bytes."""
    return _MARK + next(_serial).to_bytes(4, "big")


def _flow(protocol: int, src: str, dst: str, sport: int | None = None, dport: int | None = None) -> Probe:
    flow = Flow(protocol, src, dst, sport, dport)
    return Probe(str(flow), fr.ethernet(flow.ip_packet(_payload())))


def _random_address(rng: random.Random, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))
    return str(ipaddress.IPv6Address(rng.getrandbits(128)))


def _random_flows(rng: random.Random, count: int, *, versions: Sequence[int] = (4, 6)) -> list[Probe]:
    """``count`` TCP and UDP flows between random addresses and ports, both IP versions in turn."""
    probes = []
    for i in range(count):
        version = versions[i % len(versions)]
        protocol = (fr.TCP, fr.UDP)[i // len(versions) % 2]
        probes.append(
            _flow(
                protocol,
                _random_address(rng, version),
                _random_address(rng, version),
                rng.randrange(1, 0x10000),
                rng.randrange(1, 0x10000),
            )
        )
    return probes


def _icmp(version: int) -> int:
    return fr.ICMP if version == 4 else fr.ICMPV6


def _framed(label: str, packet: bytes, *, vlans: tuple[int, ...] = ()) -> Probe:
    return Probe(label, fr.ethernet(packet, vlans=vlans))


# ----------------------------------------------------------------------------- expectations


def _config(
    types: HashType | int,
    key: bytes,
    *,
    table: Sequence[int] = _TABLE,
    unclassified: int = _UNCLASSIFIED,
    rss: bool = True,
    report: bool = True,
) -> VnetHashConfig:
    # The series copies 4 key bytes for a type set without an IPv4 type (uapi.key-length's business);
    # every set applied here has one, so the whole key is in force on every revision.
    assert int(types) & 0x7, "a data rule applied a type set without an IPv4 type"
    return VnetHashConfig(
        rss=rss, report=report, types=types, indirection_table=tuple(table), key=key, unclassified_queue=unclassified
    )


def _spec(probe: Probe, config: VnetHashConfig) -> FlowHash:
    """What the specification computes for the probe under ``config``."""
    return classify(probe.frame, config.types, config.key)


def _host_order_value(flow: FlowHash, key: bytes) -> int:
    """The hash of the same fields with each 32-bit input word loaded in host order (the RFC's Toeplitz)."""
    return toeplitz_hash(key, rfc_input(flow.hashed)) if flow.hashed else 0


def _report_text(report: int) -> str:
    try:
        return HashReport(report).name
    except ValueError:
        return str(report)


def _expected(flow: FlowHash) -> dict[str, object]:
    return {"hash_value": f"0x{flow.hash_value:08x}", "hash_report": flow.report.name}


def _report_departure(seen: Seen, flow: FlowHash, key: bytes) -> tuple[str, str] | None:
    """How the hash fields of ``seen`` depart from the spec's ``flow``: ``(kind, text)``; None when they do not.

    The value passes under either Toeplitz convention (``data.toeplitz`` judges which).
    """
    if not seen.arrived:
        return "lost", "the frame was not read back from any queue"
    fields = seen.hash
    if fields is None:
        return "no hash", "no hash fields were written"
    value, report = fields
    if report != flow.report:
        return f"{_report_text(report)} for {flow.report.name}", f"reported {_report_text(report)}"
    if value not in (flow.hash_value, _host_order_value(flow, key)):
        return "value", f"0x{value:08x} is not the hash of the fields {flow.report.name} selects"
    return None


def _queue_departure(seen: Seen, queue: int) -> tuple[str, str] | None:
    if not seen.arrived:
        return "lost", "the frame was not read back from any queue"
    if seen.queue != queue:
        return "queue", f"queue {seen.queue} instead of {queue}"
    return None


@attrs.define
class _Tally:
    """The cases a rule checked, and the first few that departed."""

    checked: int = 0
    departed: int = 0
    kinds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    cases: list[dict[str, Any]] = attrs.field(factory=list)
    others: int = 0

    def add(
        self,
        seen: Seen,
        departure: tuple[str, str] | None,
        expected: dict[str, object],
        **context: object,
    ) -> None:
        self.record(
            departure, {"frame": seen.probe.label, **context, "expected": expected, "observed": seen.observed()}
        )

    def record(self, departure: tuple[str, str] | None, case: dict[str, Any]) -> None:
        """Count one checked case; keep it as evidence when it departed (``(kind, why)``) and few are kept."""
        self.checked += 1
        if departure is None:
            return
        kind, text = departure
        self.departed += 1
        self.kinds[kind] += 1
        if len(self.cases) < _CASES:
            self.cases.append({**case, "why": text})

    def evidence(self, inputs: dict[str, object], expected: str, observed: str) -> dict[str, object]:
        out: dict[str, object] = {
            "inputs": inputs,
            "expected": expected,
            "observed": observed,
            "checked": self.checked,
            "departed": self.departed,
        }
        if self.kinds:
            out["departures"] = dict(self.kinds)
        if self.cases:
            out["cases"] = self.cases
        if self.others:
            out["other_frames"] = self.others
        return out


def _result(
    rule_id: str, status: Status, summary: str, evidence: dict[str, object], basis: Basis = Basis.SPEC
) -> RuleResult:
    return RuleResult(rule_id, status, summary, evidence, basis)


def _skip_without_data_path(rule_id: str, ctx: Context) -> RuleResult | None:
    if ctx.data_path:
        return None
    return _result(rule_id, Status.SKIP, "frames cannot be sent and read back here (no data path)", {})


def _judge_frames(
    bench: Bench,
    tally: _Tally,
    config: VnetHashConfig,
    probes: Sequence[Probe],
    *,
    explain: Callable[[Seen, VnetHashConfig, tuple[str, str]], tuple[str, str]] | None = None,
    **context: object,
) -> None:
    """Apply ``config``, send ``probes`` and judge each against the model under ``config``: its report
    (report modes) or its queue (eBPF mode). ``explain`` may name a report departure more precisely."""
    bench.apply(config)
    seen, others = bench.exchange(probes)
    tally.others += others
    for item in seen:
        flow = _spec(item.probe, config)
        if bench.reports:
            departure = _report_departure(item, flow, config.key)
            if departure is not None and explain is not None:
                departure = explain(item, config, departure)
            tally.add(item, departure, _expected(flow), **context)
        else:
            queue = queue_for_flow(config, flow, bench.num_queues)
            tally.add(item, _queue_departure(item, queue), {"queue": queue, **_expected(flow)}, **context)


def _simple_result(
    rule_id: str,
    tally: _Tally,
    inputs: dict[str, object],
    *,
    passed: str,
    departed: str,
    expected: str,
    basis: Basis = Basis.SPEC,
) -> RuleResult:
    status = Status.DEVIATION if tally.departed else Status.PASS
    observed = (
        f"{tally.departed} of {tally.checked} frames departed ({', '.join(sorted(tally.kinds))})"
        if tally.departed
        else f"all {tally.checked} frames as expected"
    )
    summary = (
        departed.format(n=tally.departed, total=tally.checked) if tally.departed else passed.format(total=tally.checked)
    )
    return _result(rule_id, status, summary, tally.evidence(inputs, expected, observed), basis)


# ----------------------------------------------------------------------------- data.toeplitz


def _microsoft_probes() -> list[tuple[Probe, int]]:
    """One frame per published value: TCP and UDP (the 4-tuple value) and an ICMP echo (addresses only)."""
    out = []
    for row in MICROSOFT_IPV4 + MICROSOFT_IPV6:
        version = ipaddress.ip_address(row.src).version
        out.append((_flow(fr.TCP, row.src, row.dst, row.sport, row.dport), row.with_ports))
        out.append((_flow(fr.UDP, row.src, row.dst, row.sport, row.dport), row.with_ports))
        out.append((_flow(_icmp(version), row.src, row.dst), row.ip_only))
    return out


@rule("data.toeplitz", "reported hash values: Microsoft's published vectors and random flows, standard Toeplitz")
def toeplitz(ctx: Context) -> RuleResult:
    """Every hash is the specification's Toeplitz: the published Microsoft vectors (IPv4/IPv6, TCP, UDP and
    IP only, with their key) and 24 random flows under a random key. In eBPF mode, the queues of the same
    frames under four tables ``table[i] = (i >> s) & 3`` (s = 0, 2, 4, 5) show bits 0-6 of every hash."""
    rid = "data.toeplitz"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    rng = random.Random(0x7E0)
    published = _microsoft_probes()
    random_key = rng.randbytes(40)
    flows = _random_flows(rng, 24)
    sets: list[tuple[str, bytes, list[tuple[Probe, int]]]] = [
        ("microsoft", MICROSOFT_RSS_KEY, published),
        ("random", random_key, [(p, classify(p.frame, _ALL, random_key).hash_value) for p in flows]),
    ]
    tally = _Tally()
    reversed_words = 0
    with Bench.open(ctx, _QUEUES) as bench:
        for name, key, cases in sets:
            probes = [p for p, _ in cases]
            wanted = {p.frame: value for p, value in cases}
            if bench.reports:
                config = _config(_ALL, key)
                bench.apply(config)
                seen, others = bench.exchange(probes)
                tally.others += others
                for item in seen:
                    value = wanted[item.probe.frame]
                    departure = _value_departure(item, value, key, config)
                    if departure is not None and departure[0] == "host-order words":
                        reversed_words += 1
                    tally.add(item, departure, {"hash_value": f"0x{value:08x}"}, vectors=name)
                continue
            for shift in (0, 2, 4, 5):
                table = tuple((i >> shift) & 3 for i in range(128))
                config = _config(_ALL, key, table=table)
                bench.apply(config)
                seen, others = bench.exchange(probes)
                tally.others += others
                for item in seen:
                    value = wanted[item.probe.frame]
                    queue = table[value & 127] % bench.num_queues
                    expected = {"queue": queue, "hash_value": f"0x{value:08x}"}
                    tally.add(item, _queue_departure(item, queue), expected, vectors=name, table_shift=shift)
    inputs = {
        "published": f"{len(published)} frames: Microsoft's IPv4 and IPv6 rows as TCP, UDP and ICMP, "
        f"key {MICROSOFT_RSS_KEY.hex()}",
        "random": f"{len(flows)} TCP/UDP flows, IPv4 and IPv6, key {random_key.hex()}",
        "types": f"0x{int(_ALL):x}",
        "queues": _QUEUES,
    }
    what = "hash values" if ctx.mode is not Mode.EBPF else "queues (hash bits 0-6)"
    evidence = tally.evidence(
        inputs,
        "the standard Toeplitz hash of source address, destination address, source port, destination port "
        "(network order); the published values for Microsoft's rows",
        f"{tally.departed} of {tally.checked} {what} differ" if tally.departed else f"all {tally.checked} {what} agree",
    )
    if not tally.departed:
        return _result(
            rid,
            Status.PASS,
            f"{tally.checked} {what} agree with the specification's Toeplitz and the published vectors",
            evidence,
        )
    summary = f"{tally.departed} of {tally.checked} {what} differ from the specification's Toeplitz"
    if reversed_words == tally.departed:
        summary += "; every one is Toeplitz over the input with each 32-bit word byte-reversed (loaded in host order)"
    return _result(rid, Status.DEVIATION, summary, evidence)


def _value_departure(seen: Seen, value: int, key: bytes, config: VnetHashConfig) -> tuple[str, str] | None:
    """How the reported value of ``seen`` departs from ``value``, naming the RFC's host-order convention."""
    if not seen.arrived:
        return "lost", "the frame was not read back from any queue"
    fields = seen.hash
    if fields is None:
        return "no hash", "no hash fields were written"
    observed = fields[0]
    if observed == value:
        return None
    flow = _spec(seen.probe, config)
    if flow.hash_value == value and observed == _host_order_value(flow, key):
        return "host-order words", "Toeplitz over the input with each 32-bit word byte-reversed"
    return "value", f"0x{observed:08x}: neither the standard Toeplitz nor the host-order one"


# ----------------------------------------------------------------------------- data.classification

# Type sets that make each type fall through to the next; each holds an IPv4 type (see _config).
_TYPE_SETS = (
    HashType(0x3F),  # everything
    HashType.IPV4 | HashType.IPV6,  # addresses only: TCP and UDP fall through to IP
    HashType.TCPV4 | HashType.UDPV4 | HashType.TCPV6 | HashType.UDPV6,  # no IP types: others unhashed
    HashType.IPV4 | HashType.UDPV4 | HashType.IPV6 | HashType.UDPV6,  # TCP falls through to IP
    HashType.IPV4 | HashType.TCPV4 | HashType.IPV6 | HashType.TCPV6,  # UDP falls through to IP
    HashType.IPV4 | HashType.TCPV4 | HashType.UDPV4,  # IPv4 only: IPv6 unhashed
    HashType.TCPV4 | HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6,  # IPv4 UDP and ICMP unhashed
    HashType.IPV4 | HashType.TCPV4 | HashType.TCPV6,  # IPv6 UDP and ICMPv6 unhashed
)


def _classification_probes() -> list[Probe]:
    probes = []
    for src, dst in (("10.1.0.1", "10.1.0.2"), ("fd00:1::1", "fd00:1::2")):
        version = ipaddress.ip_address(src).version
        probes += [
            _flow(fr.TCP, src, dst, 40001, 80),
            _flow(fr.UDP, src, dst, 40002, 53),
            _flow(_icmp(version), src, dst),
            _flow(47, src, dst),  # GRE: another protocol, hashed by addresses only
        ]
    return probes


@rule("data.classification", "report types: TCP before UDP before IP, disabled types fall through")
def classification(ctx: Context) -> RuleResult:
    """TCP, UDP, ICMP and GRE over IPv4 and IPv6 under eight type sets that make each type fall through to
    the next: the reported type is the spec's, and the value is the hash of the fields that type selects."""
    rid = "data.classification"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    key = random.Random(0xC1A5).randbytes(40)
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:
        for types in _TYPE_SETS:
            _judge_frames(bench, tally, _config(types, key), _classification_probes(), types=f"0x{int(types):x}")
    return _simple_result(
        rid,
        tally,
        {"frames": "TCP, UDP, ICMP, GRE over IPv4 and IPv6", "type_sets": [f"0x{int(t):x}" for t in _TYPE_SETS]},
        passed="{total} frames under 8 type sets classified as the specification says (TCP, then UDP, then IP)",
        departed="{n} of {total} frames classified otherwise than the specification says",
        expected=_expectation(ctx, "the report type the specification picks: TCP, then UDP, then IP, each if enabled"),
    )


def _expectation(ctx: Context, reports: str) -> str:
    if ctx.mode is Mode.EBPF:
        return "the queue the specification's hash and type selection give (table[i] = i % 3, unclassified queue 3)"
    return reports + "; the value the hash of the fields that type selects"


# ----------------------------------------------------------------------------- data.queue


@rule("data.queue", "queue = indirection_table[hash & mask], folded by the number of queues")
def queue(ctx: Context) -> RuleResult:
    """32 TCP/UDP flows under tables of 1, 4 and 128 entries whose entries (never 0: zero entries are
    ``data.unclassified``'s) reach past the queue count: each frame is on ``table[hash & mask] % queues``,
    with the hash the kernel reported (the model's in eBPF mode), so a wrong hash is ``data.toeplitz``'s."""
    rid = "data.queue"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    rng = random.Random(0x0E0E)
    key = rng.randbytes(40)
    tables = [(5,), (1, 2, 3, 6), tuple(rng.randrange(1, 3 * _QUEUES) for _ in range(128))]
    probes = _random_flows(rng, 32)
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:
        for table in tables:
            config = _config(_ALL, key, table=table, unclassified=2)
            bench.apply(config)
            seen, others = bench.exchange(probes)
            tally.others += others
            for item in seen:
                value = _spec(item.probe, config).hash_value
                fields = item.hash if bench.reports else None
                if fields is not None and fields[1] != HashReport.NONE:
                    value = fields[0]  # the hash the kernel computed decides the queue
                index = value & config.indirection_table_mask
                want = table[index] % bench.num_queues
                expected: dict[str, object] = {"queue": want, "index": index, "entry": table[index]}
                tally.add(item, _queue_departure(item, want), expected, table_length=len(table))
    return _simple_result(
        rid,
        tally,
        {
            "flows": len(probes),
            "tables": [list(t) if len(t) <= 4 else f"{len(t)} entries in 1..11" for t in tables],
            "queues": _QUEUES,
        },
        passed="{total} frames on indirection_table[hash & mask] % queues (tables of 1, 4 and 128 entries)",
        departed="{n} of {total} frames not on indirection_table[hash & mask] % queues",
        expected="indirection_table[hash & mask] folded modulo the number of queues, the hash being the one reported",
    )


# ----------------------------------------------------------------------------- data.unclassified


def _unclassified_probes() -> list[Probe]:
    """Frames with no hash under types TCPv4|UDPv4: non-IP ones (ARP, an experimental ethertype), and IP
    ones of no enabled type (ICMP, GRE, TCP and UDP over IPv6)."""
    arp = fr.ethernet(fr.arp_request("10.2.0.1", "10.2.0.2") + _payload(), fr.ETH_P_ARP)
    return [
        Probe("ARP request 10.2.0.1 -> 10.2.0.2", arp),
        Probe("ethertype 0x88b5 (local experimental)", fr.ethernet(_payload() * 2, 0x88B5)),
        _flow(fr.ICMP, "10.2.0.1", "10.2.0.2"),
        _flow(47, "10.2.0.1", "10.2.0.2"),
        _flow(fr.TCP, "fd00:2::1", "fd00:2::2", 40000, 80),
        _flow(fr.UDP, "fd00:2::1", "fd00:2::2", 40000, 53),
    ]


def _unclassified_departure(
    item: Seen, flow: FlowHash, config: VnetHashConfig, num_queues: int, reports: bool
) -> tuple[str, str] | None:
    """How ``item`` departs from the spec's queue (naming the RFC's two rules when they explain it), or
    from report NONE with value 0 for a frame with no hash."""
    departure = _queue_departure(item, queue_for_flow(config, flow, num_queues))
    if departure is not None and item.queue is not None:
        if flow.report is HashReport.NONE and item.queue == config.indirection_table[0] % num_queues:
            return "unclassified to table[0]", f"queue {item.queue}: table[0], not unclassified_queue"
        if flow.report is not HashReport.NONE and item.queue == config.unclassified_queue % num_queues:
            return "zero entry as unclassified", f"queue {item.queue}: unclassified_queue, not queue 0"
    if departure is None and reports and flow.report is HashReport.NONE and item.hash != (0, 0):
        return "report", "a frame with no hash reports NONE with value 0"
    return departure


@rule("data.unclassified", "frames with no hash go to unclassified_queue; a zero table entry is queue 0")
def unclassified(ctx: Context) -> RuleResult:
    """Two checks. Unclassified: under types TCPv4|UDPv4, a table of 1s and unclassified queue 2, non-IP
    frames and IP frames of no enabled type go to queue 2 and report NONE (value 0), while TCP/UDP over
    IPv4 take the table. Zero entries: under a table of 0s and unclassified queue 3, hashed frames go to
    queue 0 (receiveq1), as the spec numbers queues; unclassified ones still to queue 3."""
    rid = "data.unclassified"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    rng = random.Random(0x0C1A)
    key = rng.randbytes(40)
    controls = [_flow(fr.TCP, "10.2.0.1", "10.2.0.2", 40000, 80), _flow(fr.UDP, "10.2.0.1", "10.2.0.2", 40000, 53)]
    checks = (
        (
            "unclassified",
            _config(HashType.TCPV4 | HashType.UDPV4, key, table=(1,) * 8, unclassified=2),
            [*_unclassified_probes(), *controls],
        ),
        (
            "zero entries",
            _config(_ALL, key, table=(0,) * 4, unclassified=3),
            _random_flows(rng, 12) + _unclassified_probes()[:2],
        ),
    )
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:
        for check, config, probes in checks:
            bench.apply(config)
            seen, others = bench.exchange(probes)
            tally.others += others
            for item in seen:
                flow = _spec(item.probe, config)
                departure = _unclassified_departure(item, flow, config, bench.num_queues, bench.reports)
                expected = {"queue": queue_for_flow(config, flow, bench.num_queues), **_expected(flow)}
                tally.add(item, departure, expected, check=check)
    result = _simple_result(
        rid,
        tally,
        {
            "unclassified": "types 0x6 (TCPv4|UDPv4), table 8 x [1], unclassified_queue 2: ARP, ethertype 0x88b5, "
            "ICMP, GRE, IPv6 TCP/UDP, and IPv4 TCP/UDP as controls",
            "zero entries": "types 0x3f, table [0, 0, 0, 0], unclassified_queue 3: 12 TCP/UDP flows, ARP, 0x88b5",
            "queues": _QUEUES,
        },
        passed="{total} frames: those with no hash on unclassified_queue, hashed ones on a zero table entry on queue 0",
        departed="{n} of {total} frames departed",
        expected="no hash: unclassified_queue, report NONE, value 0; else indirection_table[hash & mask] (0: queue 0)",
    )
    parts = []
    if tally.kinds["unclassified to table[0]"]:
        parts.append(
            f"{tally.kinds['unclassified to table[0]']} unclassified frames went to table[0], not unclassified_queue"
        )
    if tally.kinds["zero entry as unclassified"]:
        parts.append(
            f"{tally.kinds['zero entry as unclassified']} hashed frames on a zero table entry went to "
            "unclassified_queue, not queue 0"
        )
    if parts:
        other = tally.departed - sum(tally.kinds[k] for k in ("unclassified to table[0]", "zero entry as unclassified"))
        if other:
            parts.append(f"{other} departed otherwise")
        result = attrs.evolve(result, summary="; ".join(parts))
    return result


# ----------------------------------------------------------------------------- data.fragments


def _fragment_probes() -> list[Probe]:
    """IPv4 and IPv6 fragments of TCP and UDP datagrams (first ones, with the ports, and later ones),
    and one IPv4 datagram with DF alone, which is not a fragment."""
    v4s, v4d, v6s, v6d = "10.3.0.1", "10.3.0.2", "fd00:3::1", "fd00:3::2"
    return [
        _framed(f"udp {v4s}:40000 -> {v4d}:53 (IPv4 first fragment)",
                fr.ipv4(v4s, v4d, fr.UDP, fr.udp(40000, 53, _payload() * 4)[:24], mf=True)),
        _framed(f"tcp {v4s}:40001 -> {v4d}:80 (IPv4 first fragment)",
                fr.ipv4(v4s, v4d, fr.TCP, fr.tcp(40001, 80, _payload()), mf=True)),
        _framed(f"udp {v4s} -> {v4d} (IPv4 later fragment, offset 185)",
                fr.ipv4(v4s, v4d, fr.UDP, _payload(), offset=185)),
        _framed(f"tcp {v4s} -> {v4d} (IPv4 middle fragment, offset 3, MF)",
                fr.ipv4(v4s, v4d, fr.TCP, _payload(), offset=3, mf=True)),
        _framed(f"udp [{v6s}]:40002 -> [{v6d}]:53 (IPv6 first fragment)",
                fr.ipv6(v6s, v6d, fr.FRAGMENT, fr.fragment_header(fr.UDP, more=True) + fr.udp(40002, 53, _payload()))),
        _framed(f"tcp [{v6s}] -> [{v6d}] (IPv6 later fragment, offset 50)",
                fr.ipv6(v6s, v6d, fr.FRAGMENT, fr.fragment_header(fr.TCP, offset=50) + _payload())),
        _framed(f"udp {v4s}:40003 -> {v4d}:53 (IPv4, DF alone: not a fragment)",
                fr.ipv4(v4s, v4d, fr.UDP, fr.udp(40003, 53, _payload()), df=True)),
    ]  # fmt: skip


_PORTS_ZERO = "TCP/UDP type, ports 0"


def _ports_zero(seen: Seen, config: VnetHashConfig, departure: tuple[str, str]) -> tuple[str, str]:
    """Name a fragment reported as TCP/UDP whose value is the hash of its addresses and zero ports."""
    parsed = parse_frame(seen.probe.frame)
    fields = seen.hash
    if parsed is None or fields is None or not parsed.fragment:
        return departure
    value, report = fields
    if report not in _PORTED_REPORTS:
        return departure
    addresses = parsed.src + parsed.dst
    if value in (toeplitz_hash(config.key, addresses), toeplitz_hash(config.key, rfc_input(addresses))):
        # Zero bytes appended to the input leave a Toeplitz hash unchanged: this is also "ports 0".
        return _PORTS_ZERO, f"reported {_report_text(report)}, hashed with ports 0 (the addresses' hash)"
    return departure


_PORTED_REPORTS = {HashReport.TCPV4, HashReport.UDPV4, HashReport.TCPV6, HashReport.UDPV6}


@rule("data.fragments", "IP fragments, first ones included, hash as IP only (addresses, no ports)")
def fragments(ctx: Context) -> RuleResult:
    """IPv4 and IPv6 fragments of TCP and UDP datagrams under all types and under TCP/UDP types only:
    a fragment reports IPv4/IPv6 with the hash of the addresses (or NONE when the IP types are off),
    never a TCP/UDP type, as the spec reads (a fragment has no ports; QEMU and the series from v5 agree)."""
    rid = "data.fragments"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    key = random.Random(0xF7A6).randbytes(40)
    tally = _Tally()
    type_sets = (_ALL, HashType.TCPV4 | HashType.UDPV4 | HashType.TCPV6 | HashType.UDPV6)
    with Bench.open(ctx, _QUEUES) as bench:
        for types in type_sets:
            probes = _fragment_probes()
            _judge_frames(bench, tally, _config(types, key), probes, explain=_ports_zero, types=f"0x{int(types):x}")
    result = _simple_result(
        rid,
        tally,
        {"frames": [p.label for p in _fragment_probes()], "type_sets": [f"0x{int(t):x}" for t in type_sets]},
        passed="{total} frames: fragments hashed as IP only (NONE without the IP types), the DF-only control as UDP",
        departed="{n} of {total} frames departed: fragments not hashed as IP only",
        expected=_expectation(
            ctx, "IPv4/IPv6 for every fragment (NONE when those types are off), UDPv4 for the DF-only control"
        ),
    )
    if tally.kinds[_PORTS_ZERO]:
        summary = (
            f"{tally.kinds[_PORTS_ZERO]} of {tally.checked} frames: fragments reported as TCP/UDP, hashed with ports 0"
        )
        if tally.departed > tally.kinds[_PORTS_ZERO]:
            summary += f"; {tally.departed - tally.kinds[_PORTS_ZERO]} departed otherwise"
        result = attrs.evolve(result, summary=summary)
    return result


# ----------------------------------------------------------------------------- data.ipv6-extensions


def _extension_probes() -> list[Probe]:
    s, d = "fd00:4::1", "fd00:4::2"
    hops = ["fd00:4::99"]
    return [
        _framed(f"tcp [{s}]:40000 -> [{d}]:80 behind hop-by-hop",
                fr.ipv6(s, d, fr.HOPOPTS, fr.hop_by_hop(fr.TCP) + fr.tcp(40000, 80, _payload()))),
        _framed(f"udp [{s}]:40001 -> [{d}]:53 behind destination options",
                fr.ipv6(s, d, fr.DSTOPTS, fr.dest_options(fr.UDP) + fr.udp(40001, 53, _payload()))),
        _framed(f"tcp [{s}]:40002 -> [{d}]:80 behind a type-0 routing header",
                fr.ipv6(s, d, fr.ROUTING, fr.routing_type0(fr.TCP, hops) + fr.tcp(40002, 80, _payload()))),
        _framed(f"udp [{s}]:40003 -> [{d}]:53 behind hop-by-hop, destination options, routing",
                fr.ipv6(s, d, fr.HOPOPTS, fr.hop_by_hop(fr.DSTOPTS) + fr.dest_options(fr.ROUTING)
                        + fr.routing_type0(fr.UDP, hops) + fr.udp(40003, 53, _payload()))),
        _framed(f"tcp [{s}]:40004 -> [{d}]:80 with a Home Address option (fd00:4::77)",
                fr.ipv6(s, d, fr.DSTOPTS, fr.dest_options(fr.TCP, home="fd00:4::77") + fr.tcp(40004, 80, _payload()))),
        _framed(f"udp [{s}]:40005 -> [{d}]:53 with a type-2 routing header (fd00:4::78)",
                fr.ipv6(s, d, fr.ROUTING, fr.routing_type2(fr.UDP, "fd00:4::78") + fr.udp(40005, 53, _payload()))),
        _framed(f"icmpv6 [{s}] -> [{d}] behind hop-by-hop",
                fr.ipv6(s, d, fr.HOPOPTS, fr.hop_by_hop(fr.ICMPV6) + fr.icmp_echo(_payload()))),
    ]  # fmt: skip


@rule("data.ipv6-extensions", "IPv6 extension headers are skipped: TCP/UDP behind them hash with their ports")
def ipv6_extensions(ctx: Context) -> RuleResult:
    """TCP, UDP and ICMPv6 behind hop-by-hop, destination options (one with a Home Address option) and
    routing headers (type 0, and type 2): with the _EX types off (no revision supports them: capability
    0x3f), the spec skips the extension headers and applies the plain IPv6 rules, fixed-header addresses."""
    rid = "data.ipv6-extensions"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    key = random.Random(0xE6E6).randbytes(40)
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:
        _judge_frames(bench, tally, _config(_ALL, key), _extension_probes())
    return _simple_result(
        rid,
        tally,
        {"frames": [p.label for p in _extension_probes()], "types": f"0x{int(_ALL):x}"},
        passed="{total} IPv6 frames behind extension headers hashed with the upper layer's ports",
        departed="{n} of {total} IPv6 frames behind extension headers hashed otherwise",
        expected=_expectation(ctx, "TCPv6/UDPv6 over the fixed-header addresses and the ports, IPv6 for ICMPv6"),
    )


# ----------------------------------------------------------------------------- data.vlan


def _vlan_probes() -> list[Probe]:
    v4, v6 = ("10.5.0.1", "10.5.0.2"), ("fd00:5::1", "fd00:5::2")
    cases = (
        ((ETH_P_8021Q,), "802.1Q", fr.UDP, v4, 40000, 53),
        ((ETH_P_8021Q,), "802.1Q", fr.TCP, v6, 40001, 80),
        ((ETH_P_8021Q,), "802.1Q", fr.ICMP, v4, None, None),
        ((ETH_P_8021AD, ETH_P_8021Q), "802.1ad + 802.1Q", fr.TCP, v4, 40002, 80),
        ((ETH_P_8021AD, ETH_P_8021Q), "802.1ad + 802.1Q", fr.UDP, v6, 40003, 53),
    )
    probes = []
    for tags, name, protocol, (src, dst), sport, dport in cases:
        flow = Flow(protocol, src, dst, sport, dport)
        probes.append(_framed(f"{flow} in {name}", flow.ip_packet(_payload()), vlans=tags))
    return probes


@rule("data.vlan", "frames in VLAN tags (802.1Q, 802.1ad + 802.1Q) hash as the IP packet inside")
def vlan(ctx: Context) -> RuleResult:
    """IPv4 and IPv6 TCP, UDP and ICMP behind one 802.1Q tag or an 802.1ad + 802.1Q pair, tags in the frame:
    the spec's hash is defined on the IP packet and says nothing of VLAN tags, so this is the project's
    choice (model and eBPF program): up to two tags are skipped, as the kernel's flow dissector does."""
    rid = "data.vlan"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    key = random.Random(0x7A6).randbytes(40)
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:
        _judge_frames(bench, tally, _config(_ALL, key), _vlan_probes())
    return _simple_result(
        rid,
        tally,
        {"frames": [p.label for p in _vlan_probes()], "types": f"0x{int(_ALL):x}"},
        passed="{total} tagged frames hashed as the IP packet inside their tags",
        departed="{n} of {total} tagged frames not hashed as the IP packet inside their tags",
        expected=_expectation(
            ctx, "the report of the IP packet inside the tags (the project's choice: the spec is silent)"
        ),
        basis=Basis.CHOICE,
    )


# ----------------------------------------------------------------------------- data.key-bytes


def _byte_delta(i: int) -> bytes:
    """A key with only byte ``i`` set: by linearity, the hash under ``key ^ delta`` is the hash under
    ``key`` XOR the hash under ``delta``, so a frame's hash changes with byte ``i`` iff this hashes it non-zero."""
    return bytes(i) + b"\xff" + bytes(39 - i)


def _key_probes(
    rng: random.Random, bytes_: Iterable[int], changes: Callable[[Probe, int], bool], limit: int = 64
) -> list[Probe]:
    """IPv6 TCP flows (36 input bytes: every key byte is used) until each byte in ``bytes_`` changes one of them."""
    chosen: list[Probe] = []
    missing = set(bytes_)
    for _ in range(limit):
        if not missing:
            break
        (probe,) = _random_flows(rng, 1, versions=(6,))
        covered = {i for i in missing if changes(probe, i)}
        if covered:
            chosen.append(probe)
            missing -= covered
    return chosen


@rule("data.key-bytes", "every one of the 40 key bytes changes some hash")
def key_bytes(ctx: Context) -> RuleResult:
    """Under types 0x3f (so that every revision copies the whole key), 40 configurations each flip one byte
    of a base key; frames chosen so that each flip changes one of their hashes (under either Toeplitz
    convention) must show the change: in their reported values, or in eBPF mode in their queues under a
    random 4-queue table, where only bytes 3-39 can show (bytes 0-2 reach hash bits 8-31 alone)."""
    rid = "data.key-bytes"
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    rng = random.Random(0x4B)
    base = bytes(rng.randrange(1, 256) for _ in range(40))
    table = tuple(rng.randrange(_QUEUES) for _ in range(128))
    reports = ctx.mode is not Mode.EBPF
    observable = range(40) if reports else range(3, 40)

    def flipped(i: int) -> bytes:
        return bytes(a ^ b for a, b in zip(base, _byte_delta(i), strict=True))

    def changes(probe: Probe, i: int) -> bool:
        flow = classify(probe.frame, _ALL, base)
        if reports:
            # A change under both conventions, so that the RFC's is not taken for an unused byte.
            return bool(
                toeplitz_hash(_byte_delta(i), flow.hashed) and toeplitz_hash(_byte_delta(i), rfc_input(flow.hashed))
            )
        before = queue_for_flow(_config(_ALL, base, table=table), flow, _QUEUES)
        after_flow = classify(probe.frame, _ALL, flipped(i))
        return queue_for_flow(_config(_ALL, flipped(i), table=table), after_flow, _QUEUES) != before

    probes = _key_probes(rng, observable, changes)
    tally = _Tally()
    with Bench.open(ctx, _QUEUES) as bench:

        def observe(key: bytes) -> list[Seen]:
            bench.apply(_config(_ALL, key, table=table))
            seen, others = bench.exchange(probes)
            tally.others += others
            return seen

        def signature(seen: list[Seen]) -> list[object]:
            return [s.hash if reports else s.queue for s in seen]

        before = observe(base)
        reference = signature(before)
        for i in observable:
            after = observe(flipped(i))
            departure = None
            if any(not s.arrived for s in after) or (reports and any(s.hash is None for s in after)):
                departure = ("no hash" if reports else "lost", "not every frame came back with a hash to compare")
            elif signature(after) == reference:
                departure = ("unused", f"flipping key byte {i} changed no {'hash' if reports else 'queue'}")
            tally.record(
                departure,
                {
                    "key_byte": i,
                    "key": flipped(i).hex(),
                    "observed": [s.observed() for s in after],
                    "before": [s.observed() for s in before],
                },
            )
    inputs: dict[str, object] = {
        "base_key": base.hex(),
        "flip": "each key byte XOR 0xff in turn, one configuration per byte",
        "frames": [p.label for p in probes],
        "types": f"0x{int(_ALL):x}",
    }
    if not reports:
        inputs["table"] = f"128 random entries in 0..{_QUEUES - 1}"
    what = "hash" if reports else "queue"
    evidence = tally.evidence(
        inputs,
        f"each flip changes the {what} of at least one frame",
        f"{tally.departed} of {tally.checked} key bytes changed no {what}"
        if tally.departed
        else f"every flip changed a {what}",
    )
    if tally.departed:
        unused = [c["key_byte"] for c in tally.cases]
        return _result(
            rid,
            Status.DEVIATION,
            f"{tally.departed} of {tally.checked} key bytes changed no {what} (first: {unused})",
            evidence,
        )
    if reports:
        return _result(rid, Status.PASS, "each of the 40 key bytes changes the reported hash of some frame", evidence)
    return _result(
        rid,
        Status.PASS,
        "each of key bytes 3-39 changes the queue of some frame; bytes 0-2 reach hash bits 8-31 only, which no "
        "queue shows (the table index is bits 0-6)",
        evidence,
    )


# ----------------------------------------------------------------------------- data.single-queue-report


@rule("data.single-queue-report", "hash reports on a device with a single queue")
def single_queue_report(ctx: Context) -> RuleResult:
    """On a single-queue TAP with RSS and reports on, every frame still carries its hash report: the spec
    ties hash reporting to nothing about the number of queues."""
    rid = "data.single-queue-report"
    if ctx.mode is Mode.EBPF:
        return _result(
            rid, Status.SKIP, "the eBPF backend writes no hash reports (user space computes them)", {}, Basis.SPEC
        )
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    key = random.Random(0x51).randbytes(40)
    probes = [
        _flow(fr.TCP, "10.6.0.1", "10.6.0.2", 40000, 80),
        _flow(fr.UDP, "10.6.0.1", "10.6.0.2", 40001, 53),
        _flow(fr.TCP, "fd00:6::1", "fd00:6::2", 40002, 80),
        _flow(fr.UDP, "fd00:6::1", "fd00:6::2", 40003, 53),
        Probe(
            "ARP request 10.6.0.1 -> 10.6.0.2",
            fr.ethernet(fr.arp_request("10.6.0.1", "10.6.0.2") + _payload(), fr.ETH_P_ARP),
        ),
    ]
    tally = _Tally()
    with Bench.open(ctx, 1) as bench:
        _judge_frames(bench, tally, _config(_ALL, key, table=(0,), unclassified=0), probes)
    result = _simple_result(
        rid,
        tally,
        {"frames": [p.label for p in probes], "queues": 1, "types": f"0x{int(_ALL):x}", "rss": True, "report": True},
        passed="with one queue, all {total} frames carry the specification's hash report",
        departed="with one queue, {n} of {total} frames lack the specification's hash report",
        expected="the hash report the specification computes, whatever the number of queues",
    )
    if tally.kinds:
        how = []
        if tally.kinds.get("no hash"):
            how.append(f"{tally.kinds['no hash']} with no hash fields written")
        zeroed = sum(n for k, n in tally.kinds.items() if k.startswith("NONE for"))
        if zeroed:
            how.append(f"{zeroed} reporting NONE with value 0")
        if how:
            result = attrs.evolve(result, summary=f"{result.summary}: {', '.join(how)}")
    return result


# ----------------------------------------------------------------------------- data.read-time-report


@attrs.frozen
class _Scenario:
    """One read-time condition: what happens between send and read, and what the revision then writes.

    Attributes:
        name: short name (evidence key).
        steps: what is done, for the evidence.
        report: whether the frames must carry their hash report when read (False: no hash fields, or
            all-zero ones, NONE).
        header: the vnet header size the device starts with.
        tail: for a header longer than 20 bytes, what its bytes 20.. hold: ``"zero"`` (v3+), or
            ``"untouched or zero"`` (the RFC skips them; tun has zeroed them since "Pad virtio headers").
        not_applicable: why the revision cannot get into this condition (its documented refusal).
    """

    name: str
    steps: str
    report: bool
    header: int = 20
    tail: str | None = None
    not_applicable: str | None = None

    @property
    def expected_text(self) -> str:
        """What the frames must carry, in words."""
        text = "report" if self.report else "no report"
        return f"{text}, bytes 20-23 {self.tail}" if self.tail else text


def _scenarios(revision: Revision) -> list[_Scenario]:
    rfc = revision is Revision.RFC
    refused = "the RFC refuses REPORT with a header under 20 bytes (EINVAL; uapi.report-header judges that)"
    return [
        # The RFC checks REPORT when the frame is read; v3+ stored the hash with the frame when it was sent.
        _Scenario("report cleared before read", "RSS+REPORT, send, RSS alone, read", report=not rfc),
        # Neither marked (RFC) nor given a hash extension (v3+) when it was sent.
        _Scenario("report set after queueing", "hashing off, send, RSS+REPORT, read", report=False),
        _Scenario(
            "24-byte header",
            "header 24 bytes, RSS+REPORT, send, read",
            report=True,
            header=24,
            tail="untouched or zero" if rfc else "zero",
        ),
        _Scenario("little-endian cleared before read", "RSS+REPORT, send, TUNSETVNETLE(0), read", report=True),
        _Scenario(
            "header shrunk before read",
            "RSS+REPORT, send, header 12 bytes, read: the frame at byte 12",
            report=False,
            not_applicable=refused if rfc else None,
        ),
        # v5+: REPORT takes effect with a header of 20 bytes or more, which counts when the frame is read.
        _Scenario(
            "header grown before read",
            "header 12 bytes, RSS+REPORT, send, header 20 bytes, read",
            report=True,
            header=12,
            not_applicable=refused if rfc else None,
        ),
    ]


def _run_scenario(bench: Bench, scenario: _Scenario, probes: Sequence[Probe], key: bytes) -> list[Seen]:
    """Configure, send, change what the scenario changes, read."""
    reporting = _config(_ALL, key)
    late = scenario.name == "report set after queueing"
    bench.apply(_config(_ALL, key, rss=False, report=False) if late else reporting)
    bench.send(probes)
    match scenario.name:
        case "report cleared before read":
            bench.apply(reporting.replace(report=False))
        case "report set after queueing":
            bench.apply(reporting)
        case "little-endian cleared before read":
            bench.device.set_vnet_le(False)
        case "header shrunk before read":
            bench.set_vnet_hdr_size(12)
        case "header grown before read":
            bench.set_vnet_hdr_size(20)
    return bench.read(probes)[0]


def _read_time_departure(seen: Seen, scenario: _Scenario, flow: FlowHash, key: bytes) -> tuple[str, str] | None:
    if scenario.report:
        departure = _report_departure(seen, flow, key)
    elif not seen.arrived:
        departure = ("lost", "the frame was not read back at the expected offset")
    elif seen.hash not in (None, (0, 0)):
        departure = ("reported", "hash fields written, though the frame must not carry a report")
    else:
        departure = None
    if departure is None and scenario.tail is not None:
        tail = seen.header[VIRTIO_NET_HDR_V1_HASH_SIZE:]
        zero = tail == bytes(len(tail))
        untouched = tail == bytes([FILL]) * len(tail)
        if not (zero or (untouched and scenario.tail != "zero")):
            departure = ("tail", f"bytes 20-{len(seen.header) - 1} hold {tail.hex()}, not {scenario.tail}")
    return departure


@rule("data.read-time-report", "what decides the hash report of a frame: conditions at send and read time")
def read_time_report(ctx: Context) -> RuleResult:
    """Frames sent under one condition and read under another: REPORT cleared or set between send and
    read, a 24-byte header (bytes 20-23 past the hash header), vnet little-endian cleared, the header
    shrunk or grown. The spec knows no such split (a device writes the header when it receives), so the
    expectation is the revision's UAPI: the RFC writes the 20-byte header only if REPORT is set and the
    header is 20 bytes or more when the frame is read, and the frame was hashed when sent, skipping the
    rest of the header; v3+ store the hash with the frame when it is sent (REPORT on then), write it if
    the header has room when read, and zero-fill the header."""
    rid = "data.read-time-report"
    if ctx.mode is Mode.EBPF:
        return _result(
            rid, Status.SKIP, "the eBPF backend writes no hash reports (user space computes them)", {}, Basis.UAPI
        )
    skipped = _skip_without_data_path(rid, ctx)
    if skipped is not None:
        return skipped
    assert ctx.revision is not None
    key = random.Random(0x2EAD).randbytes(40)
    tally = _Tally()
    scenarios = [s for s in _scenarios(ctx.revision) if s.not_applicable is None]
    departed_in: collections.Counter[str] = collections.Counter()
    for scenario in scenarios:
        probes = [
            _flow(fr.TCP, "10.8.0.1", "10.8.0.2", 40000, 80),
            _flow(fr.UDP, "10.8.0.1", "10.8.0.2", 40001, 53),
            _flow(fr.TCP, "fd00:8::1", "fd00:8::2", 40002, 80),
            _flow(fr.UDP, "fd00:8::1", "fd00:8::2", 40003, 53),
        ]
        with Bench.open(ctx, _QUEUES, vnet_hdr_size=scenario.header) as bench:
            seen = _run_scenario(bench, scenario, probes, key)
        for item in seen:
            flow = classify(item.probe.frame, _ALL, key)
            expected: dict[str, object] = _expected(flow) if scenario.report else {"hash": "none (or zero, NONE)"}
            if scenario.tail is not None:
                expected["bytes_20_23"] = scenario.tail
            departure = _read_time_departure(item, scenario, flow, key)
            if departure is not None:
                departed_in[scenario.name] += 1
            case = {"frame": item.probe.label, "scenario": scenario.name, "steps": scenario.steps}
            observed = {**item.observed(), "header": item.header.hex()}
            tally.record(departure, {**case, "expected": expected, "observed": observed})
    revision = ctx.revision.title
    evidence = tally.evidence(
        {"scenarios": {s.name: s.steps for s in scenarios}, "frames": "TCP and UDP over IPv4 and IPv6"},
        f"what the {revision} UAPI writes: " + "; ".join(f"{s.name}: {s.expected_text}" for s in scenarios),
        ", ".join(f"{s.name}: {departed_in[s.name]} of 4 departed" for s in scenarios if departed_in[s.name])
        or f"all {tally.checked} frames as expected",
    )
    not_applicable = {s.name: s.not_applicable for s in _scenarios(ctx.revision) if s.not_applicable}
    if not_applicable:
        evidence["not_applicable"] = not_applicable
    if tally.departed:
        summary = f"{tally.departed} of {tally.checked} frames read otherwise than the {revision} UAPI says"
        return _result(rid, Status.DEVIATION, f"{summary} ({', '.join(departed_in)})", evidence, Basis.UAPI)
    summary = f"{tally.checked} frames in {len(scenarios)} send/read conditions carry what the {revision} UAPI says"
    return _result(rid, Status.PASS, summary, evidence, Basis.UAPI)
