"""Every frame shape the program parses, one by one, against the software model.

The random frames of ``test_rss_program`` reach the shapes by chance; here each path of the
program's bulk copy (VLAN tags 0..3, IPv4 header lengths 20..60 bytes, IPv6 with 0..10 extension
headers, fragments anywhere) and of its exact fallback (frames cut at every offset, header chains
longer than the bulk copy) gets its frames, in TAP and TUN builds under both semantics.

Under ``BPF_PROG_TEST_RUN`` a TAP build sees ``skb->len`` without the Ethernet header, so its bulk
copy ends 14 bytes before the frame does and a frame cut within a header takes the exact path; a
TUN build's copy ends where the packet does, so its cuts test the bulk path's own bounds.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Iterator

import pytest

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.bpf import rss_program
from pytun_hash.bpf.insn import Reg
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import BULK_BYTES, RssOutput
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.model.classify import Semantics, classify, predict_queue
from pytun_hash.model.packet import Framing
from tests.bpf.frames import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IPV6_EXT, IPV6_FRAG, load_builds
from tests.bpf.test_rss_program import runnable_in_test_run

SKIPPED = IPV6_EXT
FRAGMENT = IPV6_FRAG
MAC = bytes.fromhex("020000000002020000000001")
PORTS_AND_MORE = struct.pack("!HH", 40000, 443) + bytes(range(16))  # ports, then 16 bytes of L4 header

ALL_TYPES = VnetHashConfig(
    rss=True,
    types=HashType(0x3F),
    indirection_table=tuple(range(16)),
    key=MICROSOFT_RSS_KEY,
    unclassified_queue=77,
)
# Each type off in turn, so that every fallback (TCP -> IP, UDP -> IP, IP -> unclassified) is met.
CONFIGS = [ALL_TYPES] + [ALL_TYPES.replace(types=HashType(0x3F & ~(1 << bit))) for bit in range(6)]


def ipv4(proto: int, *, ihl: int = 5, frag: int = 0, l4: bytes = PORTS_AND_MORE) -> bytes:
    options = bytes((i * 7) & 0xFF for i in range(4 * (ihl - 5)))
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(options) + len(l4), 1, frag, 64, proto, 0,
        bytes([10, 0, 0, 1]), bytes([192, 168, 7, 2]),
    )  # fmt: skip
    return header + options + l4


def ipv6(chain: list[tuple[int, int]], final: int, *, l4: bytes = PORTS_AND_MORE) -> bytes:
    """IPv6 with extension headers ``(kind, 8-byte units beyond the first)``; a fragment is 8 bytes."""
    kinds = [kind for kind, _ in chain]
    body = b""
    for (kind, units), nxt in zip(chain, [*kinds[1:], final], strict=False):  # no chain: final alone
        if kind == FRAGMENT:
            body += struct.pack("!BBHI", nxt, 0, 0x0001, 0x12345678)  # offset 0, M set
        else:
            body += bytes([nxt, units]) + bytes((i * 3) & 0xFF for i in range(8 * (units + 1) - 2))
    body += l4
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd00000000000000000000000000abcd")
    return struct.pack("!IHBB16s16s", 0x60012345, len(body), kinds[0] if kinds else final, 64, src, dst) + body


def ethernet(packet: bytes, *, tags: tuple[int, ...] = ()) -> bytes:
    ethertype = 0x86DD if packet and packet[0] >> 4 == 6 else 0x0800
    l2 = MAC + b"".join(struct.pack("!HH", tpid, 100 + i) for i, tpid in enumerate(tags))
    return l2 + struct.pack("!H", ethertype) + packet


def ipv4_packets() -> Iterator[bytes]:
    for ihl, proto in itertools.product(range(5, 16), (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP)):
        for frag in (0, 0x4000, 0x2000, 0x0010, 0x2010):
            yield ipv4(proto, ihl=ihl, frag=frag)


def ipv6_chains() -> Iterator[list[tuple[int, int]]]:
    rng = random.Random(6)
    for length in range(11):  # 0..8 within the walk's bound, 9 and 10 beyond it
        for _ in range(3):
            yield [(rng.choice(SKIPPED), rng.choice((0, 0, 1, 2))) for _ in range(length)]
        if length:
            for where in sorted({0, length - 1, length // 2}):
                chain = [(rng.choice(SKIPPED), 0) for _ in range(length)]
                chain[where] = (FRAGMENT, 0)
                yield chain


def ipv6_packets() -> Iterator[bytes]:
    for chain in ipv6_chains():
        for final in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6):
            yield ipv6(chain, final)


def shapes(mode: DeviceMode) -> Iterator[bytes]:
    packets = [*ipv4_packets(), *ipv6_packets()]
    if mode is DeviceMode.TUN:
        yield from packets
        return
    for tags in ((), (0x8100,), (0x88A8, 0x8100), (0x8100, 0x8100), (0x88A8, 0x8100, 0x8100)):
        for packet in packets:
            yield ethernet(packet, tags=tags)
    yield MAC + b"\x08\x06" + bytes(28)  # ARP
    yield MAC + b"\x81\x00\x00\x01\x88\xcc" + bytes(40)  # a tagged non-IP ethertype


def cuts(mode: DeviceMode) -> Iterator[bytes]:
    """Representative frames of every path cut at every length."""
    packets = [
        ipv4(IPPROTO_TCP),
        ipv4(IPPROTO_UDP, ihl=8),
        ipv4(IPPROTO_TCP, ihl=15, frag=0x2000),
        ipv6([], IPPROTO_TCP),
        ipv6([(0, 0), (60, 1)], IPPROTO_UDP),
        ipv6([(43, 0), (FRAGMENT, 0)], IPPROTO_TCP),
        ipv6([(0, 0)] * 8, IPPROTO_TCP),
    ]
    frames = (
        packets if mode is DeviceMode.TUN else [ethernet(p, tags=t) for p in packets for t in ((), (0x88A8, 0x8100))]
    )
    for frame in frames:
        for length in range(len(frame) + 1):
            yield frame[:length]


def beyond_the_bulk_copy(mode: DeviceMode) -> Iterator[bytes]:
    """Header chains that end past ``BULK_BYTES``: the exact path must carry on where the copy ends."""
    for units in (4, 7, 31, 255):
        for count in (1, 2, 8, 9):
            chain = [(SKIPPED[i % 3], units) for i in range(count)]
            for final in (IPPROTO_TCP, IPPROTO_UDP):
                packet = ipv6(chain, final)
                # Longer than the copy, within what a test run takes (a page with its overhead).
                if BULK_BYTES < len(packet) + 22 <= 3000:
                    yield packet if mode is DeviceMode.TUN else ethernet(packet, tags=(0x8100,))
    for final in (IPPROTO_TCP, IPPROTO_UDP):
        packet = ipv6([(0, 28), (FRAGMENT, 0)], final)
        yield packet if mode is DeviceMode.TUN else ethernet(packet)


@pytest.fixture(params=[(m, s) for s in Semantics for m in DeviceMode], ids=lambda p: f"{p[0].value}-{p[1].value}")
def builds(request: pytest.FixtureRequest) -> Iterator[dict[RssOutput, EbpfRss]]:
    mode, semantics = request.param
    with load_builds(ALL_TYPES, mode, semantics) as loaded:
        yield loaded


def mismatches(builds: dict[RssOutput, EbpfRss], frames: list[bytes]) -> list[str]:
    rss = builds[RssOutput.QUEUE]
    framing = Framing.ETHERNET if rss.mode is DeviceMode.TAP else Framing.IP
    frames = [f for f in frames if rss.mode is DeviceMode.TUN or runnable_in_test_run(f)]
    found: list[str] = []
    for config in CONFIGS:
        for build in builds.values():
            build.reconfigure(config)
        for frame in frames:
            flow = classify(frame, config.types, config.key, l2=framing, semantics=rss.semantics)
            want = (
                flow.hash_value,
                int(flow.report),
                predict_queue(config, frame, 0x10000, l2=framing, semantics=rss.semantics),
            )
            got = tuple(
                builds[output].test_run(frame).retval for output in (RssOutput.HASH, RssOutput.REPORT, RssOutput.QUEUE)
            )
            if got != want and len(found) < 10:
                found.append(f"types {config.types!r} frame {frame.hex()}: bpf {got} model {want}")
    return found


@pytest.mark.bpf
def test_every_shape_matches_the_model(builds: dict[RssOutput, EbpfRss]) -> None:
    frames = list(shapes(builds[RssOutput.QUEUE].mode))
    assert not mismatches(builds, frames)


@pytest.mark.bpf
def test_frames_cut_at_every_length_match_the_model(builds: dict[RssOutput, EbpfRss]) -> None:
    assert not mismatches(builds, list(cuts(builds[RssOutput.QUEUE].mode)))


@pytest.mark.bpf
def test_chains_beyond_the_bulk_copy_match_the_model(builds: dict[RssOutput, EbpfRss]) -> None:
    frames = list(beyond_the_bulk_copy(builds[RssOutput.QUEUE].mode))
    assert len(frames) >= 10
    assert not mismatches(builds, frames)


_SENTINEL = 0xDEAD


@pytest.mark.bpf
@pytest.mark.parametrize("mode", list(DeviceMode), ids=lambda m: m.value)
def test_complete_frames_within_the_bulk_copy_never_take_the_exact_path(
    mode: DeviceMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose exact path only returns a sentinel: every shape with its headers complete in
    the bulk copy is decided without it (one helper call per packet), and decided as the model does."""

    def sentinel(self: rss_program._Gen) -> None:
        self.a.mov64_imm(Reg.R0, _SENTINEL).exit()

    monkeypatch.setattr(rss_program._Gen, "ethernet", sentinel)
    monkeypatch.setattr(rss_program._Gen, "raw_ip", sentinel)
    monkeypatch.setattr(rss_program._Gen, "ipv4", lambda self: None)
    monkeypatch.setattr(rss_program._Gen, "ipv6", lambda self: None)
    framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
    checked = 0
    with EbpfRss.load(ALL_TYPES, mode, output=RssOutput.REPORT) as rss:
        for shape in shapes(mode):
            if len(shape) > BULK_BYTES:
                continue
            # The TAP copy under a test run ends 14 bytes early: pad so the headers are in it.
            frame = shape + bytes(14) if mode is DeviceMode.TAP else shape
            want = int(classify(frame, ALL_TYPES.types, ALL_TYPES.key, l2=framing).report)
            assert rss.test_run(frame).retval == want, frame.hex()
            checked += 1
    assert checked > 300
    assert want in {int(r) for r in HashReport}
