"""Capture files built byte by byte (independent of the reader under test): classic pcap, pcapng
blocks, Linux cooked (SLL, SLL2) records."""

from __future__ import annotations

import struct

#: ``struct`` byte order -> classic pcap magic for microseconds / nanoseconds.
PCAP_US = 0xA1B2C3D4
PCAP_NS = 0xA1B23C4D


def pcap(linktype: int, records: list[bytes], *, order: str = "<", magic: int = PCAP_US) -> bytes:
    """A classic pcap file: timestamps 1700000000 + i seconds and i fractions, nothing truncated."""
    out = struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, data in enumerate(records):
        out += struct.pack(f"{order}IIII", 1700000000 + i, i, len(data), len(data)) + data
    return out


def block(kind: int, body: bytes, order: str = "<") -> bytes:
    """A pcapng block: type, total length, ``body`` padded to 4 bytes, total length."""
    body += bytes(-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(f"{order}II", kind, length) + body + struct.pack(f"{order}I", length)


def option(code: int, value: bytes, order: str = "<") -> bytes:
    """A pcapng option, padded to 4 bytes."""
    return struct.pack(f"{order}HH", code, len(value)) + value + bytes(-len(value) % 4)


def shb(order: str = "<", options: bytes = b"") -> bytes:
    """A Section Header Block (version 1.0, unknown section length)."""
    return block(0x0A0D0D0A, struct.pack(f"{order}IHHq", 0x1A2B3C4D, 1, 0, -1) + options, order)


def idb(linktype: int, order: str = "<", *, snaplen: int = 0, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    """An Interface Description Block, with ``if_tsresol`` / ``if_tsoffset`` options when given."""
    options = b""
    if tsresol is not None:
        options += option(9, bytes([tsresol]), order)
    if tsoffset:
        options += option(14, struct.pack(f"{order}q", tsoffset), order)
    if options:
        options += option(0, b"", order)
    return block(1, struct.pack(f"{order}HHI", linktype, 0, snaplen) + options, order)


def epb(interface: int, data: bytes, order: str = "<", *, stamp: int = 0, original: int | None = None) -> bytes:
    """An Enhanced Packet Block (``stamp`` in the interface's units)."""
    original = len(data) if original is None else original
    head = struct.pack(f"{order}IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF, len(data), original)
    return block(6, head + data, order)


def spb(data: bytes, order: str = "<", *, original: int | None = None) -> bytes:
    """A Simple Packet Block."""
    return block(3, struct.pack(f"{order}I", len(data) if original is None else original) + data, order)


def sll(frame: bytes) -> bytes:
    """The Linux cooked (v1) record of an Ethernet ``frame``: packet type, ARPHRD_ETHER, the source
    MAC, then the ethertype (VLAN tags stay in the payload, as libpcap re-inserts them)."""
    return struct.pack(">HHH8s", 0, 1, 6, frame[6:12] + b"\0\0") + frame[12:]


def sll2(frame: bytes, ifindex: int = 3) -> bytes:
    """The Linux cooked (v2) record of an Ethernet ``frame``: protocol, reserved, interface index,
    ARPHRD_ETHER, packet type, address length, address, then the payload after the ethertype."""
    return (
        struct.pack(">HHIHBB8s", int.from_bytes(frame[12:14], "big"), 0, ifindex, 1, 0, 6, frame[6:12] + b"\0\0")
        + frame[14:]
    )
