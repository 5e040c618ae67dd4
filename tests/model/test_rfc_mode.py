"""RFC_2023 semantics: each difference from the specification pinned by a packet that exposes it."""

from __future__ import annotations

import struct
import sys

import pytest

from pytun_hash import HashReport, HashType, ValidationError, VnetHashConfig
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import (
    FlowHash,
    Semantics,
    classify,
    expected_report,
    predict_queue,
    rfc_key_in_force,
    toeplitz_hash,
)
from pytun_hash.model import frames as fr

KEY = MICROSOFT_RSS_KEY
SIX = HashType.supported_by_kernel_series()
RFC = Semantics.RFC_2023
SPEC = Semantics.SPEC
SRC4, DST4 = "192.0.2.10", "198.51.100.20"
SRC6, DST6 = "2001:db8::10", "2001:db8:1::20"
little_endian_only = pytest.mark.skipif(sys.byteorder != "little", reason="the RFC's byte-order bug shows on LE hosts")


def rfc_kernel_toeplitz(key: bytes, data: bytes) -> int:
    """The RFC's bitwise Toeplitz as its C code reads: key words loaded big-endian, input words in
    host byte order (``*input & bit`` on a ``__be32``), 32 bits at a time."""
    key_words = struct.unpack(">10I", key.ljust(44, b"\0")[:40])
    key_buffer = key_words[0]
    result = 0
    for index, word in enumerate(struct.unpack(f"={len(data) // 4}I", data)):
        next_key = key_words[index + 1] if index + 1 < len(key_words) else 0
        for bit in range(31, -1, -1):
            if word & (1 << bit):
                result ^= key_buffer
            key_buffer = ((key_buffer << 1) | ((next_key >> bit) & 1)) & 0xFFFFFFFF
    return result


def tcp4(**kw: object) -> bytes:
    return fr.ethernet(fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(40000, 443), **kw))  # type: ignore[arg-type]


def config(table: tuple[int, ...], unclassified: int, types: HashType = SIX, key: bytes = KEY) -> VnetHashConfig:
    return VnetHashConfig(rss=True, types=types, indirection_table=table, key=key, unclassified_queue=unclassified)


@little_endian_only
@pytest.mark.parametrize(
    "frame",
    [
        tcp4(),
        fr.ethernet(fr.ipv4(SRC4, DST4, fr.ICMP, fr.icmp_echo())),
        fr.ethernet(fr.ipv6(SRC6, DST6, fr.UDP, fr.udp(5353, 53))),
        fr.ethernet(fr.ipv6(SRC6, DST6, fr.ICMPV6, fr.icmp_echo())),
    ],
    ids=["tcp4", "ip4", "udp6", "ip6"],
)
def test_input_words_are_byte_reversed_on_little_endian_hosts(frame: bytes) -> None:
    spec = classify(frame, SIX, KEY)
    rfc = classify(frame, SIX, KEY, semantics=RFC)
    assert rfc.report is spec.report and rfc.hashed == spec.hashed
    assert rfc.hash_value == rfc_kernel_toeplitz(KEY, rfc.hashed)
    assert spec.hash_value == toeplitz_hash(KEY, spec.hashed)
    assert rfc.hash_value != spec.hash_value


@little_endian_only
def test_the_standard_vector_is_not_what_the_rfc_computes() -> None:
    # Microsoft row 1 with ports: the spec value is 0x51ccc178; the RFC reported something else.
    frame = fr.ethernet(fr.ipv4("66.9.149.187", "161.142.100.80", fr.TCP, fr.tcp(2794, 1766)))
    assert classify(frame, SIX, KEY).hash_value == 0x51CCC178
    rfc = classify(frame, SIX, KEY, semantics=RFC).hash_value
    assert rfc != 0x51CCC178
    assert rfc == toeplitz_hash(KEY, bytes.fromhex("bb950942 50648ea1 e606ea0a"))


