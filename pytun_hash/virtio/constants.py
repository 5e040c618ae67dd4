"""The guest side's numbers: virtio-net feature bits, control-queue classes and commands, acks.

Values from the virtio specification (1.2 and 1.3, section 5.1 "Network Device") and Linux's
``include/uapi/linux/virtio_net.h``. Feature bits are kept as an :class:`enum.IntFlag` of ``1 << bit``
(a set of features is then one integer, as in a 64-bit feature word); :meth:`VirtioNetFeature.bit`
gives the spec's bit number back, and the ``VIRTIO_NET_F_*`` constants are the bit numbers, as the
spec and the kernel header name them. Pure data, no I/O.
"""

from __future__ import annotations

import enum

from pytun_hash._abi.virtio_net import (
    VIRTIO_NET_F_CTRL_VQ,
    VIRTIO_NET_F_HASH_REPORT,
    VIRTIO_NET_F_MQ,
    VIRTIO_NET_F_RSS,
)
from pytun_hash.errors import ValidationError, shorten

__all__ = [
    "VIRTIO_NET_CTRL_MQ",
    "VIRTIO_NET_CTRL_MQ_HASH_CONFIG",
    "VIRTIO_NET_CTRL_MQ_RSS_CONFIG",
    "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX",
    "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN",
    "VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET",
    "VIRTIO_NET_ERR",
    "VIRTIO_NET_F_CTRL_VQ",
    "VIRTIO_NET_F_HASH_REPORT",
    "VIRTIO_NET_F_MQ",
    "VIRTIO_NET_F_RSS",
    "VIRTIO_NET_OK",
    "VirtioNetCtrlAck",
    "VirtioNetCtrlMq",
    "VirtioNetFeature",
    "feature_names",
]


class VirtioNetFeature(enum.IntFlag):
    """The virtio-net feature bits hashing depends on, as ``1 << VIRTIO_NET_F_*`` (a 64-bit feature word).

    ``RSS`` and ``HASH_REPORT`` each require ``CTRL_VQ`` (their configuration travels on the control
    queue); ``MQ`` requires ``CTRL_VQ`` too. ``RSS`` does not require ``MQ``.
    """

    CTRL_VQ = 1 << VIRTIO_NET_F_CTRL_VQ
    MQ = 1 << VIRTIO_NET_F_MQ
    HASH_REPORT = 1 << VIRTIO_NET_F_HASH_REPORT
    RSS = 1 << VIRTIO_NET_F_RSS

    @property
    def bit(self) -> int:
        """The spec's bit number of a single feature (``RSS.bit == 60``).

        Raises:
            ValidationError: when ``self`` is not exactly one feature.
        """
        value = int(self)
        if value == 0 or value & (value - 1):
            raise ValidationError("features", f"{self!r} is not a single feature bit")
        return value.bit_length() - 1

    @classmethod
    def from_bits(cls, bits: object) -> VirtioNetFeature:
        """The features named by bit numbers (``from_bits([17, 60]) == CTRL_VQ | RSS``).

        Raises:
            ValidationError: for a value that is not an integer, or a bit this enumeration does not name.
        """
        if isinstance(bits, (str, bytes)) or not hasattr(bits, "__iter__"):
            raise ValidationError("features", f"expected feature bit numbers, got {shorten(bits)}")
        known = {m.bit: m for m in cls}
        result = cls(0)
        for bit in bits:
            if isinstance(bit, bool) or not isinstance(bit, int) or bit not in known:
                raise ValidationError(
                    "features", f"unknown feature bit {shorten(bit)} (known: {', '.join(map(str, sorted(known)))})"
                )
            result |= known[bit]
        return result


def feature_names(features: VirtioNetFeature) -> list[str]:
    """The names of the features in ``features``, lowest bit first (``["CTRL_VQ", "RSS"]``)."""
    return [m.name or "" for m in VirtioNetFeature if m in features]


# Control queue (virtio 1.2 section 5.1.6.5): class and commands of the multiqueue class.
VIRTIO_NET_CTRL_MQ = 4
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0
VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1
VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2
#: The range of ``virtqueue_pairs`` in ``VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`` (and of ``max_virtqueue_pairs``).
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1
VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000

# The one-byte ack the device writes after each control command.
VIRTIO_NET_OK = 0
VIRTIO_NET_ERR = 1


class VirtioNetCtrlMq(enum.IntEnum):
    """The commands of class ``VIRTIO_NET_CTRL_MQ``."""

    VQ_PAIRS_SET = VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
    RSS_CONFIG = VIRTIO_NET_CTRL_MQ_RSS_CONFIG
    HASH_CONFIG = VIRTIO_NET_CTRL_MQ_HASH_CONFIG


class VirtioNetCtrlAck(enum.IntEnum):
    """``virtio_net_ctrl_ack``: what the device answers a control command with."""

    OK = VIRTIO_NET_OK
    ERR = VIRTIO_NET_ERR
