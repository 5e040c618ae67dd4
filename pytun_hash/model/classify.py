"""Classification, hash report and queue prediction: what a device does with one frame.

Two semantics are modelled (:class:`Semantics`):

``SPEC`` (the default) follows the virtio specification (virtio 1.2, section 5.1.6.4.3 "Hash
calculation for incoming packets"), the rules of the eBPF backend and (as far as modelled) of every
revision from v3 on:

* IPv4: TCPv4 if that type is enabled and the packet is TCP, else UDPv4 likewise, else IPv4 if
  enabled, else not hashed. Input: source address, destination address, then source and
  destination port for TCP/UDP, in network order.
* IPv6 without extension headers: the same with the IPv6 types.
* IPv6 with extension headers: TCP_EX, then UDP_EX, then IP_EX, where the source address is
  replaced by the Home Address option's address and the destination address by the type-2
  routing header's address when present; if none of those applies, the extension headers are
  skipped and the plain IPv6 rules apply.
* IP fragments (first ones included) never use ports: they hash as IP (IPv4, IPv6 or IPv6_EX).
* Everything else (non-IP, malformed or truncated frames, see :mod:`pytun_hash.model.packet`) is
  not hashed: report NONE, value 0.
* Queue: not hashed -> ``unclassified_queue``; otherwise ``indirection_table[hash & mask]``;
  either folded modulo the number of queues, as tun does.

``RFC_2023`` predicts a kernel carrying the RFC "tun: Introduce virtio-net hashing feature" of
8 October 2023 (read from its patches 4/7-6/7; verified on a kernel carrying 1/7-5/7):

* only the six IPv4/IPv6 types exist (the _EX bits are ignored); IPv6 extension headers are
  skipped and the fixed-header addresses used;
* fragments are classified by their protocol like whole packets and hashed with ports 0;
* the Toeplitz input is fed in host word order: on a little-endian host (the one running the
  model, taken to be the kernel's) each 32-bit word of the input is byte-reversed
  (:func:`~pytun_hash.model.toeplitz.rfc_input`);
* queue: ``q = indirection_table[hash & mask]`` (unclassified packets have hash 0, so they use
  ``table[0]``), a zero ``q`` is replaced by ``unclassified_queue``, then ``q % num_queues``; with
  fewer than 2 queues the kernel computes no hash at all;
* the key in force is what the kernel copied: pass the key it holds (see :func:`rfc_key_in_force`;
  pytun_hash's own binding always loads all 40 bytes: :func:`~pytun_hash.codec.ioctl_plan` precedes
  a type set without an IPv4 type by a call that loads the whole key);
* frames the model cannot parse are NONE here too. The RFC's flow dissector would still hash a few
  of them (a TCP header cut before its ports hashes with ports 0); that is not predicted.
"""

from __future__ import annotations

import enum
import struct
from typing import TYPE_CHECKING, NamedTuple

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.errors import ValidationError
from pytun_hash.keys import MAX_KEY_SIZE, kernel_key_length
from pytun_hash.model._bytes import BytesLike
from pytun_hash.model.packet import (
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXTENSION_HEADERS,
    PORTED_PROTOCOLS,
    Framing,
    ParsedFrame,
    _parse,
)
from pytun_hash.model.toeplitz import _TABLES_BY_KEY, _as_key, rfc_input, toeplitz_for

if TYPE_CHECKING:
    from pytun_hash.config import VnetHashConfig

__all__ = [
    "FlowHash",
    "Semantics",
    "classify",
    "classify_parsed",
    "predict_queue",
    "queue_for_flow",
    "rfc_key_in_force",
]


class Semantics(enum.Enum):
    """Whose rules the model follows."""

    #: The virtio specification (the default everywhere).
    SPEC = "spec"
    #: A kernel with the October 2023 RFC patch (on this host's byte order).
    RFC_2023 = "rfc-2023"


