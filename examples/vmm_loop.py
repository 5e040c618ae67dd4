"""A minimal VMM loop: the guest's RSS command in, RSS in force, frames out with their hash reports.

What a VMM's virtio-net device does with RSS, minus the virtqueues:

1. advertise what the host can do (:func:`pytun_hash.virtio.advertised`: feature bits, key size,
   table length, hash types), here for a 4-queue TAP on the backend this kernel offers;
2. take the guest's ``VIRTIO_NET_CTRL_MQ_RSS_CONFIG`` command, byte for byte as Linux's virtio_net
   sends it (its default 128-entry table and 40-byte key at probe, then ``ethtool -X eth0 equal 2``,
   then a command with a table entry beyond ``max_tx_vq``), answer OK or ERR as the device must
   (:func:`pytun_hash.virtio.handle_ctrl_mq`), and put an accepted configuration in force
   (:meth:`Hashing.enable <pytun_hash.Hashing.enable>`, then ``reconfigure``);
3. read the frames of 64 flows the TAP's namespace sends with :class:`pytun_hash.QueueReader`, which
   fills the 20-byte ``virtio_net_hdr_v1_hash`` the same way on both backends, and check that each
   frame is on the queue the software model predicts for the command in force and carries the hash
   value and report the guest must see.

Run as root, from the repository root after ``make setup``:
``sudo .venv/bin/python examples/vmm_loop.py [--json]``. Exit status 0 when every command was answered
as expected and every frame matched.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

from pytun_hash import Backend, Hashing, NetworkNamespace, QueueReader, TunTapDevice, choose_backend, traffic
from pytun_hash.model import classify, predict_queue
from pytun_hash.virtio import (
    VIRTIO_NET_CTRL_MQ,
    HostCapability,
    RssCommand,
    VirtioNetCtrlAck,
    VirtioNetCtrlMq,
    VirtioNetRssDeviceConfig,
    advertised,
    decode_rss_config,
    handle_ctrl_mq,
    linux_default_rss_config,
)

QUEUES = 4
FLOWS = 64


def guest_commands(device: VirtioNetRssDeviceConfig, key: bytes) -> list[tuple[str, bytes, bool]]:
    """What a Linux guest sends: (what it did, the command's payload, whether a device must accept it)."""
    probe = linux_default_rss_config(device, QUEUES, key)
    types = decode_rss_config(probe).hash_types  # the advertised types without the _EX ones, as Linux asks
    equal2 = RssCommand(types, tuple(i % 2 for i in range(128)), 0, QUEUES, key).encode()
    beyond = RssCommand(types, (0, 1, 2, 7), 0, QUEUES, key).encode()
    return [
        ("driver probe: 128-entry table i % 4, 40-byte key", probe, True),
        ("ethtool -X eth0 equal 2", equal2, True),
        ("a table entry (7) beyond max_tx_vq (4)", beyond, False),
    ]


def _check_frames(reader: QueueReader, hashing: Hashing) -> dict[str, Any]:
    config = hashing.config
    frames = list(reader.frames(timeout=0.2))
    per_queue = [0] * QUEUES
    bad = 0
    for frame in frames:
        want = classify(frame.frame, config.types, config.key, semantics=hashing.semantics)
        queue = predict_queue(config, frame.frame, QUEUES, semantics=hashing.semantics)
        per_queue[frame.queue or 0] += 1
        if (frame.queue, frame.hash_value, frame.hash_report) != (queue, want.hash_value, want.report):
            bad += 1
    return {"frames": len(frames), "per_queue": per_queue, "mismatched": bad}


def run() -> dict[str, Any]:
    """The loop; a JSON-friendly summary."""
    rng = random.Random(18)
    summary: dict[str, Any] = {"commands": []}
    with (
        NetworkNamespace() as ns,
        TunTapDevice.create("vmm%d", queues=QUEUES, vnet_hdr=True) as device,
    ):
        device.set_vnet_hdr_size(20)
        device.set_vnet_le(True)
        traffic.wire(ns, device)
        # What the guest may be offered: the backend Hashing.enable will use (probed on this device).
        choice = choose_backend(device)
        revision = choice.revision if choice.backend is Backend.NATIVE else None
        host = HostCapability.native(revision) if revision is not None else HostCapability.ebpf()
        offer = advertised(host, queues=QUEUES)
        summary.update(host=host.describe(), advertised=offer.to_mapping())
        reader: QueueReader | None = None
        hashing: Hashing | None = None
        try:
            for seed, (what, payload, acceptable) in enumerate(guest_commands(offer.device_config, rng.randbytes(40))):
                result = handle_ctrl_mq(
                    VIRTIO_NET_CTRL_MQ,
                    VirtioNetCtrlMq.RSS_CONFIG,
                    payload,
                    features=offer.features,
                    limits=offer.device_config,
                )
                entry: dict[str, Any] = {"guest": what, "bytes": len(payload), "ack": result.ack.name}
                if result.error is not None:
                    entry["refused"] = result.error.rule
                entry["as_expected"] = (result.ack is VirtioNetCtrlAck.OK) == acceptable
                command = result.command
                if isinstance(command, RssCommand) and command.config is not None:
                    if hashing is None:
                        # record=False: the example's device dies with its namespace.
                        hashing = Hashing.enable(device, command.config, record=False)
                        reader = QueueReader(hashing)
                    else:
                        hashing.reconfigure(command.config)
                    assert reader is not None
                    traffic.send(ns, traffic.spread_flows(FLOWS, seed=seed))
                    entry.update(_check_frames(reader, hashing), backend=hashing.backend.value)
                summary["commands"].append(entry)
        finally:
            if hashing is not None:
                hashing.close()
    summary["ok"] = all(
        c["as_expected"] and c.get("mismatched", 0) == 0 and c.get("frames", FLOWS) == FLOWS
        for c in summary["commands"]
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the loop and print what happened; 0 when everything was as the specification says."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = run()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if summary["ok"] else 1
    print(f"host: {summary['host']}; advertised {', '.join(summary['advertised']['features'])}")
    for c in summary["commands"]:
        line = f"{c['guest']}: {c['ack']}"
        if "refused" in c:
            line += f" ({c['refused']})"
        if "frames" in c:
            line += (
                f"; {c['backend']}: {c['frames']} of {FLOWS} frames, per queue {c['per_queue']}, "
                f"not matching the model: {c['mismatched']}"
            )
        print(line)
    print("every command answered and every frame as the model says: OK" if summary["ok"] else "MISMATCH")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
