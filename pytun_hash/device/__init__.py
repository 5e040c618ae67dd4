"""TUN/TAP devices, their queues, steering state and anonymous network namespaces.

The device layer is the only one that talks to ``/dev/net/tun``; ioctls go through
:mod:`pytun_hash.device._ioctl`, which turns every failure into a typed
:class:`~pytun_hash.errors.KernelError`.
"""

from __future__ import annotations

from pytun_hash.device.base import TunTapBase
from pytun_hash.device.netns import NetworkNamespace, run_in_netns, thread_netns_inode
from pytun_hash.device.queue import Queue
from pytun_hash.device.rtnl import LinkInfo, TunLinkData
from pytun_hash.device.steering import SteeringPolicy, SteeringState
from pytun_hash.device.tap import (
    MAX_TAP_QUEUES,
    TUN_PATH,
    DeviceMode,
    TunTapDevice,
    get_iff,
    kernel_features,
    tun_flags_of,
)

__all__ = [
    "MAX_TAP_QUEUES",
    "TUN_PATH",
    "DeviceMode",
    "LinkInfo",
    "NetworkNamespace",
    "Queue",
    "SteeringPolicy",
    "SteeringState",
    "TunLinkData",
    "TunTapBase",
    "TunTapDevice",
    "get_iff",
    "kernel_features",
    "run_in_netns",
    "thread_netns_inode",
    "tun_flags_of",
]
