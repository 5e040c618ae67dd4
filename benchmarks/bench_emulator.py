"""Per-call cost of the seccomp kernel emulator: µs per emulated ioctl against an untrapped one,
and µs per frame read through the emulated data path against an untrapped read of the same frame.

Run as root, from the repository root after ``make setup``:
``sudo .venv/bin/python benchmarks/bench_emulator.py [CALLS]``. Everything happens in an anonymous
network namespace; the references (an untrapped TUNGETVNETHDRSZ from the same filtered thread; a
queue read in an emulator without the data path) are measured in the same run.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable

from pytun_hash import MICROSOFT_RSS_KEY, HashControl, Revision, VnetHashConfig, ioctl_plan, ioctl_request
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.testing import EmulatorMode, KernelEmulator

FRAMES = 400


def _wire(ns: NetworkNamespace, dev: TunTapDevice) -> None:
    ns.add_address(dev.name, "10.77.0.1/24")
    ns.set_link_up(dev.name)
    ns.add_neighbour(dev.name, "10.77.0.2", "02:00:00:00:00:02")


def _read_all(dev: TunTapDevice) -> int:
    count = 0
    for queue in dev.attached_queues:
        while select.select([queue.fd], [], [], 0)[0]:
            os.read(queue.fd, 2048)
            count += 1
    return count


def _per_frame(emu: KernelEmulator, dev: TunTapDevice, sock: socket.socket, repeats: int = 5) -> float:
    """Median µs per frame of reading FRAMES queued frames inside ``emu`` (the sends are not timed)."""
    samples = []
    for r in range(repeats):
        for port in range(FRAMES):
            sock.sendto(b"bench", ("10.77.0.2", 20000 + port + r))
        start = time.perf_counter()
        read = emu.run(_read_all, dev)
        samples.append((time.perf_counter() - start) / max(read, 1) * 1e6)
        assert read == FRAMES, read
    return statistics.median(samples)


def data_path() -> None:
    """The emulated data path against untrapped and trapped-but-passed reads of the same frames."""
    config = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, report=True)
    with (
        NetworkNamespace(ipv6=False) as ns,
        TunTapDevice.create("bench%d", queues=4, vnet_hdr=True) as dev,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        dev.set_vnet_hdr_size(20)
        dev.set_vnet_le(True)
        _wire(ns, dev)
        with KernelEmulator(Revision.RFC, data_path=False) as emu:
            untrapped = _per_frame(emu, dev, sock)
        with KernelEmulator(Revision.RFC, data_path=True) as emu:
            passed = _per_frame(emu, dev, sock)  # trapped, not configured: let through
            emu.run(HashControl(dev, revision=Revision.RFC, read_capability=False).apply, config)
            emulated = _per_frame(emu, dev, sock)
            stats = emu.data_path_stats()
    ratio = "µs/frame ({:5.0f}x reference)"
    print(f"untrapped queue read (reference):             {untrapped:8.2f} µs/frame")
    print(f"trapped read let through (unconfigured):      {passed:8.1f} " + ratio.format(passed / untrapped))
    print(f"emulated RFC data path read (RSS + report):   {emulated:8.1f} " + ratio.format(emulated / untrapped))
    print(f"  frames recorded {stats['recorded']}, matched {stats['matched']}, reads emulated {stats['reads']}")


def _loop(fd: int, request: int, size_or_payload: int | bytes, calls: int) -> Callable[[], None]:
    template = bytes(size_or_payload)  # a size gives that many zero bytes

    def body() -> None:
        buf = bytearray(template)
        for _ in range(calls):
            fcntl.ioctl(fd, request, buf, True)

    return body


def _measure(emu: KernelEmulator, body: Callable[[], None], calls: int, repeats: int = 5) -> float:
    samples = []
    for _ in range(repeats):
        emu.reset_log()
        start = time.perf_counter()
        emu.run(body)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    config = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, report=True)
    (set_call,) = ioctl_plan(config, Revision.RFC)
    with NetworkNamespace(), TunTapDevice.create("bench%d", queues=4, vnet_hdr=True) as dev:
        dev.set_vnet_hdr_size(20)
        fd = dev.attached_queues[0].fd
        with KernelEmulator(Revision.RFC) as emu:
            real = _measure(emu, _loop(fd, ioctl_request("TUNGETVNETHDRSZ"), 4, calls), calls)
            cap = _measure(emu, _loop(fd, ioctl_request("TUNGETVNETHASHCAP"), 8, calls), calls)
            put = _measure(emu, _loop(fd, set_call.request, set_call.payload, calls), calls)
            control = emu.run(HashControl, dev, revision=Revision.RFC)
            start = time.perf_counter()
            applies = max(calls // 10, 1)

            def apply_many() -> None:
                for _ in range(applies):
                    control.apply(config)

            emu.run(apply_many)
            apply_us = (time.perf_counter() - start) / applies * 1e6
        with KernelEmulator(Revision.RFC, mode=EmulatorMode.PROCESS) as emu:
            proc = _measure(emu, _loop(fd, ioctl_request("TUNGETVNETHASHCAP"), 8, calls), calls)
    print(f"untrapped TUNGETVNETHDRSZ (reference):        {real:8.2f} µs/call")
    print(f"emulated RFC TUNGETVNETHASHCAP, thread mode:  {cap:8.1f} µs/call ({cap / real:5.0f}x reference)")
    print(f"emulated RFC TUNSETVNETHASH 308 B, thread:    {put:8.1f} µs/call ({put / real:5.0f}x reference)")
    print(f"HashControl.apply (checks + 1 emulated call): {apply_us:8.1f} µs/apply ({apply_us / real:5.0f}x reference)")
    print(f"emulated RFC TUNGETVNETHASHCAP, process mode: {proc:8.1f} µs/call ({proc / real:5.0f}x reference)")
    data_path()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
