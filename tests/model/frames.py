"""Frame builders for the model tests: Ethernet, VLAN tags, IPv4 (options, fragments), IPv6
(extension headers, Home Address option, type-2 routing header), TCP and UDP.

Checksums are left zero: the model never reads them.
"""

from __future__ import annotations

import ipaddress
import struct

from pytun_hash.model.packet import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6

TCP = 6
UDP = 17
ICMP = 1
ICMPV6 = 58
HOPOPTS = 0
ROUTING = 43
FRAGMENT = 44
DSTOPTS = 60

MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")


def addr(text: str) -> bytes:
    """An IPv4 or IPv6 address as network-order bytes."""
    return ipaddress.ip_address(text).packed


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A 20-byte TCP header (SYN) plus payload."""
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """An 8-byte UDP header plus payload."""
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo(payload: bytes = b"ping") -> bytes:
    """An ICMP (or ICMPv6, same shape) echo request."""
    return struct.pack(">BBHHH", 8, 0, 0, 1, 1) + payload


def ipv4(
    src: str,
    dst: str,
    protocol: int,
    payload: bytes,
    *,
    options: bytes = b"",
    mf: bool = False,
    df: bool = False,
    offset: int = 0,
    version: int = 4,
    ihl: int | None = None,
) -> bytes:
    """An IPv4 packet; ``offset`` is in 8-byte units, ``options`` must be a multiple of 4 bytes."""
    assert len(options) % 4 == 0
    words = 5 + len(options) // 4 if ihl is None else ihl
    flags = (0x2000 if mf else 0) | (0x4000 if df else 0) | offset
    header = struct.pack(
        ">BBHHHBBH4s4s",
        version << 4 | words,
        0,
        20 + len(options) + len(payload),
        0x1234,
        flags,
        64,
        protocol,
        0,
        addr(src),
        addr(dst),
    )
    return header + options + payload


def ext_header(next_header: int, body: bytes) -> bytes:
    """A generic IPv6 extension header (hop-by-hop, routing, destination options): 2 bytes + body,
    padded to a multiple of 8 bytes."""
    total = -(-(2 + len(body)) // 8) * 8
    return bytes([next_header, total // 8 - 1]) + body.ljust(total - 2, b"\0")


def hop_by_hop(next_header: int) -> bytes:
    """A hop-by-hop header holding only padding (PadN)."""
    return bytes([next_header, 0, 1, 4, 0, 0, 0, 0])


def dest_options(next_header: int, *, home: str | None = None, pad1: int = 0) -> bytes:
    """A destination options header; with ``home``, a Home Address option (type 201) after ``pad1``
    Pad1 options."""
    body = b"\0" * pad1
    if home is not None:
        body += bytes([201, 16]) + addr(home)
    if not body:
        body = bytes([1, 4, 0, 0, 0, 0])
    return ext_header(next_header, body)


def routing_type2(next_header: int, home: str) -> bytes:
    """A type-2 routing header (RFC 6275): 24 bytes, segments left 1, one address."""
    return bytes([next_header, 2, 2, 1, 0, 0, 0, 0]) + addr(home)


def routing_type0(next_header: int, hops: list[str]) -> bytes:
    """A (deprecated) type-0 routing header with ``hops`` addresses."""
    return bytes([next_header, 2 * len(hops), 0, len(hops), 0, 0, 0, 0]) + b"".join(addr(h) for h in hops)


def fragment_header(next_header: int, *, offset: int = 0, more: bool = False, ident: int = 7) -> bytes:
    """An IPv6 fragment header; ``offset`` in 8-byte units."""
    return struct.pack(">BBHI", next_header, 0, offset << 3 | (1 if more else 0), ident)


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, version: int = 6) -> bytes:
    """An IPv6 packet; ``payload`` includes any extension headers (``next_header`` names the first)."""
    return struct.pack(">IHBB16s16s", version << 28, len(payload), next_header, 64, addr(src), addr(dst)) + payload


def ethernet(packet: bytes, ethertype: int | None = None, *, vlans: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame; each entry of ``vlans`` is a TPID (0x8100/0x88a8) adding a tag, outermost first."""
    if ethertype is None:
        ethertype = ETH_P_IPV6 if packet and packet[0] >> 4 == 6 else ETH_P_IP
    tags = b"".join(struct.pack(">HH", tpid, 10 + i) for i, tpid in enumerate(vlans))
    return MAC_DST + MAC_SRC + tags + struct.pack(">H", ethertype) + packet


def packet_info(ethertype: int, flags: int = 0) -> bytes:
    """The 4-byte ``struct tun_pi`` (flags in host order, protocol big-endian)."""
    return struct.pack("=H", flags) + struct.pack(">H", ethertype)


VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)
