"""Hypothesis strategies that reach deep into the decoders: valid encodings, then damaged ones.

Random bytes alone rarely get past a decoder's first length or magic check, so each strategy
builds a well-formed input from its parts (plans, frames, config mappings, pcap files) and then,
most of the time, damages it: truncation, extension, byte flips, or splicing in random bytes.
:func:`special_file` makes the files that are not data at rest (FIFOs, symlinks, sockets, /proc and
/sys files, devices, directories) for the readers and the writer.

Hostile sizes (the last section) are what plausible strategies never make: integers past Python's
int-string limit, nesting near and past the recursion limit, megabyte strings and lists.
"""

from __future__ import annotations

import json
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
def field_values(draw: st.DrawFn, name: str, *, hostile: bool = True) -> Any:
    """A value for config field ``name``: plausible, anything, or (with ``hostile``) of a hostile size."""
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
    if hostile and draw(st.integers(0, 5)) == 0:
        return draw(hostile_values)
    return draw(st.one_of(plausible[name], json_values))


@st.composite
def config_mappings(draw: st.DrawFn, *, hostile: bool = True) -> dict[Any, Any]:
    """A mapping of config fields (known fields with plausible or arbitrary values, some unknown keys);
    with ``hostile``, values and unknown keys of hostile sizes too (Python values: they may not
    survive ``json.dumps``, so text formats draw ``hostile=False`` and use :func:`hostile_config_texts`)."""
    names = draw(st.lists(st.sampled_from(_FIELDS), unique=True))
    data: dict[Any, Any] = {name: draw(field_values(name, hostile=hostile)) for name in names}
    if draw(st.integers(0, 9)) == 0:
        keys = st.one_of(st.text(max_size=8), st.integers(), *([huge_ints(), long_texts()] if hostile else []))
        data[draw(keys)] = draw(json_values)
    if hostile and draw(st.integers(0, 19)) == 0:
        # Many unknown fields at once.
        data.update({f"unknown{i}": i for i in range(draw(st.integers(0, 50_000)))})
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


# ----------------------------------------------------------------------------- hostile sizes
# An outside harness broke the config loaders in 310 of 10,077 examples with these while the
# strategies above, which stay plausible, never did. Sizes are drawn as numbers and built by
# repetition, so a 3 MB string costs one draw (and hypothesis shrinks the number).

#: Digit counts around Python's int-string limit (sys.get_int_max_str_digits(), 4,300) and past it.
digit_counts = st.one_of(st.sampled_from([4300, 4301, 5000]), st.integers(1, 8000))
#: Nesting depths around the recursion limit (1,000 frames) and far past it.
depths = st.one_of(st.sampled_from([990, 995, 1000, 5000]), st.integers(1, 5000))
#: Lengths around execve's limit for one argument (128 KiB) and the config file limit (1 MiB), and past.
lengths = st.one_of(
    st.sampled_from([1 << 17, 900_000, (1 << 20) - 64, (1 << 20) + 1, 3 << 20]),
    st.integers(0, 1 << 20),
    st.integers(0, 3 << 20),
)
#: Entries of a long list: up to what a 1 MiB config file can hold.
counts = st.one_of(st.sampled_from([129, 250_000]), st.integers(0, 100_000))


@st.composite
def huge_ints(draw: st.DrawFn) -> int:
    """An integer of thousands of digits (built by arithmetic: ``str()`` of it may itself be refused)."""
    value: int = draw(st.sampled_from([10, 16, 2])) ** draw(digit_counts) - draw(st.integers(0, 9))
    return -value if draw(st.booleans()) else value


@st.composite
def deep_values(draw: st.DrawFn) -> Any:
    """Lists or single-key tables nested up to 5,000 levels (built in a loop, not recursively)."""
    value: Any = draw(st.sampled_from([0, "x", True, None, 10**5000]))
    as_table = draw(st.booleans())
    for _ in range(draw(depths)):
        value = {"a": value} if as_table else [value]
    return value


#: Characters for long text: ASCII, non-ASCII digits, other non-ASCII letters.
_LONG_CHARS = ["z", "0", "9", ",", " ", "\u0663", "\uff10", "\u00e9"]


def long_texts(chars: list[str] | None = None) -> st.SearchStrategy[str]:
    """One character repeated up to 3 MB."""
    return st.builds(lambda ch, n: ch * n, st.sampled_from(chars or _LONG_CHARS), lengths)


hostile_values: st.SearchStrategy[Any] = st.one_of(
    huge_ints(),
    deep_values(),
    long_texts([*_LONG_CHARS, "\udcff"]),
    st.builds(lambda v, n: [v] * n, st.sampled_from([-1, 0x10000, "x", "TCPV4", None, [0]]), counts),
)


@st.composite
def hostile_config_texts(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(suffix, contents)`` of a JSON or TOML config with one value (or field name) of a hostile size."""
    is_json = draw(st.booleans())
    field = draw(st.sampled_from([*_FIELDS, "x"]))
    kind = draw(st.sampled_from(["digits", "based", "deep-list", "deep-table", "long-string", "long-name", "many"]))
    value = "1"
    if kind == "digits":
        value = draw(st.sampled_from(["", "-"])) + "9" * draw(digit_counts)
    elif kind == "based":  # TOML's 0x/0o/0b integers parse at any length; JSON refuses them
        prefix, digit = draw(st.sampled_from([("0x", "f"), ("0o", "7"), ("0b", "1")]))
        value = prefix + digit * draw(digit_counts)
    elif kind == "deep-list":
        depth = draw(depths)
        value = "[" * depth + "]" * depth
    elif kind == "deep-table":
        depth = draw(depths)
        value = ('{"a": ' if is_json else "{a = ") * depth + "1" + "}" * depth
    elif kind == "long-string":
        value = '"' + draw(long_texts()) + '"'
    elif kind == "long-name":
        field = draw(long_texts())
    else:
        value = "[" + "-1, " * draw(counts) + "-1]"
    key = json.dumps(field)  # a quoted key is valid in both formats
    text = f"{{{key}: {value}}}" if is_json else f"{key} = {value}\n"
    return (".json" if is_json else ".toml"), text.encode("utf-8")


#: Command-line arguments of hostile sizes and digits that int() takes but an identifier must not have.
hostile_arguments: st.SearchStrategy[str] = st.one_of(
    st.builds(lambda n: "9" * n, digit_counts),
    st.builds(lambda p, n: p + "9" * n, st.sampled_from(["0x", "v", "0-", "-", "1,"]), digit_counts),
    long_texts([*_LONG_CHARS, "0-127,", "\udcff", "tcp,", "[::1]:"]),
    st.sampled_from(["\u0661\u0660\u0660\u0660", "\uff10", "\u0664", "0-100000000", "4294967296", "1_000", " 1"]),
)
