"""Classification under the virtio specification: one test per rule, framing, parsing, queue prediction."""

from __future__ import annotations

import struct

import pytest

from pytun_hash import HashReport, HashType, ValidationError, VnetHashConfig
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import (
    MAX_IPV6_EXTENSION_HEADERS,
    MAX_VLAN_TAGS,
    FlowHash,
    Framing,
    ParsedFrame,
    Semantics,
    classify,
    classify_parsed,
    parse_frame,
    predict_queue,
    queue_for_flow,
    toeplitz_hash_reference,
)
from pytun_hash.model import frames as fr
from pytun_hash.model.packet import ETH_P_IP, ETH_P_IPV6

KEY = MICROSOFT_RSS_KEY
ALL = HashType.all_known()
SIX = HashType.supported_by_kernel_series()
T = HashType

SRC4, DST4 = "192.0.2.10", "198.51.100.20"
SRC6, DST6 = "2001:db8::10", "2001:db8:1::20"
HOME, CARE_OF_DST = "2001:db8:ffff::1", "2001:db8:2::99"
PORTS = struct.pack(">HH", 40000, 443)


def a(text: str) -> bytes:
    return fr.addr(text)


def expect(frame: bytes, types: HashType, report: HashReport, hashed: bytes, *, l2: Framing = Framing.ETHERNET) -> None:
    flow = classify(frame, types, KEY, l2=l2)
    assert flow.report is report
    assert flow.hashed == hashed
    assert flow.hash_value == (toeplitz_hash_reference(KEY, hashed) if report else 0)
    # The general path (parse, then select) agrees with classify's inline fast path.
    assert classify_parsed(parse_frame(frame, l2), types, KEY) == flow


def expect_none(frame: bytes, types: HashType = ALL, *, l2: Framing = Framing.ETHERNET) -> None:
    assert classify(frame, types, KEY, l2=l2) == FlowHash(0, HashReport.NONE, b"")


def v4(protocol: int, payload: bytes, **kw: object) -> bytes:
    return fr.ethernet(fr.ipv4(SRC4, DST4, protocol, payload, **kw))  # type: ignore[arg-type]


def v6(next_header: int, payload: bytes) -> bytes:
    return fr.ethernet(fr.ipv6(SRC6, DST6, next_header, payload))


# --- IPv4 ------------------------------------------------------------------------------------


def test_ipv4_tcp_udp_and_other_with_every_type() -> None:
    expect(v4(fr.TCP, fr.tcp(40000, 443)), ALL, HashReport.TCPV4, a(SRC4) + a(DST4) + PORTS)
    expect(v4(fr.UDP, fr.udp(40000, 443)), ALL, HashReport.UDPV4, a(SRC4) + a(DST4) + PORTS)
    expect(v4(fr.ICMP, fr.icmp_echo()), ALL, HashReport.IPV4, a(SRC4) + a(DST4))


def test_ipv4_precedence_falls_back_to_ip_when_l4_type_disabled() -> None:
    expect(v4(fr.TCP, fr.tcp(40000, 443)), T.IPV4 | T.UDPV4, HashReport.IPV4, a(SRC4) + a(DST4))
    expect(v4(fr.UDP, fr.udp(40000, 443)), T.IPV4 | T.TCPV4, HashReport.IPV4, a(SRC4) + a(DST4))


def test_ipv4_not_hashed_without_a_matching_type() -> None:
    expect_none(v4(fr.UDP, fr.udp(1, 2)), T.TCPV4)
    expect_none(v4(fr.ICMP, fr.icmp_echo()), T.TCPV4 | T.UDPV4)
    expect_none(v4(fr.TCP, fr.tcp(1, 2)), T.IPV6 | T.TCPV6 | T.UDPV6 | T.IP_EX | T.TCP_EX | T.UDP_EX)
    expect_none(v4(fr.TCP, fr.tcp(1, 2)), T(0))