class FlowHash(NamedTuple):
    """The result of classifying one frame.

    Attributes:
        hash_value: the 32-bit Toeplitz hash, 0 when not hashed.
        report: the ``VIRTIO_NET_HASH_REPORT_*`` value (NONE when not hashed).
        hashed: the hash input: the selected fields concatenated in network order (empty when not
            hashed). Under RFC_2023 semantics the kernel fed these bytes in host word order.
    """

    hash_value: int
    report: HashReport
    hashed: bytes


_new = tuple.__new__
_NONE = HashReport.NONE
_REPORT_IPV4 = HashReport.IPV4
_REPORT_TCPV4 = HashReport.TCPV4
_REPORT_UDPV4 = HashReport.UDPV4
_REPORT_IPV6 = HashReport.IPV6
_REPORT_TCPV6 = HashReport.TCPV6
_REPORT_UDPV6 = HashReport.UDPV6
_REPORT_IPV6_EX = HashReport.IPV6_EX
_REPORT_TCPV6_EX = HashReport.TCPV6_EX
_REPORT_UDPV6_EX = HashReport.UDPV6_EX
_T_IPV4 = int(HashType.IPV4)
_T_TCPV4 = int(HashType.TCPV4)
_T_UDPV4 = int(HashType.UDPV4)
_T_IPV6 = int(HashType.IPV6)
_T_TCPV6 = int(HashType.TCPV6)
_T_UDPV6 = int(HashType.UDPV6)
_T_IP_EX = int(HashType.IP_EX)
_T_TCP_EX = int(HashType.TCP_EX)
_T_UDP_EX = int(HashType.UDP_EX)
_RFC_TYPES = int(HashType.supported_by_kernel_series())
_NOT_HASHED = FlowHash(0, HashReport.NONE, b"")
_ZERO_PORTS = bytes(4)
_SPEC = Semantics.SPEC
_RFC = Semantics.RFC_2023
_ETHERNET = Framing.ETHERNET
_IP = Framing.IP
# Untagged Ethernet frames, unpacked at once for classify's fastest cases. IPv4: the ethertype,
# version/IHL, flags + fragment offset, protocol, then the 12 bytes after the header checksum (the
# addresses, and the ports when IHL is 5). IPv6: the ethertype, the version byte, the next header,
# then the 36 bytes of the addresses and (without extension headers) the ports.
_ETHERNET_IPV4 = struct.Struct(">12xHB5xHxB2x12s").unpack_from
_ETHERNET_IPV6 = struct.Struct(">12xHB5xBx36s").unpack_from


def _select_spec(p: ParsedFrame, t: int) -> tuple[HashReport, bytes] | None:
    # The parser sets ports exactly for TCP and UDP packets that are not fragments.
    ports = p.ports or b""
    tcp = bool(ports) and p.protocol == IPPROTO_TCP
    udp = bool(ports) and p.protocol == IPPROTO_UDP
    if p.version == 4:
        if tcp and t & _T_TCPV4:
            return _REPORT_TCPV4, p.src + p.dst + ports
        if udp and t & _T_UDPV4:
            return _REPORT_UDPV4, p.src + p.dst + ports
        if t & _T_IPV4:
            return _REPORT_IPV4, p.src + p.dst
        return None
    if p.extension_headers and t & (_T_IP_EX | _T_TCP_EX | _T_UDP_EX):
        src = p.home_address or p.src
        dst = p.rh2_address or p.dst
        if tcp and t & _T_TCP_EX:
            return _REPORT_TCPV6_EX, src + dst + ports
        if udp and t & _T_UDP_EX:
            return _REPORT_UDPV6_EX, src + dst + ports
        if t & _T_IP_EX:
            return _REPORT_IPV6_EX, src + dst
    if tcp and t & _T_TCPV6:
        return _REPORT_TCPV6, p.src + p.dst + ports
    if udp and t & _T_UDPV6:
        return _REPORT_UDPV6, p.src + p.dst + ports
    if t & _T_IPV6:
        return _REPORT_IPV6, p.src + p.dst
    return None


