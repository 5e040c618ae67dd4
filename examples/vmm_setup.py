"""A VMM-style setup: a multi-queue TAP with hashing, its queue fds handed to a device-model process.

What a VMM does before it starts a guest with a multi-queue virtio-net device:

1. create a multi-queue TAP (here in a private network namespace, so nothing is left behind);
2. set the vnet header to 20 bytes (``virtio_net_hdr_v1_hash``) and little-endian (virtio 1.0);
3. configure RSS and hash reports through the best backend the kernel offers (the hash ioctls
   when it has them, else an eBPF steering program with reports computed in user space);
4. hand the queue fds, in queue order, to another process (the device model) over a Unix
   socket with ``SCM_RIGHTS``.

The device model (this script started with ``--device-model FD``) adopts the fds, checks what it
got, reads the traffic the namespace sends, and reports per queue how many frames arrived and
whether each one is on the queue the software model predicts and carries the right hash report.

Run as root, from the repository root after ``make setup``:
``sudo .venv/bin/python examples/vmm_setup.py``. Exit status 0 when everything matched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from pytun_hash import Hashing, NetworkNamespace, TunTapDevice, VnetHashConfig, traffic
from pytun_hash.bpf import HashReporter
from pytun_hash.model import predict_queue, verify_reports

QUEUES = 4
VNET_HDR_SIZE = 20
FLOWS = 48
MAX_MESSAGE = 1 << 16


def _send_json(sock: socket.socket, value: object, fds: list[int] | None = None) -> None:
    data = json.dumps(value).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _recv_json(sock: socket.socket) -> Any:
    return json.loads(sock.recv(MAX_MESSAGE))


def device_model(sock: socket.socket) -> int:
    """The receiving side: adopt the queue fds, check them, read and verify the traffic."""
    message, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, QUEUES)
    setup = json.loads(message)
    config = VnetHashConfig.from_mapping(setup["config"])
    # The fds arrive in the order they were sent, which is the device's queue order.
    with TunTapDevice.adopt(fds) as device:
        _send_json(
            sock,
            {
                "pid": os.getpid(),
                "device": device.name,
                "queues": len(device.attached_queues),
                "vnet_hdr_size": device.get_vnet_hdr_size(),
                "vnet_le": device.get_vnet_le(),
                "multi_queue": device.multi_queue,
            },
        )
        sent = _recv_json(sock)["sent"]
        capture = traffic.collect(device, expected=sent, timeout=2.0)
        buffers = [f.buffer for f in capture.frames]
        if setup["reports_in_user_space"]:
            reporter = HashReporter.for_device(device, config)
            buffers = [reporter.filled(b) for b in buffers]
        per_queue = {str(q): 0 for q in range(QUEUES)}
        misrouted = 0
        for frame in capture.frames:
            per_queue[str(frame.queue)] += 1
            misrouted += predict_queue(config, frame.frame, QUEUES) != frame.queue
        mismatches = verify_reports(buffers, config, vnet_hdr_size=VNET_HDR_SIZE)
        _send_json(
            sock,
            {
                "received": len(buffers),
                "per_queue": per_queue,
                "misrouted": misrouted,
                "report_mismatches": len(mismatches),
            },
        )
    return 0


def vmm() -> int:
    """The setting-up side: create, configure, hand over, send traffic, print the device model's findings."""
    if os.geteuid() != 0:
        print("vmm_setup.py needs root (a private network namespace, a TAP device and eBPF)", file=sys.stderr)
        return 3
    with (
        NetworkNamespace(ipv6=False) as ns,
        TunTapDevice.create("vmm%d", queues=QUEUES, vnet_hdr=True) as device,
    ):
        device.set_vnet_hdr_size(VNET_HDR_SIZE)
        device.set_vnet_le(True)
        config = VnetHashConfig.round_robin(QUEUES, report=True)
        with Hashing.enable(device, config) as hashing:
            backend = hashing.backend.value
            print(f"{device.name}: {QUEUES} queues, vnet header {VNET_HDR_SIZE} bytes LE; backend {backend}")
            print(f"  ({hashing.choice.reason})")
            traffic.wire(ns, device)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with ours:
                with theirs:
                    child = subprocess.Popen(
                        [sys.executable, os.path.abspath(__file__), "--device-model", str(theirs.fileno())],
                        pass_fds=[theirs.fileno()],
                    )
                try:
                    fds = [q.fd for q in device.attached_queues]
                    setup = {
                        "config": config.to_mapping(),
                        "reports_in_user_space": hashing.reports_in_user_space,
                    }
                    _send_json(ours, setup, fds)
                    hello = _recv_json(ours)
                    print(
                        f"device model pid {hello['pid']} adopted {hello['queues']} queue fds of "
                        f"{hello['device']}: vnet header {hello['vnet_hdr_size']} bytes, "
                        f"little-endian {hello['vnet_le']}"
                    )
                    flows = traffic.spread_flows(FLOWS, seed=7)
                    _send_json(ours, {"sent": traffic.send(ns, flows)})
                    result = _recv_json(ours)
                finally:
                    status = child.wait(timeout=10)
    print(f"device model read {result['received']} of {len(flows)} frames; per queue {result['per_queue']}")
    reports = "computed in the device model" if setup["reports_in_user_space"] else "written by the kernel"
    print(f"misrouted: {result['misrouted']}; hash reports ({reports}) not matching the model: ", end="")
    print(result["report_mismatches"])
    ok = (
        status == 0
        and hello["vnet_hdr_size"] == VNET_HDR_SIZE
        and hello["vnet_le"]
        and result["received"] == len(flows)
        and result["misrouted"] == 0
        and result["report_mismatches"] == 0
    )
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run the VMM side, or the device-model side with ``--device-model FD``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--device-model":
        with socket.socket(fileno=int(args[1])) as sock:
            return device_model(sock)
    return vmm()


if __name__ == "__main__":
    raise SystemExit(main())
