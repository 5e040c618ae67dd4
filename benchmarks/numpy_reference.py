"""The straightforward numpy way to a per-queue histogram of a classic pcap (Ethernet, untagged
IPv4/IPv6 TCP/UDP, the Microsoft key, all six types, table 0-3 on 4 queues): the reference
``bench_capture.py`` measures ``predict --pcap`` against. Prints the histogram as a JSON list.

    python benchmarks/numpy_reference.py CAPTURE.pcap
"""

from __future__ import annotations

import json
import struct
import sys

import numpy as np

KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")
BITS = np.unpackbits(np.frombuffer(KEY + bytes(4), dtype=np.uint8)).astype(np.uint64)
# TABLES[i][b]: what byte value b at input position i contributes to the hash.
WINDOWS = np.array([int("".join(map(str, BITS[i : i + 32])), 2) for i in range(8 * 36)], dtype=np.uint64)
TABLES = np.array([[np.bitwise_xor.reduce(WINDOWS[8 * i : 8 * i + 8][np.unpackbits(np.uint8(v))[::1] == 1], initial=0)
                    for v in range(256)] for i in range(36)], dtype=np.uint32)  # fmt: skip


def main(path: str) -> None:
    data = open(path, "rb").read()  # noqa: SIM115 (the whole file, the straightforward way)
    v4, v6 = [], []
    pos = 24
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + length]
        if frame[12:14] == b"\x08\x00":
            v4.append(frame[26:34] + frame[34:38])  # addresses, ports (IHL 5)
        else:
            v6.append(frame[22:58])  # addresses, ports
        pos += 16 + length
    queues = np.zeros(4, dtype=np.int64)
    for rows, width in ((v4, 12), (v6, 36)):
        matrix = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, width)
        hashes = np.zeros(len(matrix), dtype=np.uint32)
        for i in range(width):
            hashes ^= TABLES[i][matrix[:, i]]
        queues += np.bincount(hashes & 3, minlength=4)
    print(json.dumps(queues.tolist()))


if __name__ == "__main__":
    main(sys.argv[1])
