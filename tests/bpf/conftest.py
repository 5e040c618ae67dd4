"""Skip logic and leak checks for the eBPF tests.

* Tests marked ``bpf`` are skipped, with the precise reason, where ``bpf(2)`` cannot create a
  map (not root / no CAP_BPF: ``EPERM``; kernel without ``CONFIG_BPF_SYSCALL``: ``ENOSYS``).
* Every ``bpf`` test must leave no bpf fd open and every BPF program or map id that appeared
  during the test must be gone afterwards (the kernel frees attached programs and inner maps
  after an RCU grace period, so the check polls briefly).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator

import pytest

from pytun_hash.bpf.maps import ArrayMap, map_ids
from pytun_hash.bpf.prog import prog_ids
from pytun_hash.errors import KernelError
from tests import tracking

_BPF_SKIP = pytest.StashKey[str | None]()
_RELEASE_TIMEOUT = 5.0


def bpf_skip_reason(config: pytest.Config) -> str | None:
    """Why bpf(2) tests cannot run here, or None when they can (probed once per session)."""
    if _BPF_SKIP not in config.stash:
        config.stash[_BPF_SKIP] = _probe_bpf()
    return config.stash[_BPF_SKIP]


def _probe_bpf() -> str | None:
    try:
        with ArrayMap.create(4, 1):
            pass
    except KernelError as exc:
        if exc.errno == errno.EPERM:
            return (
                f"bpf(BPF_MAP_CREATE) gives EPERM (euid {os.geteuid()}, {_bpf_caps()}): eBPF needs CAP_BPF "
                "(or CAP_SYS_ADMIN) plus CAP_NET_ADMIN, as kernel.unprivileged_bpf_disabled forbids it otherwise"
            )
        if exc.errno == errno.ENOSYS:
            return "bpf(2) is not available: kernel built without CONFIG_BPF_SYSCALL (ENOSYS)"
        return f"bpf(2) does not work here: {exc}"
    return None


def _bpf_caps() -> str:
    """Which of CAP_SYS_ADMIN (21) and CAP_BPF (39) the process has in its effective set."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            eff = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return "capabilities unknown"
    held = [name for bit, name in ((21, "CAP_SYS_ADMIN"), (39, "CAP_BPF")) if eff >> bit & 1]
    return "holds " + " and ".join(held) if held else "holds neither CAP_BPF nor CAP_SYS_ADMIN"


def _bpf_fds() -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
        if target.startswith("anon_inode:bpf"):
            found[int(entry)] = target
    return found


def wait_released(prog: set[int], maps: set[int], timeout: float = _RELEASE_TIMEOUT) -> tuple[set[int], set[int]]:
    """Poll until none of the given program and map ids exists; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive_p = prog & set(prog_ids())
        alive_m = maps & set(map_ids())
        if not (alive_p or alive_m) or time.monotonic() > deadline:
            return alive_p, alive_m
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def _bpf_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip ``bpf`` tests where bpf(2) cannot work; fail them when they leak fds or BPF objects."""
    if request.node.get_closest_marker("bpf") is None:
        yield
        return
    reason = bpf_skip_reason(request.config)
    if reason:
        pytest.skip(reason)
    fds_before = _bpf_fds()
    mark = tracking.bpf_mark()
    yield
    leaked_fds = {fd: t for fd, t in _bpf_fds().items() if fds_before.get(fd) != t}
    # Only the objects this process made count: others may load programs meanwhile.
    alive_p, alive_m = wait_released(*tracking.bpf_since(mark))
    problems = []
    if leaked_fds:
        problems.append("bpf fds left open: " + ", ".join(f"{fd} -> {t}" for fd, t in sorted(leaked_fds.items())))
    if alive_p or alive_m:
        problems.append(
            f"BPF objects still alive {_RELEASE_TIMEOUT:.0f} s later: "
            f"programs {sorted(alive_p)}, maps {sorted(alive_m)}"
        )
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
