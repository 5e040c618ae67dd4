"""Hash control: probe the kernel's hash UAPI revision, read its capability, apply configurations.

:class:`HashControl` issues exactly the calls of :func:`pytun_hash.codec.ioctl_plan`, after
checking everything the kernel would reject or silently mishandle, and enforces the strict
mutual exclusion between native RSS and eBPF steering (``EBUSY``, never a silent switch) through the
device's :class:`~pytun_hash.device.steering.SteeringState`. Every ioctl goes through
:meth:`~pytun_hash.device.base.TunTapBase.queue_ioctl`, under the device's lock. The device is any
:class:`~pytun_hash.device.base.TunTapBase`: a real :class:`~pytun_hash.device.tap.TunTapDevice`, or
``pytun_hash.testing.FakeTunTap``, whose hash ioctls the emulator's kernel logic answers in-process.

What the binding cannot know, and how it handles it:

* Another process holding a queue fd of the same device may attach a steering program or
  set a hash configuration behind our back. The kernel keeps one state per device; the
  binding only knows what went through *its* device object. :meth:`HashControl.apply`
  therefore never assumes the previous state: each call sends the whole configuration.
* An adopted fd (a VMM handed queue fds) comes with unknown prior hashing and steering
  state. :attr:`HashControl.config` is None until the first :meth:`apply` or
  :meth:`disable`; call :meth:`disable` first to start from a known state, and detach any
  steering program you do not own with ``device.detach_steering_program()``.
"""

from __future__ import annotations

import contextlib
import errno
import warnings
from collections.abc import Iterator, Sequence

import attrs

from pytun_hash._abi import Revision, ioctl_def, require_revision
from pytun_hash.codec import (
    IoctlCall,
    decode_capability,
    decode_plan,
    default_capability,
    ioctl_plan,
    kernel_write_length,
)
from pytun_hash.config import VnetHashCapability, VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.steering import hash_requests
from pytun_hash.errors import (
    DeviceGoneError,
    FeatureUnsupportedError,
    KernelError,
    PytunHashError,
    PytunHashWarning,
    ValidationError,
    kernel_error,
)

__all__ = [
    "PROBE_ORDER",
    "QueueFoldWarning",
    "queue_fold_warning",
    "HashControl",
    "HashControlWarning",
    "ProbeResult",
    "probe_revision",
]

#: Revisions tried by :func:`probe_revision`, newest first: their get-ioctl numbers all differ.
#: ``V10`` shares ``V3``'s numbers, so a probe finds ``V3`` on a v10/v11 kernel too; only behaviour
#: tells them apart, which :func:`pytun_hash.probe.refine_revision` asks on a scratch device (and
#: :func:`pytun_hash.probe.probe_kernel` reports): whether a steering program takes precedence over RSS.
PROBE_ORDER: tuple[Revision, ...] = (Revision.V12, Revision.V3, Revision.RFC)

_FALLBACK_HINT = (
    "this kernel lacks the virtio-net hash ioctls (probed: {probed}); use the eBPF steering backend "
    "(pytun_hash.bpf, or `pytun-hash apply --backend ebpf`) for RSS, and compute hash reports in user "
    "space with pytun_hash.model"
)


def queue_fold_warning(config: VnetHashConfig, queues: int, name: str) -> str | None:
    """The warning for a config that steers to a queue the device does not have (yet), or None.

    The kernel (and the eBPF program) fold such entries modulo the attached queue count, so it is
    allowed, but rarely meant; queues may still be attached later.
    """
    if config.rss and config.max_queue >= queues:
        return (
            f"the config steers to queue {config.max_queue} but {name} has {queues} attached queue(s); "
            "the kernel folds such entries modulo the queue count"
        )
    return None


class HashControlWarning(PytunHashWarning):
    """A configuration the kernel accepts but that will not do what it seems to (see the message)."""


class QueueFoldWarning(HashControlWarning):
    """The configuration steers to a queue number at or beyond the attached queue count (either
    backend): the kernel folds it modulo the count, which is rarely what was meant."""


@attrs.frozen
class ProbeResult:
    """The outcome of :func:`probe_revision`.

    Attributes:
        revision: the revision the kernel speaks, or None.
        capability: what its get-ioctl reported, or None.
        tried: each revision probed with the errno it answered (0 = success).
    """

    revision: Revision | None
    capability: VnetHashCapability | None
    tried: tuple[tuple[Revision, int], ...]

    @property
    def supported(self) -> bool:
        """True when a revision answered."""
        return self.revision is not None


def _require_device(device: TunTapBase) -> None:
    if not isinstance(device, TunTapBase):
        raise ValidationError(
            "device",
            f"expected a TunTapDevice (or another TunTapBase, such as FakeTunTap), got {type(device).__name__}",
        )


def _get_capability(device: TunTapBase, revision: Revision) -> VnetHashCapability:
    get = hash_requests(revision).get
    buf = bytearray(kernel_write_length(revision, get))
    with device.steering.lock:
        # v3+ answer their get-ioctl without a device (v12 even on a deleted device's fd), so the
        # answer says nothing about the device: ask TUNGETIFF first, which needs one.
        device.raise_if_deleted()
        device.queue_ioctl(get, buf, revision=revision)
    return decode_capability(bytes(buf), revision)


