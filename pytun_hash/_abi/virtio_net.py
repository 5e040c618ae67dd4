"""``linux/virtio_net.h`` as data: hash types, hash report values, vnet header structures.

Hash *types* (``VIRTIO_NET_RSS_HASH_TYPE_*``) are bit flags that select what may be
hashed; hash *reports* (``VIRTIO_NET_HASH_REPORT_*``) are enumeration values that say
what was hashed. The relation is ``TYPE == 1 << (REPORT - 1)``; the two are kept as
distinct Python types because the kernel series mixed them up (see the docs).
"""

from __future__ import annotations

import enum

from pytun_hash.errors import ValidationError


class HashType(enum.IntFlag):
    """``VIRTIO_NET_RSS_HASH_TYPE_*``: which packet kinds may be hashed."""

    IPV4 = 1 << 0
    TCPV4 = 1 << 1
    UDPV4 = 1 << 2
    IPV6 = 1 << 3
    TCPV6 = 1 << 4
    UDPV6 = 1 << 5
    IP_EX = 1 << 6
    TCP_EX = 1 << 7
    UDP_EX = 1 << 8

    @classmethod
    def all_known(cls) -> HashType:
        """Every defined bit (0x1ff)."""
        return cls(0x1FF)

    @classmethod
    def supported_by_kernel_series(cls) -> HashType:
        """The set every revision of the tun series supports: IPv4/IPv6 x IP/TCP/UDP (0x3f)."""
        return cls(0x3F)

    @property
    def report(self) -> HashReport:
        """The report value of a single type bit.

        Raises:
            ValidationError: (a ValueError) when ``self`` is not exactly one bit.
        """
        value = int(self)
        if value == 0 or value & (value - 1):
            raise ValidationError("types", f"{self!r} is not a single hash type bit")
        return HashReport(value.bit_length())


class HashReport(enum.IntEnum):
    """``VIRTIO_NET_HASH_REPORT_*``: what the reported hash value was computed over."""

    NONE = 0
    IPV4 = 1
    TCPV4 = 2
    UDPV4 = 3
    IPV6 = 4
    TCPV6 = 5
    UDPV6 = 6
    IPV6_EX = 7
    TCPV6_EX = 8
    UDPV6_EX = 9

    @property
    def hash_type(self) -> HashType:
        """The type bit that enables this report (``1 << (value - 1)``).

        Raises:
            ValidationError: (a ValueError) for :attr:`NONE`, which no type bit enables.
        """
        if self is HashReport.NONE:
            raise ValidationError("report", "HashReport.NONE has no hash type")
        return HashType(1 << (self.value - 1))


class VirtioNetHdrFlag(enum.IntFlag):
    """``VIRTIO_NET_HDR_F_*``."""

    NEEDS_CSUM = 1
    DATA_VALID = 2
    RSC_INFO = 4


class VirtioNetHdrGso(enum.IntEnum):
    """``VIRTIO_NET_HDR_GSO_*`` (without the ECN bit)."""

    NONE = 0
    TCPV4 = 1
    UDP = 3
    TCPV6 = 4
    UDP_L4 = 5


VIRTIO_NET_HDR_GSO_ECN = 0x80

# Feature bits relevant to hashing (virtio 1.2 section 5.1.3): the control queue RSS and reports are
# configured on, multiqueue, hash reports, RSS.
VIRTIO_NET_F_CTRL_VQ = 17
VIRTIO_NET_F_MQ = 22
VIRTIO_NET_F_HASH_REPORT = 57
VIRTIO_NET_F_RSS = 60

# The header sizes (the structures, in ctypes, are in pytun_hash._abi.virtio_net_hdr: ctypes is not
# loaded for what needs only these numbers and the enums, such as `pytun-hash hash`).
#: ``sizeof(struct virtio_net_hdr)``.
VIRTIO_NET_HDR_SIZE = 10
#: ``sizeof(struct virtio_net_hdr_v1)`` (also ``virtio_net_hdr_mrg_rxbuf``).
VIRTIO_NET_HDR_V1_SIZE = 12
#: ``sizeof(struct virtio_net_hdr_v1_hash)``.
VIRTIO_NET_HDR_V1_HASH_SIZE = 20
