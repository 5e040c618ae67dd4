"""Parse a frame as a tun/tap queue sees it, down to what the virtio hash needs.

Rules (the eBPF fallback follows the same ones):

* Framing (:class:`Framing`): TAP queues carry Ethernet frames, TUN queues raw IP packets; either
  may be preceded by the 4-byte packet-information header (``struct tun_pi``: flags, then the
  big-endian ethertype) when the device lacks ``IFF_NO_PI``. Raw IP without that header is told
  apart by the version nibble; with it, by the header's ethertype.
* Ethernet: up to :data:`MAX_VLAN_TAGS` 802.1Q (0x8100) or 802.1ad (0x88A8) tags are skipped; a
  frame with more tags, or any ethertype other than IPv4 (0x0800) and IPv6 (0x86DD), is not IP.
* IPv4: version 4 and IHL >= 5, the whole header (options included) present. A fragment is a
  packet with MF set or a non-zero offset (DF alone is not). Total length is not checked, as the
  kernel's flow dissector does not check it either.
* IPv6: the fixed header, then a walk over at most :data:`MAX_IPV6_EXTENSION_HEADERS` extension
  headers of the kinds hop-by-hop (0), routing (43), destination options (60) and fragment (44);
  any other next-header value (TCP, UDP, ICMPv6, but also AH or ESP) ends the walk as the
  upper-layer protocol. The walk stops at a fragment header, which makes the packet a fragment
  even with offset 0 and M clear (what follows is fragment payload, or ports that fragments
  never use). When the budget runs out the walk stops too, and the upper-layer protocol is then
  the extension header it stopped at. Along the way it records the Home Address destination
  option (type 201, 16 bytes) and the address of a type-2 routing header (routing type 2, header
  length 24 bytes), the first of each, as the _EX hash types use them; malformed options inside a
  destination options header only hide a Home Address, they do not make the packet malformed.
* TCP (6) and UDP (17) packets that are not fragments must carry their 4 port bytes.

Anything that breaks a rule, or is cut short before a header the rules read, is not parseable:
:func:`parse_frame` returns None and classification reports NONE. The contents of a frame never
make anything here raise.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from pytun_hash.errors import ValidationError
from pytun_hash.model._bytes import BytesLike

__all__ = [
    "ETH_P_8021AD",
    "ETH_P_8021Q",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV6_EXTENSION_HEADERS",
    "MAX_IPV6_EXTENSION_HEADERS",
    "MAX_VLAN_TAGS",
    "PORTED_PROTOCOLS",
    "Framing",
    "ParsedFrame",
    "parse_frame",
]

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_HLEN = 14

IPPROTO_HOPOPTS = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_DSTOPTS = 60

#: Upper-layer protocols whose ports the hash uses.
PORTED_PROTOCOLS = frozenset({IPPROTO_TCP, IPPROTO_UDP})
_VLAN_TPIDS = frozenset({ETH_P_8021Q, ETH_P_8021AD})
#: Extension headers the IPv6 walk steps over.
IPV6_EXTENSION_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS})
#: How many IPv6 extension headers the walk visits at most.
MAX_IPV6_EXTENSION_HEADERS = 8
#: How many VLAN tags (802.1Q or 802.1ad) an Ethernet frame may carry.
MAX_VLAN_TAGS = 2

IPV6_TLV_PAD1 = 0
IPV6_TLV_HAO = 201  # Home Address option (RFC 6275)
IPV6_SRCRT_TYPE_2 = 2  # type-2 routing header (RFC 6275)

_TUN_PI_SIZE = 4
_IPV4_FIELDS = struct.Struct(">B5xHxB")  # version/IHL, flags + fragment offset, protocol
_U16 = struct.Struct(">H")


class Framing(enum.Enum):
    """What precedes the IP header in a frame read from (or written to) a tun/tap queue."""

    #: TAP with ``IFF_NO_PI``: an Ethernet frame.
    ETHERNET = "ethernet"
    #: TAP without ``IFF_NO_PI``: packet-information header, then an Ethernet frame.
    ETHERNET_WITH_PI = "ethernet+pi"
    #: TUN with ``IFF_NO_PI``: a raw IPv4 or IPv6 packet.
    IP = "ip"
    #: TUN without ``IFF_NO_PI``: packet-information header (its ethertype names the protocol), then IP.
    IP_WITH_PI = "ip+pi"

    @classmethod
    def for_device(cls, *, tap: bool, packet_info: bool) -> Framing:
        """The framing of a TAP (``tap=True``) or TUN device with or without the packet-information header."""
        if tap:
            return cls.ETHERNET_WITH_PI if packet_info else cls.ETHERNET
        return cls.IP_WITH_PI if packet_info else cls.IP


class ParsedFrame(NamedTuple):
    """What the virtio hash can use from one IP packet.

    Attributes:
        version: 4 or 6.
        src: source address (4 or 16 bytes, network order).
        dst: destination address.
        protocol: upper-layer protocol: the IPv4 protocol field, or for IPv6 the next-header value
            where the extension-header walk stopped.
        l4_offset: offset in the frame of the upper-layer header, or None where it is unknown
            (non-first fragments, a walk that ran out of budget).
        ports: the 4 bytes source port + destination port of a TCP or UDP packet that is not a
            fragment; None otherwise.
        fragment: the packet is an IP fragment (IPv4 MF or offset; IPv6 fragment header).
        extension_headers: IPv6 only: at least one extension header precedes the upper layer.
        home_address: IPv6 only: the Home Address destination option's address, if present.
        rh2_address: IPv6 only: the type-2 routing header's address, if present.
    """

    version: int
    src: bytes
    dst: bytes
    protocol: int
    l4_offset: int | None
    ports: bytes | None
    fragment: bool
    extension_headers: bool = False
    home_address: bytes | None = None
    rh2_address: bytes | None = None


_new = tuple.__new__
_ETHERNET = Framing.ETHERNET
_ETHERNET_WITH_PI = Framing.ETHERNET_WITH_PI
_IP = Framing.IP
_IP_WITH_PI = Framing.IP_WITH_PI


def parse_frame(frame: BytesLike, framing: Framing = Framing.ETHERNET) -> ParsedFrame | None:
    """Parse ``frame`` framed as ``framing``; None when it is not a parseable IP packet.

    The rules are in the module documentation. Malformed, truncated and non-IP frames give None;
    the frame's contents never make this raise.

    Raises:
        ValidationError: when ``framing`` is not a :class:`Framing`.
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    try:
        return _parse(frame, framing)
    except (IndexError, struct.error):
        return None