def probe_revision(device: TunTapBase, revisions: Sequence[Revision] = PROBE_ORDER) -> ProbeResult:
    """Find which hash UAPI revision the kernel speaks by trying each revision's get-ioctl.

    On a live device an unknown tun ioctl answers ``EINVAL``, so ``EINVAL`` means "absent".

    Raises:
        DeviceGoneError: when the device was deleted (``EBADFD``): nothing can be told.
        ValidationError: when the device has no attached queue, or ``revisions`` holds
            something other than :class:`Revision` members.
        KernelError: for any other failure.
    """
    revisions = [require_revision(r, "revisions") for r in revisions]
    _require_device(device)
    tried: list[tuple[Revision, int]] = []
    for revision in revisions:
        try:
            cap = _get_capability(device, revision)
        except DeviceGoneError:
            device.steering.device_deleted()
            raise
        except KernelError as exc:
            if exc.errno != errno.EINVAL:
                raise
            tried.append((revision, errno.EINVAL))
            continue
        tried.append((revision, 0))
        return ProbeResult(revision, cap, tuple(tried))
    return ProbeResult(None, None, tuple(tried))


def _probed_text(tried: Sequence[tuple[Revision, int]]) -> str:
    return ", ".join(f"{r.value} {hash_requests(r).get} -> EINVAL" for r, _ in tried)


