"""Flows: the rules of a valid flow, how one is written, and the IP packet the model hashes for one.

One owner for what a flow is, shared by :class:`pytun_hash.traffic.Flow` (which sends flows) and by
the commands that only describe them (``pytun-hash hash``): this module needs neither sockets nor
attrs, so a one-shot hash does not pay for importing them.

A flow is an IP protocol number, two addresses of one IP version and, for TCP and UDP only, two
ports. ICMP means an echo request (``IPPROTO_ICMP`` over IPv4, ``IPPROTO_ICMPV6`` over IPv6);
any other protocol is a datagram of that number with an opaque payload. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from pytun_hash.errors import ValidationError, shorten
from pytun_hash.model.packet import ParsedFrame

__all__ = [
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "check_flow",
    "echo_request",
    "flow_packet",
    "flow_text",
    "internet_checksum",
    "parsed_flow_text",
    "protocol_name",
]

# IANA protocol numbers (the values of socket.IPPROTO_*, without importing socket).
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
_PROTOCOL_NAMES = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMPV6: "icmpv6"}
_PORTED = (IPPROTO_TCP, IPPROTO_UDP)
_PORTS = struct.Struct("!HH")
_ECHO_ID = 0x7068  # "ph": recognisable in captures
_TCP_SYN = 0x02
_IP_TTL = 64


def protocol_name(protocol: int) -> str:
    """``"tcp"``, ``"udp"``, ``"icmp"``, ``"icmpv6"``, or the IP protocol number as text."""
    return _PROTOCOL_NAMES.get(protocol, str(protocol))


def flow_text(protocol: int, src: str, dst: str, sport: int | None = None, dport: int | None = None) -> str:
    """A flow as the CLI and :class:`~pytun_hash.traffic.Flow` write it: ``tcp 10.0.0.1:80 -> 10.0.0.2:5000``.

    The protocol by name where it has one (:func:`protocol_name`); an IPv6 address with a port in
    brackets (``udp [fd00::1]:5000 -> [fd00::2]:53``); an end without a port as the bare address
    (``icmp 10.0.0.1 -> 10.0.0.2``).
    """

    def end(addr: str, port: int | None) -> str:
        if port is None:
            return addr
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    return f"{protocol_name(protocol)} {end(src, sport)} -> {end(dst, dport)}"


def parsed_flow_text(parsed: ParsedFrame) -> str:
    """The flow of a parsed frame, written as :func:`flow_text` writes it.

    The addresses are those of the IP header (not the Home Address or type-2 routing header ones
    the _EX hash types may use instead). Ports appear exactly where the parser found them: a
    fragment has none, and says so with a trailing ``(fragment)``.
    """
    sport, dport = _PORTS.unpack(parsed.ports) if parsed.ports is not None else (None, None)
    src = str(ipaddress.ip_address(parsed.src))
    dst = str(ipaddress.ip_address(parsed.dst))
    text = flow_text(parsed.protocol, src, dst, sport, dport)
    return f"{text} (fragment)" if parsed.fragment else text


def _check_port(name: str, value: int | None, needed: bool) -> None:
    if not needed:
        if value is not None:
            raise ValidationError(name, "only TCP and UDP flows have ports")
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ValidationError(name, f"TCP and UDP flows need a port in 0..65535, got {shorten(value)}")


def _ip_version(field: str, text: str) -> int:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        raise ValidationError(field, f"not an IPv4 or IPv6 address: {shorten(text)}") from None


def check_flow(protocol: int, src: str, dst: str, sport: int | None = None, dport: int | None = None) -> int:
    """The IP version (4 or 6) of a valid flow.

    Raises:
        ValidationError: naming the field (``protocol``, ``src``, ``dst``, ``sport`` or ``dport``) for a
            protocol outside 0..255, a malformed address, mixed IP versions, a missing port on TCP/UDP,
            a port elsewhere, or ICMP of the other IP version.
    """
    if isinstance(protocol, bool) or not isinstance(protocol, int) or not 0 <= protocol <= 255:
        raise ValidationError("protocol", f"must be an IP protocol number 0..255, got {shorten(protocol)}")
    version = _ip_version("src", src)
    if _ip_version("dst", dst) != version:
        raise ValidationError("dst", f"{src} and {dst} are of different IP versions")
    ported = protocol in _PORTED
    _check_port("sport", sport, ported)
    _check_port("dport", dport, ported)
    if protocol == (IPPROTO_ICMPV6 if version == 4 else IPPROTO_ICMP):
        raise ValidationError("protocol", f"{protocol_name(protocol)} does not exist over IPv{version}")
    return version


def internet_checksum(data: bytes) -> int:
    """The RFC 1071 Internet checksum of ``data`` (an odd length is padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, sequence: int, payload: bytes) -> bytes:
    """An ICMP (``version`` 4) or ICMPv6 (6) echo request message carrying ``payload``.

    The ICMPv6 checksum is left zero: it covers a pseudo-header, and the kernel fills it in for raw
    ICMPv6 sockets; the hash never reads it.
    """
    kind = 8 if version == 4 else 128
    message = struct.pack("!BBHHH", kind, 0, 0, _ECHO_ID, sequence & 0xFFFF) + payload
    if version == 4:
        message = message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]
    return message


def flow_packet(
    protocol: int, src: str, dst: str, sport: int | None = None, dport: int | None = None, payload: bytes = b""
) -> bytes:
    """A synthetic IP packet of a flow (as a TUN queue would carry it), for predictions.

    IPv4 gets a 20-byte header without options and a valid checksum; TCP a 20-byte SYN header (no
    payload); UDP an 8-byte header and ``payload``; ICMP an echo request carrying ``payload``; any
    other protocol ``payload`` alone. Only the fields the virtio hash reads are meaningful.

    Raises:
        ValidationError: as :func:`check_flow`.
    """
    version = check_flow(protocol, src, dst, sport, dport)
    src_bytes = ipaddress.ip_address(src).packed
    dst_bytes = ipaddress.ip_address(dst).packed
    if protocol == IPPROTO_TCP:
        body = struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 5 << 4, _TCP_SYN, 0xFFFF, 0, 0)
    elif protocol == IPPROTO_UDP:
        body = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    elif protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        body = echo_request(version, 0, payload)
    else:
        body = payload
    if version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, _IP_TTL, protocol, 0, src_bytes, dst_bytes
        )
        header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
        return header + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), protocol, _IP_TTL, src_bytes, dst_bytes) + body
