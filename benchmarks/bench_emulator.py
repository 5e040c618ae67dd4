"""Per-call cost of the seccomp kernel emulator: µs per emulated ioctl against an untrapped one.

Run as root: ``python benchmarks/bench_emulator.py [CALLS]``. Everything happens in an anonymous
network namespace; the reference (an untrapped TUNGETVNETHDRSZ from the same filtered thread) is
measured in the same run.
"""

from __future__ import annotations

import fcntl
import statistics
import sys
import time
from collections.abc import Callable

from pytun_hash import MICROSOFT_RSS_KEY, HashControl, Revision, VnetHashConfig, ioctl_plan, ioctl_request
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.testing import EmulatorMode, KernelEmulator


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