@pytest.mark.parametrize(("mf", "offset"), [(True, 0), (True, 185), (False, 185)], ids=["first", "middle", "last"])
def test_fragments_are_tcp_udp_with_ports_zero(mf: bool, offset: int) -> None:
    addresses = fr.addr(SRC4) + fr.addr(DST4)
    frame = tcp4(mf=mf, offset=offset)
    assert classify(frame, SIX, KEY).report is HashReport.IPV4
    rfc = classify(frame, SIX, KEY, semantics=RFC)
    assert rfc.report is HashReport.TCPV4
    assert rfc.hashed == addresses + bytes(4)
    udp = fr.ethernet(fr.ipv4(SRC4, DST4, fr.UDP, fr.udp(1, 2), mf=mf, offset=offset))
    assert classify(udp, SIX, KEY, semantics=RFC).report is HashReport.UDPV4
    # With only the IP type enabled the RFC agrees on the type.
    assert classify(frame, HashType.IPV4, KEY, semantics=RFC).report is HashReport.IPV4


def test_ipv6_fragments_are_tcp_udp_with_ports_zero() -> None:
    frame = fr.ethernet(fr.ipv6(SRC6, DST6, fr.FRAGMENT, fr.fragment_header(fr.UDP, more=True) + fr.udp(7, 9)))
    assert classify(frame, SIX, KEY).report is HashReport.IPV6
    rfc = classify(frame, SIX, KEY, semantics=RFC)
    assert rfc.report is HashReport.UDPV6
    assert rfc.hashed == fr.addr(SRC6) + fr.addr(DST6) + bytes(4)


def test_ex_types_do_not_exist_in_the_rfc() -> None:
    frame = fr.ethernet(
        fr.ipv6(SRC6, DST6, fr.DSTOPTS, fr.dest_options(fr.TCP, home="2001:db8:ffff::1") + fr.tcp(40000, 443))
    )
    every = HashType.all_known()
    assert classify(frame, every, KEY).report is HashReport.TCPV6_EX
    rfc = classify(frame, every, KEY, semantics=RFC)
    assert rfc.report is HashReport.TCPV6
    assert rfc.hashed == fr.addr(SRC6) + fr.addr(DST6) + struct.pack(">HH", 40000, 443)
    assert classify(frame, HashType.IP_EX | HashType.TCP_EX, KEY, semantics=RFC).report is HashReport.NONE


def test_key_in_force_ipv6_only_types_load_four_bytes() -> None:
    ipv6_types = HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6
    in_force = rfc_key_in_force(KEY, ipv6_types)
    assert in_force == KEY[:4] + bytes(36)
    assert rfc_key_in_force(KEY, SIX) == KEY
    assert rfc_key_in_force(KEY, HashType.IPV4) == KEY
    previous = bytes(range(40))
    assert rfc_key_in_force(KEY, ipv6_types, previous) == KEY[:4] + previous[4:]
    with pytest.raises(ValidationError):
        rfc_key_in_force(bytes(41), SIX)
    # With only 32 key bits in force, the hash depends on the first 32 bits of the source only:
    # two flows that differ everywhere else share a hash (and a queue); under the spec they do not.
    flow_a = fr.ethernet(fr.ipv6("2001:db8::1", "2001:db8:1::1", fr.TCP, fr.tcp(1000, 80)))
    flow_b = fr.ethernet(fr.ipv6("2001:db8:77::2", "2001:db8:2::3", fr.TCP, fr.tcp(2000, 443)))
    rfc_a = classify(flow_a, ipv6_types, in_force, semantics=RFC)
    rfc_b = classify(flow_b, ipv6_types, in_force, semantics=RFC)
    assert rfc_a.report is HashReport.TCPV6 and rfc_a.hash_value == rfc_b.hash_value
    assert classify(flow_a, ipv6_types, KEY).hash_value != classify(flow_b, ipv6_types, KEY).hash_value
    table = tuple(range(8))
    rfc_config = config(table, 0, ipv6_types, in_force)
    assert predict_queue(rfc_config, flow_a, 8, semantics=RFC) == predict_queue(rfc_config, flow_b, 8, semantics=RFC)


