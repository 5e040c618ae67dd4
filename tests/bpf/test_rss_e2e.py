"""eBPF RSS end to end on the real kernel: every frame lands on the queue the software model predicts.

A 4-queue TAP (vnet header 20) lives in an anonymous network namespace; the namespace's own
stack sends IPv4 and IPv6 TCP SYNs, UDP datagrams, ICMP echo requests, IP fragments (link MTU
1280) and VLAN traffic (an 802.1Q device, and 802.1Q over 802.1ad), over well over 1,000
distinct flows; an AF_PACKET socket (``pytun_hash.traffic.inject``) adds random crafted frames (tags in the frame, IPv6
extension headers, truncated and non-IP frames). Every frame read from every queue must be on
the queue ``predict_queue`` names. The same for a TUN device, for live reconfiguration under
traffic, and for the user-space hash reports.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.bpf.report import HashReporter
from pytun_hash.bpf.rss import EBPF_RSS_OWNER, EbpfRss, enable_ebpf_rss
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.netns import write_sysctl
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BusyError, KernelError, SteeringConflictError, ValidationError
from pytun_hash.model import Framing, predict_queue, verify_reports
from pytun_hash.model import frames as fr
from pytun_hash.model.flow import internet_checksum
from pytun_hash.traffic import inject
from tests.bpf.frames import random_config, random_ethernet_frame, random_ip_packet

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

QUEUES = 4
VNET_HDR = 20
MTU = 1280
MARK = b"pytun-hash-e2e"
PEER_MAC = "02:00:00:00:00:02"


@dataclass
class Link:
    """One L3 path out of the device: local address, peer address, interface."""

    ifname: str
    local: str
    peer: str
    family: int


@dataclass
class Readout:
    """Frames read from the device, by kernel queue index."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)

    def ours(self) -> list[tuple[int, bytes]]:
        return [(q, f) for q, f in self.frames if MARK in f]


def read_all(device: TunTapDevice) -> Readout:
    out = Readout()
    for queue in device.attached_queues:
        index = queue.index
        assert index is not None
        out.frames += [(index, buf) for buf in queue.drain()]
    return out


def misrouted(readout: Readout, configs: list[VnetHashConfig], framing: Framing, num_queues: int = QUEUES) -> list[str]:
    """Frames on a queue that none of ``configs`` predicts."""
    bad = []
    for queue, buf in readout.frames:
        frame = buf[VNET_HDR:]
        predicted = [predict_queue(c, frame, num_queues, l2=framing) for c in configs]
        if queue not in predicted:
            bad.append(f"queue {queue}, predicted {predicted}: {frame[:80].hex()}")
    return bad


def enable_ipv6(ifname: str) -> None:
    """IPv6 on, with no DAD or router solicitations, and MLD reports compressed into milliseconds."""
    for key, value in (
        ("accept_dad", 0),
        ("router_solicitations", 0),
        ("mldv1_unsolicited_report_interval", 1),
        ("mldv2_unsolicited_report_interval", 1),
        ("disable_ipv6", 0),
    ):
        write_sysctl(f"net/ipv6/conf/{ifname}/{key}", value)


def quiesce(device: TunTapDevice, quiet: float = 0.05, limit: float = 2.0) -> None:
    """Drain the queues until nothing arrived for ``quiet`` seconds: the setup's own frames
    (MLD reports) are sent before steering starts, so none is judged."""
    deadline = time.monotonic() + limit
    last = time.monotonic()
    while time.monotonic() < deadline:
        if read_all(device).frames:
            last = time.monotonic()
        elif time.monotonic() - last >= quiet:
            return
        time.sleep(0.002)
    raise AssertionError(f"{device.name} kept emitting frames for {limit} s after setup")


