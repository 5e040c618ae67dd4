"""``pytun-hash hash``: the Toeplitz hash and report type of one packet, from the shell.

``hash`` computes the Toeplitz hash and the hash report the virtio rules give one packet:
described by ``--src/--dst/--sport/--dport/--proto``, given whole as ``--frame HEX`` (an
Ethernet frame, or an IP packet with ``--l2 ip``), or as raw hash input ``--input HEX`` (the
bytes fed to Toeplitz; no classification, so no report). The key is ``--key`` (hex, or the
public ``microsoft`` / ``symmetric`` keys); ``--types`` selects which hash types are enabled
(default: the six IPv4/IPv6 types).

JSON keys of ``hash``: ``hash`` (``"0x51ccc178"``), ``report`` (``"TCPV4"``, ``"NONE"``, or null
for raw input), ``input`` (hex of the hashed bytes), ``input_length``, ``key`` (hex),
``types``, ``semantics``, ``flow`` (the flow as text, or null).

Light by design: this module imports only the model's classifier and hash (no attrs, device or
eBPF code), so a one-shot hash starts about as fast as ``--help``.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import Any

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.cli.args import ALL_TYPES, int_arg, parse_framing, parse_semantics, protocol_number
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text
from pytun_hash.errors import ValidationError, shorten
from pytun_hash.hashtypes import parse_hash_types
from pytun_hash.keys import parse_key
from pytun_hash.model.classify import Semantics, classify
from pytun_hash.model.flow import flow_packet, flow_text
from pytun_hash.model.packet import Framing
from pytun_hash.model.toeplitz import rfc_input, toeplitz_hash

__all__ = ["add_parser", "run_hash"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``hash``."""
    fmt = argparse.RawDescriptionHelpFormatter
    h = sub.add_parser(
        "hash",
        parents=parents,
        description=help_text(__doc__, "hash"),
        formatter_class=fmt,
    )
    h.add_argument("--key", required=True, metavar="KEY", help="hex, microsoft or symmetric")
    what = h.add_argument_group("the packet (addresses and ports, a whole frame, or raw hash input)")
    what.add_argument("--src", metavar="ADDR", help="source IPv4/IPv6 address")
    what.add_argument("--dst", metavar="ADDR", help="destination address")
    what.add_argument("--sport", type=int_arg, metavar="PORT", help="source port (tcp/udp)")
    what.add_argument("--dport", type=int_arg, metavar="PORT", help="destination port (tcp/udp)")
    what.add_argument("--proto", default="tcp", metavar="PROTO", help="tcp (default), udp, icmp or a number")
    what.add_argument("--frame", metavar="HEX", help="a whole frame to classify")
    what.add_argument(
        "--l2", type=parse_framing, default=Framing.ETHERNET, metavar="{ethernet,ip}", help="--frame framing"
    )
    what.add_argument("--input", metavar="HEX", help="raw Toeplitz input bytes (no classification)")
    h.add_argument("--types", metavar="TYPES", help="enabled hash types (default: all six IPv4/IPv6 types)")
    h.add_argument(
        "--semantics",
        type=parse_semantics,
        default=Semantics.SPEC,
        metavar="{spec,rfc-2023}",
        help="virtio specification (default) or a kernel with the Oct 2023 RFC",
    )
    h.set_defaults(handler=run_hash)


def _types_list(types: HashType) -> list[str]:
    return [m.name or "" for m in HashType if m in types]


def _hex(text: str, field: str) -> bytes:
    try:
        return bytes.fromhex(text.replace(":", "").replace(" ", "").removeprefix("0x"))
    except ValueError:
        raise ValidationError(field, f"expected hexadecimal bytes, got {shorten(text)}") from None


def _flow_from_args(args: argparse.Namespace) -> tuple[bytes, str]:
    """The IP packet of the flow ``--src/--dst/--sport/--dport/--proto`` describe, and the flow as text."""
    if args.src is None or args.dst is None:
        raise CliError("hash needs --src and --dst, or --frame HEX, or --input HEX", "see pytun-hash hash --help")
    try:
        version = ipaddress.ip_address(args.src).version
    except ValueError:
        raise ValidationError("--src", f"not an IP address: {shorten(args.src)}") from None
    protocol = protocol_number(args.proto, version)
    try:
        packet = flow_packet(protocol, args.src, args.dst, args.sport, args.dport)
    except ValidationError as exc:
        name = {"sport": "--sport", "dport": "--dport", "src": "--src", "dst": "--dst"}.get(exc.field or "", "--proto")
        raise ValidationError(name, exc.rule) from None
    return packet, flow_text(protocol, args.src, args.dst, args.sport, args.dport)


def run_hash(args: argparse.Namespace, out: Output) -> int:
    """Run ``hash``; see the module documentation."""
    given = [x is not None for x in (args.frame, args.input)] + [args.src is not None or args.dst is not None]
    if sum(given) > 1:
        raise CliError("give one of --src/--dst, --frame and --input", "they describe the packet in different ways")
    key = parse_key(args.key, "--key")
    types = ALL_TYPES if args.types is None else parse_hash_types(args.types, "--types")
    flow: str | None = None
    report: HashReport | None
    if args.input is not None:
        data = _hex(args.input, "--input")
        fed = data if args.semantics is Semantics.SPEC else rfc_input(data)
        value = toeplitz_hash(key, fed)
        report = None
    else:
        if args.frame is not None:
            frame, framing = _hex(args.frame, "--frame"), args.l2
        else:
            frame, flow = _flow_from_args(args)
            framing = Framing.IP
        result = classify(frame, types, key, l2=framing, semantics=args.semantics)
        value, report, data = result.hash_value, result.report, result.hashed
    document = {
        "hash": f"{value:#010x}",
        "report": None if report is None else report.name,
        "input": data.hex(),
        "input_length": len(data),
        "key": key.hex(),
        "types": _types_list(types),
        "semantics": args.semantics.value,
        "flow": flow,
    }

    def text() -> str:
        what = f"report {report.name}" if report is not None else "raw input"
        lines = [f"{value:#010x}  {what}"]
        if flow is not None:
            lines.append(f"flow:  {flow}")
        lines.append(f"input: {data.hex(' ') or '(nothing hashed)'} ({len(data)} bytes)")
        return "\n".join(lines)

    out.result(document, text)
    return int(ExitCode.OK)
