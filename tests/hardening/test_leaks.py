"""Leaks: 1,000 cycles of create / configure (native through the emulator, then eBPF) / close leave the
process's fds, threads, the network devices (here and in the initial namespace) and the BPF objects
at their baseline."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pytun_hash import HashControl, Revision, VnetHashConfig
from pytun_hash.bpf import Program, enable_ebpf_rss, map_ids, prog_ids
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.netns import thread_netns_inode
from pytun_hash.testing import KernelEmulator
from tests import tracking

pytestmark = [pytest.mark.kernel, pytest.mark.filterwarnings("ignore::pytun_hash.HashControlWarning")]

#: The issue asks for 1,000. A cycle takes some 40 ms, most of it waiting for the kernel to delete
#: the TAP and free the program (RCU); 4 threads overlap those waits.
CYCLES = 1000
WORKERS = 4
#: fds one cycle holds at most: 2 queues; the emulator's listener, eventfd, namespace fd, index and rtnetlink
#: sockets, its data path's recorder (program, queue map, counter map and the mapping's own fd) and
#: steering program with its two maps and their mappings' own fds; then the cycle's program, its two maps
#: and their mappings' fds; plus slack.
FDS_PER_CYCLE = 20
CONFIG = VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY, table_length=16, report=True)
REVISIONS = list(Revision)


def _fds() -> dict[int, str]:
    targets = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            targets[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue
    return targets


def _cycle(revision: Revision) -> tuple[int, tuple[int, ...]]:
    """One create / configure native / disable / configure eBPF / close cycle; the BPF ids it used."""
    with TunTapDevice.create("lk%d", queues=2) as dev:
        dev.set_vnet_hdr_size(20)
        with KernelEmulator(revision) as emu:
            control = emu.run(HashControl, dev, revision=revision)
            emu.run(control.apply, CONFIG)
            assert emu.device_state(dev.queues[0].fd).rss
            emu.run(control.disable)
        with enable_ebpf_rss(dev, CONFIG) as ebpf:
            return ebpf.object_ids()


def test_create_configure_close_cycles(need_seccomp: None, program: Program) -> None:
    home = thread_netns_inode()  # the test's thread is still in its original namespace here
    with NetworkNamespace(ipv6=False) as netns:
        _cycles(netns)
    # None of the devices this process created is left here (others' devices are not judged).
    assert tracking.devices_left(home) == []


def _cycles(netns: NetworkNamespace) -> None:
    fds = _fds()
    threads = {t.ident for t in threading.enumerate()}
    links = {(link.index, link.name) for link in netns.list_links()}
    progs_before, maps_before = set(prog_ids()), set(map_ids())
    ours_progs: set[int] = set()
    ours_maps: set[int] = set()
    started = time.monotonic()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def worker(first: int) -> None:
        # Started from the test's thread, so inside its namespace.
        try:
            for cycle in range(first, CYCLES, WORKERS):
                prog, maps = _cycle(REVISIONS[cycle % len(REVISIONS)])
                with lock:
                    ours_progs.add(prog)
                    ours_maps.update(maps)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(i,), name=f"leak-cycles-{i}") for i in range(WORKERS)]
    for t in workers:
        t.start()
    # Sampled along the way: at any instant only the workers' cycles in flight hold fds.
    peak = len(fds)
    deadline = time.monotonic() + 300
    while any(t.is_alive() for t in workers) and time.monotonic() < deadline:
        peak = max(peak, len(_fds()))
        time.sleep(0.02)
    for t in workers:
        t.join(timeout=max(deadline - time.monotonic(), 0.1))
    assert not any(t.is_alive() for t in workers), "the cycles did not finish within 300 s"
    assert peak - len(fds) <= WORKERS * FDS_PER_CYCLE, f"fds grew during the run: peak {peak}, baseline {len(fds)}"
    if failures:
        raise failures[0]
    elapsed = time.monotonic() - started
    assert _fds() == fds
    assert {(link.index, link.name) for link in netns.list_links()} == links
    end = time.monotonic() + 5.0
    while True:  # the kernel frees a detached program after an RCU grace period
        alive_progs = set(prog_ids()) & ours_progs
        alive_maps = set(map_ids()) & ours_maps
        extra_threads = [t for t in threading.enumerate() if t.ident not in threads]
        if not (alive_progs or alive_maps or extra_threads) or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert not alive_progs and not alive_maps, f"BPF objects left: programs {alive_progs}, maps {alive_maps}"
    assert not extra_threads, extra_threads
    assert len(ours_progs) == CYCLES and len(ours_maps) >= 2 * CYCLES  # every cycle really loaded its own
    # Objects of other processes may come and go meanwhile; none of ours is among what is new.
    assert not (set(prog_ids()) - progs_before) & ours_progs
    assert not (set(map_ids()) - maps_before) & ours_maps
    print(
        f"\n{CYCLES} cycles in {elapsed:.1f} s with {WORKERS} threads ({1000 * elapsed / CYCLES:.1f} ms each); "
        f"fds: baseline {len(fds)}, peak {peak}, end {len(_fds())}; {len(ours_progs)} programs and "
        f"{len(ours_maps)} maps loaded and freed"
    )