def test_ipv4_options_move_the_ports() -> None:
    options = bytes([0x01, 0x01, 0x01, 0x00]) * 2  # NOPs, end of list
    frame = v4(fr.TCP, fr.tcp(40000, 443), options=options)
    expect(frame, ALL, HashReport.TCPV4, a(SRC4) + a(DST4) + PORTS)
    parsed = parse_frame(frame)
    assert parsed is not None and parsed.l4_offset == 14 + 28


@pytest.mark.parametrize(("mf", "offset"), [(True, 0), (True, 185), (False, 185)], ids=["first", "middle", "last"])
def test_ipv4_fragments_hash_as_ip_only(mf: bool, offset: int) -> None:
    frame = v4(fr.TCP, fr.tcp(40000, 443), mf=mf, offset=offset)
    expect(frame, ALL, HashReport.IPV4, a(SRC4) + a(DST4))
    expect(v4(fr.UDP, fr.udp(40000, 443), mf=mf, offset=offset), ALL, HashReport.IPV4, a(SRC4) + a(DST4))
    expect_none(frame, T.TCPV4 | T.UDPV4)


def test_ipv4_dont_fragment_alone_is_not_a_fragment() -> None:
    expect(v4(fr.TCP, fr.tcp(40000, 443), df=True), ALL, HashReport.TCPV4, a(SRC4) + a(DST4) + PORTS)


def test_ipv4_malformed_or_truncated_is_none() -> None:
    good = v4(fr.TCP, fr.tcp(40000, 443))
    expect_none(fr.ethernet(fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(1, 2), version=5), ETH_P_IP))
    expect_none(fr.ethernet(fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(1, 2), ihl=4)))
    expect_none(fr.ethernet(fr.ipv4(SRC4, DST4, fr.ICMP, b"", ihl=15)))  # options run past the end
    # TCP/UDP without their 4 port bytes are truncated, whatever types are enabled.
    expect_none(good[: 14 + 20 + 3])
    expect_none(good[: 14 + 20 + 3], T.IPV4)
    # A protocol without ports needs no payload at all.
    expect(v4(fr.ICMP, b""), ALL, HashReport.IPV4, a(SRC4) + a(DST4))


def test_every_prefix_is_none_or_the_full_result() -> None:
    chain = fr.hop_by_hop(fr.ROUTING) + fr.routing_type2(fr.UDP, CARE_OF_DST)
    cases = [
        (v4(fr.TCP, fr.tcp(40000, 443)), 14 + 20 + 4),
        (v6(fr.UDP, fr.udp(40000, 443)), 14 + 40 + 4),
        (v6(fr.HOPOPTS, chain + fr.udp(40000, 443)), 14 + 40 + len(chain) + 4),
    ]
    for full_frame, needed in cases:
        full = classify(full_frame, ALL, KEY)
        assert full.report is not HashReport.NONE
        for cut in range(len(full_frame) + 1):
            got = classify(full_frame[:cut], ALL, KEY)
            assert got == (full if cut >= needed else FlowHash(0, HashReport.NONE, b"")), cut
            assert classify_parsed(parse_frame(full_frame[:cut]), ALL, KEY) == got


# --- IPv6 ------------------------------------------------------------------------------------


def test_ipv6_tcp_udp_and_other() -> None:
    expect(v6(fr.TCP, fr.tcp(40000, 443)), ALL, HashReport.TCPV6, a(SRC6) + a(DST6) + PORTS)
    expect(v6(fr.UDP, fr.udp(40000, 443)), ALL, HashReport.UDPV6, a(SRC6) + a(DST6) + PORTS)
    expect(v6(fr.ICMPV6, fr.icmp_echo()), ALL, HashReport.IPV6, a(SRC6) + a(DST6))
    expect(v6(fr.TCP, fr.tcp(40000, 443)), T.IPV6 | T.UDPV6, HashReport.IPV6, a(SRC6) + a(DST6))
    expect_none(v6(fr.UDP, fr.udp(1, 2)), T.TCPV6 | T.IPV4 | T.TCPV4 | T.UDPV4)