def _select_rfc(p: ParsedFrame, t: int) -> tuple[HashReport, bytes] | None:
    t &= _RFC_TYPES
    protocol = p.protocol
    # The RFC's flow dissector parses no ports for any fragment; the type choice ignores that.
    ports = p.ports if p.ports is not None else _ZERO_PORTS
    if p.version == 4:
        tcp, udp, ip = _T_TCPV4, _T_UDPV4, _T_IPV4
        reports = (_REPORT_TCPV4, _REPORT_UDPV4, _REPORT_IPV4)
    else:
        tcp, udp, ip = _T_TCPV6, _T_UDPV6, _T_IPV6
        reports = (_REPORT_TCPV6, _REPORT_UDPV6, _REPORT_IPV6)
    if protocol == IPPROTO_TCP and t & tcp:
        return reports[0], p.src + p.dst + ports
    if protocol == IPPROTO_UDP and t & udp:
        return reports[1], p.src + p.dst + ports
    if t & ip:
        return reports[2], p.src + p.dst
    return None


def classify_parsed(
    parsed: ParsedFrame | None, types: HashType | int, key: BytesLike, *, semantics: Semantics = Semantics.SPEC
) -> FlowHash:
    """Classify and hash an already parsed packet (see :func:`classify`).

    Raises:
        ValidationError: when ``key`` is not bytes-like or ``semantics`` is not a :class:`Semantics`.
    """
    if semantics is not _SPEC and semantics is not _RFC:
        raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")
    if parsed is None:
        return _NOT_HASHED
    chosen = _select_spec(parsed, int(types)) if semantics is _SPEC else _select_rfc(parsed, int(types))
    if chosen is None:
        return _NOT_HASHED
    report, data = chosen
    tz = toeplitz_for(key)
    fed = data if semantics is _SPEC else rfc_input(data)
    fn = tz._functions.get(len(fed)) or tz.function(len(fed))
    return _new(FlowHash, (fn(fed), report, data))


