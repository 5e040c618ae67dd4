"""The two ways :class:`~pytun_hash.hashing.Hashing` puts a configuration in force, behind one protocol.

* :class:`NativeBackend`: the kernel's hash ioctls of one revision
  (:class:`~pytun_hash.device.hashctl.HashControl`).
* :class:`EbpfBackend`: pytun_hash's steering program (:class:`~pytun_hash.bpf.rss.EbpfRss`),
  pinned in the device's pin directory so another process can take it over; report-only needs
  no program.

Both apply, disable and release (leave in force, close the fds) in the same way and report the
pins to record; :func:`take_off` removes what a record says either backend put on a device.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Protocol

from pytun_hash._abi import Revision
from pytun_hash.backend import Backend
from pytun_hash.bpf.pin import ensure_bpffs, make_pin_dir, remove_pin_dir
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.hashctl import HashControl, QueueFoldWarning, queue_fold_warning
from pytun_hash.device.record import DeviceId, EbpfPins, Record
from pytun_hash.errors import BpfError, KernelError, PytunHashWarning, ValidationError
from pytun_hash.hashing.state import StateLocation, unpin_record

__all__ = ["EbpfBackend", "HashingBackend", "HashingWarning", "NativeBackend", "take_off"]


class HashingWarning(PytunHashWarning):
    """Hashing is in force, but something around it is not as asked (see the message)."""


class HashingBackend(Protocol):
    """What a backend does for :class:`~pytun_hash.hashing.Hashing`."""

    @property
    def kind(self) -> Backend:
        """``NATIVE`` or ``EBPF``."""
        ...

    @property
    def revision(self) -> Revision | None:
        """The native revision in force; None for eBPF."""
        ...

    def apply(self, config: VnetHashConfig) -> None:
        """Put ``config`` in force (a disabled config turns hashing off)."""
        ...

    def disable(self) -> None:
        """Turn RSS and hash reports off."""
        ...

    def release(self) -> None:
        """Leave what is in force on the device and close this backend's fds."""
        ...

    def pins(self) -> EbpfPins | None:
        """The pinned objects to record (None: nothing pinned)."""
        ...


class NativeBackend:
    """The kernel's hash ioctls of ``revision``.

    Args:
        device: the device.
        revision: the revision the kernel speaks.
        config: what the kernel holds already (from a record), when taking it over.

    Raises:
        FeatureUnsupportedError: when the kernel does not answer the revision's get-ioctl.
        DeviceGoneError, KernelError: as :class:`~pytun_hash.device.hashctl.HashControl`.
    """

    def __init__(self, device: TunTapBase, revision: Revision, *, config: VnetHashConfig | None = None) -> None:
        self.control = HashControl(device, revision=revision)
        if config is not None:
            self.control.assume(config)

    @property
    def kind(self) -> Backend:
        """``NATIVE``."""
        return Backend.NATIVE

    @property
    def revision(self) -> Revision:
        """The revision whose ioctls are used."""
        return self.control.revision

    def apply(self, config: VnetHashConfig) -> None:
        """:meth:`HashControl.apply <pytun_hash.device.hashctl.HashControl.apply>`."""
        self.control.apply(config)

    def disable(self) -> None:
        """:meth:`HashControl.disable <pytun_hash.device.hashctl.HashControl.disable>`."""
        self.control.disable()

    def release(self) -> None:
        """Nothing to close: the kernel holds the configuration with the device."""

    def pins(self) -> EbpfPins | None:
        """None: nothing is pinned for native hashing."""
        return None


