"""Arguments and conversions shared by several commands: configs from flags, flows, backends, devices."""

from __future__ import annotations

import argparse
import ipaddress
import re
from typing import TYPE_CHECKING, Any

from pytun_hash._abi import HashType
from pytun_hash._abi.tun import MAX_TAP_QUEUES
from pytun_hash.backend import Backend
from pytun_hash.cli.args import (
    ALL_TYPES,
    MAX_INT_DIGITS,
    int_arg,
    parse_framing,
    parse_int,
    parse_revision,
    parse_semantics,
    protocol_number,
)
from pytun_hash.cli.output import CliError, ExitCode
from pytun_hash.config import (
    MAX_INDIRECTION_TABLE_LENGTH,
    VnetHashConfig,
    check_table_length,
    parse_hash_types,
    weighted_table,
)
from pytun_hash.configfile import config_from_mapping, parse_key, read_config_file
from pytun_hash.errors import DeviceNotFoundError, ValidationError, shorten

if TYPE_CHECKING:
    from pytun_hash.device import rtnl
    from pytun_hash.device.tap import TunTapDevice
    from pytun_hash.traffic import Flow

__all__ = [
    "MAX_INT_DIGITS",
    "check_queue_count",
    "add_config_arguments",
    "config_from_args",
    "int_arg",
    "config_summary",
    "open_device",
    "parse_backend",
    "parse_flow",
    "parse_framing",
    "parse_int",
    "parse_revision",
    "parse_semantics",
    "protocol_number",
    "queue_list",
]


def parse_backend(text: str) -> Backend:
    """``auto``, ``native`` or ``ebpf`` (argparse type)."""
    try:
        return Backend(text.strip().lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}: use auto, native or ebpf") from None


def add_backend_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str | None = None) -> None:
    """``--backend {auto,native,ebpf}`` (default auto), as every command that puts hashing in force names it."""
    p.add_argument(
        "--backend",
        type=parse_backend,
        default=Backend.AUTO,
        metavar="{auto,native,ebpf}",
        help=help or "auto (default): native when the kernel has the hash ioctls, else eBPF",
    )


def weight_list(text: str) -> list[int]:
    """``--weight 6,2``: comma-separated queue weights (one argument, so flows after it stay flows).

    Raises:
        argparse.ArgumentTypeError: for an empty list, more than 65536 weights or a bad number.
    """
    parts = text.split(",")
    if not text or len(parts) > 65536:
        raise argparse.ArgumentTypeError(f"expected 1 to 65536 comma-separated weights, got {shorten(text)}")
    return [int_arg(part) for part in parts]


def queue_list(text: str) -> list[int]:
    """Queue numbers and ranges, comma-separated: ``0,1,2,3``, ``0-3``, ``3-0`` (argparse type).

    At most :data:`~pytun_hash.config.MAX_INDIRECTION_TABLE_LENGTH` entries: each range's size is
    checked before it is expanded, so ``0-100000000`` costs nothing.

    Raises:
        argparse.ArgumentTypeError: for a piece that is not a number or range, an empty list, or too many entries.
    """
    out: list[int] = []
    # Piece by piece, not split(): a refusal after 129 entries must not first list a million pieces.
    for match in re.finditer(r"[^,]+", text.replace(" ", "")):
        piece = match.group()
        first_text, dash, last_text = piece.partition("-")
        try:
            first = parse_int(first_text, "--table")
            last = parse_int(last_text, "--table") if dash else first
        except ValidationError:
            raise argparse.ArgumentTypeError(
                f"not a queue number or range (ASCII digits, e.g. 0-3): {shorten(piece)}"
            ) from None
        if len(out) + abs(last - first) + 1 > MAX_INDIRECTION_TABLE_LENGTH:
            raise argparse.ArgumentTypeError(
                f"an indirection table has at most {MAX_INDIRECTION_TABLE_LENGTH} entries; {shorten(text)} has more"
            )
        step = 1 if last >= first else -1
        out.extend(range(first, last + step, step))
    if not out:
        raise argparse.ArgumentTypeError("the table is empty")
    return out