def classify(
    frame: BytesLike,
    types: HashType | int,
    key: BytesLike,
    *,
    l2: Framing = Framing.ETHERNET,
    semantics: Semantics = Semantics.SPEC,
) -> FlowHash:
    """Classify ``frame`` under the enabled hash ``types`` and hash it with ``key``.

    Args:
        frame: the frame as a queue reads it (after any vnet header), bytes-like.
        types: the enabled ``VIRTIO_NET_RSS_HASH_TYPE_*`` bits.
        key: the Toeplitz key (40 bytes in a :class:`~pytun_hash.config.VnetHashConfig`).
        l2: how the frame is framed (TAP/TUN, with or without packet information).
        semantics: the virtio specification (default) or the October 2023 RFC kernel.

    Returns:
        A :class:`FlowHash`; malformed, truncated or non-IP frames give report NONE, value 0.

    Raises:
        ValidationError: when ``key`` is not bytes-like, ``l2`` is not a :class:`Framing` or
            ``semantics`` is not a :class:`Semantics`.
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    # The common cases are handled inline: they have to run at several hundred thousand frames per
    # second. They must agree with _parse and _select_spec, which handle everything else (a property
    # test checks that they agree).
    try:
        # Fastest: an untagged TCP or UDP packet on a TAP whose type is on, IPv4 without options
        # (IHL 5) and not a fragment, or IPv6 without extension headers. One unpack gives the header
        # fields and the hash input (addresses and ports, contiguous here): no slices, no per-byte
        # subscripts. Anything else, a frame too short for the unpack included, goes on below. Each
        # case returns on its own: one shared tail (a flag, then one return) measured 5 % slower.
        if l2 is _ETHERNET and semantics is _SPEC:
            n = len(frame)
            if n >= 38 and frame[12] == 0x08:
                ethertype, vihl, frag, protocol, data = _ETHERNET_IPV4(frame)
                if ethertype == ETH_P_IP and vihl == 0x45 and not frag & 0x3FFF:
                    t = types + 0  # a plain int: the flag class's own operators are slow
                    if (protocol == IPPROTO_TCP and t & _T_TCPV4) or (protocol == IPPROTO_UDP and t & _T_UDPV4):
                        try:
                            tz = _TABLES_BY_KEY[key]
                        except (KeyError, TypeError, ValueError):
                            tz = toeplitz_for(key)
                        return _new(
                            FlowHash,
                            (tz.hash12(data), _REPORT_TCPV4 if protocol == IPPROTO_TCP else _REPORT_UDPV4, data),
                        )
            elif n >= 58 and frame[12] == 0x86:
                ethertype, version, nexthdr, data = _ETHERNET_IPV6(frame)
                if ethertype == ETH_P_IPV6 and version >> 4 == 6:
                    t = types + 0
                    if (nexthdr == IPPROTO_TCP and t & _T_TCPV6) or (nexthdr == IPPROTO_UDP and t & _T_UDPV6):
                        try:
                            tz = _TABLES_BY_KEY[key]
                        except (KeyError, TypeError, ValueError):
                            tz = toeplitz_for(key)
                        return _new(
                            FlowHash,
                            (tz.hash36(data), _REPORT_TCPV6 if nexthdr == IPPROTO_TCP else _REPORT_UDPV6, data),
                        )
        if semantics is _SPEC and (
            (l2 is _ETHERNET and frame[12] == 0x08 and frame[13] == 0) or (l2 is _IP and frame[0] >> 4 == 4)
        ):
            off = 14 if l2 is _ETHERNET else 0
            # Indexing beats a struct call here; a frame too short for these bytes raises IndexError,
            # as unpack_from would raise struct.error: both end as "not hashed" below.
            protocol = frame[off + 9]
            vihl = frame[off]
            frag = frame[off + 6] << 8 | frame[off + 7]
            l4 = off + ((vihl & 0x0F) << 2)
            n = len(frame)
            if vihl >> 4 != 4 or vihl & 0x0F < 5 or l4 > n:
                return _NOT_HASHED
            t = types + 0  # a plain int: the flag class's own operators are slow
            try:
                tz = _TABLES_BY_KEY[key]
            except (KeyError, TypeError, ValueError):
                tz = toeplitz_for(key)
            if not frag & 0x3FFF and protocol in PORTED_PROTOCOLS:
                if l4 + 4 > n:
                    return _NOT_HASHED
                if t & (_T_TCPV4 if protocol == IPPROTO_TCP else _T_UDPV4):
                    # Without options the ports follow the addresses: one slice.
                    data = (
                        frame[off + 12 : off + 24]
                        if l4 == off + 20
                        else frame[off + 12 : off + 20] + frame[l4 : l4 + 4]
                    )
                    return _new(
                        FlowHash, (tz.hash12(data), _REPORT_TCPV4 if protocol == IPPROTO_TCP else _REPORT_UDPV4, data)
                    )
            # A fragment, another protocol, or TCP/UDP whose type is off: the addresses, if IPv4 is on.
            if not t & _T_IPV4:
                return _NOT_HASHED
            data = frame[off + 12 : off + 20]
            return _new(FlowHash, (tz.hash8(data), _REPORT_IPV4, data))
        # The same for untagged IPv6 without extension headers; must agree with _parse_ipv6 and _select_spec.
        if semantics is _SPEC and (
            (l2 is _ETHERNET and frame[12] == 0x86 and frame[13] == 0xDD) or (l2 is _IP and frame[0] >> 4 == 6)
        ):
            off = 14 if l2 is _ETHERNET else 0
            nexthdr = frame[off + 6]
            if nexthdr not in IPV6_EXTENSION_HEADERS:
                if off + 40 > len(frame) or frame[off] >> 4 != 6:
                    return _NOT_HASHED
                t = types + 0
                if nexthdr in PORTED_PROTOCOLS:
                    if off + 44 > len(frame):
                        return _NOT_HASHED
                    if (nexthdr == IPPROTO_TCP and t & _T_TCPV6) or (nexthdr == IPPROTO_UDP and t & _T_UDPV6):
                        # Addresses and ports are contiguous without extension headers: one slice.
                        data = frame[off + 8 : off + 44]
                        report = _REPORT_TCPV6 if nexthdr == IPPROTO_TCP else _REPORT_UDPV6
                    elif t & _T_IPV6:
                        data = frame[off + 8 : off + 40]
                        report = _REPORT_IPV6
                    else:
                        return _NOT_HASHED
                elif t & _T_IPV6:
                    data = frame[off + 8 : off + 40]
                    report = _REPORT_IPV6
                else:
                    return _NOT_HASHED
                try:
                    tz = _TABLES_BY_KEY[key]
                except (KeyError, TypeError, ValueError):
                    tz = toeplitz_for(key)
                return _new(FlowHash, ((tz.hash36 if len(data) == 36 else tz.hash32)(data), report, data))
        parsed = _parse(frame, l2)
    except (IndexError, struct.error):
        parsed = None
    return classify_parsed(parsed, types, key, semantics=semantics)


def rfc_key_in_force(key: BytesLike, types: HashType | int, previous: BytesLike = bytes(MAX_KEY_SIZE)) -> bytes:
    """The 40-byte key an RFC kernel holds after ``TUNSETVNETHASH`` with ``key`` and ``types``.

    The RFC copies ``40 if types & 0x7 else 4`` key bytes (its key-length helper tests report values
    against type bits) and keeps the rest from before: ``previous`` (zero on a fresh device).

    Raises:
        ValidationError: when ``key`` or ``previous`` is longer than 40 bytes or not bytes-like.
    """
    new = _as_key(key).ljust(MAX_KEY_SIZE, b"\0")
    old = _as_key(previous).ljust(MAX_KEY_SIZE, b"\0")
    if len(new) > MAX_KEY_SIZE or len(old) > MAX_KEY_SIZE:
        raise ValidationError("key", f"at most {MAX_KEY_SIZE} bytes")
    copied = kernel_key_length(int(types))
    return new[:copied] + old[copied:]


def queue_for_flow(
    config: VnetHashConfig, flow: FlowHash, num_queues: int, *, semantics: Semantics = Semantics.SPEC
) -> int:
    """The receive queue RSS picks for an already classified ``flow`` (see :func:`predict_queue`).

    Raises:
        ValidationError: when RSS is off in ``config``, ``num_queues`` < 1, or ``semantics`` is unknown.
    """
    if isinstance(num_queues, bool) or not isinstance(num_queues, int) or num_queues < 1:
        raise ValidationError("num_queues", f"must be an integer >= 1, got {num_queues!r}")
    if not config.rss:
        raise ValidationError(
            "rss",
            "queue prediction needs RSS enabled; without it the kernel spreads flows by its own "
            "flow hash (automq), which the model does not predict",
        )
    table = config.indirection_table
    if semantics is _SPEC:
        if flow.report is _NONE:
            return config.unclassified_queue % num_queues
        return table[flow.hash_value & (len(table) - 1)] % num_queues
    if semantics is _RFC:
        if num_queues < 2:
            return 0
        queue = table[flow.hash_value & (len(table) - 1)]
        if queue == 0:
            queue = config.unclassified_queue
        return queue % num_queues
    raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")


def predict_queue(
    config: VnetHashConfig,
    frame: BytesLike,
    num_queues: int,
    *,
    l2: Framing = Framing.ETHERNET,
    semantics: Semantics = Semantics.SPEC,
) -> int:
    """The receive queue (0-based) RSS with ``config`` puts ``frame`` on, with ``num_queues`` queues attached.

    Under SPEC: unclassified -> ``unclassified_queue``, else ``indirection_table[hash & mask]``,
    then modulo ``num_queues`` as tun folds it. Under RFC_2023: the RFC's formula (module
    documentation); pass a config whose key is the key in force (:func:`rfc_key_in_force`).

    Raises:
        ValidationError: when RSS is off in ``config`` (the kernel's automatic steering is not
            modelled), ``num_queues`` < 1, or ``semantics`` is unknown.
    """
    flow = classify(frame, config.types, config.key, l2=l2, semantics=semantics)
    return queue_for_flow(config, flow, num_queues, semantics=semantics)
