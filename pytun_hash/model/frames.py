"""Build the frames the model parses, byte by byte: Ethernet, VLAN tags, IPv4, IPv6 and its extension
headers, TCP, UDP, ICMP, ARP.

The counterpart of :mod:`pytun_hash.model.packet`: the model's tests, the conformance suite and
anyone injecting crafted frames into a device (:func:`pytun_hash.traffic.inject`) build them here.
Only the fields the virtio hash and the kernel's parsers read are meaningful: checksums are left
zero (nothing on a tun/tap transmit path checks them), and every builder accepts values a sane
stack would never send (a wrong version nibble, an IHL the packet is too short for), so malformed
frames can be built too. Pure: no I/O.

Example::

    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", TCP, tcp(40000, 80)), vlans=(ETH_P_8021Q,))
"""

from __future__ import annotations

import ipaddress
import struct

from pytun_hash.model.packet import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6

__all__ = [
    "DSTOPTS",
    "ETH_P_ARP",
    "FRAGMENT",
    "HOPOPTS",
    "ICMP",
    "ICMPV6",
    "MAC_DST",
    "MAC_SRC",
    "ROUTING",
    "TCP",
    "UDP",
    "VLAN_TPIDS",
    "addr",
    "arp_request",
    "dest_options",
    "ethernet",
    "ext_header",
    "fragment_header",
    "hop_by_hop",
    "icmp_echo",
    "ipv4",
    "ipv6",
    "packet_info",
    "routing_type0",
    "routing_type2",
    "tcp",
    "udp",
]

#: IP protocol numbers (IPv4 protocol field, IPv6 next header).
TCP = 6
UDP = 17
ICMP = 1
ICMPV6 = 58
#: IPv6 extension headers.
HOPOPTS = 0
ROUTING = 43
FRAGMENT = 44
DSTOPTS = 60
#: The ARP ethertype.
ETH_P_ARP = 0x0806

#: The MAC addresses :func:`ethernet` puts in every frame (locally administered).
MAC_DST = bytes.fromhex("020000000002")
MAC_SRC = bytes.fromhex("020000000001")
#: The VLAN tag protocol identifiers: 802.1Q and 802.1ad.
VLAN_TPIDS = (ETH_P_8021Q, ETH_P_8021AD)


