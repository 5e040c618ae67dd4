"""eBPF RSS fallback, reconfigured live while traffic flows.

A 4-queue TAP in a private network namespace is steered by the eBPF backend (the generated
socket-filter program, attached with ``TUNSETSTEERINGEBPF``). A sender thread sends UDP
datagrams over IPv4 and IPv6 without pause, a reader thread drains every queue, and the main
thread switches the configuration five times (indirection table, unclassified queue, key) with
:meth:`Hashing.reconfigure <pytun_hash.hashing.Hashing.reconfigure>`, which swaps the program's
config map atomically: no detach, no window without steering.

Every datagram carries a sequence number. Around each send the sender records which
configurations could have been in force (the last one completely switched to before the send,
up to the last one being switched to after it); every frame must be on a queue that one of
those configurations predicts, and no datagram may be lost or duplicated.

Run as root, from the repository root after ``make setup``:
``sudo .venv/bin/python examples/ebpf_live_reconfig.py``. Exit status 0 when every frame was
steered by a configuration in force when it was sent.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import sys
import threading
import time

from pytun_hash import Backend, Hashing, NetworkNamespace, TunTapDevice, VnetHashConfig, traffic
from pytun_hash.model import Framing, parse_frame, predict_queue

QUEUES = 4
VNET_HDR_SIZE = 12
MARK = b"live-reconfig"
MAX_PACKETS = 20000
SWITCH_EVERY = 0.04  # seconds between reconfigurations


def configurations(rng: random.Random) -> list[VnetHashConfig]:
    """The sequence of configs: round robin, all on one queue, reversed, two queues, a new key, back."""
    key = rng.randbytes(40)
    base = VnetHashConfig.round_robin(QUEUES, key=key)
    return [
        base,
        base.replace(indirection_table=(3,)),
        base.replace(indirection_table=tuple(reversed(base.indirection_table))),
        base.replace(indirection_table=(0, 1) * 4, unclassified_queue=1),
        base.replace(key=rng.randbytes(40)),
        base,
    ]


class Epochs:
    """Which configuration is being switched to (``pending``) and which is fully in force (``done``)."""

    def __init__(self) -> None:
        self.pending = 0
        self.done = 0


def sender(
    sockets: list[tuple[socket.socket, tuple[str, int]]],
    epochs: Epochs,
    windows: list[tuple[int, int]],
    finished: threading.Event,
) -> None:
    """Send datagrams round-robin over the sockets until ``finished``, recording each one's epoch window."""
    for seq in range(MAX_PACKETS):
        if finished.is_set():
            return
        sock, peer = sockets[seq % len(sockets)]
        first = epochs.done
        sock.sendto(MARK + struct.pack("!I", seq), peer)
        windows.append((first, epochs.pending))
        if seq % 32 == 31:
            time.sleep(0.0005)  # let the reader keep up: a tun queue holds 500 frames


def reader(device: TunTapDevice, stop: threading.Event, frames: list[tuple[int, bytes]]) -> None:
    """Drain every queue until ``stop`` is set and the queues are empty."""
    queues = [(q.index or 0, q) for q in device.attached_queues]
    poller = select.poll()
    for _index, queue in queues:
        poller.register(queue.fd, select.POLLIN)
    while True:
        ready = poller.poll(10)
        for index, queue in queues:
            frames.extend((index, buf) for buf in queue.drain())
        if stop.is_set() and not ready:
            return


def sequence_of(frame: bytes) -> int | None:
    """The sequence number in a frame sent by :func:`sender`, or None for any other frame."""
    parsed = parse_frame(frame, Framing.ETHERNET)
    if parsed is None or parsed.l4_offset is None:
        return None
    payload = frame[parsed.l4_offset + 8 :]
    if not payload.startswith(MARK):
        return None
    return int(struct.unpack_from("!I", payload, len(MARK))[0])


def main() -> int:
    """Run the traffic and the reconfigurations; check every frame."""
    if os.geteuid() != 0:
        print(
            "ebpf_live_reconfig.py needs root (a private network namespace, a TAP device and eBPF)",
            file=sys.stderr,
        )
        return 3
    configs = configurations(random.Random(5))
    epochs = Epochs()
    windows: list[tuple[int, int]] = []
    frames: list[tuple[int, bytes]] = []
    flows = traffic.spread_flows(32, seed=11, kinds=((socket.IPPROTO_UDP, 4), (socket.IPPROTO_UDP, 6)))
    with NetworkNamespace(ipv6=False) as ns, TunTapDevice.create("live%d", queues=QUEUES) as device:
        device.set_vnet_hdr_size(VNET_HDR_SIZE)
        traffic.wire(ns, device)
        sockets = []
        try:
            for flow in flows:  # this thread is inside the namespace: so are its sockets
                sock = socket.socket(flow.family, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sockets.append((sock, (flow.dst, flow.dport or 0)))
                sock.bind((flow.src, flow.sport or 0))
            with Hashing.enable(device, configs[0], backend=Backend.EBPF) as hashing:
                stop, finished = threading.Event(), threading.Event()
                read = threading.Thread(target=reader, args=(device, stop, frames))
                send = threading.Thread(target=sender, args=(sockets, epochs, windows, finished))
                read.start()
                send.start()
                switch_times = []
                for k in range(1, len(configs)):
                    time.sleep(SWITCH_EVERY)
                    epochs.pending = k
                    started = time.perf_counter()
                    hashing.reconfigure(configs[k])
                    switch_times.append(time.perf_counter() - started)
                    epochs.done = k
                time.sleep(SWITCH_EVERY)
                finished.set()
                send.join()
                stop.set()
                read.join()
        finally:
            for sock, _peer in sockets:
                sock.close()
    seen: dict[int, int] = {}
    wrong = transitional = 0
    per_epoch = [0] * len(configs)
    for queue, buffer in frames:
        frame = buffer[VNET_HDR_SIZE:]
        seq = sequence_of(frame)
        if seq is None:
            continue
        seen[seq] = seen.get(seq, 0) + 1
        first, last = windows[seq]
        allowed = {predict_queue(configs[e], frame, QUEUES) for e in range(first, last + 1)}
        wrong += queue not in allowed
        if first == last:
            per_epoch[first] += 1
        else:
            transitional += 1
    sent = len(windows)
    lost = sent - len(seen)
    duplicated = sum(1 for n in seen.values() if n > 1)
    print(f"{sent} datagrams over {len(flows)} UDP flows; {len(configs) - 1} live reconfigurations")
    print(f"packets per configuration: {per_epoch}; sent while a switch was under way: {transitional}")
    fastest, slowest = min(switch_times) * 1e3, max(switch_times) * 1e3
    print(f"reconfigure() took {fastest:.2f}..{slowest:.2f} ms (map swap + RCU wait)")
    print(f"on a queue no configuration in force predicts: {wrong}; lost: {lost}; duplicated: {duplicated}")
    ok = wrong == 0 and lost == 0 and duplicated == 0 and all(per_epoch)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
