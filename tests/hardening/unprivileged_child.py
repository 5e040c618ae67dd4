"""Run pytun_hash operations without privilege and report each outcome as one JSON line.

Started by tests/hardening/test_faults.py as ``python unprivileged_child.py MODE QUEUE_FD QUEUE_FD PROG_FD``
from inside a test's network namespace, with those fds inherited:

* ``nocaps``: stay uid 0 but drop every capability (bounding set and capset), so the kernel answers
  ``EPERM`` where it checks CAP_NET_ADMIN or CAP_BPF;
* ``nobody``: become uid/gid 65534, so opening ``/dev/net/tun`` (mode 0600) fails with ``EACCES``.

Everything is imported before privileges are dropped (the interpreter may live where nobody cannot
read). Each line: ``{"op", "ok", "error", "errno", "hint", "detail"}``.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable

import pytun_hash.bpf.rss
import pytun_hash.device.hashctl
from pytun_hash import HashControl, PytunHashError, Revision, TunTapDevice, VnetHashConfig
from pytun_hash.bpf import ArrayMap, Assembler, EbpfRss, Program, Reg
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.errors import KernelError
from pytun_hash.testing import KernelEmulator

_PR_CAPBSET_DROP = 24
_PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def drop_capabilities() -> None:
    """Drop every capability from the bounding, effective, permitted and inheritable sets."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def report(op: str, fn: Callable[[], object]) -> object:
    """Run ``fn``; print its outcome as one JSON line; return its result (None on error)."""
    line: dict[str, object] = {"op": op, "ok": True, "error": None, "errno": None, "hint": None, "detail": None}
    result: object = None
    try:
        result = fn()
    except PytunHashError as exc:
        line.update(ok=False, error=type(exc).__name__)
        if isinstance(exc, KernelError):
            line.update(errno=exc.errno, hint=exc.hint)
    except Exception as exc:
        line.update(ok=False, error=f"foreign:{type(exc).__name__}", detail=str(exc))
    print(json.dumps(line), flush=True)
    return result


def main() -> None:
    mode, q0, q1, prog_fd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    assert pytun_hash.device.hashctl and pytun_hash.bpf.rss  # imported before dropping privileges
    code = Assembler().mov64_imm(Reg.R0, 0).exit().assemble()
    config = VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY, table_length=8)
    if mode == "nocaps":
        drop_capabilities()
    else:
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        # A uid change makes the process undumpable, hiding /proc/self from itself; a process
        # started as nobody would not be, so undo that.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    fds_before = len(os.listdir("/proc/self/fd"))
    report("create", lambda: TunTapDevice.create("up%d", queues=2))
    report("prog_load", lambda: Program.load(code))
    report("map_create", lambda: ArrayMap.create(4, 1))
    report("ebpf_load", lambda: EbpfRss.load(config))
    report("fds_unchanged", lambda: _check(len(os.listdir("/proc/self/fd")) == fds_before, "an fd leaked"))
    dev = report("adopt", lambda: TunTapDevice.adopt([q0, q1], close=False))
    if not isinstance(dev, TunTapDevice):
        return
    queue = dev.queues[1]
    report("detach_queue", lambda: dev.detach_queue(queue))
    report("attach_queue", lambda: dev.attach_queue(queue))  # re-attaching needs no capability
    report("add_queue", dev.add_queue)
    report(
        "queues_unchanged",
        lambda: _check(
            len(dev.queues) == dev.numqueues == 2 and dev.kernel_queue_counts() == (2, 0), "the queue set changed"
        ),
    )
    report("attach_steering", lambda: dev.attach_steering_program(prog_fd))
    report("detach_steering", dev.detach_steering_program)
    # The seccomp emulator needs no privilege: hash control works through it all the same.
    with KernelEmulator(Revision.RFC) as emu:
        control = emu.run(HashControl, dev, revision=Revision.RFC)
        report("emulated_apply", lambda: emu.run(control.apply, config))
        report("emulated_state", lambda: _check(emu.device_state(dev.queues[0].fd).as_config() == config, "state"))
    dev.close()


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


if __name__ == "__main__":
    main()
