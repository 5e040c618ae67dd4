"""Per-device steering state: who steers the device's traffic, native RSS or an eBPF program.

The RFC kernel would silently turn one off when the other is enabled; the binding never lets
that happen (design decision 5). One :class:`SteeringState` exists per
:class:`~pytun_hash.device.tap.TunTapDevice` and is shared by all of its queues, the hash
control and the eBPF backend. It only sees what goes through this process's objects: another
process holding a queue fd of the same device can still change the kernel's state.
"""

from __future__ import annotations

import errno
import threading

from pytun_hash.errors import SteeringConflictError

__all__ = ["SteeringState"]


class SteeringState:
    """Mutual exclusion between native RSS (the kernel hash ioctls) and an eBPF steering program.

    Check and change it under :attr:`lock` (re-entrant), so that the check and the ioctl that
    follows are one step for every thread.

    Attributes:
        lock: guards every field and the ioctls that change them.
        native_rss: RSS through the kernel hash ioctls is in force (set by hash control).
        native_report: hash reporting through the kernel hash ioctls is in force.
        steering_program: the fd number of the attached steering program, as it was passed; None
            when none is attached. The kernel keeps its own reference, so this fd may be closed since.
        steering_owner: who attached it (``"user"``, ``"ebpf-rss"`` ...), None when none is attached.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.native_rss = False
        self.native_report = False
        self.steering_program: int | None = None
        self.steering_owner: str | None = None

    def __repr__(self) -> str:
        return (
            f"SteeringState(native_rss={self.native_rss}, native_report={self.native_report}, "
            f"steering_program={self.steering_program}, steering_owner={self.steering_owner!r})"
        )

    @property
    def steering_attached(self) -> bool:
        """Whether a steering program is attached through this device object."""
        return self.steering_program is not None

    def ensure_can_attach_steering(self) -> None:
        """Refuse to attach a steering program while native RSS is in force.

        Raises:
            SteeringConflictError: ``EBUSY`` on ``TUNSETSTEERINGEBPF`` when native RSS is enabled.
        """
        with self.lock:
            if self.native_rss:
                raise SteeringConflictError(
                    errno.EBUSY,
                    "TUNSETSTEERINGEBPF",
                    "native RSS is enabled on this device and the kernel would silently disable it; disable "
                    "RSS through hash control first (hash reports alone do not conflict)",
                )

    def ensure_can_enable_native_rss(self) -> None:
        """Refuse to enable native RSS while a steering program is attached.

        Raises:
            SteeringConflictError: ``EBUSY`` on ``TUNSETVNETHASH`` when a steering program is attached.
        """
        with self.lock:
            if self.steering_program is not None:
                raise SteeringConflictError(
                    errno.EBUSY,
                    "TUNSETVNETHASH",
                    f"a steering program (attached by {self.steering_owner or 'unknown'}) is in force and "
                    "the kernel would silently detach it; call device.detach_steering_program() first "
                    "(or enable hash reports only)",
                )

    def device_deleted(self) -> None:
        """Record that the device is gone: the kernel freed its hash state and steering program with it."""
        with self.lock:
            self.native_rss = False
            self.native_report = False
            self.steering_program = None
            self.steering_owner = None

    def record_steering(self, program: int | None, owner: str | None) -> None:
        """Record the program now attached (``None`` after a detach). Call under :attr:`lock`."""
        with self.lock:
            self.steering_program = program
            self.steering_owner = owner if program is not None else None
