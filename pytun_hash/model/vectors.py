"""Published Toeplitz known answers: Microsoft's "Verifying the RSS Hash Calculation" tables.

With the 40-byte key :data:`pytun_hash.config.MICROSOFT_RSS_KEY`. The published tables list the
destination column first; the hash input is source address, destination address, source port,
destination port (feeding the columns in table order gives other values). The same rows appear in
DPDK ``app/test/test_thash.c`` and FD.io VPP ``src/vppinfra/test/toeplitz.c``. The model's tests
check :func:`~pytun_hash.model.toeplitz.toeplitz_hash` against them, and the conformance suite
(``data.toeplitz``) checks a kernel's reported hashes against them.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["MICROSOFT_IPV4", "MICROSOFT_IPV6", "RssVector"]


class RssVector(NamedTuple):
    """One row of a published table: a flow and its two hashes.

    Attributes:
        src: source address.
        sport: source port.
        dst: destination address.
        dport: destination port.
        ip_only: the hash of the addresses alone (the IPv4 / IPv6 hash types).
        with_ports: the hash of addresses and ports (TCPv4/TCPv6, and UDP with the same tuple).
    """

    src: str
    sport: int
    dst: str
    dport: int
    ip_only: int
    with_ports: int


#: The IPv4 rows.
MICROSOFT_IPV4 = (
    RssVector("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    RssVector("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    RssVector("24.19.198.95", 12898, "12.22.207.184", 38024, 0xD2D0A5DE, 0x5C2B394A),
    RssVector("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xAFC7327F),
    RssVector("153.39.163.191", 44251, "202.188.127.2", 1303, 0x5D1809C5, 0x10E828A2),
)

#: The IPv6 rows.
MICROSOFT_IPV6 = (
    RssVector("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    RssVector("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
    RssVector("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251, "fe80::200:f8ff:fe21:67cf", 38024, 0x4B61E985, 0x02D1FEEF),
)
