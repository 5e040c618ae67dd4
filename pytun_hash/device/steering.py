"""The steering rule: native RSS and an eBPF steering program are never both in force on one device.

The kernels carrying the hash series disagree on what happens when both are asked for: the RFC
silently turns one off for the other, v3-v9 refuse with ``EBUSY``, v10+ let the program take
precedence. The binding refuses in user space on every revision with ``EBUSY``, as the RFC's review asked
(Willem de Bruijn on RFC patch 5/7, 8 Oct 2023: "don't let one feature silently disable another"),
before any ioctl, so that what is in force is always what the caller last asked for.

:class:`SteeringState` is the one place that knows the rule: it records what is in force, checks
every request against it and writes every refusal. One exists per device
(:class:`~pytun_hash.device.base.TunTapBase`: a real :class:`~pytun_hash.device.tap.TunTapDevice`
or a test's ``pytun_hash.testing.FakeTunTap``), shared by its queues, hash control
(:mod:`pytun_hash.device.hashctl`) and the eBPF backend (:mod:`pytun_hash.bpf.rss`), which all
check and change it under :attr:`SteeringState.lock`. It sees only what goes through this
process's objects: another process holding a queue fd of the same device can still change the
kernel's state.
"""

from __future__ import annotations

import errno
import threading
from typing import NamedTuple, Protocol

from pytun_hash._abi import Revision, hash_ioctls, require_revision
from pytun_hash.errors import BusyError, SteeringConflictError

__all__ = ["HashRequests", "SteeringState", "hash_requests"]

# The request that turns RSS on, per revision: v12 split the RFC's one setter into three, and
# TUNSETVNETRSS is the one that enables RSS (TUNSETVNETREPORTINGRSS only adds reports to it).
_RSS_SETTER = {
    Revision.RFC: "TUNSETVNETHASH",
    Revision.V3: "TUNSETVNETHASH",
    Revision.V10: "TUNSETVNETHASH",
    Revision.V12: "TUNSETVNETRSS",
}


class HashRequests(NamedTuple):
    """The kernel names of one revision's hash ioctls that errors refer to."""

    get: str
    """The capability get-ioctl: ``TUNGETVNETHASHCAP`` (RFC, v3-v11) or ``TUNGETVNETHASHTYPES`` (v12)."""
    set_rss: str
    """The ioctl that enables RSS: ``TUNSETVNETHASH`` (RFC, v3-v11) or ``TUNSETVNETRSS`` (v12)."""


