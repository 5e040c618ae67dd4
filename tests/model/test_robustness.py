"""Property tests: the parser never raises on any input, and classify's fast path agrees with the
general parse-then-select path on random and mutated frames."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pytun_hash import HashReport, HashType
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import (
    FlowHash,
    Framing,
    ParsedFrame,
    Semantics,
    classify,
    classify_parsed,
    parse_frame,
    toeplitz_hash_reference,
)
from pytun_hash.model import frames as fr
from pytun_hash.model.packet import ETH_P_IP, ETH_P_IPV6

KEY = MICROSOFT_RSS_KEY
types_st = st.integers(0, 0x1FF).map(HashType)


def _check(frame: bytes, l2: Framing, types: HashType) -> None:
    parsed = parse_frame(frame, l2)
    assert parsed is None or isinstance(parsed, ParsedFrame)
    for semantics in Semantics:
        flow = classify(frame, types, KEY, l2=l2, semantics=semantics)
        assert isinstance(flow, FlowHash)
        assert flow == classify_parsed(parsed, types, KEY, semantics=semantics)
        if flow.report is HashReport.NONE:
            assert flow == FlowHash(0, HashReport.NONE, b"")
        else:
            assert flow.report.hash_type & types
            assert len(flow.hashed) in (8, 12, 32, 36)
            if semantics is Semantics.SPEC:
                assert flow.hash_value == toeplitz_hash_reference(KEY, flow.hashed)


@settings(max_examples=400, deadline=None)
@given(frame=st.binary(max_size=200), l2=st.sampled_from(Framing), types=types_st)
def test_random_bytes_never_raise(frame: bytes, l2: Framing, types: HashType) -> None:
    _check(frame, l2, types)


@st.composite
def plausible_frames(draw: st.DrawFn) -> tuple[bytes, Framing]:
    """Well-formed frames of every kind, then possibly damaged: bytes flipped, cut, or extended."""
    protocol = draw(st.sampled_from([fr.TCP, fr.UDP, fr.ICMP]))
    sport, dport = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF))
    l4 = fr.tcp(sport, dport) if protocol == fr.TCP else fr.udp(sport, dport) if protocol == fr.UDP else fr.icmp_echo()
    if draw(st.booleans()):
        options = b"\x01" * 4 * draw(st.integers(0, 3))
        packet = fr.ipv4(
            "10.1.2.3",
            "10.9.8.7",
            protocol,
            l4,
            options=options,
            mf=draw(st.booleans()),
            df=draw(st.booleans()),
            offset=draw(st.sampled_from([0, 0, 1, 100])),
        )
        ethertype = ETH_P_IP
    else:
        chain_kinds = draw(st.lists(st.sampled_from(["hbh", "dst", "home", "rt0", "rt2", "frag"]), max_size=10))
        next_header = fr.ICMPV6 if protocol == fr.ICMP else protocol
        body = l4
        for kind in reversed(chain_kinds):
            if kind == "hbh":
                body, next_header = fr.hop_by_hop(next_header) + body, fr.HOPOPTS
            elif kind == "dst":
                body, next_header = fr.dest_options(next_header) + body, fr.DSTOPTS
            elif kind == "home":
                body, next_header = fr.dest_options(next_header, home="2001:db8::99") + body, fr.DSTOPTS
            elif kind == "rt0":
                body, next_header = fr.routing_type0(next_header, ["2001:db8::5"]) + body, fr.ROUTING
            elif kind == "rt2":
                body, next_header = fr.routing_type2(next_header, "2001:db8::77") + body, fr.ROUTING
            else:
                offset = draw(st.sampled_from([0, 3]))
                body, next_header = fr.fragment_header(next_header, offset=offset) + body, fr.FRAGMENT
        packet = fr.ipv6("2001:db8::1", "2001:db8::2", next_header, body)
        ethertype = ETH_P_IPV6
    l2 = draw(st.sampled_from(Framing))
    if l2 in (Framing.ETHERNET, Framing.ETHERNET_WITH_PI):
        vlans = tuple(draw(st.lists(st.sampled_from(fr.VLAN_TPIDS), max_size=3)))
        frame = fr.ethernet(packet, ethertype, vlans=vlans)
    else:
        frame = packet
    if l2 in (Framing.ETHERNET_WITH_PI, Framing.IP_WITH_PI):
        frame = fr.packet_info(ethertype) + frame
    damaged = bytearray(frame)
    for _ in range(draw(st.integers(0, 3))):
        if damaged:
            damaged[draw(st.integers(0, len(damaged) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del damaged[draw(st.integers(0, len(damaged))) :]
    damaged += draw(st.binary(max_size=8))
    return bytes(damaged), l2


@settings(max_examples=600, deadline=None)
@given(case=plausible_frames(), types=types_st)
def test_damaged_frames_never_raise_and_paths_agree(case: tuple[bytes, Framing], types: HashType) -> None:
    frame, l2 = case
    _check(frame, l2, types)
