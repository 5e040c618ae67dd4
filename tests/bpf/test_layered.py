"""The layered policy's steering program: a chosen flow set steered, every other frame falls back.

Run through ``BPF_PROG_TEST_RUN``: a matching frame returns its rule's queue, anything else
``TUN_STEERINGEBPF_FALLBACK``, which :func:`steering_program_queue` turns into None (RSS decides)
from v10 on and into a queue number before.
"""

from __future__ import annotations

import struct

import pytest

from pytun_hash._abi import Revision
from pytun_hash.bpf import FALLBACK_RETURN, PortRule, generate_fallback_program, load_fallback_program
from pytun_hash.bpf.rss_program import L3Base
from pytun_hash.errors import ValidationError
from pytun_hash.model.semantics import steering_program_queue

TCP, UDP = 6, 17
RULES = [PortRule(frozenset({443, 8443}), queue=2, protocols=frozenset({TCP})), PortRule(frozenset({53}), queue=3)]


def ipv4(proto: int, dport: int, *, frag: int = 0, ihl: int = 5) -> bytes:
    options = bytes(4 * (ihl - 5))
    l4 = struct.pack("!HH", 40000, dport) + bytes(16)
    total = 4 * ihl + len(l4)
    addresses = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0, *addresses)
    return head + options + l4


def ipv6(next_header: int, dport: int) -> bytes:
    l4 = struct.pack("!HH", 40000, dport) + bytes(16)
    head = struct.pack("!IHBB16s16s", 6 << 28, len(l4), next_header, 64, bytes(15) + b"\x01", bytes(15) + b"\x02")
    return head + l4


def ether(packet: bytes, ethertype: int) -> bytes:
    return bytes(6) + b"\x02" + bytes(5) + struct.pack("!H", ethertype) + packet


CASES = [
    ("v4 tcp 443", ether(ipv4(TCP, 443), 0x0800), 2),
    ("v4 tcp 8443", ether(ipv4(TCP, 8443), 0x0800), 2),
    ("v4 udp 443 (rule is tcp only)", ether(ipv4(UDP, 443), 0x0800), FALLBACK_RETURN),
    ("v4 udp 53", ether(ipv4(UDP, 53), 0x0800), 3),
    ("v4 tcp 53", ether(ipv4(TCP, 53), 0x0800), 3),
    ("v4 options tcp 443", ether(ipv4(TCP, 443, ihl=6), 0x0800), 2),
    ("v4 tcp 80", ether(ipv4(TCP, 80), 0x0800), FALLBACK_RETURN),
    ("v4 fragment", ether(ipv4(TCP, 443, frag=0x2000), 0x0800), FALLBACK_RETURN),
    ("v4 icmp", ether(ipv4(1, 443), 0x0800), FALLBACK_RETURN),
    ("v6 tcp 8443", ether(ipv6(TCP, 8443), 0x86DD), 2),
    ("v6 udp 53", ether(ipv6(UDP, 53), 0x86DD), 3),
    ("v6 udp 54", ether(ipv6(UDP, 54), 0x86DD), FALLBACK_RETURN),
    ("v6 hop-by-hop", ether(ipv6(0, 53), 0x86DD), FALLBACK_RETURN),
    ("arp", ether(bytes(28), 0x0806), FALLBACK_RETURN),
]


def test_rules_are_validated() -> None:
    with pytest.raises(ValidationError, match="ports"):
        PortRule(frozenset(), queue=1)
    with pytest.raises(ValidationError, match="ports"):
        PortRule(frozenset({70000}), queue=1)
    with pytest.raises(ValidationError, match="queue"):
        PortRule(frozenset({1}), queue=256)
    with pytest.raises(ValidationError, match="protocols"):
        PortRule(frozenset({1}), queue=1, protocols=frozenset({1}))
    with pytest.raises(ValidationError, match="rules"):
        generate_fallback_program([(443, 1)])  # type: ignore[list-item]
    rule = PortRule([80, 80, 81], queue=0)  # type: ignore[arg-type]
    assert rule.ports == frozenset({80, 81})


def test_fallback_is_none_from_v10_and_a_queue_before() -> None:
    for revision in (Revision.V10, Revision.V12):
        assert steering_program_queue(FALLBACK_RETURN, 4, revision) is None
    for before in (None, Revision.RFC, Revision.V3):
        assert steering_program_queue(FALLBACK_RETURN, 4, before) == 0xFFFF % 4


@pytest.mark.bpf
def test_tap_program_steers_the_flow_set_and_falls_back_otherwise() -> None:
    with load_fallback_program(RULES) as program:
        for what, frame, expected in CASES:
            result = program.test_run(frame).retval
            assert result == expected, what
            queue = steering_program_queue(result, 4, Revision.V12)
            assert queue == (None if expected == FALLBACK_RETURN else expected), what


@pytest.mark.bpf
def test_tun_program_reads_from_the_network_header() -> None:
    # A socket-filter test run wants an Ethernet header in front; it strips it, so the network
    # header is the IP packet, as for a TUN device.
    with load_fallback_program(RULES, L3Base.IP) as program:
        for what, frame, expected in CASES:
            if frame[12:14] == b"\x08\x06":
                continue  # not IP: the test run would hand the TUN program ARP bytes as "IP"
            assert program.test_run(frame).retval == expected, what


@pytest.mark.bpf
def test_no_rules_always_falls_back() -> None:
    with load_fallback_program([]) as program:
        for what, frame, _ in CASES:
            assert program.test_run(frame).retval == FALLBACK_RETURN, what