def hash_requests(revision: Revision) -> HashRequests:
    """The get-ioctl and the RSS set-ioctl of ``revision``, by their kernel names.

    Raises:
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    revision = require_revision(revision)
    return HashRequests(get=hash_ioctls(revision)[0].name, set_rss=_RSS_SETTER[revision])


class _Device(Protocol):
    """What the rule needs of its device: a name for messages, and whether the device still exists."""

    name: str

    def raise_if_deleted(self) -> None: ...


class SteeringState:
    """Mutual exclusion between native RSS (the kernel hash ioctls) and an eBPF steering program.

    Check and change it under :attr:`lock` (re-entrant; the device's own lock), and hold the lock
    from the check through the ioctl to the record, so the three are one step for every thread.

    Args:
        device: the device whose state this is. Refusals ask it first whether it still exists
            (``TUNGETIFF``), since the kernel frees its hash state and program with it; without
            a device (a bare state) refusals rest on the record alone.

    Attributes:
        lock: guards every field and the ioctls that change them.
        native_rss: RSS through the kernel hash ioctls is in force (recorded by hash control).
        native_report: hash reporting through the kernel hash ioctls is in force.
        native_revision: the revision whose hash ioctls set the native state; None before any.
        steering_program: the fd number of the attached steering program, as it was passed; None
            when none is attached. The kernel keeps its own reference, so this fd may be closed since.
        steering_owner: who attached it (``"user"``, ``"ebpf-rss"`` ...), None when none is attached.
    """

    def __init__(self, device: _Device | None = None) -> None:
        self.lock = threading.RLock()
        self.native_rss = False
        self.native_report = False
        self.native_revision: Revision | None = None
        self.steering_program: int | None = None
        self.steering_owner: str | None = None
        self._device = device

    def __repr__(self) -> str:
        return (
            f"SteeringState(native_rss={self.native_rss}, native_report={self.native_report}, "
            f"steering_program={self.steering_program}, steering_owner={self.steering_owner!r})"
        )

    @property
    def steering_attached(self) -> bool:
        """Whether a steering program is attached through this device object."""
        return self.steering_program is not None

    # ----------------------------------------------------------------- checks

    def ensure_can_attach(
        self, *, owner: str | None = None, exclusive: bool = False, revision: Revision | None = None
    ) -> None:
        """Return when ``owner`` may attach a steering program now (``TUNSETSTEERINGEBPF``); else raise.

        Args:
            owner: who asks (named in the refusal).
            exclusive: refuse while any program is attached, as the eBPF RSS backend does (it never
                replaces a program it did not attach); otherwise a new program replaces the old
                one, as the kernel does.
            revision: the revision whose hash ioctls enabled RSS, named in the refusal; None = the
                one recorded with the native state, else the RFC.

        Raises:
            BusyError: ``EBUSY`` when ``exclusive`` and a program is attached; no ioctl is issued.
            SteeringConflictError: ``EBUSY`` while native RSS is enabled; no ioctl is issued.
            DeviceGoneError: ``EBADFD`` instead of either when the device was deleted (the record
                is cleared: the kernel freed that state with the device).
        """
        with self.lock:
            if exclusive and self.steering_program is not None:
                self._raise_if_deleted()
                wanted = f" ({owner} asked to attach one)" if owner else ""
                raise BusyError(
                    errno.EBUSY,
                    "TUNSETSTEERINGEBPF",
                    f"a steering program (attached by {self.steering_owner or 'unknown'}) is in force on "
                    f"{self._where()}{wanted}; detach it first",
                )
            if self.native_rss:
                self._raise_if_deleted()
                set_rss = hash_requests(self._revision(revision)).set_rss
                raise SteeringConflictError(
                    errno.EBUSY,
                    "TUNSETSTEERINGEBPF",
                    f"native RSS ({set_rss}) is enabled on {self._where()} and the kernel would silently disable "
                    "it; disable RSS through hash control first (hash reports alone do not conflict)",
                )

    def ensure_can_attach_steering(self, *, revision: Revision | None = None) -> None:
        """Refuse to attach a steering program while native RSS is in force (:meth:`ensure_can_attach`).

        Raises:
            SteeringConflictError: ``EBUSY`` on ``TUNSETSTEERINGEBPF`` when native RSS is enabled.
            DeviceGoneError: ``EBADFD`` instead when the device was deleted.
        """
        self.ensure_can_attach(revision=revision)

    def ensure_can_enable_native_rss(self, *, revision: Revision | None = None) -> None:
        """Refuse to enable native RSS while a steering program is attached.

        Args:
            revision: the revision whose set-ioctl would enable RSS, named in the refusal; None = the
                one recorded with the native state, else the RFC.

        Raises:
            SteeringConflictError: ``EBUSY`` on the revision's RSS setter (``TUNSETVNETHASH``,
                ``TUNSETVNETRSS`` on v12) when a steering program is attached; no ioctl is issued.
            DeviceGoneError: ``EBADFD`` instead when the device was deleted (the record is cleared).
        """
        with self.lock:
            if self.steering_program is not None:
                self._raise_if_deleted()
                raise SteeringConflictError(
                    errno.EBUSY,
                    hash_requests(self._revision(revision)).set_rss,
                    f"a steering program (attached by {self.steering_owner or 'unknown'}) is in force on "
                    f"{self._where()} and the kernel would silently detach it; call "
                    "device.detach_steering_program() first (or enable hash reports only)",
                )

    # ----------------------------------------------------------------- records

    def record_steering(self, program: int | None, owner: str | None) -> None:
        """Record the program now attached (``None`` after a detach). Call under :attr:`lock`."""
        with self.lock:
            self.steering_program = program
            self.steering_owner = owner if program is not None else None

    def record_native(self, *, rss: bool, report: bool, revision: Revision) -> None:
        """Record what the kernel hash ioctls of ``revision`` now hold. Call under :attr:`lock`."""
        with self.lock:
            self.native_rss = rss
            self.native_report = report
            self.native_revision = revision

    def device_deleted(self) -> None:
        """Record that the device is gone: the kernel freed its hash state and steering program with it."""
        with self.lock:
            self.native_rss = False
            self.native_report = False
            self.native_revision = None
            self.steering_program = None
            self.steering_owner = None

    # ----------------------------------------------------------------- helpers

    def _raise_if_deleted(self) -> None:
        # A refusal rests on the record; a deleted device freed what it records, so say that instead.
        if self._device is not None:
            self._device.raise_if_deleted()

    def _where(self) -> str:
        return repr(self._device.name) if self._device is not None else "this device"

    def _revision(self, revision: Revision | None) -> Revision:
        return revision or self.native_revision or Revision.RFC
