"""What this kernel offers for virtio-net hashing on TUN/TAP, measured: small probes and one result.

Each ``tap_probe_*`` function asks one question of one device (QEMU's ``tap_probe_*`` style) and
answers it without raising for a missing feature. :func:`probe_kernel` runs them all on a scratch
2-queue TAP in a private network namespace (in the current one when no private namespace can be
made), which disappears afterwards, and returns one frozen :class:`KernelProbe`.
:meth:`KernelProbe.auto_backend` is the decision ``Backend.AUTO`` makes, stated once:
:func:`pytun_hash.backend.choose_backend` and ``pytun-hash probe`` both take it from here.

v3-v9 and v10/v11 share their ioctl numbers and structures, so the probe by get-ioctl
(:func:`tap_probe_hash`) answers ``V3`` on both; :func:`tap_probe_steering_precedence` asks the one
question they answer differently, and :func:`refine_revision` turns its answer into ``V10`` where the
steering program took precedence. :func:`probe_kernel` reports the refined revision.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import platform
import struct
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs

from pytun_hash._abi import Revision, TunFlag, require_revision
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.prog import Program
from pytun_hash.codec import ioctl_plan
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapBase, TunTapDevice, kernel_features
from pytun_hash.device.hashctl import ProbeResult, probe_revision
from pytun_hash.device.netns import call_on_thread
from pytun_hash.device.tap import TUN_PATH
from pytun_hash.errors import KernelError, PrivilegeError, PytunHashError

__all__ = [
    "AutoDecision",
    "BpfProbe",
    "KernelProbe",
    "VnetHeaderProbe",
    "auto_decision",
    "probe_kernel",
    "refine_revision",
    "tap_probe_bpf",
    "tap_probe_detach_attach",
    "tap_probe_hash",
    "tap_probe_steering_ebpf",
    "tap_probe_steering_precedence",
    "tap_probe_vnet_be",
    "tap_probe_vnet_hdr_sizes",
    "tap_probe_vnet_le",
]

T = TypeVar("T")

#: The vnet header sizes probed, bytes (8 must be refused: the minimum is 10).
VNET_SIZES = (8, 10, 12, 20, 24)

# Any RSS at all asks the precedence question; a fixed key keeps the probe's calls the same on every run.
_PRECEDENCE_RSS = VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY, table_length=2)


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


def _trivial_program() -> Program:
    """A steering program that sends every frame to queue 0 (what it steers is never looked at)."""
    return Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_probe")


def tap_probe_steering_ebpf(device: TunTapDevice) -> str | None:
    """None when a steering program attaches to ``device`` (and detaches again); else why not."""

    def attach() -> None:
        with _trivial_program() as prog:
            device.attach_steering_program(prog.fd, owner="probe")
            device.detach_steering_program()

    return _fails(attach)


def _set_v3_hash(device: TunTapBase, config: VnetHashConfig) -> None:
    for call in ioctl_plan(config, Revision.V3):
        device.queue_ioctl(call.name, bytearray(call.payload), revision=Revision.V3)


def _set_steering(device: TunTapBase, prog_fd: int) -> None:
    device.queue_ioctl("TUNSETSTEERINGEBPF", bytearray(struct.pack("=i", prog_fd)))


def tap_probe_steering_precedence(device: TunTapBase, *, program: int | None = None) -> bool | None:
    """Whether a steering program takes precedence over native RSS on V3's ioctl numbers.

    v3-v9 and v10/v11 speak the same numbers and structures (:func:`tap_probe_hash` finds ``V3`` on
    both); they differ here only (:attr:`Revision.steering_precedence`). The probe turns native RSS
    on with V3's ``TUNSETVNETHASH`` and attaches a steering program with ``TUNSETSTEERINGEBPF``, both
    issued raw through :meth:`~pytun_hash.device.base.TunTapBase.queue_ioctl`: the binding's own
    exclusion (:class:`~pytun_hash.device.steering.SteeringState`) would refuse the very question
    before the kernel is asked. Whatever happened, it then detaches the program and disables hashing
    (the disabled configuration), and closes the program it loaded; the device's steering state is
    never touched, so it still records nothing.

    Meant for a scratch device (:func:`probe_kernel`'s, :func:`refine_revision`'s): a multi-queue
    TAP with at least 2 attached queues whose probe found V3's numbers, with no hashing and no
    steering program of its own. A device whose binding records either is left alone (None): the
    undo would overwrite them.

    Args:
        device: the device.
        program: the fd of a loaded socket-filter program to attach; None loads a trivial one
            (needs ``bpf(2)``).

    Returns:
        True when the program attached while RSS was on (v10/v11: the program takes precedence);
        False when the attach answered ``EBUSY`` (v3-v9); None when it cannot tell: ``bpf(2)`` is
        unusable, V3's set-ioctl is absent (an RFC, v12 or mainline kernel answers ``EINVAL``), the
        device was deleted, records hashing or a program, or any call failed otherwise. A failure of
        the undo itself changes no answer (the kernel's state is then unknown; a scratch device is
        deleted next).

    Never raises for a missing feature or privilege; only a programming error (an exception that is
    not a :class:`~pytun_hash.errors.PytunHashError`) escapes.
    """
    steering = device.steering
    with steering.lock:
        if steering.steering_attached or steering.native_rss or steering.native_report:
            return None
        try:
            with contextlib.ExitStack() as stack:
                if program is None:
                    program = stack.enter_context(_trivial_program()).fd
                _set_v3_hash(device, _PRECEDENCE_RSS)
                try:
                    _set_steering(device, program)
                except KernelError as exc:
                    return False if exc.errno == errno.EBUSY else None
                finally:
                    # Each undo step on its own: a failed detach must not keep hashing on.
                    _fails(lambda: _set_steering(device, -1))
                    _fails(lambda: _set_v3_hash(device, VnetHashConfig.disabled()))
                return True
        except PytunHashError:
            return None


def tap_probe_hash(device: TunTapDevice) -> ProbeResult:
    """The hash UAPI revision the kernel speaks (:func:`~pytun_hash.device.hashctl.probe_revision`).

    Raises:
        PytunHashError: as :func:`~pytun_hash.device.hashctl.probe_revision` (device deleted ...).
    """
    return probe_revision(device)


def _refined(result: ProbeResult, precedence: bool | None) -> ProbeResult:
    """``result`` with V3's answer named ``V10`` when a steering program took precedence over RSS.

    Without a clear ``True`` the answer stays ``V3``, whose strict exclusion holds on v10/v11 too;
    ``V10`` on a v3-v9 kernel would allow what it refuses with ``EBUSY``.
    """
    if result.revision is not Revision.V3 or precedence is not True:
        return result
    cap = result.capability
    # The capability is tagged with the revision it belongs to (HashControl checks the pair).
    return attrs.evolve(
        result, revision=Revision.V10, capability=None if cap is None else attrs.evolve(cap, revision=Revision.V10)
    )


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
            (``steering_error`` None means a steering program attached). ``hash.revision`` is the
            refined revision: ``V10`` where V3's numbers answered and ``precedence`` is True;
            ``hash.tried`` still lists the numbers probed (``V3``'s for v3-v11).
        precedence: how v10/v11 was told from v3-v9 where V3's numbers answered
            (:func:`tap_probe_steering_precedence`): True, a steering program took precedence over
            native RSS (``V10``); False, ``EBUSY`` (``V3``); None, not asked (another revision or
            none answered) or it could not tell (``hash.revision`` stays ``V3``).
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
    precedence: bool | None = None

    @property
    def precedence_asked(self) -> bool:
        """V3's numbers answered, so whether a steering program takes precedence over RSS was asked."""
        return self.hash is not None and self.hash.revision in (Revision.V3, Revision.V10)

    @property
    def steering_attachable(self) -> bool:
        """A steering program attached to the scratch device."""
        return self.bpf is not None and self.bpf.usable and self.steering_error is None

    def auto_backend(self) -> AutoDecision:
        """What ``Backend.AUTO`` would pick on this kernel (:func:`auto_decision`), with the refined revision."""
        revision = self.hash.revision if self.hash is not None else None
        probed = ", ".join(r.value for r, _ in self.hash.tried) if self.hash is not None else ""
        decision = auto_decision(revision, self.steering_attachable, probed)
        if decision.backend == "native" and self.precedence_asked:
            told = {
                True: "a steering program took precedence over native RSS: v10 or later",
                False: "a steering program was refused with EBUSY while native RSS was on: v3-v9",
                None: "whether a steering program takes precedence over native RSS could not be told: read as v3-v9",
            }[self.precedence]
            decision = attrs.evolve(decision, reason=f"{decision.reason} ({told})")
        return decision


