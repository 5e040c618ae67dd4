"""Raw ABI layer: ioctl numbers, flags and ctypes structures, exactly as the kernel has them.

Nothing here does I/O or holds state; every higher layer builds on it. Importing this package loads
none of its modules: each name below comes from its module on first use (a command that only needs
:class:`Revision` or :class:`HashType` does not pay for the ioctl tables and ctypes structures).
"""

from __future__ import annotations

from pytun_hash._lazy import lazy_names

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pytun_hash._abi import rfc, v3, v12
    from pytun_hash._abi.ioc import KNOWN_MACHINES, IocDir, IocLayout, layout_for
    from pytun_hash._abi.revision import Revision, require_revision
    from pytun_hash._abi.tables import hash_ioctls, ioctl_def, ioctl_request
    from pytun_hash._abi.tun import TUN_IOCTLS, IoctlDef, TunFlag, TunOffload, ifreq
    from pytun_hash._abi.virtio_net import HashReport, HashType

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

# Where each name lives (a submodule itself for rfc, v3, v12).
_WHERE = {
    "KNOWN_MACHINES": "ioc",
    "IocDir": "ioc",
    "IocLayout": "ioc",
    "layout_for": "ioc",
    "Revision": "revision",
    "require_revision": "revision",
    "hash_ioctls": "tables",
    "ioctl_def": "tables",
    "ioctl_request": "tables",
    "TUN_IOCTLS": "tun",
    "IoctlDef": "tun",
    "TunFlag": "tun",
    "TunOffload": "tun",
    "ifreq": "tun",
    "HashReport": "virtio_net",
    "HashType": "virtio_net",
    "rfc": None,
    "v3": None,
    "v12": None,
}


# Hidden from type checkers: with a module __getattr__ they would accept any name at all.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals(), __all__)
