"""Real traffic onto the queues of a TUN/TAP device, from its network namespace's own stack.

The recipe: the device lives in a private network namespace; the namespace's
stack sends to a peer address "behind" the device, so every datagram, SYN or echo request is
transmitted through the device and lands on one of its queues, where it can be read. Which
queue it lands on is what RSS (or any steering program) decides, so the helpers here are what
end-to-end checks of steering are built from:

* :func:`wire` gives the device addresses (IPv4 and IPv6), brings it up and makes sure the
  kernel emits nothing of its own on it: for a TAP, ``IFF_NOARP`` (no ARP, no neighbour
  discovery, no multicast listener reports; frames are addressed to the device's own MAC) or,
  if asked, permanent neighbours; IPv6 without duplicate address detection or router
  solicitations.
* :class:`Flow` is one packet to send: TCP (a SYN, from a non-blocking ``connect``), UDP (a
  datagram), ICMP/ICMPv6 (an echo request) or any other IP protocol (a raw datagram).
  :func:`spread_flows` makes a deterministic mix of them.
* :func:`send` sends flows from inside the namespace (from any thread); :func:`inject` sends
  crafted frames (:mod:`pytun_hash.model.frames`) through the device with ``AF_PACKET``, for what
  no stack sends (fragments, extension headers, VLAN tags, non-IP); :func:`collect` reads
  every attached queue until the expected number of frames arrived and the queues stayed quiet
  for a moment, with a hard time bound; :meth:`Capture.match` pairs frames with flows.

Sockets are created inside the namespace (by :meth:`NetworkNamespace.run`), so the caller's
thread never moves. Every loop here is bounded; only local, private addresses are used.
"""

from __future__ import annotations

# Device code is imported where it is used, not here: `pytun-hash predict` describes flows with
# :class:`Flow` and must not pay for loading netlink, namespaces and devices.
import errno
import ipaddress
import random
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from pytun_hash.errors import ValidationError, kernel_error
from pytun_hash.model import Framing, ParsedFrame, parse_frame
from pytun_hash.model.flow import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    check_flow,
    echo_request,
    flow_packet,
    flow_text,
    parsed_flow_text,
    protocol_name,
)

if TYPE_CHECKING:
    from pytun_hash.device.netns import NetworkNamespace
    from pytun_hash.device.tap import TunTapDevice

__all__ = [
    "DEFAULT_ADDRESSING",
    "MARK",
    "Addressing",
    "Capture",
    "CapturedFrame",
    "Flow",
    "FlowMatch",
    "collect",
    "flow_text",
    "inject",
    "parsed_flow_text",
    "protocol_name",
    "send",
    "spread_flows",
    "wire",
]

#: Payload of every UDP, ICMP and raw datagram :func:`send` emits (TCP SYNs carry none).
MARK = b"pytun-hash traffic"

_PORTED = (IPPROTO_TCP, IPPROTO_UDP)
_IFF_NOARP = 0x80
_ADDRESS_READY_TIMEOUT = 2.0
_PORTS = struct.Struct("!HH")
_ETH_P_ALL = 0x0003
_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD


@attrs.frozen
class Addressing:
    """The addresses :func:`wire` puts on a device's link.

    Attributes:
        ipv4_local: the namespace's own IPv4 address on the device.
        ipv4_peer: the IPv4 address traffic is sent to (nobody answers; it leaves through the device).
        ipv4_prefix: prefix length of the IPv4 subnet, bits.
        ipv6_local: the namespace's own IPv6 address.
        ipv6_peer: the IPv6 peer address.
        ipv6_prefix: prefix length of the IPv6 subnet, bits.
        peer_mac: the peer's MAC for permanent neighbour entries (TAP without ``IFF_NOARP``).

    Raises:
        ValidationError: on construction, for malformed addresses or a peer outside the local subnet.
    """

    ipv4_local: str = "10.77.0.1"
    ipv4_peer: str = "10.77.0.2"
    ipv4_prefix: int = 24
    ipv6_local: str = "fd00:77::1"
    ipv6_peer: str = "fd00:77::2"
    ipv6_prefix: int = 64
    peer_mac: str = "02:00:00:00:00:02"

    def __attrs_post_init__(self) -> None:
        for local, peer, prefix, version in (
            (self.ipv4_local, self.ipv4_peer, self.ipv4_prefix, 4),
            (self.ipv6_local, self.ipv6_peer, self.ipv6_prefix, 6),
        ):
            try:
                net = ipaddress.ip_interface(f"{local}/{prefix}").network
                peer_ip = ipaddress.ip_address(peer)
            except ValueError as exc:
                raise ValidationError(f"ipv{version}", str(exc)) from None
            if net.version != version or peer_ip not in net:
                raise ValidationError(f"ipv{version}_peer", f"{peer} must be an IPv{version} address in {net}")

    def local(self, version: int) -> str:
        """The local address of IP ``version`` (4 or 6)."""
        return self.ipv4_local if version == 4 else self.ipv6_local

    def peer(self, version: int) -> str:
        """The peer address of IP ``version`` (4 or 6)."""
        return self.ipv4_peer if version == 4 else self.ipv6_peer


