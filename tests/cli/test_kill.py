"""``apply`` killed (SIGKILL) at any point leaves a device the next command can trust and heal: ``show``
never reports what is not there, the next ``apply`` succeeds and ``disable`` leaves no record or pin.

SIGKILL runs no handler, so this is about the order of the steps: the program is loaded and pinned
before it is attached, and the record is written last; leftovers of a killed run (pins without a
record, a program attached without a record) are what the next ``apply`` on the device replaces.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytun_hash.device import NetworkNamespace, TunTapDevice

TRIALS = 12


@pytest.fixture
def vmm(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    with TunTapDevice.create("kil%d", queues=4, vnet_hdr=True) as device:
        yield device


def _files(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if not f.endswith(".lock"))


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_killed_at_any_point_is_healed_by_the_next_command(
    cli: Any, vmm: TunTapDevice, state_roots: tuple[str, str]
) -> None:
    rng = random.Random(1)
    outcomes = {"recorded": 0, "nothing": 0}
    for _ in range(TRIALS):
        child = subprocess.Popen(
            [sys.executable, "-m", "pytun_hash", "apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        shown = cli("show", "--dev", vmm.name, "--json")
        assert shown.code == 0, shown.err
        doc = shown.json()
        if doc["backend"] is None:
            outcomes["nothing"] += 1
        else:  # a record is written last: what it says is in force
            outcomes["recorded"] += 1
            assert doc["verified"] is True
        again = cli("apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random", "--json")
        assert again.code == 0, again.err
        assert cli("show", "--dev", vmm.name, "--json").json()["verified"] is True
        off = cli("disable", "--dev", vmm.name, "--json")
        assert off.code == 0 and json.loads(off.out)["backend"] == "ebpf"
        assert _files(state_roots[0]) == [] and _files(os.path.join(state_roots[1], "pytun_hash")) == []
    assert sum(outcomes.values()) == TRIALS
