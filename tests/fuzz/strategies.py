"""Hypothesis strategies that reach deep into the decoders: valid encodings, then damaged ones.

Random bytes alone rarely get past a decoder's first length or magic check, so each strategy
builds a well-formed input from its parts (plans, frames, config mappings, pcap files) and then,
most of the time, damages it: truncation, extension, byte flips, or splicing in random bytes.
:func:`special_file` makes the files that are not data at rest (FIFOs, symlinks, sockets, /proc and
/sys files, devices, directories) for the readers and the writer.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from hypothesis import strategies as st

from pytun_hash import HashType, Revision, VnetHashConfig
from pytun_hash.model import Framing

TCP, UDP, ICMP = 6, 17, 1
HOPOPTS, ROUTING, FRAGMENT, DSTOPTS = 0, 43, 44, 60


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` unchanged (half of the time), or damaged in one to three ways."""
    out = bytearray(data)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        kind = draw(st.sampled_from(["truncate", "extend", "flip", "splice", "set"]))
        if kind == "truncate":
            del out[draw(st.integers(0, len(out))) :]
        elif kind == "extend":
            out += draw(st.binary(max_size=64))
        elif kind == "flip" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "splice":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "set" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
    return bytes(out)


def hash_types() -> st.SearchStrategy[HashType]:
    """Any set of known type bits."""
    return st.integers(0, 0x1FF).map(HashType)


@st.composite
def configs(draw: st.DrawFn) -> VnetHashConfig:
    """Any valid configuration (RSS and reports on or off, any table, key and queue)."""
    rss = draw(st.booleans())
    report = draw(st.booleans())
    types = draw(hash_types())
    if (rss or report) and not types:
        types = HashType.IPV4
    length = 1 << draw(st.integers(0, 7))
    # One draw of 2*length bytes is far cheaper than a list of length integers.
    table = struct.unpack(f"<{length}H", draw(st.binary(min_size=2 * length, max_size=2 * length)))
    return VnetHashConfig(
        rss=rss,
        report=report,
        types=types,
        indirection_table=table,
        key=draw(st.binary(max_size=40)),
        unclassified_queue=draw(st.integers(0, 0xFFFF)),
    )


revisions = st.sampled_from(list(Revision))


# ----------------------------------------------------------------------------- frames


def _ipv4(draw: st.DrawFn, protocol: int, payload: bytes) -> bytes:
    options = draw(st.binary(max_size=40))
    options += bytes(-len(options) % 4)
    ihl = 5 + len(options) // 4 if draw(st.integers(0, 7)) else draw(st.integers(0, 15))
    version = 4 if draw(st.integers(0, 7)) else draw(st.integers(0, 15))
    flags_frag = draw(st.sampled_from([0, 0, 0, 0x4000, 0x4000, 0x2000, 0x0001, 0x2001, draw(st.integers(0, 0xFFFF))]))
    header = struct.pack(
        ">BBHHHBBH4s4s",
        version << 4 | ihl,
        0,
        20 + len(options) + len(payload),
        draw(st.integers(0, 0xFFFF)),
        flags_frag,
        64,
        protocol,
        0,
        draw(st.binary(min_size=4, max_size=4)),
        draw(st.binary(min_size=4, max_size=4)),
    )
    return header + options + payload


def _extension(draw: st.DrawFn, kind: int, following: int) -> bytes:
    if kind == FRAGMENT:
        offset_flags = draw(st.sampled_from([0, 1, 8, 0xFFF9, draw(st.integers(0, 0xFFFF))]))
        return struct.pack(">BBHI", following, 0, offset_flags, draw(st.integers(0, 0xFFFFFFFF)))
    if kind == ROUTING and draw(st.booleans()):
        # A type-2 routing header (Mobile IPv6): 24 bytes, one address.
        return struct.pack(">BBBBI", following, 2, 2, 1, 0) + draw(st.binary(min_size=16, max_size=16))
    if kind == DSTOPTS and draw(st.booleans()):
        # Destination options with a Home Address option (type 201, 16 bytes), padded to 24.
        body = b"\x01\x02\x00\x00" + bytes([201, 16]) + draw(st.binary(min_size=16, max_size=16))
        return struct.pack(">BB", following, 2) + body
    units = draw(st.integers(0, 3))
    return struct.pack(">BB", following, units) + draw(st.binary(min_size=6 + 8 * units, max_size=6 + 8 * units))


def _ipv6(draw: st.DrawFn, protocol: int, payload: bytes) -> bytes:
    kinds = [HOPOPTS, ROUTING, DSTOPTS, HOPOPTS, ROUTING, DSTOPTS, FRAGMENT]
    chain = draw(st.lists(st.sampled_from(kinds), max_size=draw(st.sampled_from([0, 0, 2, 10]))))
    body = payload
    following = protocol
    for kind in reversed(chain):
        body = _extension(draw, kind, following) + body
        following = kind
    version = 6 if draw(st.integers(0, 7)) else draw(st.integers(0, 15))
    header = struct.pack(">IHBB", version << 28, len(body), following, 64)
    return header + draw(st.binary(min_size=32, max_size=32)) + body


