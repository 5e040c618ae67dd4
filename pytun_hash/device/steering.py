"""The steering rule: native RSS and an eBPF steering program are never both in force on one device.

The kernels carrying the hash series disagree on what happens when both are asked for: the RFC
silently turns one off for the other, v3-v9 refuse with ``EBUSY``, v10+ let the program take
precedence. The binding refuses in user space on every revision with ``EBUSY``, as the RFC's review asked
(Willem de Bruijn on RFC patch 5/7, 8 Oct 2023: "don't let one feature silently disable another"),
before any ioctl, so that what is in force is always what the caller last asked for. That is the
:attr:`SteeringPolicy.STRICT` policy, the default everywhere.

:attr:`SteeringPolicy.LAYERED` is an explicit opt-in on v10 and later (``Revision.steering_precedence``):
native RSS stays in force under a steering program that returns ``TUN_STEERINGEBPF_FALLBACK`` for the
frames it does not steer itself (:mod:`pytun_hash.bpf.layered` builds such a program). Under it,
enabling native RSS with a program attached and attaching a program with native RSS on are both
allowed; every other check is unchanged. The RFC and v3-v9 cannot layer (the RFC silently disables one,
v3-v9 answer ``EBUSY``), so :meth:`SteeringState.set_policy` refuses it for them.

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

import enum
import errno
import threading
from typing import NamedTuple, Protocol

from pytun_hash._abi import Revision, hash_ioctls, require_revision
from pytun_hash.errors import BusyError, SteeringConflictError, ValidationError

__all__ = ["HashRequests", "SteeringPolicy", "SteeringState", "hash_requests"]

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


class SteeringPolicy(enum.Enum):
    """How native RSS and a steering program may share a device.

    ``STRICT`` (the default): never both; each refuses the other with ``EBUSY``, on every revision.
    ``LAYERED``: v10 and later only, opt-in: native RSS in force under a steering program, which
    takes precedence and returns ``TUN_STEERINGEBPF_FALLBACK`` to defer a frame to RSS.
    """

    STRICT = "strict"
    LAYERED = "layered"


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
        policy: the :class:`SteeringPolicy` in force (``STRICT`` unless :meth:`set_policy` said otherwise).
        policy_revision: the revision ``LAYERED`` was granted for; None under ``STRICT``.
    """

    def __init__(self, device: _Device | None = None) -> None:
        self.lock = threading.RLock()
        self.native_rss = False
        self.native_report = False
        self.native_revision: Revision | None = None
        self.steering_program: int | None = None
        self.steering_owner: str | None = None
        self.policy = SteeringPolicy.STRICT
        self.policy_revision: Revision | None = None
        self._device = device

    def __repr__(self) -> str:
        return (
            f"SteeringState(native_rss={self.native_rss}, native_report={self.native_report}, "
            f"steering_program={self.steering_program}, steering_owner={self.steering_owner!r}, "
            f"policy={self.policy.value})"
        )

    def set_policy(self, policy: SteeringPolicy, revision: Revision | None = None) -> None:
        """Choose the steering policy; ``LAYERED`` needs the device's revision, v10 or later.

        Switching back to ``STRICT`` while both RSS and a program are in force changes nothing in the
        kernel: the next request is judged by the strict rule.

        Args:
            policy: ``STRICT`` or ``LAYERED``.
            revision: the hash UAPI revision the device's kernel speaks (required for ``LAYERED``).

        Raises:
            ValidationError: for a value that is not a :class:`SteeringPolicy`, or ``LAYERED`` without
                a revision or on a revision without steering precedence (the RFC, v3-v9).
        """
        if not isinstance(policy, SteeringPolicy):
            raise ValidationError("policy", f"expected a SteeringPolicy member, got {policy!r}")
        if policy is SteeringPolicy.STRICT:
            with self.lock:
                self.policy, self.policy_revision = policy, None
            return
        if revision is None:
            raise ValidationError("revision", "the layered steering policy needs the device's revision (v10 or later)")
        revision = require_revision(revision)
        if not revision.steering_precedence:
            raise ValidationError(
                "policy",
                f"the layered steering policy needs revision v10 or later (a steering program that takes "
                f"precedence over RSS); {revision.title} ({revision.value}) "
                + (
                    "silently disables one for the other"
                    if revision is Revision.RFC
                    else "refuses RSS and a steering program together with EBUSY"
                )
                + ", so only the strict policy applies",
            )
        with self.lock:
            self.policy, self.policy_revision = policy, revision

    def _layered(self, revision: Revision | None) -> bool:
        """Whether the layered policy lets RSS and a program coexist for a request of ``revision``."""
        if self.policy is not SteeringPolicy.LAYERED:
            return False
        effective = revision or self.policy_revision
        return effective is not None and effective.steering_precedence

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
            SteeringConflictError: ``EBUSY`` while native RSS is enabled, unless the policy is
                ``LAYERED`` (v10+); no ioctl is issued.
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
            if self.native_rss and not self._layered(revision):
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
                ``TUNSETVNETRSS`` on v12) when a steering program is attached, unless the policy is
                ``LAYERED`` (v10+); no ioctl is issued.
            DeviceGoneError: ``EBADFD`` instead when the device was deleted (the record is cleared).
        """
        with self.lock:
            if self.steering_program is not None and not self._layered(revision):
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
