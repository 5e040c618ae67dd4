"""Raw ABI layer: ioctl numbers, flags and ctypes structures, exactly as the kernel has them.

Nothing here does I/O or holds state; every higher layer builds on it.
"""

from __future__ import annotations

from pytun_hash._abi import rfc, v3, v12
from pytun_hash._abi.ioc import KNOWN_MACHINES, IocDir, IocLayout, layout_for
from pytun_hash._abi.revision import Revision, require_revision
from pytun_hash._abi.tun import TUN_IOCTLS, IoctlDef, TunFlag, TunOffload, ifreq
from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.errors import ValidationError

__all__ = [
    "KNOWN_MACHINES",
    "TUN_IOCTLS",
    "HashReport",
    "HashType",
    "IocDir",
    "IocLayout",
    "IoctlDef",
    "Revision",
    "TunFlag",
    "TunOffload",
    "hash_ioctls",
    "ifreq",
    "ioctl_def",
    "ioctl_request",
    "layout_for",
    "require_revision",
    "rfc",
    "v3",
    "v12",
]

_HASH_IOCTLS: dict[Revision, tuple[IoctlDef, ...]] = {
    Revision.RFC: rfc.HASH_IOCTLS,
    Revision.V3: v3.HASH_IOCTLS,
    Revision.V10: v3.HASH_IOCTLS,
    Revision.V12: v12.HASH_IOCTLS,
}
_TUN_BY_NAME = {d.name: d for d in TUN_IOCTLS}


def hash_ioctls(revision: Revision) -> tuple[IoctlDef, ...]:
    """The hash ioctls that ``revision`` defines, get-ioctl first.

    Raises:
        ValidationError: when ``revision`` is not a :class:`Revision` member.
    """
    return _HASH_IOCTLS[require_revision(revision)]


def ioctl_def(name: str, revision: Revision = Revision.RFC) -> IoctlDef:
    """Return the definition of ioctl ``name`` (a TUN ioctl, or a hash ioctl of ``revision``).

    Raises:
        ValidationError: (a ValueError) when ``name`` is neither a TUN ioctl nor a hash ioctl of
            ``revision``, or ``revision`` is not a :class:`Revision` member.
    """
    found = _TUN_BY_NAME.get(name) if isinstance(name, str) else None
    if found is not None:
        return found
    for d in hash_ioctls(revision):
        if d.name == name:
            return d
    others = [r.value for r, defs in _HASH_IOCTLS.items() if any(d.name == name for d in defs)]
    where = f"; it belongs to revision(s) {', '.join(others)}" if others else ""
    raise ValidationError("name", f"{name!r} is not an ioctl of revision {revision.value}{where}")


def ioctl_request(name: str, *, arch: str | None = None, revision: Revision = Revision.RFC) -> int:
    """Return the ioctl request number of ``name`` on ``arch``.

    Args:
        name: the kernel's macro name, e.g. ``"TUNSETIFF"`` or ``"TUNSETVNETHASH"``.
        arch: a ``platform.machine()`` spelling (``"x86_64"``, ``"ppc64le"``, ...); None = this host.
        revision: which hash UAPI revision a hash ioctl name refers to.

    Raises:
        ValidationError: (a ValueError) for an unknown name, machine or revision.
    """
    return ioctl_def(name, revision).request(layout_for(arch))