def _endpoint(text: str, field: str) -> tuple[str, int | None]:
    text = text.strip()
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValidationError(field, f"expected [IPv6]:port, got {shorten(text)}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        port_text = None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError(field, f"not an IP address: {shorten(host)}") from None
    if port_text is not None:
        try:
            port = parse_int(port_text, field)
        except ValidationError:
            raise ValidationError(field, f"not a port number (ASCII digits): {shorten(port_text)}") from None
    return host, port


def parse_flow(text: str) -> Flow:
    """A flow written ``PROTO,SRC[:PORT],DST[:PORT]`` (commas or spaces; IPv6 with a port as ``[addr]:port``).

    Examples: ``tcp,66.9.149.187:2794,161.142.100.80:1766``, ``udp,[fd00::1]:5000,[fd00::2]:53``,
    ``icmp,10.0.0.1,10.0.0.2``, ``47,10.0.0.1,10.0.0.2``.

    Raises:
        ValidationError: naming the part that is wrong.
    """
    parts = text.replace(",", " ").split()
    if len(parts) != 3:
        raise ValidationError("flow", f"expected PROTO,SRC[:PORT],DST[:PORT], got {shorten(text)}")
    src, sport = _endpoint(parts[1], "flow.src")
    dst, dport = _endpoint(parts[2], "flow.dst")
    protocol = protocol_number(parts[0], ipaddress.ip_address(src).version)
    if protocol in (6, 17) and (sport is None or dport is None):
        side, part = ("source", parts[1]) if sport is None else ("destination", parts[2])
        field = "flow.sport" if sport is None else "flow.dport"
        if ":" in part and not part.startswith("["):
            # fe80::1:1 is a whole address: a port cannot be told from its last group.
            raise ValidationError(
                field, f"an IPv6 address with a port goes in brackets, as [ADDRESS]:PORT; {shorten(part)} has none"
            )
        raise ValidationError(
            field, f"a {parts[0].lower()} flow needs a {side} port (ADDRESS:PORT), in {shorten(text)}"
        )
    # Imported here: sockets and the traffic classes are for FLOW arguments only (not predict --pcap).
    from pytun_hash.traffic import Flow

    try:
        return Flow(protocol, src, dst, sport, dport)
    except ValidationError as exc:
        raise ValidationError(f"flow.{exc.field}", f"{exc.rule} (in {shorten(text)})") from None


def add_config_arguments(parser: argparse.ArgumentParser, *, key_help: str) -> None:
    """The flags that describe a hashing configuration (used by apply, predict)."""
    group = parser.add_argument_group("configuration (a file, flags, or a file overridden by flags)")
    group.add_argument("--config", metavar="FILE", help="TOML or JSON file with the config fields (see README)")
    group.add_argument("--section", metavar="TABLE", help="read the fields from this table of the file")
    group.add_argument("--rss", action=argparse.BooleanOptionalAction, default=None, help="receive side scaling")
    group.add_argument("--report", action=argparse.BooleanOptionalAction, default=None, help="hash reports")
    group.add_argument(
        "--types",
        metavar="TYPES",
        help="hash types, e.g. tcpv4,udpv4,ipv4 or all (default: all six IPv4/IPv6 types)",
    )
    table = group.add_mutually_exclusive_group()
    table.add_argument("--table", metavar="QUEUES", type=queue_list, help="indirection table, e.g. 0,1,2,3 or 0-3")
    table.add_argument(
        "--equal", metavar="N", type=int_arg, help="as ethtool -X equal N: spread the table evenly over queues 0..N-1"
    )
    table.add_argument(
        "--weight",
        metavar="W0,W1,...",
        type=weight_list,
        help="as ethtool -X weight W0 W1 ...: queue i gets a share of the table proportional to Wi",
    )
    group.add_argument(
        "--table-length",
        metavar="N",
        type=int_arg,
        default=MAX_INDIRECTION_TABLE_LENGTH,
        help="entries of the round-robin table built from --queues (power of two, default 128)",
    )
    group.add_argument("--key", metavar="KEY", help=key_help)
    group.add_argument("--unclassified-queue", metavar="Q", type=int_arg, help="queue for packets that are not hashed")


def check_queue_count(queues: int, flag: str = "--queues") -> int:
    """``queues`` when a TUN/TAP device can have that many (1..256, the kernel's ``MAX_TAP_QUEUES``).

    Raises:
        ValidationError: naming ``flag`` otherwise.
    """
    if not 1 <= queues <= MAX_TAP_QUEUES:
        raise ValidationError(
            flag, f"a TUN/TAP device has 1..{MAX_TAP_QUEUES} queues (the kernel's MAX_TAP_QUEUES), got {queues}"
        )
    return queues


def config_from_args(args: argparse.Namespace, *, queues: int | None, key_required: bool) -> VnetHashConfig:
    """Build the config: the file's fields (if ``--config``), overridden by the flags given.

    Without a file: RSS on, all six IPv4/IPv6 types, a round-robin table over ``queues``.

    Args:
        args: parsed arguments of :func:`add_config_arguments`.
        queues: the queue count for a round-robin table when neither file nor ``--table`` gives one.
        key_required: refuse to make up a key (else a random one is generated).

    Raises:
        ValidationError: listing every problem with its field.
        CliError: when a needed value is missing.
    """
    data: dict[str, Any] = {}
    if args.config:
        data = read_config_file(args.config, section=args.section)
    elif args.section:
        raise CliError("--section needs --config", "name the config file with --config FILE")
    else:
        data = {"rss": True, "types": [m.name for m in HashType if m in ALL_TYPES]}
    if args.rss is not None:
        data["rss"] = args.rss
    if args.report is not None:
        data["report"] = args.report
    if args.types is not None:
        data["types"] = int(parse_hash_types(args.types, "--types"))
    if args.unclassified_queue is not None:
        data["unclassified_queue"] = args.unclassified_queue
    if args.table is not None:
        data["indirection_table"] = args.table
    elif args.weight is not None:
        data["indirection_table"] = list(weighted_table(args.weight, args.table_length))
    elif args.equal is not None or "indirection_table" not in data:
        if args.equal is not None:
            queues = args.equal
        if queues is None:
            raise CliError(
                "no indirection table: the config file has none and neither --table nor --queues was given",
                "give --queues N or --equal N (a round-robin table over N queues), --weight W0,W1,... or "
                "--table 0,1,...",
            )
        check_queue_count(queues, "--equal" if args.equal is not None else "--queues")
        length = args.table_length
        check_table_length(length, "--table-length")
        data["indirection_table"] = [i % queues for i in range(length)]
    if args.key is not None:
        data["key"] = parse_key(args.key, "--key").hex()
    elif "key" not in data:
        if key_required:
            raise CliError(
                "no Toeplitz key: give --key (hex, microsoft, symmetric) or a config file with a key",
                "use the key the device was configured with (apply prints it and --save stores it)",
            )
        data["key"] = parse_key("random").hex()
    return config_from_mapping(data)


def config_summary(config: VnetHashConfig) -> str:
    """One line describing ``config`` for human output."""
    parts = [f"rss={'on' if config.rss else 'off'}", f"report={'on' if config.report else 'off'}"]
    parts.append("types=" + ("|".join(m.name or "" for m in HashType if m in config.types) or "none"))
    table = config.indirection_table
    shown = ",".join(str(q) for q in table[:8]) + (",..." if len(table) > 8 else "")
    parts.append(f"table[{len(table)}]={shown}")
    parts.append(f"unclassified_queue={config.unclassified_queue}")
    parts.append(f"key={config.key.hex()}")
    return " ".join(parts)


def tun_link(name: str, hint: str = "check the name with `ip link`") -> rtnl.LinkInfo:
    """The TUN/TAP link named ``name`` in this network namespace (rtnetlink; nothing is opened).

    Raises:
        CliError: (exit 3) when there is no such link (``hint`` says what to do), or it is not TUN/TAP.
        KernelError: when the netlink query fails.
    """
    from pytun_hash.device import rtnl  # device code only for the commands that name a device

    try:
        link = rtnl.get_link(name)
    except DeviceNotFoundError:
        raise CliError(f"no TUN/TAP device named {name!r} in this network namespace", hint, ExitCode.KERNEL) from None
    if link.tun is None:
        raise CliError(
            f"{name!r} is a {link.kind or 'non-tun'} device, not a TUN/TAP device",
            "name a TUN/TAP device (`ip -d link show type tun`)",
            ExitCode.KERNEL,
        )
    return link


def open_device(name: str) -> TunTapDevice:
    """Open one queue of the existing TUN/TAP device ``name`` in this network namespace.

    Raises:
        CliError: (exit 3) when there is no such device.
        KernelError: for other failures (not a tun device, busy single-queue device ...).
    """
    from pytun_hash.device.tap import TunTapDevice

    try:
        return TunTapDevice.open(name)
    except DeviceNotFoundError:
        raise CliError(
            f"no TUN/TAP device named {name!r} in this network namespace",
            f"create it with `pytun-hash create {name}` (or check the name with `ip link`)",
            ExitCode.KERNEL,
        ) from None