def setup_tap(ns: NetworkNamespace, device: TunTapDevice) -> dict[str, Link]:
    """Addresses, permanent neighbours, MTU, VLAN devices (where the kernel has them); IPv6 on
    without DAD or router solicitations."""
    name = device.name
    device.set_vnet_hdr_size(VNET_HDR)
    ns.set_link_mtu(name, MTU)
    links = {
        "v4": Link(name, "10.77.0.1", "10.77.0.2", socket.AF_INET),
        "v6": Link(name, "fd00:77::1", "fd00:77::2", socket.AF_INET6),
    }
    ifnames = [name]
    try:
        ns.add_vlan(name, "vl10", 10)
    except KernelError as exc:
        if exc.errno != errno.EOPNOTSUPP:
            raise
    else:
        ns.add_vlan(name, "sv20", 20, protocol=0x88A8)
        ns.add_vlan("sv20", "vl30", 30)
        ifnames += ["vl10", "sv20", "vl30"]
        links["vlan"] = Link("vl10", "10.78.0.1", "10.78.0.2", socket.AF_INET)
        links["qinq"] = Link("vl30", "10.79.0.1", "10.79.0.2", socket.AF_INET)
        links["vlan6"] = Link("vl10", "fd00:78::1", "fd00:78::2", socket.AF_INET6)
    for ifname in ifnames:
        enable_ipv6(ifname)
        ns.set_link_up(ifname)
    for link in links.values():
        prefix = 24 if link.family == socket.AF_INET else 64
        ns.add_address(link.ifname, f"{link.local}/{prefix}")
        ns.add_neighbour(link.ifname, link.peer, PEER_MAC)
    return links


def tagged_frames(tags: list[int], count: int) -> list[bytes]:
    """UDP/IPv4 and TCP/IPv6 frames behind VLAN tags (``tags``: TPIDs, outermost first), one flow each."""
    frames = []
    for i in range(count):
        if i % 2:
            packet = fr.ipv4("10.77.0.1", "10.77.0.2", fr.UDP, fr.udp(30000 + i, 5000 + i, MARK), df=True)
        else:
            packet = fr.ipv6("fd00:77::1", "fd00:77::2", fr.TCP, fr.tcp(30000 + i, 6000 + i, MARK))
        frames.append(fr.ethernet(packet, vlans=tuple(tags)))
    return frames


def setup_tun(ns: NetworkNamespace, device: TunTapDevice) -> dict[str, Link]:
    name = device.name
    device.set_vnet_hdr_size(VNET_HDR)
    ns.set_link_mtu(name, MTU)
    enable_ipv6(name)
    ns.set_link_up(name)
    links = {
        "v4": Link(name, "10.80.0.1", "10.80.0.2", socket.AF_INET),
        "v6": Link(name, "fd00:80::1", "fd00:80::2", socket.AF_INET6),
    }
    ns.add_address(name, "10.80.0.1/24")
    ns.add_address(name, "fd00:80::1/64")
    return links


# ----------------------------------------------------------------------------- traffic


