"""Traffic helpers for kernel tests: wire a TAP into its namespace, send UDP, see which queue got it."""

from __future__ import annotations

import socket
import struct

from pytun_hash.device import NetworkNamespace, Queue, TunTapDevice

TAP_ADDR = "10.77.0.1"
PEER_ADDR = "10.77.0.2"
PEER_MAC = "02:00:00:00:00:02"
ETH_HLEN = 14


def wire_tap(ns: NetworkNamespace, name: str) -> None:
    """Address, link up and a permanent neighbour, so UDP to PEER_ADDR leaves through ``name`` without ARP."""
    ns.add_address(name, f"{TAP_ADDR}/24")
    ns.set_link_up(name)
    ns.add_neighbour(name, PEER_ADDR, PEER_MAC)


def udp_socket() -> socket.socket:
    """A UDP socket in the calling thread's namespace."""
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)


def drain_all(device: TunTapDevice) -> dict[int, list[bytes]]:
    """Every frame queued now, by position in ``device.queues`` (attached and detached)."""
    return {i: q.drain() for i, q in enumerate(device.queues)}


def queue_of_next_frame(device: TunTapDevice, sock: socket.socket, port: int) -> Queue:
    """Send one UDP datagram to PEER_ADDR:port and return the queue the frame landed on.

    Transmission is synchronous on the tun path, so the frame is readable when sendto returns.
    """
    sock.sendto(b"pytun-hash", (PEER_ADDR, port))
    landed = [(q, f) for q in device.queues for f in q.drain()]
    assert len(landed) == 1, f"expected exactly one frame, got {len(landed)}"
    return landed[0][0]


def ipv4_checksum(header: bytes) -> int:
    """RFC 1071 checksum of an IPv4 header whose checksum field is zero."""
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(dst_mac: bytes, src_ip: str, dst_ip: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An Ethernet + IPv4 + UDP frame (UDP checksum 0, i.e. none)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        1,
        0x4000,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src_ip),
        socket.inet_aton(dst_ip),
    )
    ip = ip[:10] + struct.pack("!H", ipv4_checksum(ip)) + ip[12:]
    src_mac = bytes.fromhex(PEER_MAC.replace(":", ""))
    return dst_mac + src_mac + b"\x08\x00" + ip + udp