def _flow_with_even_hash(semantics: Semantics) -> bytes:
    for sport in range(1024, 2048):
        frame = fr.ethernet(fr.ipv4(SRC4, DST4, fr.UDP, fr.udp(sport, 53)))
        if classify(frame, SIX, KEY, semantics=semantics).hash_value & 1 == 0:
            return frame
    raise AssertionError("no flow with an even hash")  # pragma: no cover


def test_zero_table_entry_is_replaced_by_the_unclassified_queue() -> None:
    # Table {0, 1}, unclassified 1, two queues: the RFC can never select queue 0 through the table.
    cfg = config((0, 1), 1)
    for semantics in (SPEC, RFC):
        frame = _flow_with_even_hash(semantics)
        expected = 0 if semantics is SPEC else 1
        assert predict_queue(cfg, frame, 2, semantics=semantics) == expected


def test_rfc_selftest_setup_queue_is_hash_and_1() -> None:
    cfg = config((0, 1), 0)
    for sport in range(1024, 1040):
        frame = fr.ethernet(fr.ipv4(SRC4, DST4, fr.TCP, fr.tcp(sport, 80)))
        flow = classify(frame, SIX, KEY, semantics=RFC)
        assert predict_queue(cfg, frame, 2, semantics=RFC) == flow.hash_value & 1


def test_unclassified_packets_use_table_zero() -> None:
    arp = fr.ethernet(bytes.fromhex("0001080006040001") + bytes(20), 0x0806)
    cfg = config((3, 2), 1)
    assert predict_queue(cfg, arp, 4) == 1
    assert predict_queue(cfg, arp, 4, semantics=RFC) == 3
    # ... and reach the unclassified queue only through a zero table[0].
    assert predict_queue(config((0, 2), 1), arp, 4, semantics=RFC) == 1
    # An IPv4 packet on an IPv6-only device: NONE with value 0, so table[0] too.
    v6_only = config((3, 2), 1, HashType.IPV6 | HashType.TCPV6)
    ip4 = tcp4()
    assert classify(ip4, v6_only.types, KEY, semantics=RFC) == FlowHash(0, HashReport.NONE, b"")
    assert predict_queue(v6_only, ip4, 4, semantics=RFC) == 3
    assert predict_queue(v6_only, ip4, 4) == 1


def test_out_of_range_entries_fold_modulo_the_queue_count() -> None:
    frame = tcp4()
    assert predict_queue(config((2, 2), 0), frame, 2, semantics=RFC) == 0
    assert predict_queue(config((3, 3), 0), frame, 2, semantics=RFC) == 1
    assert predict_queue(config((0, 0), 3), frame, 2, semantics=RFC) == 1


def test_later_revisions_follow_the_spec_formula() -> None:
    # The v10 selftest: table {3, 4}, unclassified 5, three queues -> hashed to {0, 1}, unclassified to 2.
    cfg = config((3, 4), 5)
    seen = {predict_queue(cfg, fr.ethernet(fr.ipv4(SRC4, DST4, fr.UDP, fr.udp(p, 53))), 3) for p in range(64)}
    assert seen == {0, 1}
    assert predict_queue(cfg, fr.ethernet(bytes(28), 0x0806), 3) == 2


def test_fewer_than_two_queues_means_no_hash() -> None:
    reporting = VnetHashConfig(rss=True, report=True, types=SIX, indirection_table=(0, 1), key=KEY)
    frame = tcp4()
    assert predict_queue(reporting, frame, 1, semantics=RFC) == 0
    none = FlowHash(0, HashReport.NONE, b"")
    assert expected_report(reporting, frame, semantics=RFC, num_queues=1) == none
    assert expected_report(reporting, frame, semantics=RFC, num_queues=2) == classify(frame, SIX, KEY, semantics=RFC)
    # Kernels of later revisions hash only in select_queue too (num_queues given: kernel reports);
    # reports filled in user space (eBPF backend) do not depend on the queue count.
    assert expected_report(reporting, frame, num_queues=1) == none
    assert expected_report(reporting, frame) == classify(frame, SIX, KEY)
