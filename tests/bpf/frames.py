"""Random frames and configs for checking the eBPF program against the software model.

The generator aims at the classification rules' edges: IPv4 options (complete or cut short),
DF-only vs real fragments, TCP/UDP without their ports, IPv6 extension-header chains of every
kind and length (beyond the walk's bound too), fragment headers, VLAN tags (0 to 3, 802.1Q and
802.1ad), non-IP ethertypes, wrong version nibbles and truncation anywhere.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Iterator

from pytun_hash._abi.virtio_net import HashType
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import RssOutput
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.model.classify import Semantics

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPV6_EXT = (0, 43, 60)
IPV6_FRAG = 44


def random_config(rng: random.Random, *, max_queue: int = 0xFFFF) -> VnetHashConfig:
    """An RSS config with a random key, all six supported types or a random subset, a random table."""
    types = 0x3F if rng.random() < 0.5 else 0
    while not types:
        types = rng.getrandbits(6)
    n = 1 << rng.randrange(0, 8)
    return VnetHashConfig(
        rss=True,
        types=HashType(types),
        indirection_table=tuple(rng.randrange(max_queue + 1) for _ in range(n)),
        key=rng.randbytes(40),
        unclassified_queue=rng.randrange(max_queue + 1),
    )


def _ipv4(rng: random.Random) -> bytes:
    ihl = 5 if rng.random() < 0.7 else rng.randrange(5, 16)
    proto = rng.choice((IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDP, IPPROTO_ICMP, 47, 132, 0))
    kind = rng.random()
    if kind < 0.55:
        frag = 0
    elif kind < 0.75:
        frag = 0x4000  # DF alone: not a fragment
    elif kind < 0.85:
        frag = 0x2000  # MF: first fragment
    elif kind < 0.95:
        frag = rng.randrange(1, 0x2000) | rng.choice((0, 0x2000))  # later fragment
    else:
        frag = rng.getrandbits(16)
    l4_len = rng.choice((8, 20, 20, 32, 0, 3, 4, rng.randrange(0, 64)))
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        rng.getrandbits(8),
        20 + 4 * (ihl - 5) + l4_len,
        rng.getrandbits(16),
        frag,
        rng.randrange(1, 256),
        proto,
        0,
        rng.randbytes(4),
        rng.randbytes(4),
    )
    return header + rng.randbytes(4 * (ihl - 5)) + rng.randbytes(l4_len)


def _ipv6(rng: random.Random) -> bytes:
    chain_len = rng.choice((0, 0, 0, 1, 1, 2, 3, 7, 8, 9, rng.randrange(0, 12)))
    kinds = [rng.choice((*IPV6_EXT, *IPV6_EXT, IPV6_FRAG)) for _ in range(chain_len)]
    final = rng.choice((IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDP, IPPROTO_ICMPV6, 51, 59, 132))
    body = b""
    nexts = [*kinds[1:], final]
    for kind, nxt in zip(kinds, nexts, strict=False):
        if kind == IPV6_FRAG:
            offset_m = rng.choice((0, 1, rng.getrandbits(16) & 0xFFF9))
            body += struct.pack("!BBHI", nxt, 0, offset_m, rng.getrandbits(32))
        else:
            units = rng.choice((0, 0, 1, 2, rng.randrange(0, 5)))
            body += bytes([nxt, units]) + rng.randbytes(8 * (units + 1) - 2)
    body += rng.randbytes(rng.choice((8, 20, 20, 32, 0, 3, 4, rng.randrange(0, 48))))
    first = kinds[0] if kinds else final
    header = struct.pack(
        "!IHBB16s16s", 0x60000000 | rng.getrandbits(20), len(body), first, 64, rng.randbytes(16), rng.randbytes(16)
    )
    return header + body


def random_ip_packet(rng: random.Random) -> bytes:
    """An IPv4 or IPv6 packet (sometimes with a wrong version nibble, sometimes cut short)."""
    packet = _ipv4(rng) if rng.random() < 0.5 else _ipv6(rng)
    r = rng.random()
    if r < 0.04:
        packet = bytes([(packet[0] & 0x0F) | (rng.randrange(16) << 4)]) + packet[1:]
    if rng.random() < 0.1:
        packet = packet[: rng.randrange(0, len(packet) + 1)]
    return packet


def random_ethernet_frame(rng: random.Random) -> bytes:
    """An Ethernet frame around :func:`random_ip_packet`, with 0-3 VLAN tags or a non-IP ethertype."""
    packet = random_ip_packet(rng)
    version = packet[0] >> 4 if packet else 4
    ethertype = 0x86DD if version == 6 else 0x0800
    r = rng.random()
    if r < 0.03:
        ethertype = rng.choice((0x0806, 0x88CC, 0x8847, 0x0000))
    elif r < 0.05:
        ethertype = 0x0800 if ethertype == 0x86DD else 0x86DD  # ethertype and version disagree
    tags = rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 3))
    l2 = rng.randbytes(12)
    for _ in range(tags):
        l2 += struct.pack("!HH", rng.choice((0x8100, 0x88A8)), rng.getrandbits(16))
    frame = l2 + struct.pack("!H", ethertype) + packet
    if rng.random() < 0.03:
        frame = frame[: rng.randrange(14, len(frame) + 1)]
    return frame


@contextlib.contextmanager
def load_builds(config: VnetHashConfig, mode: DeviceMode, semantics: Semantics) -> Iterator[dict[RssOutput, EbpfRss]]:
    """The RSS program of every output (queue, hash, report) for ``config``, closed at the end."""
    loaded: dict[RssOutput, EbpfRss] = {}
    try:
        for output in RssOutput:
            loaded[output] = EbpfRss.load(config, mode, output=output, semantics=semantics)
        yield loaded
    finally:
        for rss in loaded.values():
            rss.close()
