"""What this kernel offers for virtio-net hashing on TUN/TAP, measured: small probes and one result.

Each ``tap_probe_*`` function asks one question of one device (QEMU's ``tap_probe_*`` style) and
answers it without raising for a missing feature. :func:`probe_kernel` runs them all on a scratch
2-queue TAP in a private network namespace (in the current one when no private namespace can be
made), which disappears afterwards, and returns one frozen :class:`KernelProbe`.
:meth:`KernelProbe.auto_backend` is the decision ``Backend.AUTO`` makes, stated once:
:func:`pytun_hash.backend.choose_backend` and ``pytun-hash probe`` both take it from here.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import threading
from collections.abc import Callable
from typing import Any

import attrs

from pytun_hash._abi import Revision, TunFlag
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.prog import Program
from pytun_hash.device import NetworkNamespace, TunTapDevice, kernel_features
from pytun_hash.device.hashctl import ProbeResult, probe_revision
from pytun_hash.device.tap import TUN_PATH
from pytun_hash.errors import KernelError, PrivilegeError, PytunHashError

__all__ = [
    "AutoDecision",
    "BpfProbe",
    "KernelProbe",
    "VnetHeaderProbe",
    "auto_decision",
    "probe_kernel",
    "tap_probe_bpf",
    "tap_probe_detach_attach",
    "tap_probe_hash",
    "tap_probe_steering_ebpf",
    "tap_probe_vnet_be",
    "tap_probe_vnet_hdr_sizes",
    "tap_probe_vnet_le",
]

#: The vnet header sizes probed, bytes (8 must be refused: the minimum is 10).
VNET_SIZES = (8, 10, 12, 20, 24)


def _fails(fn: Callable[[], object]) -> str | None:
    """None when ``fn()`` succeeds, else the error's text (only this package's errors are expected)."""
    try:
        fn()
    except PytunHashError as exc:
        return str(exc)
    return None


@attrs.frozen
class VnetHeaderProbe:
    """Vnet header support of a device.

    Attributes:
        default_size: the size a new device starts with, bytes.
        sizes_accepted / sizes_rejected: of :data:`VNET_SIZES`, bytes.
        little_endian: ``TUNSETVNETLE`` works.
        big_endian: ``TUNSETVNETBE`` works (only with ``CONFIG_TUN_VNET_CROSS_LE``).
    """

    default_size: int
    sizes_accepted: tuple[int, ...]
    sizes_rejected: tuple[int, ...]
    little_endian: bool
    big_endian: bool


@attrs.frozen
class BpfProbe:
    """Whether ``bpf(2)`` can create a map here; ``error``/``errno`` say why not (``errno`` by name)."""

    usable: bool
    error: str | None = None
    errno: str | None = None


@attrs.frozen
class AutoDecision:
    """What ``Backend.AUTO`` picks: ``"native"`` (with ``revision``), ``"ebpf"``, or None (nothing usable)."""

    backend: str | None
    revision: Revision | None
    reason: str


def tap_probe_vnet_hdr_sizes(device: TunTapDevice) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(accepted, rejected)`` sizes of :data:`VNET_SIZES`; the device keeps its size."""
    default = device.get_vnet_hdr_size()
    accepted: list[int] = []
    rejected: list[int] = []
    for size in VNET_SIZES:
        (rejected if _fails(functools.partial(device.set_vnet_hdr_size, size)) else accepted).append(size)
    device.set_vnet_hdr_size(default)
    return tuple(accepted), tuple(rejected)


def tap_probe_vnet_le(device: TunTapDevice) -> bool:
    """``TUNSETVNETLE`` works (the device is left big/native-endian again)."""
    works = _fails(lambda: device.set_vnet_le(True)) is None and device.get_vnet_le()
    _fails(lambda: device.set_vnet_le(False))
    return works


def tap_probe_vnet_be(device: TunTapDevice) -> bool:
    """``TUNSETVNETBE`` works (kernels with ``CONFIG_TUN_VNET_CROSS_LE``)."""
    works = _fails(lambda: device.set_vnet_be(True)) is None
    if works:
        _fails(lambda: device.set_vnet_be(False))
    return works


def tap_probe_detach_attach(device: TunTapDevice) -> bool:
    """Detaching and re-attaching the device's last attached queue works (``TUNSETQUEUE``)."""
    queue = device.attached_queues[-1]

    def cycle() -> None:
        device.detach_queue(queue)
        device.attach_queue(queue)

    return _fails(cycle) is None


def tap_probe_bpf() -> BpfProbe:
    """Create and free a one-slot array map."""
    try:
        ArrayMap.create(4, 1).close()
    except PytunHashError as exc:
        name = None
        if isinstance(exc, KernelError) and exc.errno:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
        return BpfProbe(False, str(exc), name)
    return BpfProbe(True)


def tap_probe_steering_ebpf(device: TunTapDevice) -> str | None:
    """None when a steering program attaches to ``device`` (and detaches again); else why not."""

    def attach() -> None:
        with Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_probe") as prog:
            device.attach_steering_program(prog.fd, owner="probe")
            device.detach_steering_program()

    return _fails(attach)