DEFAULT_ADDRESSING = Addressing()


@attrs.frozen
class Flow:
    """One packet of one flow: protocol, addresses and (for TCP and UDP) ports.

    Attributes:
        protocol: IP protocol number (``socket.IPPROTO_TCP`` ...). ICMP means an echo request
            (``IPPROTO_ICMP`` for IPv4, ``IPPROTO_ICMPV6`` for IPv6); any other number is sent
            as a raw IP datagram carrying :data:`MARK`.
        src: source address (the namespace's local address when sent by :func:`send`).
        dst: destination address.
        sport: source port, TCP and UDP only (0 is a valid description, but :func:`send` lets the
            kernel pick a port for it).
        dport: destination port, TCP and UDP only (:func:`send` needs it non-zero).

    Raises:
        ValidationError: on construction, for mixed address families, missing or extra ports,
            or a protocol outside 0..255.
    """

    protocol: int
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None

    def __attrs_post_init__(self) -> None:
        check_flow(self.protocol, self.src, self.dst, self.sport, self.dport)

    @property
    def version(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.src).version

    @property
    def family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return socket.AF_INET if self.version == 4 else socket.AF_INET6

    @property
    def key(self) -> tuple[bytes, bytes, int, bytes | None]:
        """What a frame of this flow is recognised by: packed addresses, protocol, port bytes (or None)."""
        ports = None if self.sport is None or self.dport is None else struct.pack("!HH", self.sport, self.dport)
        return (
            ipaddress.ip_address(self.src).packed,
            ipaddress.ip_address(self.dst).packed,
            self.protocol,
            ports,
        )

    def __str__(self) -> str:
        return flow_text(self.protocol, self.src, self.dst, self.sport, self.dport)

    def ip_packet(self, payload: bytes = MARK) -> bytes:
        """A synthetic IP packet of this flow (as a TUN queue would carry it), for predictions.

        IPv4 gets a 20-byte header without options and a valid checksum; TCP a 20-byte SYN
        header; UDP an 8-byte header; ICMP an echo request. Only the fields the virtio hash
        reads are meaningful.
        """
        return flow_packet(self.protocol, self.src, self.dst, self.sport, self.dport, payload)


def spread_flows(
    count: int,
    *,
    addressing: Addressing = DEFAULT_ADDRESSING,
    seed: int = 0,
    kinds: Sequence[tuple[int, int]] = (
        (IPPROTO_TCP, 4),
        (IPPROTO_UDP, 4),
        (IPPROTO_TCP, 6),
        (IPPROTO_UDP, 6),
    ),
) -> list[Flow]:
    """``count`` distinct flows from the local to the peer address, cycling through ``kinds``.

    Args:
        count: number of flows, >= 0.
        addressing: where the flows go from and to.
        seed: the ports are drawn from ``random.Random(seed)``: the same seed gives the same flows.
        kinds: ``(protocol, ip_version)`` pairs, used in turn. Non-TCP/UDP kinds give one flow
            each (a flow without ports is the same flow every time).

    Raises:
        ValidationError: for a negative count, an empty ``kinds`` or an unknown IP version.
    """
    if count < 0:
        raise ValidationError("count", f"must be >= 0, got {count}")
    if not kinds:
        raise ValidationError("kinds", "give at least one (protocol, ip_version) pair")
    rng = random.Random(seed)
    used: set[tuple[int, int, int, int]] = set()
    flows: list[Flow] = []
    for i in range(count):
        protocol, version = kinds[i % len(kinds)]
        if version not in (4, 6):
            raise ValidationError("kinds", f"IP version must be 4 or 6, got {version}")
        src, dst = addressing.local(version), addressing.peer(version)
        if protocol not in _PORTED:
            flows.append(Flow(protocol, src, dst))
            continue
        while True:
            sport, dport = rng.randrange(20000, 60000), rng.randrange(1, 0x10000)
            if (protocol, version, sport, dport) not in used:
                used.add((protocol, version, sport, dport))
                break
        flows.append(Flow(protocol, src, dst, sport, dport))
    return flows