@contextlib.contextmanager
def _scratch_namespace() -> Iterator[str]:
    """Move the calling thread into a private network namespace for the block (``"private"``).

    Without CAP_SYS_ADMIN it stays where it is (``"current"``).

    Raises:
        KernelError: when making the namespace fails for another reason than privilege.
    """
    ns = NetworkNamespace(ipv6=False)
    try:
        ns.enter()
    except PrivilegeError:
        # CAP_NET_ADMIN without CAP_SYS_ADMIN: the scratch device lives briefly next to the others.
        where = "current"
    else:
        where = "private"
    try:
        yield where
    finally:
        ns.close()


def _on_own_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on a thread of its own, so that no namespace change leaks out; its exception is re-raised here.

    Interrupted, the probe still ends first: its scratch namespace and device go before this returns.
    """
    return call_on_thread(fn, name="pytun-hash-probe", daemon=False)


def _scratch_device() -> TunTapDevice:
    return TunTapDevice.create("pthprobe%d", queues=2, vnet_hdr=True)


def _scratch(found: dict[str, Any]) -> None:
    with _scratch_namespace() as where:
        found["scratch_namespace"] = where
        try:
            with _scratch_device() as device:
                accepted, rejected = tap_probe_vnet_hdr_sizes(device)
                found["vnet_hdr"] = VnetHeaderProbe(
                    device.get_vnet_hdr_size(), accepted, rejected, tap_probe_vnet_le(device), tap_probe_vnet_be(device)
                )
                found["detach_attach"] = tap_probe_detach_attach(device)
                bpf = found["bpf"] = tap_probe_bpf()
                found["steering_error"] = tap_probe_steering_ebpf(device) if bpf.usable else "bpf(2) is not usable"
                try:
                    result = tap_probe_hash(device)
                except PytunHashError as exc:
                    found["hash_error"] = str(exc)
                    return
                if result.revision is Revision.V3:
                    found["precedence"] = tap_probe_steering_precedence(device)
                found["hash"] = _refined(result, found.get("precedence"))
        except PytunHashError as exc:
            found["scratch_error"] = str(exc)


def refine_revision(revision: Revision | None) -> Revision | None:
    """Tell v10/v11 from v3-v9 where the probe by get-ioctl found V3's numbers; other answers pass unchanged.

    For ``V3``, :func:`tap_probe_steering_precedence` runs on a scratch 2-queue TAP in a private
    network namespace (in the current one when no private namespace can be made), on a thread of
    its own; the device disappears afterwards.

    Args:
        revision: what :func:`~pytun_hash.device.hashctl.probe_revision` answered, or None.

    Returns:
        ``V10`` when a steering program took precedence over native RSS; ``V3`` when it was refused
        with ``EBUSY`` or nothing could be told (no scratch device or namespace, no ``bpf(2)``):
        v3-v9's strict exclusion holds on v10/v11 too. Any other ``revision``, and None, unchanged,
        without a probe.

    Raises:
        ValidationError: when ``revision`` is neither a :class:`Revision` nor None.
    """
    if revision is None:
        return None
    revision = require_revision(revision)
    if revision is not Revision.V3:
        return revision

    def ask() -> bool | None:
        try:
            with _scratch_namespace(), _scratch_device() as device:
                return tap_probe_steering_precedence(device)
        except PytunHashError:
            return None

    return Revision.V10 if _on_own_thread(ask) is True else Revision.V3


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
        _on_own_thread(functools.partial(_scratch, found))
    else:
        found["scratch_error"] = f"{TUN_PATH} is not accessible"
    return KernelProbe(**found)