def tap_probe_hash(device: TunTapDevice) -> ProbeResult:
    """The hash UAPI revision the kernel speaks (:func:`~pytun_hash.device.hashctl.probe_revision`).

    Raises:
        PytunHashError: as :func:`~pytun_hash.device.hashctl.probe_revision` (device deleted ...).
    """
    return probe_revision(device)


def auto_decision(revision: Revision | None, ebpf_usable: bool, probed: str = "") -> AutoDecision:
    """The choice ``Backend.AUTO`` makes: native when a revision answers, else eBPF where it works.

    Args:
        revision: the revision the kernel answered, or None.
        ebpf_usable: whether a steering program can be loaded and attached.
        probed: what was tried, for the reason (``"v12, v3, rfc"``).
    """
    if revision is not None:
        return AutoDecision("native", revision, f"the kernel speaks hash UAPI revision {revision.value}")
    tried = f" (probed {probed}: EINVAL)" if probed else ""
    if ebpf_usable:
        return AutoDecision(
            "ebpf",
            None,
            f"the kernel lacks the hash ioctls{tried}; RSS through an eBPF steering program, hash reports "
            "computed in user space",
        )
    return AutoDecision(None, None, f"neither the hash ioctls{tried} nor eBPF steering are usable")


@attrs.frozen
class KernelProbe:
    """Everything :func:`probe_kernel` found. Fields are None where the check could not run.

    Attributes:
        kernel, machine, euid: ``uname -r``, ``uname -m`` and the effective uid.
        tun_present / tun_accessible / tun_error: ``/dev/net/tun`` exists, opens, or why not.
        features: ``TUNGETFEATURES``.
        scratch_namespace: ``"private"``, ``"current"`` (no private namespace could be made) or None.
        scratch_error: why the scratch device could not be made.
        vnet_hdr, detach_attach, bpf, steering_error, hash, hash_error: the probes' answers
            (``steering_error`` None means a steering program attached).
    """

    kernel: str
    machine: str
    euid: int
    tun_present: bool
    tun_accessible: bool
    tun_error: str | None = None
    features: TunFlag | None = None
    scratch_namespace: str | None = None
    scratch_error: str | None = None
    vnet_hdr: VnetHeaderProbe | None = None
    detach_attach: bool | None = None
    bpf: BpfProbe | None = None
    steering_error: str | None = None
    hash: ProbeResult | None = None
    hash_error: str | None = None

    @property
    def steering_attachable(self) -> bool:
        """A steering program attached to the scratch device."""
        return self.bpf is not None and self.bpf.usable and self.steering_error is None

    def auto_backend(self) -> AutoDecision:
        """What ``Backend.AUTO`` would pick on this kernel (:func:`auto_decision`)."""
        revision = self.hash.revision if self.hash is not None else None
        probed = ", ".join(r.value for r, _ in self.hash.tried) if self.hash is not None else ""
        return auto_decision(revision, self.steering_attachable, probed)


def _scratch(found: dict[str, Any]) -> None:
    ns: NetworkNamespace | None = None
    try:
        private = NetworkNamespace(ipv6=False)
        private.enter()
        ns = private
        found["scratch_namespace"] = "private"
    except PrivilegeError:
        # CAP_NET_ADMIN without CAP_SYS_ADMIN: the scratch device lives briefly next to the others.
        found["scratch_namespace"] = "current"
    try:
        with TunTapDevice.create("pthprobe%d", queues=2, vnet_hdr=True) as device:
            accepted, rejected = tap_probe_vnet_hdr_sizes(device)
            found["vnet_hdr"] = VnetHeaderProbe(
                device.get_vnet_hdr_size(), accepted, rejected, tap_probe_vnet_le(device), tap_probe_vnet_be(device)
            )
            found["detach_attach"] = tap_probe_detach_attach(device)
            bpf = found["bpf"] = tap_probe_bpf()
            found["steering_error"] = tap_probe_steering_ebpf(device) if bpf.usable else "bpf(2) is not usable"
            try:
                found["hash"] = tap_probe_hash(device)
            except PytunHashError as exc:
                found["hash_error"] = str(exc)
    except PytunHashError as exc:
        found["scratch_error"] = str(exc)
    finally:
        if ns is not None:
            ns.close()


def probe_kernel() -> KernelProbe:
    """Run every probe on a scratch TAP (in its own thread, so no namespace change leaks out).

    Never raises for a missing feature or privilege: each probe records what it found.
    """
    found: dict[str, Any] = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "euid": os.geteuid(),
        "tun_present": os.path.exists(TUN_PATH),
        "tun_accessible": False,
    }
    try:
        found["features"] = kernel_features()
        found["tun_accessible"] = True
    except PytunHashError as exc:
        found["tun_error"] = str(exc)
    if found["tun_accessible"]:
        failure: list[BaseException] = []

        def body() -> None:
            try:
                _scratch(found)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        worker = threading.Thread(target=body, name="pytun-hash-probe")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
    else:
        found["scratch_error"] = f"{TUN_PATH} is not accessible"
    return KernelProbe(**found)