def addr(text: str) -> bytes:
    """An IPv4 or IPv6 address as network-order bytes.

    Raises:
        ValueError: for text that is not an IP address.
    """
    return ipaddress.ip_address(text).packed


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """A 20-byte TCP header (a SYN, sequence number 1) plus ``payload``.

    Raises:
        struct.error: for a port outside 0..65535.
    """
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """An 8-byte UDP header (its length field covering ``payload``) plus ``payload``.

    Raises:
        struct.error: for a port outside 0..65535.
    """
    return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp_echo(payload: bytes = b"ping") -> bytes:
    """An ICMP echo request (an ICMPv6 one has the same shape, with type 128 instead of 8; the hash
    does not look at either)."""
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
    """An IPv4 packet (identification 0x1234, TTL 64, checksum 0).

    Args:
        src: source address.
        dst: destination address.
        protocol: the protocol field (:data:`TCP`, :data:`UDP` ...).
        payload: what follows the header (the upper-layer header and data, or a fragment's bytes).
        options: IP options, a multiple of 4 bytes.
        mf: set More Fragments.
        df: set Don't Fragment.
        offset: the fragment offset, in 8-byte units.
        version: the version nibble (4; anything else builds a malformed packet).
        ihl: the header length field in 32-bit words (default: what ``options`` make).

    Raises:
        ValueError: for options that are not a multiple of 4 bytes, or a malformed address.
        struct.error: for fields out of range.
    """
    if len(options) % 4:
        raise ValueError(f"IPv4 options must be a multiple of 4 bytes, got {len(options)}")
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
    """A generic IPv6 extension header (hop-by-hop, routing, destination options): next header,
    length, ``body``, zero-padded to a multiple of 8 bytes."""
    total = -(-(2 + len(body)) // 8) * 8
    return bytes([next_header, total // 8 - 1]) + body.ljust(total - 2, b"\0")


def hop_by_hop(next_header: int) -> bytes:
    """A hop-by-hop options header holding only padding (PadN)."""
    return bytes([next_header, 0, 1, 4, 0, 0, 0, 0])


def dest_options(next_header: int, *, home: str | None = None, pad1: int = 0) -> bytes:
    """A destination options header: ``pad1`` Pad1 options, then with ``home`` a Home Address option
    (type 201, RFC 6275) holding that address; PadN alone when there is neither.

    Raises:
        ValueError: for a malformed ``home`` address.
    """
    body = b"\0" * pad1
    if home is not None:
        body += bytes([201, 16]) + addr(home)
    if not body:
        body = bytes([1, 4, 0, 0, 0, 0])
    return ext_header(next_header, body)


def routing_type2(next_header: int, home: str) -> bytes:
    """A type-2 routing header (RFC 6275): 24 bytes, segments left 1, one address.

    Raises:
        ValueError: for a malformed address.
    """
    return bytes([next_header, 2, 2, 1, 0, 0, 0, 0]) + addr(home)


def routing_type0(next_header: int, hops: list[str]) -> bytes:
    """A (deprecated) type-0 routing header listing ``hops``, segments left = their number.

    Raises:
        ValueError: for a malformed address.
    """
    return bytes([next_header, 2 * len(hops), 0, len(hops), 0, 0, 0, 0]) + b"".join(addr(h) for h in hops)


def fragment_header(next_header: int, *, offset: int = 0, more: bool = False, ident: int = 7) -> bytes:
    """An IPv6 fragment header; ``offset`` in 8-byte units, ``more`` the M flag.

    Raises:
        struct.error: for an offset or identification out of range.
    """
    return struct.pack(">BBHI", next_header, 0, offset << 3 | (1 if more else 0), ident)


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, version: int = 6) -> bytes:
    """An IPv6 packet (hop limit 64); ``payload`` includes any extension headers, ``next_header``
    names the first of them (or the upper layer).

    Raises:
        ValueError: for a malformed address.
        struct.error: for fields out of range.
    """
    return struct.pack(">IHBB16s16s", version << 28, len(payload), next_header, 64, addr(src), addr(dst)) + payload


def ethernet(packet: bytes, ethertype: int | None = None, *, vlans: tuple[int, ...] = ()) -> bytes:
    """An Ethernet frame from :data:`MAC_SRC` to :data:`MAC_DST` carrying ``packet``.

    Args:
        packet: the payload.
        ethertype: the (innermost) ethertype; default: IPv6 when ``packet`` starts with version 6,
            else IPv4.
        vlans: one tag per entry, outermost first, each entry the tag's TPID (0x8100 or 0x88a8);
            the VLAN ids are 10, 11, ...

    Raises:
        struct.error: for an ethertype or TPID outside 0..0xffff.
    """
    if ethertype is None:
        ethertype = ETH_P_IPV6 if packet and packet[0] >> 4 == 6 else ETH_P_IP
    tags = b"".join(struct.pack(">HH", tpid, 10 + i) for i, tpid in enumerate(vlans))
    return MAC_DST + MAC_SRC + tags + struct.pack(">H", ethertype) + packet


def arp_request(sender: str, target: str) -> bytes:
    """An ARP request payload (Ethernet/IPv4) from :data:`MAC_SRC` at ``sender`` asking for ``target``;
    frame it with ``ethernet(arp_request(...), ETH_P_ARP)``.

    Raises:
        ValueError: for malformed IPv4 addresses.
    """
    return struct.pack(">HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, MAC_SRC, addr(sender), bytes(6), addr(target))


def packet_info(ethertype: int, flags: int = 0) -> bytes:
    """The 4-byte ``struct tun_pi`` that precedes frames without ``IFF_NO_PI``: flags in host order,
    the protocol big-endian.

    Raises:
        struct.error: for values outside 0..0xffff.
    """
    return struct.pack("=H", flags) + struct.pack(">H", ethertype)