# ----------------------------------------------------------------------------- wiring


def _set_noarp(name: str) -> None:
    from pytun_hash.device import rtnl

    with rtnl.RtnlSocket() as sock:
        index = rtnl.get_link(name, sock=sock).index
        # struct ifinfomsg: family, pad, type, index, flags, change (only IFF_NOARP changes).
        payload = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, _IFF_NOARP, _IFF_NOARP)
        sock.request(rtnl.RTM_NEWLINK, rtnl.NLM_F_ACK, payload, name="RTM_NEWLINK")


def wire(
    ns: NetworkNamespace,
    device: TunTapDevice,
    addressing: Addressing = DEFAULT_ADDRESSING,
    *,
    ipv6: bool = True,
    noarp: bool = True,
    mtu: int | None = None,
) -> None:
    """Address ``device`` (in ``ns``) and bring it up, so traffic to the peer leaves through it.

    Afterwards nothing but what is sent appears on the queues: a TAP gets ``IFF_NOARP``
    (``noarp=True``: no ARP or neighbour discovery, no multicast listener reports; frames go to
    the device's own MAC) or permanent neighbour entries for the peers (``noarp=False``; IPv6
    then still emits multicast listener reports now and then). IPv6 runs without duplicate
    address detection and router solicitations; this returns once the IPv6 address can be
    bound. Any frame queued before this returns is read and discarded.

    Args:
        ns: the namespace the device was created in (any thread may call this).
        device: the device; TUN or TAP.
        addressing: the addresses.
        ipv6: also configure IPv6 (else IPv6 is disabled on the device).
        noarp: see above (TAP only).
        mtu: the link MTU in bytes, or None to keep it.

    Raises:
        KernelError: when a netlink request or sysctl fails (``EPERM`` without CAP_NET_ADMIN).
        ValidationError: for a malformed address.
    """
    name = device.name
    # Path form: interface names may contain dots.
    if ipv6:
        for key, value in (("accept_dad", 0), ("router_solicitations", 0), ("disable_ipv6", 0)):
            ns.write_sysctl(f"net/ipv6/conf/{name}/{key}", value)
    elif ns.run(_has_ipv6_conf, name):
        ns.write_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", 1)
    if mtu is not None:
        ns.set_link_mtu(name, mtu)
    from pytun_hash.device.tap import DeviceMode

    tap = device.mode is DeviceMode.TAP
    if tap and noarp:
        ns.run(_set_noarp, name)
    ns.add_address(name, f"{addressing.ipv4_local}/{addressing.ipv4_prefix}")
    if ipv6:
        ns.add_address(name, f"{addressing.ipv6_local}/{addressing.ipv6_prefix}")
    if tap and not noarp:
        ns.add_neighbour(name, addressing.ipv4_peer, addressing.peer_mac)
        if ipv6:
            ns.add_neighbour(name, addressing.ipv6_peer, addressing.peer_mac)
    ns.set_link_up(name)
    if ipv6:
        ns.run(_wait_until_bindable, addressing.ipv6_local, _ADDRESS_READY_TIMEOUT)
    for queue in device.attached_queues:
        queue.drain()


def _wait_until_bindable(address: str, timeout: float) -> None:
    """Wait until ``address`` leaves the tentative state (it cannot be bound before).

    Even without duplicate address detection, the kernel finishes adding an IPv6 address in a
    work item, so it is usable a moment after the netlink request returned.
    """
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
            try:
                probe.bind((address, 0))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
                    raise kernel_error(
                        exc.errno or errno.EIO,
                        f"bind({address})",
                        f"the address did not become usable within {timeout} s; is the device up?",
                    ) from None
        time.sleep(0.001)


def _has_ipv6_conf(name: str) -> bool:
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", encoding="ascii"):
            return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- sending


