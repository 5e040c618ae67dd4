"""pytun_hash.traffic: flows, wiring, sending from the namespace's stack, collecting per queue."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections import Counter

import pytest

from pytun_hash import traffic
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import KernelError, ValidationError
from pytun_hash.model import Framing, classify, parse_frame
from pytun_hash.traffic import MARK, Addressing, Flow, flow_text, parsed_flow_text, protocol_name

V4, V6 = ("10.77.0.1", "10.77.0.2"), ("fd00:77::1", "fd00:77::2")
ALL_KINDS = [
    Flow(socket.IPPROTO_ICMP, *V4),
    Flow(socket.IPPROTO_ICMPV6, *V6),
    Flow(253, *V4),
    Flow(253, *V6),
]


def test_flow_validation() -> None:
    with pytest.raises(ValidationError) as info:
        Flow(6, *V4)
    assert info.value.field == "sport"
    with pytest.raises(ValidationError) as info:
        Flow(1, *V4, 1, 2)
    assert info.value.field == "sport"
    with pytest.raises(ValidationError) as info:
        Flow(17, V4[0], V6[1], 1, 2)
    assert info.value.field == "dst"
    for bad in (-1, 256, True):
        with pytest.raises(ValidationError):
            Flow(bad, *V4)
    with pytest.raises(ValidationError):
        Flow(socket.IPPROTO_ICMPV6, *V4)
    with pytest.raises(ValidationError):
        Flow(socket.IPPROTO_ICMP, *V6)
    with pytest.raises(ValidationError):
        Flow(6, "10.0.0.300", "10.0.0.1", 1, 2)


def test_flow_text_and_packets() -> None:
    flow = Flow(6, "66.9.149.187", "161.142.100.80", 2794, 1766)
    assert str(flow) == "tcp 66.9.149.187:2794 -> 161.142.100.80:1766" and flow.version == 4
    assert str(Flow(17, *V6, 5, 6)) == "udp [fd00:77::1]:5 -> [fd00:77::2]:6"
    assert protocol_name(58) == "icmpv6" and protocol_name(47) == "47"
    assert flow_text(17, "fd00::1", "fd00::2", 5, 6) == "udp [fd00::1]:5 -> [fd00::2]:6"
    assert flow_text(6, "10.0.0.1", "10.0.0.2") == "tcp 10.0.0.1 -> 10.0.0.2"
    result = classify(flow.ip_packet(), 0x3F, MICROSOFT_RSS_KEY, l2=Framing.IP)
    assert result.hash_value == 0x51CCC178
    v4 = Flow(17, *V4, 1000, 53).ip_packet(b"xyz")
    assert len(v4) == 20 + 8 + 3 and v4[9] == 17
    # The IPv4 header checksum is valid (sums to 0xffff).
    total = sum(int.from_bytes(v4[i : i + 2], "big") for i in range(0, 20, 2))
    assert (total & 0xFFFF) + (total >> 16) == 0xFFFF


def test_spread_flows_is_deterministic_and_distinct() -> None:
    a = traffic.spread_flows(200, seed=4)
    assert a == traffic.spread_flows(200, seed=4) and a != traffic.spread_flows(200, seed=5)
    assert len({f.key for f in a}) == 200
    assert Counter((f.protocol, f.version) for f in a) == {(6, 4): 50, (17, 4): 50, (6, 6): 50, (17, 6): 50}
    icmp = traffic.spread_flows(3, kinds=[(1, 4)])
    assert icmp == [Flow(1, *V4)] * 3
    with pytest.raises(ValidationError):
        traffic.spread_flows(-1)
    with pytest.raises(ValidationError):
        traffic.spread_flows(1, kinds=[(6, 5)])


def test_addressing_validation() -> None:
    assert Addressing().local(6) == V6[0] and Addressing().peer(4) == V4[1]
    with pytest.raises(ValidationError) as info:
        Addressing(ipv4_peer="10.78.0.2")
    assert info.value.field == "ipv4_peer"
    with pytest.raises(ValidationError):
        Addressing(ipv6_local="10.0.0.1")


@pytest.mark.kernel
@pytest.mark.parametrize("mode", [DeviceMode.TAP, DeviceMode.TUN])
def test_every_flow_arrives_once(netns: NetworkNamespace, mode: DeviceMode) -> None:
    with TunTapDevice.create(None, mode=mode, queues=4) as device:
        device.set_vnet_hdr_size(20)
        traffic.wire(netns, device)
        flows = traffic.spread_flows(40, seed=1) + ALL_KINDS
        sent = traffic.send(netns, flows)
        capture = traffic.collect(device, expected=sent, timeout=10.0)
        assert not capture.timed_out
        matches = capture.match(flows)
        assert Counter(m.flow for m in matches) == Counter(flows)  # each exactly once, nothing foreign
        by_queue = capture.by_queue()
        assert sum(len(v) for v in by_queue.values()) == sent and set(by_queue) <= {0, 1, 2, 3}
        framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
        assert capture.framing is framing
        for m in matches:
            assert m.flow is not None
            # What was sent hashes exactly like the synthetic packet of the same flow.
            real = classify(m.frame.frame, 0x3F, MICROSOFT_RSS_KEY, l2=framing)
            synthetic = classify(m.flow.ip_packet(), 0x3F, MICROSOFT_RSS_KEY, l2=Framing.IP)
            assert real[:2] == synthetic[:2]
            if m.flow.protocol != socket.IPPROTO_TCP:
                assert MARK in m.frame.frame
            assert m.frame.buffer[m.frame.frame_offset :] == m.frame.frame and m.frame.frame_offset == 20


@pytest.mark.kernel
def test_neighbours_instead_of_noarp_and_ipv4_only(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("nb%d", queues=2, packet_info=True) as device:
        traffic.wire(netns, device, ipv6=False, noarp=False, mtu=1400)
        assert netns.get_link(device.name).mtu == 1400
        flows = traffic.spread_flows(6, kinds=[(17, 4)])
        sent = traffic.send(netns, flows)
        capture = traffic.collect(device, expected=sent)
        assert len(capture.frames) == sent and all(m.flow is not None for m in capture.match(flows))
        peer_mac = bytes.fromhex("020000000002")
        assert all(f.frame[:6] == peer_mac for f in capture.frames)  # the permanent neighbour's MAC
        assert all(f.frame_offset == 4 + 10 for f in capture.frames)  # tun_pi + the default vnet header
        with pytest.raises(KernelError, match="send"):
            traffic.send(netns, [Flow(17, *V6, 1, 2)])  # IPv6 is off on the device


@pytest.mark.kernel
def test_collect_bounds_and_foreign_frames(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("col%d", queues=2) as device:
        traffic.wire(netns, device)
        started = time.monotonic()
        empty = traffic.collect(device, expected=3, timeout=0.2)
        # It waited out its timeout (no less) and came back empty.
        assert empty.timed_out and empty.frames == () and time.monotonic() - started >= 0.2
        quiet = traffic.collect(device, quiet=0.01)
        assert quiet.frames == () and not quiet.timed_out
        known, other = traffic.spread_flows(2, seed=1), traffic.spread_flows(2, seed=2)
        traffic.send(netns, known + other)
        capture = traffic.collect(device, expected=4)
        assert sorted(m.flow is None for m in capture.match(known)) == [False, False, True, True]
        with pytest.raises(ValidationError):
            traffic.collect(device, timeout=-1)


@pytest.mark.parametrize(
    "flow",
    [
        Flow(6, "66.9.149.187", "161.142.100.80", 2794, 1766),
        Flow(17, "fd00:77::1", "fd00:77::2", 0, 65535),
        Flow(17, "fd00:0:0:0:0:0:0:1", "fd00::2", 5, 6),  # written compressed, as parsed addresses are
        *ALL_KINDS,
    ],
    ids=str,
)
def test_a_parsed_frame_reads_as_its_flow(flow: Flow) -> None:
    # One rule for writing a flow: a frame parsed back reads as the flow it was built from.
    parsed = parse_frame(flow.ip_packet(), Framing.IP)
    assert parsed is not None
    expected = flow_text(flow.protocol, str(ipaddress.ip_address(flow.src)), str(ipaddress.ip_address(flow.dst)),
                         flow.sport, flow.dport)  # fmt: skip
    assert parsed_flow_text(parsed) == expected
    if flow.src == str(ipaddress.ip_address(flow.src)):
        assert parsed_flow_text(parsed) == str(flow)


def test_a_fragment_reads_without_ports() -> None:
    packet = bytearray(Flow(6, *V4, 1000, 80).ip_packet())
    packet[6:8] = b"\x20\x00"  # MF set: a first fragment, whose ports the hash never uses
    parsed = parse_frame(bytes(packet), Framing.IP)
    assert parsed is not None and parsed.fragment
    assert parsed_flow_text(parsed) == f"tcp {V4[0]} -> {V4[1]} (fragment)"
