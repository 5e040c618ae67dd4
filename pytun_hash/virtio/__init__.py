"""The guest's side of virtio-net hashing: feature bits, the device configuration's RSS fields, the
control-queue commands (byte-exact, little-endian, validated as a device must), and what a VMM may
advertise on a host and whether a guest can move between two hosts.

Pure: no I/O. Importing this package loads none of its modules: each name comes from its module on
first use. See docs/virtio.md.
"""

from __future__ import annotations

from pytun_hash._lazy import lazy_names

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pytun_hash.virtio.commands import (
        DEFAULT_LIMITS,
        RULES,
        VIRTIO_NET_CONFIG_SIZE,
        CtrlMqResult,
        HashCommand,
        RssCommand,
        VirtioCommandError,
        VirtioNetRssDeviceConfig,
        decode_device_config,
        decode_hash_config,
        decode_rss_config,
        encode_device_config,
        encode_hash_config,
        encode_rss_config,
        handle_ctrl_mq,
        linux_default_rss_config,
    )
    from pytun_hash.virtio.constants import (
        VIRTIO_NET_CTRL_MQ,
        VIRTIO_NET_CTRL_MQ_HASH_CONFIG,
        VIRTIO_NET_CTRL_MQ_RSS_CONFIG,
        VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
        VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
        VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
        VIRTIO_NET_ERR,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_HASH_REPORT,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_RSS,
        VIRTIO_NET_OK,
        VirtioNetCtrlAck,
        VirtioNetCtrlMq,
        VirtioNetFeature,
        feature_names,
    )
    from pytun_hash.virtio.negotiation import (
        SPEC_MIN_INDIRECTION_TABLE_LENGTH,
        Advertisement,
        Compatibility,
        Difference,
        HostCapability,
        advertised,
        compare,
        host_from_probe,
    )

_HOMES = {
    "commands": (
        "DEFAULT_LIMITS",
        "RULES",
        "VIRTIO_NET_CONFIG_SIZE",
        "CtrlMqResult",
        "HashCommand",
        "RssCommand",
        "VirtioCommandError",
        "VirtioNetRssDeviceConfig",
        "decode_device_config",
        "decode_hash_config",
        "decode_rss_config",
        "encode_device_config",
        "encode_hash_config",
        "encode_rss_config",
        "handle_ctrl_mq",
        "linux_default_rss_config",
    ),
    "constants": (
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
    ),
    "negotiation": (
        "SPEC_MIN_INDIRECTION_TABLE_LENGTH",
        "Advertisement",
        "Compatibility",
        "Difference",
        "HostCapability",
        "advertised",
        "compare",
        "host_from_probe",
    ),
}

_WHERE: dict[str, str | None] = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "Advertisement",
    "Compatibility",
    "CtrlMqResult",
    "DEFAULT_LIMITS",
    "Difference",
    "HashCommand",
    "HostCapability",
    "RULES",
    "RssCommand",
    "SPEC_MIN_INDIRECTION_TABLE_LENGTH",
    "VIRTIO_NET_CONFIG_SIZE",
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
    "VirtioCommandError",
    "VirtioNetCtrlAck",
    "VirtioNetCtrlMq",
    "VirtioNetFeature",
    "VirtioNetRssDeviceConfig",
    "advertised",
    "compare",
    "decode_device_config",
    "decode_hash_config",
    "decode_rss_config",
    "encode_device_config",
    "encode_hash_config",
    "encode_rss_config",
    "feature_names",
    "handle_ctrl_mq",
    "host_from_probe",
    "linux_default_rss_config",
]

# Hidden from type checkers: with a module __getattr__ they would accept any name at all.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals(), __all__)