def test_ipv6_extension_headers_are_skipped_without_ex_types() -> None:
    chain = fr.hop_by_hop(fr.DSTOPTS) + fr.dest_options(fr.ROUTING) + fr.routing_type0(fr.TCP, [DST6])
    frame = v6(fr.HOPOPTS, chain + fr.tcp(40000, 443))
    expect(frame, SIX, HashReport.TCPV6, a(SRC6) + a(DST6) + PORTS)
    parsed = parse_frame(frame)
    assert parsed is not None and parsed.extension_headers and parsed.protocol == fr.TCP


@pytest.mark.parametrize(("offset", "more"), [(0, True), (100, True), (100, False)], ids=["first", "middle", "last"])
def test_ipv6_fragment_header_means_ip_only(offset: int, more: bool) -> None:
    frame = v6(fr.FRAGMENT, fr.fragment_header(fr.TCP, offset=offset, more=more) + fr.tcp(40000, 443))
    expect(frame, SIX, HashReport.IPV6, a(SRC6) + a(DST6))
    expect(frame, ALL, HashReport.IPV6_EX, a(SRC6) + a(DST6))  # a fragment header is an extension header
    expect_none(frame, T.TCPV6 | T.UDPV6 | T.TCP_EX | T.UDP_EX)


def test_tcp_ex_uses_the_home_address_option() -> None:
    frame = v6(fr.DSTOPTS, fr.dest_options(fr.TCP, home=HOME) + fr.tcp(40000, 443))
    expect(frame, ALL, HashReport.TCPV6_EX, a(HOME) + a(DST6) + PORTS)
    # Pad1 options in front of it are stepped over.
    padded = v6(fr.DSTOPTS, fr.dest_options(fr.TCP, home=HOME, pad1=2) + fr.tcp(40000, 443))
    expect(padded, ALL, HashReport.TCPV6_EX, a(HOME) + a(DST6) + PORTS)


def test_udp_ex_uses_the_type_2_routing_header_address() -> None:
    frame = v6(fr.ROUTING, fr.routing_type2(fr.UDP, CARE_OF_DST) + fr.udp(40000, 443))
    expect(frame, ALL, HashReport.UDPV6_EX, a(SRC6) + a(CARE_OF_DST) + PORTS)


def test_ip_ex_with_both_addresses() -> None:
    # RFC 6275 order: routing header, then destination options with the Home Address.
    chain = fr.routing_type2(fr.DSTOPTS, CARE_OF_DST) + fr.dest_options(fr.ICMPV6, home=HOME)
    frame = v6(fr.ROUTING, chain + fr.icmp_echo())
    expect(frame, ALL, HashReport.IPV6_EX, a(HOME) + a(CARE_OF_DST))


def test_ex_precedence_tcp_ex_then_udp_ex_then_ip_ex_then_plain_rules() -> None:
    tcp_frame = v6(fr.DSTOPTS, fr.dest_options(fr.TCP, home=HOME) + fr.tcp(40000, 443))
    # IP_EX comes before every plain IPv6 rule for a packet with extension headers.
    expect(tcp_frame, T.IP_EX | T.TCPV6, HashReport.IPV6_EX, a(HOME) + a(DST6))
    # UDP_EX does not apply to TCP; without IP_EX the plain rules use the fixed-header addresses.
    expect(tcp_frame, T.UDP_EX | T.TCPV6, HashReport.TCPV6, a(SRC6) + a(DST6) + PORTS)
    expect(tcp_frame, T.UDP_EX | T.IPV6, HashReport.IPV6, a(SRC6) + a(DST6))
    expect_none(tcp_frame, T.UDP_EX | T.UDPV6)