def _send_one(flow: Flow, payload: bytes, sequence: int) -> None:
    local = (flow.src, flow.sport or 0)
    if flow.protocol == IPPROTO_UDP:
        with socket.socket(flow.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.bind(local)
            sock.sendto(payload, (flow.dst, flow.dport or 0))
        return
    if flow.protocol == IPPROTO_TCP:
        kind = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(flow.family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(local)
            # Closing a socket in SYN_SENT sends nothing more: exactly one SYN per flow.
            err = sock.connect_ex((flow.dst, flow.dport or 0))
            if err != errno.EINPROGRESS:
                raise kernel_error(err, "connect", f"the SYN of {flow} was not sent; is the device up?")
        return
    body = payload
    if flow.protocol in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        body = echo_request(flow.version, sequence, payload)
    with socket.socket(flow.family, socket.SOCK_RAW | socket.SOCK_CLOEXEC, flow.protocol) as sock:
        sock.bind((flow.src, 0))
        sock.sendto(body, (flow.dst, 0))


def _send_all(flows: Sequence[Flow], payload: bytes) -> int:
    for i, flow in enumerate(flows):
        try:
            _send_one(flow, payload, i)
        except OSError as exc:
            raise kernel_error(
                exc.errno or errno.EIO,
                f"send({flow})",
                "check that wire() configured the device and it is up",
            ) from None
    return len(flows)


def send(ns: NetworkNamespace, flows: Iterable[Flow], *, payload: bytes = MARK) -> int:
    """Send one packet per flow from inside ``ns``; return how many were sent.

    Transmission through a tun device is synchronous: when this returns, every frame is
    readable on the queue it was steered to.

    Raises:
        KernelError: when a socket call fails (``EPERM`` for raw sockets without CAP_NET_RAW,
            ``EADDRNOTAVAIL`` when the device lacks the source address ...).
    """
    return ns.run(_send_all, list(flows), payload)


def _inject_all(ifname: str, frames: Sequence[bytes], ip_only: bool) -> int:
    kind = socket.SOCK_DGRAM if ip_only else socket.SOCK_RAW
    sent = 0
    try:
        sock = socket.socket(socket.AF_PACKET, kind | socket.SOCK_CLOEXEC, socket.htons(_ETH_P_ALL))
    except OSError as exc:
        raise kernel_error(
            exc.errno or errno.EIO, "socket(AF_PACKET)", "sending crafted frames needs CAP_NET_RAW"
        ) from None
    with sock:
        for frame in frames:
            try:
                if ip_only:
                    proto = _ETH_P_IPV6 if frame and frame[0] >> 4 == 6 else _ETH_P_IP
                    sock.sendto(frame, (ifname, proto))
                else:
                    sock.sendto(frame, (ifname, 0))
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.EMSGSIZE):
                    continue  # malformed for the link (shorter than its header) or longer than its MTU
                raise kernel_error(
                    exc.errno or errno.EIO, f"sendto({ifname})", "check that the interface exists here and is up"
                ) from None
            sent += 1
    return sent


def inject(ifname: str, frames: Iterable[bytes], *, ns: NetworkNamespace | None = None, ip_only: bool = False) -> int:
    """Send crafted frames out through interface ``ifname`` with an ``AF_PACKET`` socket; return how many went.

    Each frame takes the interface's transmit path as it is, with no stack in between: on a
    TUN/TAP device that path runs tun's queue selection (its steering program, or RSS on a
    kernel with the hash series), and the frame lands, byte for byte, on one of the device's
    queues. Build frames with :mod:`pytun_hash.model.frames`. Transmission is synchronous: when
    this returns, every frame sent is readable.

    Args:
        ifname: the interface (the link must be up).
        frames: Ethernet frames (a TAP), or with ``ip_only`` IP packets (a TUN; the ethertype
            follows each packet's version nibble).
        ns: the namespace ``ifname`` lives in; None: the calling thread's.
        ip_only: see ``frames``.

    Returns:
        The frames sent. Frames the kernel refuses for the link (``EINVAL``: shorter than its
        header; ``EMSGSIZE``: longer than its MTU) are skipped and not counted.

    Raises:
        KernelError: when the socket cannot be made (``EPERM`` without CAP_NET_RAW) or a send
            fails otherwise (``ENODEV``/``ENXIO``: no such interface here; ``ENETDOWN``: the link is down).
    """
    batch = list(frames)
    if ns is None:
        return _inject_all(ifname, batch, ip_only)
    return ns.run(_inject_all, ifname, batch, ip_only)


# ----------------------------------------------------------------------------- collecting


@attrs.frozen
class CapturedFrame:
    """One buffer read from a queue.

    Attributes:
        queue: the kernel's index of the queue it was read from.
        buffer: what ``read()`` returned (packet information and vnet header included).
        frame_offset: where the Ethernet frame (TAP) or IP packet (TUN) starts in ``buffer``.
    """

    queue: int
    buffer: bytes
    frame_offset: int

    @property
    def frame(self) -> bytes:
        """The frame without packet information and vnet header."""
        return self.buffer[self.frame_offset :]


@attrs.frozen
class FlowMatch:
    """A captured frame and the flow it belongs to (None for a frame of no known flow)."""

    frame: CapturedFrame
    flow: Flow | None


@attrs.frozen
class Capture:
    """Everything :func:`collect` read, in reading order.

    Attributes:
        frames: the captured frames.
        framing: how the frames are framed (for the model's parser).
        timed_out: True when fewer frames than expected arrived within the time bound.
    """

    frames: tuple[CapturedFrame, ...]
    framing: Framing
    timed_out: bool = False

    def by_queue(self) -> dict[int, list[CapturedFrame]]:
        """The frames grouped by queue index (only queues that received something)."""
        out: dict[int, list[CapturedFrame]] = {}
        for frame in self.frames:
            out.setdefault(frame.queue, []).append(frame)
        return out

    def match(self, flows: Iterable[Flow]) -> list[FlowMatch]:
        """Pair every captured frame with the flow it carries (by addresses, protocol and ports).

        Frames of no listed flow (the kernel's own traffic, or another sender's) get ``flow=None``.
        """
        by_key = {flow.key: flow for flow in flows}
        matches = []
        for frame in self.frames:
            parsed = parse_frame(frame.frame, self.framing)
            matches.append(FlowMatch(frame, None if parsed is None else by_key.get(_parsed_key(parsed))))
        return matches


def _parsed_key(parsed: ParsedFrame) -> tuple[bytes, bytes, int, bytes | None]:
    return (parsed.src, parsed.dst, parsed.protocol, parsed.ports)


def _framing_of(device: TunTapDevice) -> Framing:
    from pytun_hash.device.tap import DeviceMode

    return Framing.for_device(tap=device.mode is DeviceMode.TAP, packet_info=False)


def collect(device: TunTapDevice, *, expected: int | None = None, timeout: float = 1.0, quiet: float = 0.02) -> Capture:
    """Read every attached queue of ``device`` until it has been quiet for ``quiet`` seconds.

    With ``expected``, reading goes on (up to ``timeout`` seconds in all) until that many frames
    arrived, and then for one more quiet period to catch extra frames. Without it, reading stops
    at the first quiet period. Queue indexes are the device object's (see
    :attr:`~pytun_hash.device.tap.Queue.index`).

    Args:
        device: the device; its queue fds are read non-blocking whatever their mode.
        expected: the number of frames to wait for, or None.
        timeout: the upper bound on the whole call, seconds.
        quiet: how long no frame must arrive to stop, seconds.

    Raises:
        KernelError: when a read fails (``EBADFD``: the device was deleted).
        ValidationError: for a negative timeout or quiet period.
    """
    if timeout < 0 or quiet < 0:
        raise ValidationError("timeout", "timeout and quiet must be >= 0 seconds")
    pi = 4 if device.packet_info else 0
    offset = pi + (device.get_vnet_hdr_size() if device.vnet_hdr else 0)
    queues = [(q.index or 0, q) for q in device.attached_queues]
    poller = select.poll()
    for _index, queue in queues:
        poller.register(queue.fd, select.POLLIN)
    frames: list[CapturedFrame] = []
    deadline = time.monotonic() + timeout
    while True:
        for index, queue in queues:
            # drain() polls before each read, so a blocking queue fd never blocks here.
            frames.extend(CapturedFrame(index, buffer, offset) for buffer in queue.drain())
        remaining = deadline - time.monotonic()
        waiting = expected is not None and len(frames) < expected
        if remaining <= 0:
            return Capture(tuple(frames), _framing_of(device), timed_out=waiting)
        wait = remaining if waiting else min(quiet, remaining)
        if not poller.poll(max(1, int(wait * 1000))) and not waiting:
            return Capture(tuple(frames), _framing_of(device))
