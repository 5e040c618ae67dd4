"""The vectorised model (:mod:`pytun_hash.model.batch`) gives every frame exactly what the scalar
model gives it: hash, report and queue, in every semantics and framing, for well-formed, malformed
and truncated frames alike (the slow lane included)."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytun_hash import HashType, VnetHashConfig
from pytun_hash.errors import ValidationError
from pytun_hash.model import Framing, Semantics, classify, queue_for_flow
from pytun_hash.model import frames as fb
from tests.fuzz.strategies import configs, frames

np = pytest.importorskip("numpy", reason="the batch model needs numpy (the pytun_hash[numpy] extra)")

from pytun_hash.model.batch import (  # noqa: E402 (after the numpy check)
    FrameArray,
    predict_chunks,
    predict_frames,
)

KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
CONFIG = VnetHashConfig(
    rss=True, types=HashType(0x1FF), indirection_table=tuple(range(8)) * 16, key=KEY, unclassified_queue=5
)


def scalar(
    frames_: list[bytes], framing: Framing, config: VnetHashConfig, queues: int, semantics: Semantics
) -> list[tuple[int, int, int]]:
    rows = []
    for frame in frames_:
        flow = classify(frame, config.types, config.key, l2=framing, semantics=semantics)
        rows.append((flow.hash_value, int(flow.report), queue_for_flow(config, flow, queues, semantics=semantics)))
    return rows


def batch(
    frames_: list[bytes], framing: Framing, config: VnetHashConfig, queues: int, semantics: Semantics
) -> list[tuple[int, int, int]]:
    result = predict_frames(FrameArray.from_frames(frames_, framing), config, queues, semantics=semantics)
    assert len(result) == len(frames_)
    return list(zip(result.hashes.tolist(), result.reports.tolist(), result.queues.tolist(), strict=True))


def shapes() -> list[bytes]:
    """Every frame shape the model distinguishes, framed as Ethernet, whole and cut short."""
    a4, b4 = "10.0.0.1", "192.168.7.9"
    a6, b6 = "2001:db8::1", "fe80::abcd:1"
    l4 = [(fb.TCP, fb.tcp(40000, 80)), (fb.UDP, fb.udp(53, 5353)), (fb.ICMP, fb.icmp_echo())]
    packets = []
    for proto, payload in l4:
        packets.append(fb.ipv4(a4, b4, proto, payload))
        packets.append(fb.ipv4(a4, b4, proto, payload, options=bytes(8)))
        packets.append(fb.ipv4(a4, b4, proto, payload, options=bytes(40)))
        packets.append(fb.ipv4(a4, b4, proto, payload, mf=True))
        packets.append(fb.ipv4(a4, b4, proto, payload, offset=3))
        packets.append(fb.ipv4(a4, b4, proto, payload, df=True))
        packets.append(fb.ipv4(a4, b4, proto, payload, ihl=4))
        packets.append(fb.ipv4(a4, b4, proto, payload, version=5))
        packets.append(fb.ipv6(a6, b6, proto, payload))
        packets.append(fb.ipv6(a6, b6, proto, payload, version=4))
        packets.append(fb.ipv6(a6, b6, fb.HOPOPTS, fb.hop_by_hop(proto) + payload))
        packets.append(fb.ipv6(a6, b6, fb.FRAGMENT, fb.fragment_header(proto) + payload))
        packets.append(fb.ipv6(a6, b6, fb.DSTOPTS, fb.dest_options(proto, home="2001:db8::99") + payload))
        packets.append(fb.ipv6(a6, b6, fb.ROUTING, fb.routing_type2(proto, "2001:db8::77") + payload))
    frames_ = []
    for packet in packets:
        for vlans in ((), (0x8100,), (0x88A8, 0x8100), (0x8100, 0x8100, 0x8100)):
            frame = fb.ethernet(packet, vlans=vlans)
            frames_.append(frame)
            # Cut short at the lengths the rules look at.
            frames_.extend(frame[:cut] for cut in (0, 1, 12, 13, 14, 15, 17, 18, 21, 23, 33, 34, 37, 38, 53, 57, 58))
    frames_.append(fb.ethernet(fb.arp_request("10.0.0.1", "10.0.0.2"), fb.ETH_P_ARP))
    return frames_


@pytest.mark.parametrize("semantics", list(Semantics))
@pytest.mark.parametrize("queues", [1, 3, 8])
@pytest.mark.parametrize("types", [HashType(0x1FF), HashType.IPV4 | HashType.IPV6, HashType.TCPV4 | HashType.UDPV6])
def test_every_shape_matches_the_scalar_model(semantics: Semantics, queues: int, types: HashType) -> None:
    config = attrs.evolve(CONFIG, types=types)
    frames_ = shapes()
    assert batch(frames_, Framing.ETHERNET, config, queues, semantics) == scalar(
        frames_, Framing.ETHERNET, config, queues, semantics
    )


@pytest.mark.parametrize("semantics", list(Semantics))
@pytest.mark.parametrize("framing", list(Framing))
def test_every_framing_matches_the_scalar_model(semantics: Semantics, framing: Framing) -> None:
    packets = [f[14:] for f in shapes() if len(f) > 14]
    if framing is Framing.ETHERNET:
        frames_ = shapes()
    elif framing is Framing.ETHERNET_WITH_PI:
        frames_ = [b"\0\0\x08\x00" + f for f in shapes()]
    elif framing is Framing.IP:
        frames_ = packets
    else:
        frames_ = [b"\0\0\x86\xdd" + p for p in packets] + [b"\0\0\x08\x00" + p for p in packets] + [b"\0\0"]
    assert batch(frames_, framing, CONFIG, 8, semantics) == scalar(frames_, framing, CONFIG, 8, semantics)


@settings(max_examples=300, deadline=None)
@given(
    drawn=st.lists(frames(), min_size=1, max_size=20),
    config=configs().filter(lambda c: c.rss),
    queues=st.integers(1, 9),
    semantics=st.sampled_from(list(Semantics)),
)
def test_generated_frames_match_the_scalar_model(
    drawn: list[tuple[Framing, bytes]], config: VnetHashConfig, queues: int, semantics: Semantics
) -> None:
    framing = drawn[0][0]
    frames_ = [frame for _, frame in drawn]
    assert batch(frames_, framing, config, queues, semantics) == scalar(frames_, framing, config, queues, semantics)


def test_chunks_sum_to_one_histogram() -> None:
    frames_ = shapes()
    whole = predict_chunks([FrameArray.from_frames(frames_)], CONFIG, 8)
    pieces = predict_chunks([FrameArray.from_frames(frames_[i : i + 7]) for i in range(0, len(frames_), 7)], CONFIG, 8)
    assert whole == pieces
    assert whole.packets == len(frames_) == sum(whole.histogram)
    assert sum(whole.reports.values()) == len(frames_)
    assert whole.slow > 0  # the IPv6 extension headers took the slow lane
    rows = scalar(frames_, Framing.ETHERNET, CONFIG, 8, Semantics.SPEC)
    assert whole.histogram == tuple(sum(1 for r in rows if r[2] == q) for q in range(8))
    assert whole.unclassified == tuple(sum(1 for r in rows if r[2] == q and r[1] == 0) for q in range(8))


def test_empty_array() -> None:
    result = predict_frames(FrameArray.from_frames([]), CONFIG, 4)
    assert len(result) == 0 and result.slow == 0
    assert predict_chunks([], CONFIG, 4).histogram == (0, 0, 0, 0)


def test_bad_arguments_are_validation_errors() -> None:
    frames_ = FrameArray.from_frames([b"x"])
    with pytest.raises(ValidationError):
        predict_frames(frames_, CONFIG, 0)
    with pytest.raises(ValidationError):
        predict_frames(frames_, attrs.evolve(CONFIG, rss=False, report=True), 4)
    with pytest.raises(ValidationError):
        predict_frames(frames_, CONFIG, 4, semantics="spec")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        FrameArray(np.zeros(4, dtype=np.uint8), np.array([2]), np.array([5]))
    with pytest.raises(ValidationError):
        FrameArray.from_frames([b"x"], "ethernet")  # type: ignore[arg-type]