class HashControl:
    """Native (kernel ioctl) hash control of one device.

    Args:
        device: the device (a :class:`~pytun_hash.device.tap.TunTapDevice`, or any other
            :class:`~pytun_hash.device.base.TunTapBase`); its steering state is shared with every
            other user of it.
        revision: the kernel's revision; None probes it (:func:`probe_revision`).
        capability: the capability to check configurations against; None reads it from the
            kernel (or uses the revision's documented default when ``revision`` is given and
            ``read_capability`` is False).
        read_capability: read the capability from the kernel when a revision is named.

    Raises:
        FeatureUnsupportedError: when probing finds no revision (the hint names the eBPF fallback).
        DeviceGoneError: when the device was deleted.
        ValidationError: for a ``device`` that is not a :class:`~pytun_hash.device.base.TunTapBase`
            (a :class:`~pytun_hash.device.tap.TunTapDevice`, or ``pytun_hash.testing.FakeTunTap``), a
            ``revision`` that is not a :class:`Revision`, or a ``capability`` of another revision.
    """

    def __init__(
        self,
        device: TunTapBase,
        *,
        revision: Revision | None = None,
        capability: VnetHashCapability | None = None,
        read_capability: bool = True,
    ) -> None:
        _require_device(device)
        if revision is not None:
            revision = require_revision(revision)
        if capability is not None:
            if not isinstance(capability, VnetHashCapability):
                raise ValidationError("capability", f"expected a VnetHashCapability, got {type(capability).__name__}")
            if revision is not None and capability.revision is not revision:
                raise ValidationError(
                    "capability", f"is for revision {capability.revision.value}, the control speaks {revision.value}"
                )
        self.device = device
        if revision is None:
            result = probe_revision(device)
            if result.revision is None or result.capability is None:
                # No revision is in force: name the oldest one's get-ioctl; the hint lists each probed.
                get = hash_requests(Revision.RFC).get
                raise FeatureUnsupportedError(
                    errno.EINVAL, get, _FALLBACK_HINT.format(probed=_probed_text(result.tried))
                )
            revision = result.revision
            if capability is not None and capability.revision is not revision:
                raise ValidationError(
                    "capability", f"is for revision {capability.revision.value}, the kernel speaks {revision.value}"
                )
            capability = capability or result.capability
        elif capability is None:
            capability = self._read_capability(revision) if read_capability else default_capability(revision)
        self.revision: Revision = revision
        self._capability: VnetHashCapability = capability
        self._config: VnetHashConfig | None = None

    def _read_capability(self, revision: Revision) -> VnetHashCapability:
        try:
            return _get_capability(self.device, revision)
        except KernelError as exc:
            if exc.errno == errno.EINVAL:
                raise FeatureUnsupportedError(
                    errno.EINVAL,
                    hash_requests(revision).get,
                    _FALLBACK_HINT.format(probed=_probed_text([(revision, errno.EINVAL)])),
                ) from None
            raise

    def capability(self, *, refresh: bool = False) -> VnetHashCapability:
        """The kernel's capability (cached; ``refresh`` reads it again).

        Raises:
            KernelError: when reading it fails.
            DeviceGoneError: when the device was deleted (:attr:`config` becomes None).
        """
        if refresh:
            with self._noting_deletion():
                self._capability = self._read_capability(self.revision)
        return self._capability

    @contextlib.contextmanager
    def _noting_deletion(self) -> Iterator[None]:
        """On ``EBADFD`` the device is gone, and with it the hash state the kernel held for it."""
        try:
            yield
        except DeviceGoneError:
            self._config = None
            self.device.steering.device_deleted()
            raise

    @property
    def config(self) -> VnetHashConfig | None:
        """The configuration the kernel holds through this binding; None when unknown or the device was deleted."""
        return self._config

    def plan(self, config: VnetHashConfig) -> tuple[IoctlCall, ...]:
        """The ioctl calls :meth:`apply` would issue for ``config``, after every check.

        Raises:
            ValidationError: see :meth:`apply`.
        """
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        with self._noting_deletion():
            self._check(config)
        return ioctl_plan(config, self.revision)

    def _check(self, config: VnetHashConfig) -> None:
        problems = self._capability.violations(config)
        if problems:
            raise ValidationError("config", "; ".join(problems))
        if config.report:
            self.device.check_report_header()
        # Count queues held by other processes too (a VMM's): the kernel folds by all of them.
        queues = self.device.numqueues
        if config.enabled and self.revision is Revision.RFC and queues < 2:
            warnings.warn(
                f"{self.device.name} has {queues} attached queue(s): the RFC kernel computes no hash (neither RSS "
                "nor reports) with fewer than 2 queues",
                HashControlWarning,
                stacklevel=4,
            )
        if config.rss and not any(config.key):
            warnings.warn(
                "the config's key is all zeros: every flow hashes to 0 and lands on indirection_table[0]; "
                "pass key=generate_key() (VnetHashConfig.round_robin() does)",
                HashControlWarning,
                stacklevel=4,
            )
        folded = queue_fold_warning(config, queues, self.device.name)
        if folded is not None:
            warnings.warn(folded, QueueFoldWarning, stacklevel=4)

    def apply(self, config: VnetHashConfig) -> None:
        """Put ``config`` in force with the kernel's hash ioctls.

        Issues exactly the calls of :func:`~pytun_hash.codec.ioctl_plan`, in order. Queue
        numbers at or beyond the attached queue count, and any hashing on an RFC kernel with
        fewer than 2 queues, give a :class:`HashControlWarning` (queues may be attached
        later, and the kernel folds entries modulo the queue count), not an error; so does
        RSS with an all-zero key (the default of a bare ``VnetHashConfig``), which steers
        every flow to one queue.

        Raises:
            SteeringConflictError: (``EBUSY``) when ``config.rss`` is set while a steering
                program is attached; no ioctl is issued.
            ValidationError: when the capability does not cover ``config``, reports are asked
                without a 20-byte little-endian vnet header, or the revision cannot express
                ``config``; no ioctl is issued.
            KernelError: when the kernel refuses a call; :attr:`config` then reflects what
                the kernel holds.
            DeviceGoneError: when the device was deleted; :attr:`config` becomes None and the
                steering state is cleared (the kernel freed both with the device).
        """
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        steering = self.device.steering
        with steering.lock, self._noting_deletion():
            if config.rss:
                steering.ensure_can_enable_native_rss(revision=self.revision)
            calls = self.plan(config)
            self._issue(calls)
            steering.record_native(rss=config.rss, report=config.report, revision=self.revision)
            self._config = config

    def assume(self, config: VnetHashConfig) -> None:
        """Take ``config`` as what the kernel holds (from a device's record), without an ioctl: the
        kernel cannot be asked. The steering state records it, so the exclusion holds.

        Raises:
            ValidationError: for a value that is not a :class:`VnetHashConfig`.
        """
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        steering = self.device.steering
        with steering.lock:
            steering.record_native(rss=config.rss, report=config.report, revision=self.revision)
            self._config = config

    def disable(self) -> None:
        """Turn RSS and hash reporting off; always allowed.

        Raises:
            KernelError: when the kernel refuses the call.
            DeviceGoneError: when the device was deleted (as :meth:`apply`).
        """
        steering = self.device.steering
        with steering.lock, self._noting_deletion():
            calls = ioctl_plan(VnetHashConfig.disabled(), self.revision)
            self._issue(calls)
            steering.record_native(rss=False, report=False, revision=self.revision)
            self._config = VnetHashConfig.disabled()

    def _issue(self, calls: Sequence[IoctlCall]) -> None:
        """Issue ``calls`` in order; the caller holds the device lock, so they reach one queue fd."""
        done: list[IoctlCall] = []
        for call in calls:
            ioctl_def(call.name, self.revision)
            try:
                try:
                    self.device.queue_ioctl(call.name, bytearray(call.payload), revision=self.revision)
                except KernelError as exc:
                    if exc.errno == errno.EINVAL:
                        raise kernel_error(errno.EINVAL, call.name, _SET_EINVAL_HINT) from exc
                    raise
            except DeviceGoneError:
                raise  # apply/disable record the deletion
            except PytunHashError:
                if done:
                    # The kernel committed the earlier calls (hashing off, key loaded): record that.
                    state = decode_plan(done, self.revision)
                    self._config = state
                    self.device.steering.record_native(rss=state.rss, report=state.report, revision=self.revision)
                raise
            done.append(call)


_SET_EINVAL_HINT = (
    "the kernel refused the hash configuration: with reports, check the vnet header size (>= 20) and "
    "endianness; if every hash ioctl answers EINVAL the kernel lacks this revision (probe it)"
)