def test_ex_types_without_extension_headers_use_the_plain_rules() -> None:
    frame = v6(fr.TCP, fr.tcp(40000, 443))
    expect_none(frame, T.TCP_EX | T.UDP_EX | T.IP_EX)
    expect(frame, T.TCP_EX | T.TCPV6, HashReport.TCPV6, a(SRC6) + a(DST6) + PORTS)


def test_ex_without_home_or_rh2_falls_back_to_fixed_addresses() -> None:
    frame = v6(fr.HOPOPTS, fr.hop_by_hop(fr.TCP) + fr.tcp(40000, 443))
    flow = classify(frame, ALL, KEY)
    assert flow.report is HashReport.TCPV6_EX
    assert flow.hashed == a(SRC6) + a(DST6) + PORTS
    assert flow.hash_value == classify(frame, SIX, KEY).hash_value


def test_malformed_ex_options_are_ignored_not_fatal() -> None:
    bad_length = fr.ext_header(fr.TCP, bytes([201, 8]) + bytes(8))  # Home Address with length 8
    expect(v6(fr.DSTOPTS, bad_length + fr.tcp(40000, 443)), ALL, HashReport.TCPV6_EX, a(SRC6) + a(DST6) + PORTS)
    overrun = fr.ext_header(fr.TCP, bytes([1, 200]))  # PadN longer than its header
    expect(v6(fr.DSTOPTS, overrun + fr.tcp(40000, 443)), ALL, HashReport.TCPV6_EX, a(SRC6) + a(DST6) + PORTS)
    cut_tlv = fr.ext_header(fr.TCP, bytes([0, 0, 0, 0, 0, 201]))  # an option type with no length byte
    expect(v6(fr.DSTOPTS, cut_tlv + fr.tcp(40000, 443)), ALL, HashReport.TCPV6_EX, a(SRC6) + a(DST6) + PORTS)
    not_type2 = fr.routing_type0(fr.TCP, [CARE_OF_DST])
    expect(v6(fr.ROUTING, not_type2 + fr.tcp(40000, 443)), ALL, HashReport.TCPV6_EX, a(SRC6) + a(DST6) + PORTS)


def test_extension_header_walk_is_bounded() -> None:
    def chain(count: int) -> bytes:
        headers = b"".join(fr.dest_options(fr.DSTOPTS) for _ in range(count - 1)) + fr.dest_options(fr.TCP)
        return v6(fr.DSTOPTS, headers + fr.tcp(40000, 443))

    expect(chain(MAX_IPV6_EXTENSION_HEADERS), SIX, HashReport.TCPV6, a(SRC6) + a(DST6) + PORTS)
    # One header more: the walk stops on a destination options header, so there are no ports.
    over = chain(MAX_IPV6_EXTENSION_HEADERS + 1)
    expect(over, SIX, HashReport.IPV6, a(SRC6) + a(DST6))
    parsed = parse_frame(over)
    assert parsed is not None and parsed.protocol == fr.DSTOPTS and parsed.l4_offset is None


def test_ipv6_malformed_or_truncated_is_none() -> None:
    good = v6(fr.DSTOPTS, fr.dest_options(fr.TCP) + fr.tcp(1, 2))
    expect_none(good[: 14 + 39])
    expect_none(good[: 14 + 40 + 4])  # extension header cut short
    expect_none(fr.ethernet(fr.ipv6(SRC6, DST6, fr.TCP, fr.tcp(1, 2), version=4), ETH_P_IPV6))
    expect_none(v6(fr.FRAGMENT, fr.fragment_header(fr.TCP)[:6]))
    expect_none(v6(fr.TCP, fr.tcp(1, 2)[:3]))


# --- Framing ---------------------------------------------------------------------------------


