"""The ioctl tables: every hash ioctl of each revision, and request numbers by name and machine."""

from __future__ import annotations

from pytun_hash._abi import rfc, v3, v12
from pytun_hash._abi.ioc import layout_for
from pytun_hash._abi.revision import Revision, require_revision
from pytun_hash._abi.tun import TUN_IOCTLS, IoctlDef
from pytun_hash.errors import ValidationError

__all__ = ["hash_ioctls", "ioctl_def", "ioctl_request"]

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
