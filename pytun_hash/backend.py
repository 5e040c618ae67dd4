"""One API, several backends: put a hashing configuration in force the best way the kernel allows.

* ``NATIVE``: the kernel's hash ioctls (:class:`~pytun_hash.device.hashctl.HashControl`), for
  kernels with one of the hash UAPI revisions. RSS and hash reports happen in the kernel.
* ``EBPF``: the generated steering program (:class:`~pytun_hash.bpf.rss.EbpfRss`), for kernels
  without them (mainline today). RSS happens in the kernel; eBPF cannot write hash reports, so
  reports are computed in user space (:class:`~pytun_hash.bpf.report.HashReporter`).
* ``AUTO``: probe the device; native when a revision answers, else eBPF.

Both backends count as the device's steering for the strict mutual exclusion: native RSS
refuses a steering program and the eBPF backend *is* one.
"""

from __future__ import annotations

import enum
import errno
from types import TracebackType
from typing import Self

import attrs

from pytun_hash._abi import Revision
from pytun_hash.bpf.rss import EbpfRss, enable_ebpf_rss
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.hashctl import HashControl, ProbeResult, probe_revision
from pytun_hash.errors import FeatureUnsupportedError, ValidationError
from pytun_hash.model.classify import Semantics
from pytun_hash.model.semantics import semantics_for
from pytun_hash.probe import auto_decision

__all__ = ["Backend", "BackendChoice", "Hashing", "choose_backend"]


class Backend(enum.Enum):
    """Which mechanism puts a configuration in force."""

    AUTO = "auto"
    NATIVE = "native"
    EBPF = "ebpf"


@attrs.frozen
class BackendChoice:
    """The outcome of :func:`choose_backend`.

    Attributes:
        backend: ``NATIVE`` or ``EBPF`` (never ``AUTO``).
        revision: the native revision (None for eBPF).
        reason: one sentence saying why.
        probe: the probe result, when the device was probed.
    """

    backend: Backend
    revision: Revision | None
    reason: str
    probe: ProbeResult | None = None


def choose_backend(
    device: TunTapBase, requested: Backend = Backend.AUTO, *, revision: Revision | None = None
) -> BackendChoice:
    """Decide how to configure hashing on ``device``.

    Args:
        device: the device (with at least one attached queue when probing).
        requested: ``AUTO`` probes; ``NATIVE`` needs a revision (given or probed); ``EBPF`` always works
            where ``bpf(2)`` does.
        revision: the native revision to use instead of probing.

    Raises:
        FeatureUnsupportedError: ``NATIVE`` was requested and no revision answered.
        DeviceGoneError: the device was deleted.
    """
    if requested is Backend.EBPF:
        return BackendChoice(Backend.EBPF, None, "eBPF steering was requested")
    if revision is not None:
        return BackendChoice(Backend.NATIVE, revision, f"revision {revision.value} was named")
    result = probe_revision(device)
    probed = ", ".join(r.value for r, _ in result.tried)
    if result.revision is None and requested is Backend.NATIVE:
        raise FeatureUnsupportedError(
            errno.EINVAL,
            "TUNGETVNETHASHCAP",
            f"the native backend was requested but this kernel lacks the hash ioctls (probed {probed}); "
            "use the eBPF backend",
        )
    # The AUTO rule has one owner; bpf(2) itself is not probed here (enabling will say so).
    decision = auto_decision(result.revision, True, probed)
    backend = Backend.NATIVE if decision.backend == "native" else Backend.EBPF
    return BackendChoice(backend, decision.revision, decision.reason, result)


