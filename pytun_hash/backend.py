"""Which backend puts a hashing configuration in force: the kernel's hash ioctls or eBPF steering.

:class:`pytun_hash.hashing.Hashing` is the one API over both; this module chooses between them.

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
from typing import TYPE_CHECKING

import attrs

from pytun_hash._abi.revision import Revision
from pytun_hash.errors import FeatureUnsupportedError

if TYPE_CHECKING:
    from pytun_hash.device.base import TunTapBase
    from pytun_hash.device.hashctl import ProbeResult

__all__ = ["Backend", "BackendChoice", "choose_backend"]


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
        revision: the native revision to use instead of probing. A probe that finds V3's numbers
            on a real device tells v10/v11 (``V10``) from v3-v9 on a scratch device
            (:func:`~pytun_hash.probe.refine_revision`).

    Raises:
        FeatureUnsupportedError: ``NATIVE`` was requested and no revision answered.
        DeviceGoneError: the device was deleted.
    """
    # Imported here: commands that only name a backend (`predict`, `--help` of every command) do not
    # load device and probing code.
    from pytun_hash.device.hashctl import probe_revision
    from pytun_hash.device.tap import TunTapDevice
    from pytun_hash.probe import auto_decision, refine_revision

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
    found = result.revision
    if found is Revision.V3 and isinstance(device, TunTapDevice):
        # v10/v11 answer V3's numbers; a scratch device of the same kernel tells them apart (a fake
        # device's kernel is not the running one, so it keeps V3's stricter rules).
        found = refine_revision(found)
    # The AUTO rule has one owner; bpf(2) itself is not probed here (enabling will say so).
    decision = auto_decision(found, True, probed)
    backend = Backend.NATIVE if decision.backend == "native" else Backend.EBPF
    return BackendChoice(backend, decision.revision, decision.reason, result)
