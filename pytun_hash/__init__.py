"""pytun_hash: virtio-net hashing (RSS and hash reports) for Linux TUN/TAP devices.

The names below are the public API; submodules hold the layers:

* :mod:`pytun_hash._abi` — raw ABI: ioctl numbers per architecture, flags, ctypes structures.
* :mod:`pytun_hash.config`, :mod:`pytun_hash.codec` — typed configuration and byte-exact codecs.
* :mod:`pytun_hash.errors` — the error hierarchy.
* :mod:`pytun_hash.configfile` — config files (TOML/JSON) with every error named.
* :mod:`pytun_hash.model`, :mod:`pytun_hash.device`, :mod:`pytun_hash.bpf`, :mod:`pytun_hash.backend` —
  the software model, devices and hash control, eBPF, backend choice.
* :mod:`pytun_hash.hashing` — :class:`Hashing`, the one entry: hashing on a device from any process
  (records, pins, locks, both backends).
* :mod:`pytun_hash.traffic` — real flows onto a device's queues, collected per queue.
* :mod:`pytun_hash.virtio` — the guest's side: the control-queue RSS and hash commands decoded and
  validated, what a host lets a VMM advertise, whether a guest can move between two hosts.
* :mod:`pytun_hash.testing` — the test kit (the seccomp kernel emulator); nothing else imports it.

``import pytun_hash`` is next to instant: each name below is imported from its module on first use.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pytun_hash._abi import HashReport, HashType, Revision, TunFlag, TunOffload, ioctl_request
    from pytun_hash.backend import Backend, BackendChoice, choose_backend
    from pytun_hash.bpf import EbpfRss, HashReporter, RssOutput, enable_ebpf_rss
    from pytun_hash.codec import (
        IoctlCall,
        decode_capability,
        decode_plan,
        decode_vnet_hash,
        default_capability,
        encode_capability,
        ioctl_plan,
        kernel_key_length,
        kernel_read_length,
        kernel_write_length,
    )
    from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashCapability, VnetHashConfig, generate_key
    from pytun_hash.device import DeviceMode, NetworkNamespace, Queue, SteeringPolicy, SteeringState, TunTapDevice
    from pytun_hash.device.hashctl import HashControl, HashControlWarning, ProbeResult, probe_revision
    from pytun_hash.errors import (
        BpfError,
        BusyError,
        DecodeError,
        DeviceFlagsMismatchError,
        DeviceGoneError,
        DeviceNotFoundError,
        FeatureUnsupportedError,
        KernelError,
        NotRecordedError,
        PrivilegeError,
        PytunHashError,
        SteeringConflictError,
        UnsupportedError,
        ValidationError,
        VerifierError,
    )
    from pytun_hash.hashing import Hashing, HashingWarning, QueueReader, ReceivedFrame, StateLocation
    from pytun_hash.model import (
        FlowHash,
        Framing,
        ReportMismatch,
        Semantics,
        VnetHeader,
        build_frame,
        classify,
        parse_frame,
        predict_queue,
        rfc_key_in_force,
        split_frame,
        toeplitz_hash,
        toeplitz_hash_batch,
        verify_reports,
    )
    from pytun_hash.virtio import (
        HashCommand,
        HostCapability,
        RssCommand,
        VirtioCommandError,
        VirtioNetFeature,
        VirtioNetRssDeviceConfig,
        advertised,
        compare,
        decode_hash_config,
        decode_rss_config,
        encode_hash_config,
        encode_rss_config,
    )

# Where each public name lives. Importing pytun_hash loads none of them: a name is imported on first
# use (PEP 562). `python -m pytun_hash` and the console script import this package before the command
# line can install its SIGINT/SIGTERM handlers, so that import must be next to instant; and a program
# that needs one layer does not pay for all of them.
_HOMES: dict[str, tuple[str, ...]] = {
    "pytun_hash._abi": ("HashReport", "HashType", "Revision", "TunFlag", "TunOffload", "ioctl_request"),
    "pytun_hash.backend": ("Backend", "BackendChoice", "choose_backend"),
    "pytun_hash.bpf": ("EbpfRss", "HashReporter", "RssOutput", "enable_ebpf_rss"),
    "pytun_hash.codec": (
        "IoctlCall",
        "decode_capability",
        "decode_plan",
        "decode_vnet_hash",
        "default_capability",
        "encode_capability",
        "ioctl_plan",
        "kernel_key_length",
        "kernel_read_length",
        "kernel_write_length",
    ),
    "pytun_hash.config": ("MICROSOFT_RSS_KEY", "VnetHashCapability", "VnetHashConfig", "generate_key"),
    "pytun_hash.device": ("DeviceMode", "NetworkNamespace", "Queue", "SteeringPolicy", "SteeringState", "TunTapDevice"),
    "pytun_hash.device.hashctl": ("HashControl", "HashControlWarning", "ProbeResult", "probe_revision"),
    "pytun_hash.errors": (
        "BpfError",
        "BusyError",
        "DecodeError",
        "DeviceFlagsMismatchError",
        "DeviceGoneError",
        "DeviceNotFoundError",
        "FeatureUnsupportedError",
        "KernelError",
        "NotRecordedError",
        "PrivilegeError",
        "PytunHashError",
        "SteeringConflictError",
        "UnsupportedError",
        "ValidationError",
        "VerifierError",
    ),
    "pytun_hash.hashing": ("Hashing", "HashingWarning", "QueueReader", "ReceivedFrame", "StateLocation"),
    "pytun_hash.model": (
        "FlowHash",
        "Framing",
        "ReportMismatch",
        "Semantics",
        "VnetHeader",
        "build_frame",
        "classify",
        "parse_frame",
        "predict_queue",
        "rfc_key_in_force",
        "split_frame",
        "toeplitz_hash",
        "toeplitz_hash_batch",
        "verify_reports",
    ),
    "pytun_hash.virtio": (
        "HashCommand",
        "HostCapability",
        "RssCommand",
        "VirtioCommandError",
        "VirtioNetFeature",
        "VirtioNetRssDeviceConfig",
        "advertised",
        "compare",
        "decode_hash_config",
        "decode_rss_config",
        "encode_hash_config",
        "encode_rss_config",
    ),
}

__version__ = "0.1.0"

__all__ = [
    "MICROSOFT_RSS_KEY",
    "Backend",
    "BackendChoice",
    "Hashing",
    "HashingWarning",
    "NotRecordedError",
    "QueueReader",
    "ReceivedFrame",
    "StateLocation",
    "choose_backend",
    "BpfError",
    "BusyError",
    "DecodeError",
    "DeviceFlagsMismatchError",
    "DeviceGoneError",
    "DeviceMode",
    "DeviceNotFoundError",
    "EbpfRss",
    "FeatureUnsupportedError",
    "FlowHash",
    "Framing",
    "HashControl",
    "HashControlWarning",
    "HashReport",
    "HashReporter",
    "HashType",
    "IoctlCall",
    "KernelError",
    "NetworkNamespace",
    "PrivilegeError",
    "ProbeResult",
    "PytunHashError",
    "Queue",
    "ReportMismatch",
    "Revision",
    "RssOutput",
    "Semantics",
    "SteeringConflictError",
    "SteeringPolicy",
    "SteeringState",
    "TunFlag",
    "TunOffload",
    "TunTapDevice",
    "UnsupportedError",
    "ValidationError",
    "VerifierError",
    "VnetHashCapability",
    "VnetHashConfig",
    "VnetHeader",
    "build_frame",
    "classify",
    "decode_capability",
    "decode_plan",
    "decode_vnet_hash",
    "default_capability",
    "enable_ebpf_rss",
    "encode_capability",
    "generate_key",
    "ioctl_plan",
    "ioctl_request",
    "kernel_key_length",
    "kernel_read_length",
    "kernel_write_length",
    "parse_frame",
    "predict_queue",
    "probe_revision",
    "rfc_key_in_force",
    "split_frame",
    "toeplitz_hash",
    "toeplitz_hash_batch",
    "verify_reports",
    "HashCommand",
    "HostCapability",
    "RssCommand",
    "VirtioCommandError",
    "VirtioNetFeature",
    "VirtioNetRssDeviceConfig",
    "advertised",
    "compare",
    "decode_hash_config",
    "decode_rss_config",
    "encode_hash_config",
    "encode_rss_config",
]


_NAMES = {name: module for module, names in _HOMES.items() for name in names}


# Hidden from type checkers: with a module __getattr__ they would accept any name at all.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        """A public name (imported from its module on first use), or a submodule (``pytun_hash.device``)."""
        module = _NAMES.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        elif not name.startswith("__"):
            try:
                value = importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        else:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
