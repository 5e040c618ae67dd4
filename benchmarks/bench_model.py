"""Benchmark of the software model against a table-driven C Toeplitz built in the same run.

Run from the repository root, after ``make setup``:

    .venv/bin/python benchmarks/bench_model.py [--quick]

It measures scalar ``toeplitz_hash`` on IPv4 4-tuples, the batch path with and without numpy,
and ``classify`` (parse + classify + hash) on IPv4/TCP and IPv6/TCP Ethernet frames, and compiles a
C reference (per-byte lookup tables, ``gcc -O2``) into a temporary directory to hash the same
4-tuples. Every figure is the best of several repetitions (the machines this runs on are shared);
ratios are to the C reference of the same run. Needs gcc for the C figure; numpy is optional.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import pytun_hash  # noqa: F401
except ImportError:  # a clean checkout that is not installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytun_hash import HashType
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import classify, numpy_available, toeplitz_for, toeplitz_hash, toeplitz_hash_batch

TARGET_SCALAR = 1 / 100  # of the C reference
TARGET_NUMPY = 1 / 3  # of the C reference
TARGET_CLASSIFY = 600_000  # IPv4/TCP frames/s (issue 17)
TARGET_CLASSIFY6 = 300_000  # IPv6/TCP frames/s (issue 17)

C_SOURCE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Toeplitz with per-byte-position tables: table[p][b] is the hash contribution of byte value b
   at input position p, so a hash is one load and one XOR per input byte. */
static uint32_t table[40][256];

static uint32_t window(const uint8_t *key, int bit) {
    uint32_t w = 0;
    for (int i = 0; i < 32; i++) {
        int b = bit + i;
        w = (w << 1) | (b < 320 ? (key[b / 8] >> (7 - b % 8)) & 1 : 0);
    }
    return w;
}

static uint32_t toeplitz(const uint8_t *data, int n) {
    uint32_t h = 0;
    for (int i = 0; i < n; i++)
        h ^= table[i][data[i]];
    return h;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    uint8_t key[40];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(key, 1, 40, f) != 40) return 3;
    long rows = atol(argv[2]), repeats = atol(argv[3]);
    uint8_t *data = malloc(rows * 12);
    if (!data || fread(data, 12, rows, f) != (size_t)rows) return 4;
    fclose(f);
    for (int p = 0; p < 40; p++)
        for (int b = 0; b < 256; b++) {
            uint32_t h = 0;
            for (int j = 0; j < 8; j++)
                if (b & (0x80 >> j)) h ^= window(key, 8 * p + j);
            table[p][b] = h;
        }
    uint32_t check = 0;
    for (long i = 0; i < rows; i++) check ^= toeplitz(data + 12 * i, 12);
    double best = 1e30;
    volatile uint32_t sink = 0;
    for (long r = 0; r < repeats; r++) {
        uint32_t acc = 0;
        double t0 = now();
        for (int pass = 0; pass < 20; pass++)
            for (long i = 0; i < rows; i++) acc += toeplitz(data + 12 * i, 12);
        double dt = now() - t0;
        sink += acc;
        if (dt < best) best = dt;
    }
    printf("%u %.9e\n", check, best / (20.0 * rows));
    return 0;
}
"""


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class CReference:
    """The C reference, compiled into a temporary directory that lives as long as this object."""

    def __init__(self, key: bytes, rows: list[bytes]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench_model_")
        self.rows = len(rows)
        self.binary = Path(self._tmp.name, "toeplitz")
        self.inputs = Path(self._tmp.name, "inputs.bin")
        self.inputs.write_bytes(key + b"".join(rows))
        self.error: str | None = None
        gcc = shutil.which("gcc")
        if gcc is None:
            self.error = "gcc not found"
            return
        source = Path(self._tmp.name, "toeplitz.c")
        source.write_text(C_SOURCE)
        built = subprocess.run(
            [gcc, "-O2", "-o", str(self.binary), str(source)], capture_output=True, text=True, check=False
        )
        if built.returncode:
            self.error = f"gcc failed: {built.stderr.strip()}"

    def run(self) -> tuple[float, int]:
        """(seconds per hash, XOR of all hashes), best of 3 passes inside the C program."""
        ran = subprocess.run(
            [str(self.binary), str(self.inputs), str(self.rows), "3"], capture_output=True, text=True, check=True
        )
        check, seconds = ran.stdout.split()
        return float(seconds), int(check)

    def close(self) -> None:
        self._tmp.cleanup()


def ipv4_tcp_frame(rng: random.Random) -> bytes:
    ip = struct.pack(">BBHHHBBH", 0x45, 0, 40, 0, 0x4000, 64, 6, 0) + rng.randbytes(8)
    tcp = struct.pack(">HHIIBBHHH", rng.randrange(1024, 65536), rng.choice((80, 443, 8080)), 1, 0, 0x50, 2, 65535, 0, 0)
    return bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + tcp


def ipv6_tcp_frame(rng: random.Random) -> bytes:
    ip = struct.pack(">IHBB", 6 << 28, 20, 6, 64) + rng.randbytes(32)
    tcp = struct.pack(">HHIIBBHHH", rng.randrange(1024, 65536), 443, 1, 0, 0x50, 2, 65535, 0, 0)
    return bytes.fromhex("020000000002020000000001") + b"\x86\xdd" + ip + tcp


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer inputs and rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON for make bench's summary")
    args = parser.parse_args()
    count = 8192 if args.quick else 65536
    rounds = 3 if args.quick else 9
    rng = random.Random(20231008)
    key = MICROSOFT_RSS_KEY
    types = HashType.supported_by_kernel_series()
    rows = [rng.randbytes(12) for _ in range(count)]  # IPv4 4-tuples: addresses and ports
    frames4 = [ipv4_tcp_frame(rng) for _ in range(count)]
    frames6 = [ipv6_tcp_frame(rng) for _ in range(count)]
    tz = toeplitz_for(key)
    tz.hash_batch(rows[:16])  # build the tables outside the timings

    def scalar() -> None:
        for row in rows:
            toeplitz_hash(key, row)

    def classify4() -> None:
        for frame in frames4:
            classify(frame, types, key)

    def classify6() -> None:
        for frame in frames6:
            classify(frame, types, key)

    # name -> (function, items per call, unit)
    cases: dict[str, tuple[Callable[[], object], int, str]] = {
        "toeplitz_hash, IPv4 4-tuples (scalar)": (scalar, count, "hashes/s"),
        "toeplitz_hash_batch, pure Python": (
            lambda: toeplitz_hash_batch(key, rows, use_numpy=False),
            count,
            "hashes/s",
        ),
    }
    if numpy_available():
        import numpy as np

        big = np.frombuffer(b"".join(rows) * 16, dtype=np.uint8).reshape(16 * count, 12)
        tz.hash_array(big[:16])
        cases["toeplitz_hash_batch, numpy (list in/out)"] = (
            lambda: toeplitz_hash_batch(key, rows, use_numpy=True),
            count,
            "hashes/s",
        )
        cases["Toeplitz.hash_array, numpy (array in/out)"] = (lambda: tz.hash_array(big), len(big), "hashes/s")
    cases["classify + hash, Ethernet IPv4/TCP"] = (classify4, count, "frames/s")
    cases["classify + hash, Ethernet IPv6/TCP"] = (classify6, count, "frames/s")

    expected_check = 0
    for h in toeplitz_hash_batch(key, rows, use_numpy=False):
        expected_check ^= h
    reference = CReference(key, rows)
    try:
        # Rounds interleave every measurement (the C program included), and each figure is the
        # best of its rounds: on a shared machine, every figure gets the same chance at a quiet moment.
        best = dict.fromkeys(cases, float("inf"))
        c_best = float("inf")
        for _ in range(rounds):
            if reference.error is None:
                seconds, check = reference.run()
                if check != expected_check:
                    print(f"C reference disagrees with the model ({check:#x} != {expected_check:#x})")
                    return 1
                c_best = min(c_best, seconds)
            for name, (fn, _, _) in cases.items():
                best[name] = min(best[name], timed(fn))
    finally:
        reference.close()

    c_rate = 1 / c_best if reference.error is None else None
    # name -> (target as text, met?) for the targeted figures.
    targets: dict[str, Callable[[float], tuple[str, bool]]] = {
        "toeplitz_hash, IPv4 4-tuples (scalar)": lambda r: (
            "1/100 of C",
            c_rate is not None and r >= c_rate * TARGET_SCALAR,
        ),
        "Toeplitz.hash_array, numpy (array in/out)": lambda r: (
            "1/3 of C",
            c_rate is not None and r >= c_rate * TARGET_NUMPY,
        ),
        "classify + hash, Ethernet IPv4/TCP": lambda r: (f">= {TARGET_CLASSIFY:,}/s", r >= TARGET_CLASSIFY),
        "classify + hash, Ethernet IPv6/TCP": lambda r: (f">= {TARGET_CLASSIFY6:,}/s", r >= TARGET_CLASSIFY6),
    }
    table: list[dict[str, object]] = []
    if c_rate is not None:
        table.append(
            {"benchmark": "model", "case": "C reference (gcc -O2, byte tables)", "value": f"{c_rate:,.0f} hashes/s"}
        )
    for name, (_, items, unit) in cases.items():
        rate = items / best[name]
        row: dict[str, object] = {"benchmark": "model", "case": name, "value": f"{rate:,.0f} {unit}"}
        if c_rate and unit == "hashes/s":  # frames/s against hashes/s would compare unlike work
            row["ratio"] = f"1/{c_rate / rate:,.1f} of C"
        if name in targets:
            row["target"], row["met"] = targets[name](rate)
        table.append(row)
    if args.json:
        print(json.dumps(table))
        return 0
    print(f"pytun_hash model benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{count} inputs, best of {rounds} interleaved rounds")  # fmt: skip
    if c_rate is None:
        print(f"C reference: unavailable ({reference.error}); no ratios")
    for row in table:
        ratio = f"  = {row['ratio']}" if "ratio" in row else ""
        goal = f"  (target {row['target']}: {'met' if row['met'] else 'MISSED'})" if "target" in row else ""
        print(f"{row['case']!s:44s} {row['value']!s:>24s}{ratio}{goal}")
    if not numpy_available():
        print("numpy batch: numpy is not installed (pip install pytun_hash[numpy])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