def test_vlan_tags_are_skipped() -> None:
    packet = fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(40000, 443))
    untagged = classify(fr.ethernet(packet), ALL, KEY)
    for vlans in ((0x8100,), (0x88A8,), (0x88A8, 0x8100)):
        frame = fr.ethernet(packet, vlans=vlans)
        assert classify(frame, ALL, KEY) == untagged
        assert classify_parsed(parse_frame(frame), ALL, KEY) == untagged
    assert MAX_VLAN_TAGS == 2
    expect_none(fr.ethernet(packet, vlans=(0x88A8, 0x8100, 0x8100)))


def test_non_ip_ethertypes_are_none() -> None:
    arp = bytes.fromhex("0001080006040001") + bytes(20)
    expect_none(fr.ethernet(arp, 0x0806))
    expect_none(fr.ethernet(fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(1, 2)), 0x88B5))
    expect_none(fr.ethernet(b"", 0x0800))
    expect_none(b"\x00" * 13)
    expect_none(b"")


@pytest.mark.parametrize("packet_builder", ["v4", "v6"])
def test_every_framing_gives_the_same_flow(packet_builder: str) -> None:
    if packet_builder == "v4":
        packet, ethertype = fr.ipv4(SRC4, DST4, fr.UDP, fr.udp(53, 5353)), ETH_P_IP
    else:
        packet, ethertype = fr.ipv6(SRC6, DST6, fr.UDP, fr.udp(53, 5353)), ETH_P_IPV6
    reference = classify(fr.ethernet(packet), ALL, KEY)
    assert reference.report in (HashReport.UDPV4, HashReport.UDPV6)
    framed = {
        Framing.ETHERNET: fr.ethernet(packet),
        Framing.ETHERNET_WITH_PI: fr.packet_info(ethertype) + fr.ethernet(packet),
        Framing.IP: packet,
        Framing.IP_WITH_PI: fr.packet_info(ethertype) + packet,
    }
    for l2, frame in framed.items():
        assert classify(frame, ALL, KEY, l2=l2) == reference, l2
        assert classify_parsed(parse_frame(frame, l2), ALL, KEY) == reference, l2
        # bytes-like frames work too
        assert classify(bytearray(frame), ALL, KEY, l2=l2) == reference
        assert classify(memoryview(frame), ALL, KEY, l2=l2) == reference


def test_raw_ip_framing_edge_cases() -> None:
    packet = fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(1, 2))
    expect_none(b"\x00" + packet[1:], l2=Framing.IP)  # version 0
    expect_none(b"", l2=Framing.IP)
    # With packet information the header's protocol decides; a mismatch with the version nibble is malformed.
    expect_none(fr.packet_info(ETH_P_IPV6) + packet, l2=Framing.IP_WITH_PI)
    expect_none(fr.packet_info(0x0806) + packet, l2=Framing.IP_WITH_PI)
    expect_none(packet[:3], l2=Framing.IP_WITH_PI)


def test_framing_for_device() -> None:
    assert Framing.for_device(tap=True, packet_info=False) is Framing.ETHERNET
    assert Framing.for_device(tap=True, packet_info=True) is Framing.ETHERNET_WITH_PI
    assert Framing.for_device(tap=False, packet_info=False) is Framing.IP
    assert Framing.for_device(tap=False, packet_info=True) is Framing.IP_WITH_PI


def test_parse_frame_fields() -> None:
    chain = fr.routing_type2(fr.DSTOPTS, CARE_OF_DST) + fr.dest_options(fr.UDP, home=HOME)
    frame = v6(fr.ROUTING, chain + fr.udp(40000, 443))
    assert parse_frame(frame) == ParsedFrame(
        version=6,
        src=a(SRC6),
        dst=a(DST6),
        protocol=fr.UDP,
        l4_offset=14 + 40 + len(chain),
        ports=PORTS,
        fragment=False,
        extension_headers=True,
        home_address=a(HOME),
        rh2_address=a(CARE_OF_DST),
    )
    middle = parse_frame(v4(fr.UDP, fr.udp(1, 2), mf=True, offset=3))
    assert middle == ParsedFrame(4, a(SRC4), a(DST4), fr.UDP, None, None, True)
    first = parse_frame(v4(fr.UDP, fr.udp(1, 2), mf=True))
    assert first is not None and first.l4_offset == 34 and first.ports is None
    assert parse_frame(b"garbage") is None
    with pytest.raises(ValidationError, match="l2"):
        parse_frame(bytes(60), "ethernet")  # type: ignore[arg-type]


