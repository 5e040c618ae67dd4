"""Read frames with 20-byte vnet headers and verify their hash reports with the software model.

A 2-queue TAP in a private network namespace gets a 20-byte little-endian vnet header
(``virtio_net_hdr_v1_hash``: ``hash_value`` at bytes 12..15, ``hash_report`` at 16..17) and a
config with hash reports on. The namespace sends TCP, UDP and ICMP over IPv4 and IPv6; every
buffer read from the queues is decoded with :func:`pytun_hash.model.split_frame` and checked
with :func:`pytun_hash.model.verify_reports`.

A kernel with native hash reporting fills the fields itself. Mainline kernels do not (they zero
bytes 10..19): then the reports are filled in user space by :class:`pytun_hash.bpf.HashReporter`,
as a VMM using the eBPF fallback would, and the raw kernel buffers are shown to carry none. Last,
one report is corrupted on purpose to show that the check catches it.

Run as root, from the repository root after ``make setup``:
``sudo .venv/bin/python examples/verify_reports.py``. Exit status 0 when every report matched.
"""

from __future__ import annotations

import os
import socket
import sys

from pytun_hash import Hashing, HashReport, NetworkNamespace, TunTapDevice, VnetHashConfig, traffic
from pytun_hash.bpf import HashReporter
from pytun_hash.model import split_frame, verify_reports
from pytun_hash.traffic import DEFAULT_ADDRESSING as ADDR
from pytun_hash.traffic import Flow

VNET_HDR_SIZE = 20


def main() -> int:
    """Send, read, verify; print a few decoded headers."""
    if os.geteuid() != 0:
        print(
            "verify_reports.py needs root (a private network namespace, a TAP device and eBPF)",
            file=sys.stderr,
        )
        return 3
    config = VnetHashConfig.round_robin(2, report=True, table_length=16)
    flows = [
        *traffic.spread_flows(12, seed=3),
        Flow(socket.IPPROTO_ICMP, ADDR.ipv4_local, ADDR.ipv4_peer),
        Flow(socket.IPPROTO_ICMPV6, ADDR.ipv6_local, ADDR.ipv6_peer),
    ]
    with NetworkNamespace(ipv6=False) as ns, TunTapDevice.create("hdr%d", queues=2) as device:
        device.set_vnet_hdr_size(VNET_HDR_SIZE)
        device.set_vnet_le(True)
        traffic.wire(ns, device)
        with Hashing.enable(device, config) as hashing:
            sent = traffic.send(ns, flows)
            capture = traffic.collect(device, expected=sent)
            raw = [f.buffer for f in capture.frames]
            # Verify with the rules of what is in force: an RFC kernel computes other values.
            semantics = hashing.semantics
            if hashing.reports_in_user_space:
                unreported = sum(split_frame(b, VNET_HDR_SIZE)[0].hash_report is HashReport.NONE for b in raw)
                print(f"the kernel wrote no hash report in {unreported} of {len(raw)} buffers", end="")
                print(" (no native support)")
                reporter = HashReporter.for_device(device, config, semantics=semantics)
                buffers = [reporter.filled(b) for b in raw]
                source = "filled in user space"
            else:
                buffers = raw
                source = "written by the kernel"
    print(f"{len(buffers)} frames of {sent} sent; hash reports {source}; {semantics.value} rules")
    shown: set[tuple[int, HashReport]] = set()
    for frame, buffer in zip(capture.frames, buffers, strict=True):
        header, _payload = split_frame(buffer, VNET_HDR_SIZE)
        if (frame.queue, header.hash_report) not in shown:  # one line per queue and report type
            shown.add((frame.queue, header.hash_report))
            value, report = header.hash_value, header.hash_report.name
            print(f"  queue {frame.queue}: hash_value {value:#010x} hash_report {report}")
    mismatches = verify_reports(buffers, config, vnet_hdr_size=VNET_HDR_SIZE, semantics=semantics, num_queues=2)
    print(f"verify_reports: {len(mismatches)} mismatch(es)")
    # A wrong report must be caught: flip the hash value of the first buffer.
    corrupted = bytearray(buffers[0])
    corrupted[12] ^= 0xFF
    caught = verify_reports([bytes(corrupted)], config, vnet_hdr_size=VNET_HDR_SIZE, semantics=semantics)
    print(f"a corrupted report is caught: {caught[0].problem if caught else 'NOT CAUGHT'}")
    ok = not mismatches and len(buffers) == len(flows) and len(caught) == 1
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