@st.composite
def ip_packets(draw: st.DrawFn) -> bytes:
    """An IPv4 or IPv6 packet with a TCP, UDP or other payload (maybe malformed)."""
    protocol = draw(st.sampled_from([TCP, UDP, TCP, UDP, ICMP, 58, 51, 50, draw(st.integers(0, 255))]))
    payload = draw(st.binary(min_size=draw(st.sampled_from([0, 4, 8])), max_size=24))
    if draw(st.booleans()):
        return _ipv4(draw, protocol, payload)
    return _ipv6(draw, protocol, payload)


@st.composite
def frames(draw: st.DrawFn) -> tuple[Framing, bytes]:
    """A framing and a frame as a queue of that framing carries it, often damaged."""
    framing = draw(st.sampled_from(list(Framing)))
    packet = draw(ip_packets())
    version = packet[0] >> 4 if packet else 0
    matching = 0x0800 if version == 4 else 0x86DD
    ethertype = draw(st.sampled_from([matching] * 6 + [0x0800, 0x86DD, 0x0806, draw(st.integers(0, 0xFFFF))]))
    if framing in (Framing.ETHERNET, Framing.ETHERNET_WITH_PI):
        tags = b"".join(
            struct.pack(">HH", draw(st.sampled_from([0x8100, 0x88A8])), draw(st.integers(0, 0xFFFF)))
            for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3])))
        )
        frame = bytes(12) + tags + struct.pack(">H", ethertype) + packet
    else:
        frame = packet
    if framing in (Framing.ETHERNET_WITH_PI, Framing.IP_WITH_PI):
        frame = struct.pack(">HH", 0, ethertype) + frame
    return framing, draw(damaged(frame))


# ----------------------------------------------------------------------------- JSON/TOML-like data

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["all", "TCPV4", "tcpv4|udpv4", "IPV6,TCPV6", "microsoft", "random", "6d5a" * 20, "0x" + "ab" * 40]
    ),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)

_FIELDS = ["rss", "report", "types", "indirection_table", "key", "unclassified_queue"]


@st.composite
def field_values(draw: st.DrawFn, name: str) -> Any:
    """A value for config field ``name``: plausible most of the time, anything otherwise."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "rss": st.booleans(),
        "report": st.booleans(),
        "types": st.one_of(
            st.integers(-2, 0x3FF),
            st.lists(st.sampled_from(["IPV4", "TCPV4", "UDPV4", "IPV6", "TCPV6", "UDPV6", "IP_EX", "all", "x"])),
        ),
        "indirection_table": st.lists(st.integers(-1, 0x10000), min_size=0, max_size=130),
        "key": st.one_of(st.binary(max_size=44).map(bytes.hex), st.sampled_from(["microsoft", "symmetric", "zz"])),
        "unclassified_queue": st.integers(-1, 0x10000),
    }
    return draw(st.one_of(plausible[name], json_values))


@st.composite
def config_mappings(draw: st.DrawFn) -> dict[Any, Any]:
    """A mapping of config fields (known fields with plausible or arbitrary values, some unknown keys)."""
    names = draw(st.lists(st.sampled_from(_FIELDS), unique=True))
    data: dict[Any, Any] = {name: draw(field_values(name)) for name in names}
    if draw(st.integers(0, 9)) == 0:
        data[draw(st.one_of(st.text(max_size=8), st.integers()))] = draw(json_values)
    return data


# ----------------------------------------------------------------------------- special files

#: Kinds of file a user may name where a config or pcap file is read or a config written: what
#: :func:`special_file` makes (or finds) for each. Only ``regular`` and ``symlink-to-regular`` are
#: files a reader may accept; a writer may replace only ``regular`` (with overwrite) and create ``missing``.
SPECIAL_FILE_KINDS = (
    "regular",
    "symlink-to-regular",
    "missing",
    "fifo",
    "symlink-to-fifo",
    "dangling-symlink",
    "symlink-to-proc",
    "directory",
    "socket",
    "/proc/kmsg",
    "/proc/self/status",
    "/proc/self/ns/net",
    "/proc/self/fd/0",
    "/sys/kernel/uevent_seqnum",
    "/sys/power/state",
    "/dev/null",
    "/dev/zero",
    "/proc/self/new.toml",
    "/sys/kernel/new.toml",
)

special_file_kinds = st.sampled_from(SPECIAL_FILE_KINDS)


def special_file(kind: str, directory: str, contents: bytes, suffix: str = ".toml") -> str:
    """A path of ``kind`` (see :data:`SPECIAL_FILE_KINDS`): made in ``directory`` (``regular`` files hold
    ``contents``; symlinks point to files made beside them) or, for absolute kinds, the system's own."""
    if kind.startswith("/"):
        return kind
    path = os.path.join(directory, kind + suffix)
    beside = os.path.join(directory, "aim-" + kind)
    if kind in ("regular", "symlink-to-regular"):
        target = path if kind == "regular" else beside
        with open(target, "wb") as f:
            f.write(contents)
    if kind in ("fifo", "symlink-to-fifo"):
        os.mkfifo(path if kind == "fifo" else beside)
    if kind.startswith("symlink-to-") or kind == "dangling-symlink":
        os.symlink("/proc/self/status" if kind == "symlink-to-proc" else beside, path)
    if kind == "directory":
        os.mkdir(path)
    if kind == "socket":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path)
    return path