class Hashing:
    """A hashing configuration in force on one device through one backend (context manager).

    Build it with :meth:`enable`. :meth:`close` turns hashing off (native: the disabled
    config; eBPF: detach and free the program and maps), unless ``keep=True``, which leaves
    the configuration in force on the device for as long as the device lives (the kernel holds
    its own reference to an attached program) and only releases this object's file descriptors.

    Attributes:
        device: the device.
        choice: the backend choice.
        reports_in_user_space: True when hash reports must be computed in user space (eBPF).
    """

    def __init__(
        self,
        device: TunTapBase,
        choice: BackendChoice,
        *,
        native: HashControl | None = None,
        ebpf: EbpfRss | None = None,
        config: VnetHashConfig,
    ) -> None:
        self.device = device
        self.choice = choice
        self._native = native
        self._ebpf = ebpf
        self._config = config
        self._closed = False

    @classmethod
    def enable(
        cls,
        device: TunTapBase,
        config: VnetHashConfig,
        *,
        backend: Backend = Backend.AUTO,
        revision: Revision | None = None,
    ) -> Hashing:
        """Put ``config`` in force on ``device`` with the chosen backend.

        Raises:
            SteeringConflictError: (``EBUSY``) native RSS while a steering program is attached, or eBPF
                while native RSS is enabled; nothing is changed.
            ValidationError: for a config the backend cannot implement (eBPF: _EX hash types).
            FeatureUnsupportedError: ``NATIVE`` requested on a kernel without the hash ioctls.
            KernelError: when the kernel refuses a call.
        """
        choice = choose_backend(device, backend, revision=revision)
        if choice.backend is Backend.NATIVE:
            control = HashControl(device, revision=choice.revision)
            control.apply(config)
            return cls(device, choice, native=control, config=config)
        ebpf = enable_ebpf_rss(device, config) if config.rss else None
        return cls(device, choice, ebpf=ebpf, config=config)

    @property
    def backend(self) -> Backend:
        """``NATIVE`` or ``EBPF``."""
        return self.choice.backend

    @property
    def config(self) -> VnetHashConfig:
        """The configuration in force through this object."""
        return self._config

    @property
    def revision(self) -> Revision | None:
        """The native revision in force; None on the eBPF backend."""
        return self.choice.revision if self.backend is Backend.NATIVE else None

    @property
    def semantics(self) -> Semantics:
        """The rules the hashing in force follows: the native revision's, or the specification on eBPF.

        Predict and verify this device's queues and reports with these (see
        :func:`pytun_hash.model.semantics_for`).
        """
        return semantics_for(self.revision)

    @property
    def reports_in_user_space(self) -> bool:
        """True when the kernel will not write hash reports, so user space must compute them."""
        return self.backend is Backend.EBPF and self._config.report

    @property
    def ebpf(self) -> EbpfRss | None:
        """The eBPF program, when the eBPF backend steers."""
        return self._ebpf

    def _check_open(self) -> None:
        if self._closed:
            raise ValidationError("hashing", "this Hashing object was closed; enable hashing again")

    def reconfigure(self, config: VnetHashConfig) -> None:
        """Switch to ``config`` without a window of no steering (eBPF: atomic map swap).

        Raises:
            ValidationError, SteeringConflictError, KernelError: as :meth:`enable`.
        """
        self._check_open()
        if self._native is not None:
            self._native.apply(config)
        elif not config.rss:
            if self._ebpf is not None:
                self._ebpf.close()
                self._ebpf = None
        elif self._ebpf is None:
            self._ebpf = enable_ebpf_rss(self.device, config)
        else:
            self._ebpf.reconfigure(config)
        self._config = config

    def disable(self) -> None:
        """Turn RSS and hash reports off; always allowed.

        Raises:
            KernelError: when the kernel refuses the call.
        """
        self._check_open()
        if self._native is not None:
            self._native.disable()
        elif self._ebpf is not None:
            ebpf, self._ebpf = self._ebpf, None
            ebpf.close()
        self._config = VnetHashConfig.disabled()

    def close(self, *, keep: bool = False) -> None:
        """Release this object; hashing is turned off unless ``keep`` (idempotent).

        Raises:
            KernelError: when turning hashing off fails (the fds are released all the same).
        """
        if self._closed:
            return
        try:
            if not keep:
                self.disable()
            elif self._ebpf is not None:
                self._ebpf.release()
        finally:
            self._closed = True
            if self._ebpf is not None:
                self._ebpf.close()
                self._ebpf = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.backend.value}"
        return f"Hashing({self.device.name!r}, {state})"