class EbpfBackend:
    """pytun_hash's steering program on one device, pinned for other processes.

    Args:
        device: the device.
        state: where to pin (``None``: pin nothing, as for a device without a record).
        ident: the device's id (with ``state``).
        rss: a program taken over from its pins, attached to ``device`` already.
        foreign_attached: a program pytun_hash attached earlier but cannot reach (it was not
            pinned) is attached: the next change detaches it first.
    """

    def __init__(
        self,
        device: TunTapBase,
        *,
        state: StateLocation | None = None,
        ident: DeviceId | None = None,
        rss: EbpfRss | None = None,
        foreign_attached: bool = False,
    ) -> None:
        self.device = device
        self._state = state
        self._ident = ident
        self.rss = rss
        self._unreachable = foreign_attached

    @property
    def kind(self) -> Backend:
        """``EBPF``."""
        return Backend.EBPF

    @property
    def revision(self) -> None:
        """None: no hash ioctls are involved."""
        return None

    def apply(self, config: VnetHashConfig) -> None:
        """Steer by ``config`` (reconfigured in place when a program is attached), or detach the
        program when ``config.rss`` is off: report-only needs none.

        Raises:
            ValidationError: for a config the program cannot implement (_EX hash types).
            SteeringConflictError / BusyError: when native RSS or another program is in force.
            PrivilegeError / VerifierError / BpfError / KernelError: as :meth:`EbpfRss.load`.
        """
        if not config.rss:
            self.disable()
            return
        folded = queue_fold_warning(config, self.device.numqueues, self.device.name)
        if folded is not None:
            warnings.warn(folded, QueueFoldWarning, stacklevel=4)
        if self.rss is not None:
            self.rss.reconfigure(config)
            return
        self._detach_unreachable()
        self.rss = self._load(config)

    def _detach_unreachable(self) -> None:
        if self._unreachable:
            self.device.detach_steering_program()
            self._unreachable = False

    def _pin_directory(self) -> str | None:
        if self._state is None or self._ident is None:
            return None
        try:
            ensure_bpffs(self._state.bpffs)
            directory = self._state.pin_dir(self._ident)
            remove_pin_dir(directory)  # leftovers of a record that is gone
            make_pin_dir(self._ident.netns, self._ident.ifindex, root=self._state.bpffs)
        except (KernelError, ValidationError) as exc:
            warnings.warn(
                f"no bpf filesystem at {self._state.bpffs} ({exc}); the program is recorded but not pinned, so "
                "no other process can verify or reconfigure it (it can still detach it)",
                HashingWarning,
                stacklevel=5,
            )
            return None
        return directory

    def _load(self, config: VnetHashConfig) -> EbpfRss:
        rss = EbpfRss.load(config, self.device.mode)
        directory: str | None = None
        try:
            directory = self._pin_directory()
            if directory is not None:
                rss.pin(directory)
            rss.attach(self.device)
        except BaseException:
            try:
                rss.close()
            finally:
                if directory is not None:
                    with contextlib.suppress(KernelError, ValidationError):
                        remove_pin_dir(directory)
            raise
        return rss

    def disable(self) -> None:
        """Detach and unpin the program (nothing to do for report-only).

        Raises:
            KernelError: when detaching fails (the fds are closed all the same).
        """
        rss, self.rss = self.rss, None
        if rss is None:
            self._detach_unreachable()
            self._unpin()
            return
        pins = rss.pins
        try:
            rss.close()
        finally:
            if pins is not None:
                remove_pin_dir(_pin_dir_of(pins))

    def _unpin(self) -> None:
        if self._state is not None and self._ident is not None:
            remove_pin_dir(self._state.pin_dir(self._ident))

    def release(self) -> None:
        """Close the fds; the device keeps the program attached, the pins keep it reachable."""
        rss, self.rss = self.rss, None
        if rss is not None:
            rss.release()

    def pins(self) -> EbpfPins | None:
        """The pins of the attached program (None: report-only, or nothing could be pinned)."""
        if self.rss is None:
            return None
        paths = self.rss.pins
        if paths is None:
            return None
        return EbpfPins(
            _pin_dir_of(paths),
            paths["prog"],
            {"control": paths["control"], "slots": paths["slots"]},
            self.rss.program_id,
        )

    @classmethod
    def adopt(
        cls, device: TunTapBase, record: Record, *, state: StateLocation | None, ident: DeviceId | None
    ) -> EbpfBackend:
        """Take over the program a record's pins name, attached to ``device`` by another process.

        A report-only record has no program; an unpinned one leaves a program that can only be
        detached.

        Raises:
            BpfError: when the pins are not what the record says (replaced, or another configuration).
            ValidationError: for a recorded config the program cannot implement.
        """
        if not record.config.rss:
            return cls(device, state=state, ident=ident)
        if record.ebpf is None:
            return cls(device, state=state, ident=ident, foreign_attached=True)
        rss = EbpfRss.from_pinned(record.ebpf.pin_dir, record.config, device.mode, program_id=record.ebpf.program_id)
        try:
            rss.adopt_attached(device)
        except BaseException:
            rss.release()
            raise
        return cls(device, state=state, ident=ident, rss=rss)


def _pin_dir_of(paths: dict[str, str]) -> str:
    return os.path.dirname(paths["prog"])


def take_off(device: TunTapBase, record: Record) -> None:
    """Remove what ``record`` says pytun_hash put in force on ``device``, through the raw calls
    (native: the disabled configuration of its revision; eBPF: detach the program and unpin it).

    Raises:
        KernelError: when the kernel refuses (the pins are removed all the same for eBPF).
    """
    if record.backend == "native":
        assert record.revision is not None  # a native record names its revision
        HashControl(device, revision=record.revision, read_capability=False).disable()
        return
    try:
        if record.config.rss:
            device.detach_steering_program()
    finally:
        with contextlib.suppress(BpfError):
            unpin_record(record)