def send_udp(link: Link, sports: range, dports: range, size: int = 32) -> int:
    """One datagram per (sport, dport): distinct flows. Returns the number sent."""
    sent = 0
    payload = MARK + bytes(max(0, size - len(MARK)))
    for sport in sports:
        with socket.socket(link.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.bind((link.local, sport))
            for dport in dports:
                sock.sendto(payload, (link.peer, dport))
                sent += 1
    return sent


def send_tcp_syns(link: Link, dports: range) -> int:
    """A non-blocking connect per port: one SYN each (the socket is closed before any retransmit)."""
    for dport in dports:
        with socket.socket(link.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            err = sock.connect_ex((link.peer, dport))
            assert err == errno.EINPROGRESS, errno.errorcode.get(err, err)
    return len(dports)


def send_pings(link: Link, count: int) -> int:
    """ICMP / ICMPv6 echo requests (another protocol: hashed by addresses only)."""
    proto = socket.IPPROTO_ICMP if link.family == socket.AF_INET else socket.IPPROTO_ICMPV6
    kind = 8 if link.family == socket.AF_INET else 128
    with socket.socket(link.family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto) as sock:
        for seq in range(count):
            body = struct.pack("!BBHHH", kind, 0, 0, 0x77, seq) + MARK
            if link.family == socket.AF_INET:
                csum = internet_checksum(body)
                body = body[:2] + struct.pack("!H", csum) + body[4:]
            sock.sendto(body, (link.peer, 0))
    return count


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def tap(netns: NetworkNamespace) -> Iterator[tuple[TunTapDevice, dict[str, Link]]]:
    with TunTapDevice.create("rss%d", mode=DeviceMode.TAP, queues=QUEUES, vnet_hdr=True) as device:
        links = setup_tap(netns, device)
        quiesce(device)
        yield device, links


@pytest.fixture
def tun(netns: NetworkNamespace) -> Iterator[tuple[TunTapDevice, dict[str, Link]]]:
    with TunTapDevice.create("rsstun%d", mode=DeviceMode.TUN, queues=QUEUES, vnet_hdr=True) as device:
        links = setup_tun(netns, device)
        quiesce(device)
        yield device, links


def full_config(rng: random.Random) -> VnetHashConfig:
    return VnetHashConfig(
        rss=True,
        types=HashType.supported_by_kernel_series(),
        indirection_table=tuple(rng.randrange(QUEUES) for _ in range(128)),
        key=rng.randbytes(40),
        unclassified_queue=3,
    )


# ----------------------------------------------------------------------------- tests


def test_tap_steering_follows_the_model(tap: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, links = tap
    rng = random.Random(11)
    config = full_config(rng)
    flows = 0
    with enable_ebpf_rss(device, config) as rss:
        assert device.steering.steering_owner == EBPF_RSS_OWNER
        stack: list[tuple[str, Callable[[], int]]] = [
            ("udp4", lambda: send_udp(links["v4"], range(40000, 40008), range(5000, 5100))),
            ("tcp4", lambda: send_tcp_syns(links["v4"], range(6000, 6150))),
            ("udp6", lambda: send_udp(links["v6"], range(41000, 41004), range(5000, 5060))),
            ("tcp6", lambda: send_tcp_syns(links["v6"], range(6000, 6100))),
            ("icmp4", lambda: send_pings(links["v4"], 10)),
            ("icmp6", lambda: send_pings(links["v6"], 10)),
            ("frag4", lambda: send_udp(links["v4"], range(42000, 42002), range(7000, 7010), size=3000)),
            ("frag6", lambda: send_udp(links["v6"], range(42000, 42002), range(7000, 7010), size=3000)),
        ]
        if "vlan" in links:
            stack += [
                ("vlan4", lambda: send_udp(links["vlan"], range(43000, 43002), range(5000, 5050))),
                ("vlan6", lambda: send_tcp_syns(links["vlan6"], range(6000, 6040))),
                ("qinq4", lambda: send_udp(links["qinq"], range(44000, 44002), range(5000, 5040))),
            ]
        else:
            # No VLAN devices in this kernel (CONFIG_VLAN_8021Q off): the same tagged traffic
            # goes out through an AF_PACKET socket on the TAP.
            stack += [
                ("vlan4", lambda: inject(device.name, tagged_frames([0x8100], 200))),
                ("qinq4", lambda: inject(device.name, tagged_frames([0x88A8, 0x8100], 160))),
            ]
        readouts: dict[str, Readout] = {}
        for name, send in stack:
            sent = send()
            flows += sent
            readouts[name] = read_all(device)
            # 3000-byte datagrams over MTU 1280 make three fragments, the mark only in the first.
            fragmented = name.startswith("frag")
            got = len(readouts[name].frames) // 3 if fragmented else len(readouts[name].ours())
            # TCP SYNs carry no payload to mark; their count is checked through the flows.
            assert got >= sent or name.startswith(("tcp", "vlan6")), (name, got, sent)
        # Random crafted frames (in-band tags, extension headers, truncation, non-IP).
        crafted = [f for f in (random_ethernet_frame(rng) for _ in range(1500)) if len(f) >= 14]
        injected = inject(device.name, crafted)
        readouts["crafted"] = read_all(device)
        assert config == rss.config

    assert flows >= 1000
    assert injected >= 1000
    assert len(readouts["crafted"].frames) >= injected
    total = 0
    for name, readout in readouts.items():
        bad = misrouted(readout, [config], Framing.ETHERNET)
        assert not bad, f"{name}: {len(bad)} of {len(readout.frames)} frames misrouted:\n" + "\n".join(bad[:5])
        total += len(readout.frames)
    # Each kind of traffic really reached the device in the expected shape.
    frag = [f for _q, f in readouts["frag4"].frames if struct.unpack_from("!H", f, VNET_HDR + 20)[0] & 0x3FFF]
    assert len(frag) >= 30
    frag6 = [f for _q, f in readouts["frag6"].frames if f[VNET_HDR + 20] == 44]
    assert len(frag6) >= 30
    tagged = [f for _q, f in readouts["vlan4"].frames if f[VNET_HDR + 12 : VNET_HDR + 14] == b"\x81\x00"]
    assert len(tagged) >= 100
    qinq = [f for _q, f in readouts["qinq4"].frames if f[VNET_HDR + 12 : VNET_HDR + 14] == b"\x88\xa8"]
    assert len(qinq) >= 80
    spread = Counter(q for r in readouts.values() for q, _f in r.frames)
    assert set(spread) == set(range(QUEUES)), spread
    assert total >= 2000


def test_tun_steering_follows_the_model(tun: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, links = tun
    rng = random.Random(12)
    config = full_config(rng)
    with enable_ebpf_rss(device, config):
        sent = send_udp(links["v4"], range(40000, 40004), range(5000, 5100))
        sent += send_tcp_syns(links["v4"], range(6000, 6100))
        sent += send_udp(links["v6"], range(41000, 41004), range(5000, 5050))
        sent += send_tcp_syns(links["v6"], range(6000, 6050))
        sent += send_pings(links["v4"], 5) + send_pings(links["v6"], 5)
        sent += send_udp(links["v4"], range(42000, 42001), range(7000, 7010), size=3000)
        stack = read_all(device)
        crafted = [random_ip_packet(rng) for _ in range(800)]
        injected = inject(device.name, [p for p in crafted if p], ip_only=True)
        raw = read_all(device)
    assert sent >= 600
    assert len(stack.frames) >= sent  # SYNs and fragments carry no mark: count every frame
    assert injected >= 500
    for name, readout in (("stack", stack), ("crafted", raw)):
        bad = misrouted(readout, [config], Framing.IP)
        assert not bad, f"{name}: {len(bad)} misrouted:\n" + "\n".join(bad[:5])
    assert Counter(q for q, _f in stack.frames).keys() == set(range(QUEUES))


def test_live_reconfiguration_never_mixes_configs(tap: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, links = tap
    rng = random.Random(13)
    configs = [full_config(rng)]
    for i in range(1, 40):
        # Each change touches something else: key, table, types, unclassified queue.
        base = configs[-1]
        change = i % 4
        if change == 0:
            configs.append(base.replace(key=rng.randbytes(40)))
        elif change == 1:
            configs.append(base.replace(indirection_table=tuple(rng.randrange(QUEUES) for _ in range(64))))
        elif change == 2:
            configs.append(base.replace(types=rng.choice((HashType.IPV4 | HashType.IPV6, HashType(0x3F)))))
        else:
            configs.append(random_config(rng, max_queue=QUEUES - 1))
    epoch = {"pending": 0, "done": 0}
    seq_epochs: dict[int, tuple[int, int]] = {}
    stop = threading.Event()
    errors: list[BaseException] = []
    v4 = links["v4"]

    def sender() -> None:
        # Started from the test thread, so it is inside the namespace too.
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                seq = 0
                while not stop.is_set():
                    lo = epoch["done"]
                    sock.sendto(MARK + struct.pack("!I", seq), (v4.peer, 5000 + seq % 997))
                    seq_epochs[seq] = (lo, epoch["pending"])
                    seq += 1
                    if seq % 8 == 0:
                        time.sleep(0.0002)  # leave the GIL to the reconfiguring thread
        except BaseException as exc:
            errors.append(exc)

    durations = []
    frames: list[tuple[int, bytes]] = []
    with enable_ebpf_rss(device, configs[0]) as rss:
        thread = threading.Thread(target=sender)
        thread.start()
        try:
            for i, config in enumerate(configs[1:], start=1):
                time.sleep(0.01)  # traffic under each config, and the previous grace period is over
                frames += read_all(device).frames
                epoch["pending"] = i
                t0 = time.perf_counter()
                rss.reconfigure(config)
                durations.append(time.perf_counter() - t0)
                epoch["done"] = i
            time.sleep(0.002)
        finally:
            stop.set()
            thread.join()
        frames += read_all(device).frames
        assert device.steering.steering_attached  # never detached
    assert not errors, errors
    checked = 0
    bad = []
    for queue, buf in frames:
        frame = buf[VNET_HDR:]
        at = frame.find(MARK)
        if at < 0:
            continue
        (seq,) = struct.unpack_from("!I", frame, at + len(MARK))
        lo, hi = seq_epochs[seq]
        allowed = {predict_queue(configs[k], frame, QUEUES) for k in range(lo, hi + 1)}
        checked += 1
        if queue not in allowed:
            bad.append(f"seq {seq} epochs {lo}..{hi}: queue {queue}, allowed {sorted(allowed)}")
    assert checked >= 500, checked
    assert not bad, "\n".join(bad[:10])
    median = sorted(durations)[len(durations) // 2]
    print(f"{checked} frames over {len(durations)} live changes; reconfigure median {median * 1e6:.0f} us")


def test_hash_reports_filled_in_user_space(tap: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, links = tap
    rng = random.Random(14)
    config = full_config(rng).replace(report=True)
    reporter = HashReporter.for_device(device, config)
    with enable_ebpf_rss(device, config):
        send_udp(links["v4"], range(40000, 40002), range(5000, 5040))
        send_tcp_syns(links["v6"], range(6000, 6020))
        filled = [(q.index, buf) for q in device.attached_queues for buf in reporter.drain(q)]
    assert len(filled) >= 60
    buffers = [buf for _q, buf in filled]
    # The kernel zeroes bytes 12..19; the reporter put the model's values there.
    assert verify_reports(buffers, config, vnet_hdr_size=VNET_HDR) == []
    reports = Counter(HashReport(struct.unpack_from("<H", b, 16)[0]) for b in buffers)
    assert reports[HashReport.UDPV4] >= 40 and reports[HashReport.TCPV6] >= 20
    for queue, buf in filled:
        value = struct.unpack_from("<I", buf, 12)[0]
        assert config.indirection_table[value & config.indirection_table_mask] == queue


def test_steering_exclusion_and_release(tap: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, _links = tap
    config = full_config(random.Random(15))
    # Native RSS in force: eBPF RSS is refused before any ioctl.
    device.steering.native_rss = True
    try:
        with pytest.raises(SteeringConflictError) as info:
            enable_ebpf_rss(device, config)
        assert info.value.errno == errno.EBUSY
        assert not device.steering.steering_attached
    finally:
        device.steering.native_rss = False
    # Native hash reports alone do not conflict.
    device.steering.native_report = True
    try:
        with enable_ebpf_rss(device, config) as rss:
            assert device.steering.steering_owner == EBPF_RSS_OWNER
            # A second steering program is refused while eBPF RSS is attached.
            with EbpfRss.load(config) as other, pytest.raises(BusyError):
                other.attach(device)
            with EbpfRss.load(config, DeviceMode.TUN) as wrong_mode, pytest.raises(ValidationError, match="tun"):
                wrong_mode.attach(device)
            prog_id, map_ids = rss.object_ids()
        assert not device.steering.steering_attached
    finally:
        device.steering.native_report = False
    # The bpf conftest checks that prog_id and map_ids are gone; check the ids were real.
    assert prog_id > 0 and all(m > 0 for m in map_ids)


def test_detach_then_close_and_reuse(tap: tuple[TunTapDevice, dict[str, Link]]) -> None:
    device, links = tap
    rng = random.Random(16)
    config = full_config(rng)
    rss = EbpfRss.load(config)
    try:
        rss.attach(device)
        rss.attach(device)  # idempotent for the same device
        rss.detach()
        assert rss.device is None and not device.steering.steering_attached
        send_udp(links["v4"], range(40000, 40001), range(5000, 5020))
        read_all(device)  # automatic steering: nothing to predict
        rss.attach(device)
        send_udp(links["v4"], range(40001, 40002), range(5000, 5020))
        readout = read_all(device)
        assert len(readout.ours()) == 20
        assert not misrouted(readout, [config], Framing.ETHERNET)
    finally:
        rss.close()
    rss.close()
    assert rss.closed and not device.steering.steering_attached