def test_semantics_and_framing_must_be_members() -> None:
    for frame in (fr.ethernet(fr.ipv6(SRC6, DST6, fr.TCP, fr.tcp(1, 2))), b""):
        with pytest.raises(ValidationError, match="semantics"):
            classify(frame, ALL, KEY, semantics="spec")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="l2"):
            classify(frame, ALL, KEY, l2="tap")  # type: ignore[arg-type]


def test_types_may_be_plain_ints_and_keys_any_bytes_like() -> None:
    frame = v4(fr.TCP, fr.tcp(40000, 443))
    reference = classify(frame, ALL, KEY)
    assert classify(frame, 0x1FF, KEY) == reference
    assert classify(frame, ALL, bytearray(KEY)) == reference
    with pytest.raises(ValidationError):
        classify(frame, ALL, "key")  # type: ignore[arg-type]


# --- Queue prediction ------------------------------------------------------------------------


def _config(table: tuple[int, ...], unclassified: int = 0, types: HashType = SIX) -> VnetHashConfig:
    return VnetHashConfig(rss=True, types=types, indirection_table=table, key=KEY, unclassified_queue=unclassified)


def test_predict_queue_uses_table_hash_and_mask_then_modulo() -> None:
    table = tuple(range(8))
    config = _config(table)
    for sport in range(1000, 1064):
        frame = v4(fr.UDP, fr.udp(sport, 53))
        flow = classify(frame, SIX, KEY)
        assert predict_queue(config, frame, 8) == table[flow.hash_value & 7]
        assert predict_queue(config, frame, 3) == table[flow.hash_value & 7] % 3
        assert queue_for_flow(config, flow, 8) == table[flow.hash_value & 7]


def test_predict_queue_unclassified_goes_to_unclassified_queue() -> None:
    config = _config((1, 2, 3, 4), unclassified=6)
    arp = fr.ethernet(bytes(28), 0x0806)
    assert predict_queue(config, arp, 8) == 6
    assert predict_queue(config, arp, 4) == 2
    # Not hashed because the type is off: same.
    ipv6_only = _config((1, 2, 3, 4), unclassified=5, types=T.IPV6)
    assert predict_queue(ipv6_only, v4(fr.TCP, fr.tcp(1, 2)), 8) == 5


def test_predict_queue_zero_entry_means_queue_zero_under_the_spec() -> None:
    config = _config((0, 0), unclassified=1)
    assert predict_queue(config, v4(fr.TCP, fr.tcp(1, 2)), 2) == 0


def test_predict_queue_framing_is_passed_through() -> None:
    config = _config(tuple(range(16)))
    packet = fr.ipv6(SRC6, DST6, fr.TCP, fr.tcp(5, 6))
    expected = predict_queue(config, fr.ethernet(packet), 16)
    assert predict_queue(config, packet, 16, l2=Framing.IP) == expected


def test_predict_queue_errors() -> None:
    frame = v4(fr.TCP, fr.tcp(1, 2))
    with pytest.raises(ValidationError, match="rss"):
        predict_queue(VnetHashConfig(report=True, types=SIX, key=KEY), frame, 4)
    for bad in (0, -1, True):
        with pytest.raises(ValidationError, match="num_queues"):
            predict_queue(_config((0, 1)), frame, bad)
    with pytest.raises(ValidationError, match="semantics"):
        queue_for_flow(_config((0, 1)), classify(frame, SIX, KEY), 2, semantics="rfc")  # type: ignore[arg-type]
    assert Semantics.SPEC.value == "spec"
