"""Issue 18's privilege separation end to end: an unprivileged VMM reconfigures RSS under traffic.

The test (root) loads the shared RSS program, attaches it to a 4-queue TAP, hands the two map fds to a
child running as uid 65534 with no capabilities and ``no_new_privs`` (tests/bpf/shared_vmm_child.py),
and closes its own copies. A sender thread sends UDP datagrams without pause while the child writes
five more configurations through the mmapped maps; every frame must be on a queue that a configuration
in force while it was sent predicts. Then the privileged side detaches the program.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.model import predict_queue
from tests.cli.helpers import as_nobody
from tests.device.traffic import PEER_ADDR, udp_socket, wire_tap

CHILD = Path(__file__).resolve().parent / "shared_vmm_child.py"
QUEUES = 4
BASE = VnetHashConfig.round_robin(QUEUES, key=MICROSOFT_RSS_KEY, table_length=8)
CONFIGS = [
    BASE,
    BASE.replace(indirection_table=(3,)),
    BASE.replace(indirection_table=tuple(reversed(BASE.indirection_table))),
    BASE.replace(indirection_table=(0, 1) * 4, unclassified_queue=1),
    BASE.replace(key=bytes(range(40))),
    BASE,
]
FIRST_PORT = 20000
PORTS = 4000  # flows the datagrams cycle through
#: A bound, not a figure: the sender stops when the last configuration has been in force a while.
MAX_DATAGRAMS = 400_000
#: Datagrams sent under each configuration alone before the next is asked for (more are sent while
#: each is being written).
PER_CONFIG = 1000
_SEQUENCE = struct.Struct("!I")
_ETH_IPV4_UDP_PAYLOAD = 14 + 20 + 8


class _Traffic:
    """Datagrams sent without pause, each with the configurations that could have been in force."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.applied = 0  # configurations completely in force (the child answered)
        self.requested = 0  # configurations asked for (maybe being written)
        self.windows: dict[int, tuple[int, int]] = {}
        # Configurations some datagram was sent entirely under (applied before, nothing newer asked for).
        self.only_under: Counter[int] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        for i in range(MAX_DATAGRAMS):
            if self.stop.is_set():
                return
            low = self.applied
            self.sock.sendto(_SEQUENCE.pack(i), (PEER_ADDR, FIRST_PORT + i % PORTS))
            high = self.requested
            self.windows[i] = (low, high)
            if low == high:
                self.only_under[low] += 1
            if i % 64 == 63:
                time.sleep(0.001)  # let the reader keep up: a full queue drops frames


def _until_sent_under(traffic: _Traffic, config: int) -> None:
    """Wait until :data:`PER_CONFIG` datagrams were sent while ``config`` alone was in force (the
    deadline guards against a stalled sender; it measures nothing)."""
    deadline = time.monotonic() + 60
    while traffic.only_under[config] < PER_CONFIG:
        assert time.monotonic() < deadline and not traffic.stop.is_set(), f"no datagram under config {config}"
        time.sleep(0.005)


def _sequence(frame: bytes) -> int | None:
    """The sequence number a datagram of the test carries (an Ethernet/IPv4/UDP frame), else None."""
    if len(frame) != _ETH_IPV4_UDP_PAYLOAD + 4 or frame[12:14] != b"\x08\x00" or frame[14] != 0x45 or frame[23] != 17:
        return None
    sequence: int = _SEQUENCE.unpack_from(frame, _ETH_IPV4_UDP_PAYLOAD)[0]
    return sequence


def _read_queues(device: TunTapDevice, frames: list[tuple[int, bytes]], done: threading.Event) -> None:
    fds = {q.fd: i for i, q in enumerate(device.queues)}
    while True:
        ready, _, _ = select.select(list(fds), [], [], 0.05)
        if not ready and done.is_set():
            return
        for fd in ready:
            frames.append((fds[fd], os.read(fd, 4096)))


@pytest.mark.kernel
@pytest.mark.bpf
def test_an_unprivileged_vmm_reconfigures_rss_under_traffic(netns: NetworkNamespace) -> None:
    prefix = as_nobody("--no-new-privs", "--inh-caps=-all", "--bounding-set=-all")
    with TunTapDevice.create("sh%d", queues=QUEUES, vnet_hdr=False) as device, udp_socket() as sock:
        for queue in device.queues:
            os.set_blocking(queue.fd, False)
        wire_tap(netns, device.name)
        parent, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with parent:
            with child_end:
                child = subprocess.Popen(
                    [*prefix, sys.executable, str(CHILD), str(child_end.fileno())],
                    pass_fds=[child_end.fileno()],
                    cwd="/",
                    stderr=subprocess.PIPE,
                    text=True,
                )
            try:
                # The privileged step: load, attach, hand over, and let go of its own fds (release:
                # the program stays attached).
                rss = EbpfRss.load(CONFIGS[0])
                try:
                    rss.attach(device)
                    rss.handoff(parent, queues=QUEUES)
                finally:
                    rss.release()
                hello = json.loads(parent.recv(4096))
                assert hello["uid"] == "65534" and int(hello["cap_eff"], 16) == 0, hello
                assert hello["no_new_privs"] == "1" and hello["bpf_map_create"] == "EPERM", hello
                traffic = _Traffic(sock)
                frames: list[tuple[int, bytes]] = []
                done = threading.Event()
                reader = threading.Thread(target=_read_queues, args=(device, frames, done))
                sender = threading.Thread(target=traffic.run)
                reader.start()
                sender.start()
                try:
                    for k, config in enumerate(CONFIGS[1:], start=1):
                        _until_sent_under(traffic, k - 1)
                        traffic.requested = k
                        parent.send(json.dumps(config.to_mapping()).encode())
                        answer = json.loads(parent.recv(4096))
                        assert answer["generation"] == k + 1, answer  # the privileged side wrote the first
                        traffic.applied = k
                    _until_sent_under(traffic, len(CONFIGS) - 1)
                finally:
                    traffic.stop.set()
                    sender.join()
                    done.set()
                    reader.join()
                # The privileged side takes the program off; the child's maps then steer nothing.
                device.detach_steering_program()
                assert not device.steering.steering_attached
            finally:
                parent.close()
                assert child.wait(timeout=30) == 0, child.stderr.read() if child.stderr else ""
                if child.stderr:
                    child.stderr.close()
    ours = [(q, f, n) for q, f in frames if (n := _sequence(f)) is not None and n in traffic.windows]
    assert len(frames) - len(ours) <= 4, [f.hex() for _, f in frames if _sequence(f) not in traffic.windows]
    wrong = []
    for index, frame, sequence in ours:
        low, high = traffic.windows[sequence]
        allowed = {predict_queue(CONFIGS[j], frame, QUEUES) for j in range(low, high + 1)}
        if index not in allowed:
            wrong.append((sequence, index, allowed))
    sent = len(traffic.windows)
    print(f"{sent} datagrams sent, {len(ours)} frames read, 5 reconfigurations by uid 65534")
    assert wrong == []
    assert len(ours) >= sent * 0.95, (len(ours), sent)  # a frame or two may be dropped by a full queue
    # Every configuration was in force for a while: frames were steered under each.
    assert {traffic.windows[sequence][0] for _, _, sequence in ours} == set(range(len(CONFIGS)))
