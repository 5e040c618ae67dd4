"""Benchmark of the eBPF RSS steering program, against the floor of a trivial program in the same run.

Run from the repository root, after ``make setup``, as root (bpf(2) needs CAP_BPF):

    sudo .venv/bin/python benchmarks/bench_bpf.py [--quick]

Figures:

* ns per packet through ``BPF_PROG_TEST_RUN`` (the kernel's own mean over many repetitions) for
  IPv4/TCP and IPv6/TCP SYN frames, TAP and TUN builds, next to the floor of ``r0 = 0; exit``
  measured in the same run; target: at most 4x the floor. Also, for information, the slower
  paths (a 54-byte IPv4 ACK, a VLAN-tagged frame, an IPv6 packet behind two extension headers).
* program load time (BPF_PROG_LOAD, verifier included) and what the verifier reports;
* reconfiguration time (:meth:`EbpfRss.reconfigure`): same key (table/types/queue change) and
  new key (Toeplitz tables rebuilt), returning once the new config is in force (target: < 1 ms),
  and with ``wait=True`` (until the RCU grace period has passed);
* Toeplitz table construction.

Every ns/packet figure is the best of several runs (the machines are shared); times from
Python are medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

try:
    import pytun_hash  # noqa: F401
except ImportError:  # a clean checkout that is not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytun_hash.bpf import (
    ArrayMap,
    ArrayOfMaps,
    Assembler,
    EbpfRss,
    Insn,
    Program,
    Reg,
    RssOutput,
    toeplitz_tables,
)
from pytun_hash.bpf.rss_program import CONFIG_VALUE_SIZE, L3Base, generate_rss_program
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import PrivilegeError

TARGET_RATIO = 4.0
TARGET_RECONFIGURE_S = 1e-3

MAC = bytes.fromhex("020000000002020000000001")
TCP_SYN = struct.pack("!HHIIBBHHH", 40000, 443, 0x12345678, 0, 10 << 4, 0x02, 64240, 0, 0) + bytes.fromhex(
    "020405b40402080a0001e2400000000001030307"
)


def ipv4_tcp(payload: bytes = TCP_SYN) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        )
        + payload
    )


def ipv6_tcp(payload: bytes = TCP_SYN, ext: bytes = b"", first: int = 6) -> bytes:
    src = bytes.fromhex("fd000000000000000000000000000001")
    dst = bytes.fromhex("fd000000000000000000000000000002")
    return struct.pack("!IHBB16s16s", 0x60000000, len(ext) + len(payload), first, 64, src, dst) + ext + payload


FRAMES: dict[str, bytes] = {
    "IPv4/TCP SYN (74 B)": MAC + b"\x08\x00" + ipv4_tcp(),
    "IPv6/TCP SYN (94 B)": MAC + b"\x86\xdd" + ipv6_tcp(),
}
SLOW_FRAMES: dict[str, bytes] = {
    "IPv4/TCP ACK (54 B)": MAC + b"\x08\x00" + ipv4_tcp(TCP_SYN[:20]),
    "802.1Q IPv4/TCP SYN": MAC + b"\x81\x00\x00\x0a\x08\x00" + ipv4_tcp(),
    "IPv6 + 2 ext hdrs / TCP": MAC
    + b"\x86\xdd"
    + ipv6_tcp(ext=bytes([60, 0]) + bytes(6) + bytes([6, 0]) + bytes(6), first=0),
}


def best_ns(prog_run: Callable[[bytes, int], int], frame: bytes, repeat: int, rounds: int) -> int:
    return min(prog_run(frame, repeat) for _ in range(rounds))


def load_and_close(insns: list[Insn]) -> None:
    Program.load(insns).close()


def median_s(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = parser.parse_args()
    repeat, rounds, n = (20_000, 3, 10) if args.quick else (500_000, 7, 40)
    config = VnetHashConfig.round_robin(4, key=os.urandom(40))
    ok = True
    try:
        floor_prog = Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_floor")
    except PrivilegeError as exc:
        print(f"skipped: {exc}")
        return 0
    with floor_prog, EbpfRss.load(config, DeviceMode.TAP) as tap, EbpfRss.load(config, DeviceMode.TUN) as tun:

        def floor_run(frame: bytes, r: int) -> int:
            return floor_prog.test_run(frame, repeat=r).duration_ns

        def tap_run(frame: bytes, r: int) -> int:
            return tap.test_run(frame, repeat=r).duration_ns

        def tun_run(frame: bytes, r: int) -> int:
            return tun.test_run(frame[14:], repeat=r).duration_ns

        print(f"ns per packet through BPF_PROG_TEST_RUN (best of {rounds} x {repeat} runs)")
        print(f"  {'frame':28} {'floor':>6} {'TAP':>6} {'ratio':>6} {'TUN':>6} {'ratio':>6}")
        for name, frame in {**FRAMES, **SLOW_FRAMES}.items():
            floor = best_ns(floor_run, frame, repeat, rounds)
            t_tap = best_ns(tap_run, frame, repeat, rounds)
            tun_frame = frame if frame[12:14] != b"\x81\x00" else None
            t_tun = best_ns(tun_run, tun_frame, repeat, rounds) if tun_frame else 0
            r_tap, r_tun = t_tap / floor, (t_tun / floor if t_tun else 0.0)
            judged = name in FRAMES
            verdict = ""
            if judged:
                passed = r_tap <= TARGET_RATIO and r_tun <= TARGET_RATIO
                ok &= passed
                verdict = "ok" if passed else f"OVER {TARGET_RATIO:.0f}x"
            tun_text = f"{t_tun:6d} {r_tun:5.2f}x" if t_tun else f"{'-':>6} {'-':>6}"
            print(f"  {name:28} {floor:6d} {t_tap:6d} {r_tap:5.2f}x {tun_text} {verdict}")

        print(f"program load (BPF_PROG_LOAD incl. verifier and JIT), median of {n}")
        with ArrayMap.create(CONFIG_VALUE_SIZE) as inner, ArrayOfMaps.create(inner) as outer:
            programs = {mode: generate_rss_program(outer.fd, mode, RssOutput.QUEUE) for mode in L3Base}
            for mode, insns in programs.items():
                t = median_s(partial(load_and_close, insns), n)
                with Program.load(insns) as p:
                    info = p.info()
                print(
                    f"  {mode.value:8} {len(insns)} insns: {t * 1e3:.2f} ms; verifier processed "
                    f"{info.verified_insns} insns, {info.xlated_insns} after rewrites, {info.jited_bytes} B JITed"
                )

        print(f"reconfigure, median of {n} (TAP instance)")
        variants: list[tuple[str, Callable[[int], VnetHashConfig], bool]] = [
            ("same key (table/queue)", lambda i: config.replace(unclassified_queue=i % 4), False),
            ("new key", lambda i: config.replace(key=os.urandom(40)), False),
            ("same key, wait=True", lambda i: config.replace(unclassified_queue=i % 4), True),
        ]
        for label, make, wait in variants:
            times = []
            for i in range(n):
                c = make(i)
                tap.settle()
                t0 = time.perf_counter()
                tap.reconfigure(c, wait=wait)
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            verdict = ""
            if not wait:
                passed = t < TARGET_RECONFIGURE_S
                ok &= passed
                verdict = "ok" if passed else "OVER 1 ms"
            print(f"  {label:26} {t * 1e6:8.0f} us  (p90 {sorted(times)[int(n * 0.9)] * 1e6:.0f} us) {verdict}")
        key = os.urandom(40)
        print(f"toeplitz_tables (36 x 256 entries): {median_s(lambda: toeplitz_tables(key), n) * 1e6:.0f} us")
    print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
