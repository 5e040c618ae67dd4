"""What this test process created, so leak checks judge the suite's own objects and nothing else.

Other processes on the host may load BPF programs or create TUN/TAP devices and namespaces while
the suite runs; comparing host-wide lists before and after would blame the suite for them. Instead
:func:`install` wraps the two places this package creates such objects (every BPF map and program
is a :class:`~pytun_hash.bpf._fd.BpfObject`; every device is made by ``TunTapDevice.create``) and
records their ids.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from typing import Any

from pytun_hash.bpf._fd import BpfObject
from pytun_hash.bpf.maps import map_ids
from pytun_hash.bpf.prog import prog_ids
from pytun_hash.device import TunTapDevice, rtnl
from pytun_hash.device.netns import thread_netns_inode
from pytun_hash.errors import PytunHashError

__all__ = ["alive_bpf", "bpf_mark", "bpf_since", "devices_left", "install", "namespace_entries"]

# (kind, id) of every BPF object this process made, in order ("prog" or "map").
_BPF: list[tuple[str, int]] = []
# (namespace inode, ifindex, name) of every device this process created.
_DEVICES: list[tuple[int, int, str]] = []
_INSTALLED: list[bool] = []


def _bpf_id(fd: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith(("prog_id:", "map_id:")):
                    key, value = line.split()
                    return ("prog" if key == "prog_id:" else "map", int(value))
    except OSError:
        return None
    return None


def install() -> None:
    """Start recording (idempotent)."""
    if _INSTALLED:
        return
    _INSTALLED.append(True)
    original_init = BpfObject.__init__

    @functools.wraps(original_init)
    def init(self: BpfObject, fd: int) -> None:
        original_init(self, fd)
        found = _bpf_id(fd)
        if found is not None:
            _BPF.append(found)

    BpfObject.__init__ = init  # type: ignore[method-assign]
    original_create: Callable[..., TunTapDevice] = TunTapDevice.create.__func__  # type: ignore[attr-defined]

    @functools.wraps(original_create)
    def create(cls: type[TunTapDevice], *args: Any, **kwargs: Any) -> TunTapDevice:
        device = original_create(cls, *args, **kwargs)
        with contextlib.suppress(PytunHashError):
            _DEVICES.append((thread_netns_inode(), device.ifindex, device.name))
        return device

    TunTapDevice.create = classmethod(create)  # type: ignore[assignment]


def bpf_mark() -> int:
    """A position in the record; :func:`bpf_since` lists what came after it."""
    return len(_BPF)


def bpf_since(mark: int) -> tuple[set[int], set[int]]:
    """``(program ids, map ids)`` this process created after ``mark``."""
    made = _BPF[mark:]
    return {i for k, i in made if k == "prog"}, {i for k, i in made if k == "map"}


def program_freed(program_id: int, within: float = 2.0) -> bool:
    """Whether the kernel frees program ``program_id`` within ``within`` seconds (it frees a detached,
    unpinned program after an RCU grace period, so this polls)."""
    deadline = time.monotonic() + within
    while program_id in prog_ids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def alive_bpf(progs: set[int], maps: set[int]) -> tuple[set[int], set[int]]:
    """Which of these program and map ids the kernel still holds."""
    return progs & set(prog_ids()), maps & set(map_ids())


def devices_left(netns: int) -> list[str]:
    """Devices this process created in namespace ``netns`` that still exist there (same index and name).

    Call it from a thread in ``netns``.
    """
    ours = {(index, name) for ns, index, name in _DEVICES if ns == netns}
    if not ours:
        return []
    try:
        present = {(link.index, link.name) for link in rtnl.list_links(kind="tun")}
    except PytunHashError:
        return []
    return sorted(name for _index, name in ours & present)


def namespace_entries(inode: int) -> list[str]:
    """Entries of ``/run/netns`` that name the namespace with this inode (none for anonymous ones)."""
    found = []
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return []
    for name in names:
        try:
            if os.stat(f"/run/netns/{name}").st_ino == inode:
                found.append(name)
        except OSError:
            continue
    return found
