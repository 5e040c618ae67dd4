"""What to do about an invalid value: one hint per field a user can get wrong.

A :class:`~pytun_hash.errors.ValidationError` names its field (``--key``, ``indirection_table[3]``,
``flow.sport``, ``types[0]``); :func:`hint_for` turns that name into the sentence that tells the
user the accepted forms of exactly that value, with an example. A rule the raising code knows
better (``ValidationError.hint``) wins.
"""

from __future__ import annotations

import re

from pytun_hash.errors import ValidationError

__all__ = ["GENERIC_HINT", "hint_for"]

#: The hint of a field this table does not know (a bug to fix: every field should have its own).
GENERIC_HINT = "fix the value named above (see --help for the accepted forms)"

_FLOW = (
    "write a flow as PROTO,SRC:PORT,DST:PORT, e.g. tcp,10.0.0.1:40000,10.0.0.2:443; IPv6 addresses go in "
    "brackets: udp,[2001:db8::1]:5353,[2001:db8::2]:53 (ports only for tcp and udp)"
)
_TABLE = (
    "give queue numbers and ranges, e.g. --table 0-3 or --table 0,1,2,3,0,1,2,3 (a power-of-two count of "
    "entries, at most 128), or let --equal N / --weight W0,W1,... build it"
)
_QUEUES = "give the number of queues the VMM attaches: 1..256 (a TUN/TAP device holds at most 256)"

# Field names without their option dashes, indexes and sub-fields, dashes as underscores.
_HINTS: dict[str, str] = {
    "key": "give 40 bytes as 80 hex digits (colons allowed), or microsoft, symmetric or random",
    "indirection_table": _TABLE,
    "table": _TABLE,
    "table_length": "give a power of two from 1 to 128 (--table-length 128 is the usual)",
    "types": (
        "give hash types separated by commas, e.g. --types tcpv4,udpv4,ipv4 (ethtool's tcp4, udp4, ip4, "
        "tcp6, udp6, ip6 work too), or all"
    ),
    "unclassified_queue": "give the queue for packets no enabled type hashes, below the queue count (0 is usual)",
    "queues": _QUEUES,
    "equal": _QUEUES,
    "weight": "give one non-negative weight per queue, at least one non-zero, e.g. --weight 2,1,1,1",
    "weights": "give one non-negative weight per queue, at least one non-zero, e.g. --weight 2,1,1,1",
    "rss": "write true or false (rss = true in a TOML file)",
    "report": "write true or false (report = true in a TOML file; reports need a 20-byte little-endian vnet header)",
    "flow": _FLOW,
    "protocol": "name the protocol as tcp, udp, icmp or a number 0..255, e.g. tcp,10.0.0.1:1,10.0.0.2:2",
    "config": (
        "give a readable TOML or JSON file of config fields (rss, report, types, indirection_table, key, "
        "unclassified_queue); examples/configs/ has samples"
    ),
    "section": "name a table of the config file that holds the config fields",
    "name": "use an interface name of 1..15 bytes without '/', ':', spaces or NUL, e.g. tap0",
    "device": "name an existing TUN/TAP device (`ip -d link show type tun` lists them)",
    "owner": "give a user name from /etc/passwd or a numeric uid in ASCII digits",
    "group": "give a group name from /etc/group or a numeric gid in ASCII digits",
    "vnet_hdr_size": "give 10, 12, or 20 for hash reports (the kernel accepts 8 or more)",
    "revision": "name a revision: rfc, v3 ... v9, v10, v11 or v12 (`pytun-hash probe` says which the kernel has)",
    "src": "give an IPv4 or IPv6 address, e.g. --src 10.0.0.1 or --src 2001:db8::1",
    "dst": "give an IPv4 or IPv6 address, e.g. --dst 10.0.0.2 or --dst 2001:db8::2",
    "sport": "give a port 0..65535 (only for tcp and udp)",
    "dport": "give a port 0..65535 (only for tcp and udp)",
    "frame": "give a whole Ethernet frame as hex (e.g. from `tcpdump -xx`)",
    "input": "give the hash input bytes as hex (addresses, then ports, as the virtio specification lists them)",
    "pcap": "give a capture file written by tcpdump -w, dumpcap or Wireshark (pcap or pcapng)",
    "save": "name a new file in a writable directory (--force replaces an existing regular file)",
    "packets": "give a number of packets of at least 1",
    "seed": "give a non-negative integer seed",
    "timeout": "give seconds as a number >= 0",
    "arch": "use a platform.machine() name: x86_64, aarch64, ppc64le, s390x ...",
    "version": "this record was written by another pytun_hash version: remove it (`pytun-hash disable --force`)",
}

_INDEX = re.compile(r"\[[^\]]*\]")


def _base(field: str) -> str:
    """``--unclassified-queue`` -> ``unclassified_queue``; ``types[0]`` -> ``types``; ``flow.sport`` -> ``flow``."""
    name = _INDEX.sub("", field.lstrip("-")).replace("-", "_")
    return name.split(".", 1)[0]


def hint_for(exc: ValidationError) -> str:
    """The hint for ``exc``: its own when it has one, else the one for its field, else :data:`GENERIC_HINT`."""
    own = getattr(exc, "hint", None)
    if own:
        return str(own)
    if exc.field is None:
        return _HINTS["config"] if "TOML" in exc.rule or "JSON" in exc.rule else GENERIC_HINT
    return _HINTS.get(_base(exc.field), GENERIC_HINT)