def _parse(frame: bytes, framing: Framing) -> ParsedFrame | None:
    """Parse; frames cut short raise IndexError or struct.error, which the callers map to None."""
    if framing is _ETHERNET or framing is _ETHERNET_WITH_PI:
        off = ETH_HLEN if framing is _ETHERNET else ETH_HLEN + _TUN_PI_SIZE
        ethertype = frame[off - 2] << 8 | frame[off - 1]
        if ethertype in _VLAN_TPIDS:
            tags = 0
            while ethertype in _VLAN_TPIDS:
                if tags == MAX_VLAN_TAGS:
                    return None
                ethertype = frame[off + 2] << 8 | frame[off + 3]
                off += 4
                tags += 1
    elif framing is _IP:
        off = 0
        version = frame[0] >> 4
        ethertype = ETH_P_IP if version == 4 else ETH_P_IPV6 if version == 6 else -1
    elif framing is _IP_WITH_PI:
        off = _TUN_PI_SIZE
        ethertype = frame[2] << 8 | frame[3]
    else:
        raise ValidationError("l2", f"expected a Framing member, got {framing!r}")
    if ethertype == ETH_P_IP:
        return _parse_ipv4(frame, off)
    if ethertype == ETH_P_IPV6:
        return _parse_ipv6(frame, off)
    return None


def _parse_ipv4(frame: bytes, off: int) -> ParsedFrame | None:
    vihl, frag, protocol = _IPV4_FIELDS.unpack_from(frame, off)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20 or off + ihl > len(frame):
        return None
    l4 = off + ihl
    if frag & 0x3FFF:
        # MF set or a non-zero offset; only the first fragment (offset 0) holds the upper-layer header.
        return _new(
            ParsedFrame,
            (4, frame[off + 12 : off + 16], frame[off + 16 : off + 20], protocol,
             None if frag & 0x1FFF else l4, None, True, False, None, None),
        )  # fmt: skip
    ports = None
    if protocol in PORTED_PROTOCOLS:
        ports = frame[l4 : l4 + 4]
        if len(ports) != 4:
            return None
    return _new(
        ParsedFrame,
        (4, frame[off + 12 : off + 16], frame[off + 16 : off + 20], protocol, l4, ports, False, False, None, None),
    )


def _home_address(frame: bytes, start: int, end: int) -> bytes | None:
    """The Home Address option in the destination options header spanning ``frame[start:end]``."""
    i = start + 2
    while i < end:
        kind = frame[i]
        if kind == IPV6_TLV_PAD1:
            i += 1
            continue
        if i + 2 > end:
            return None
        length = frame[i + 1]
        if i + 2 + length > end:
            return None
        if kind == IPV6_TLV_HAO and length == 16:
            return frame[i + 2 : i + 18]
        i += 2 + length
    return None


def _parse_ipv6(frame: bytes, off: int) -> ParsedFrame | None:
    n = len(frame)
    if off + 40 > n or frame[off] >> 4 != 6:
        return None
    nexthdr = frame[off + 6]
    src = frame[off + 8 : off + 24]
    dst = frame[off + 24 : off + 40]
    pos = off + 40
    if nexthdr not in IPV6_EXTENSION_HEADERS:
        ports = None
        if nexthdr in PORTED_PROTOCOLS:
            ports = frame[pos : pos + 4]
            if len(ports) != 4:
                return None
        return _new(ParsedFrame, (6, src, dst, nexthdr, pos, ports, False, False, None, None))
    home = None
    rh2 = None
    l4: int | None = None
    for _ in range(MAX_IPV6_EXTENSION_HEADERS):
        if nexthdr == IPPROTO_FRAGMENT:
            if pos + 8 > n:
                return None
            first = not _U16.unpack_from(frame, pos + 2)[0] & 0xFFF8
            return _new(
                ParsedFrame,
                (6, src, dst, frame[pos], pos + 8 if first else None, None, True, True, home, rh2),
            )
        if pos + 2 > n:
            return None
        length = (frame[pos + 1] + 1) << 3
        if pos + length > n:
            return None
        if nexthdr == IPPROTO_ROUTING:
            if rh2 is None and frame[pos + 2] == IPV6_SRCRT_TYPE_2 and length == 24:
                rh2 = frame[pos + 8 : pos + 24]
        elif nexthdr == IPPROTO_DSTOPTS and home is None:
            home = _home_address(frame, pos, pos + length)
        nexthdr = frame[pos]
        pos += length
        if nexthdr not in IPV6_EXTENSION_HEADERS:
            l4 = pos
            break
    ports = None
    if l4 is not None and nexthdr in PORTED_PROTOCOLS:
        ports = frame[l4 : l4 + 4]
        if len(ports) != 4:
            return None
    return _new(ParsedFrame, (6, src, dst, nexthdr, l4, ports, False, True, home, rh2))
