"""examples/qemu_guest.py: a Linux guest under QEMU counts, per receive queue, exactly what pytun_hash predicts.

Slow (a guest boots; under TCG where KVM cannot run guests), and run in CI: ``.ci/run`` installs the
guest's packages with ``make qemu-guest`` first. The guest is built here again from those packages into
a temporary directory, so the test always boots the current ``examples/guest/init``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("qemu-system-x86_64") is None,
        reason="qemu-system-x86_64 is not installed (`sudo make qemu-guest` installs Debian's qemu-system-x86)",
    ),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="/dev/net/tun does not exist (no tun driver)"),
]


def test_guest_receives_the_predicted_queues_until_qemu_detaches_the_program(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, str(EXAMPLES / "guest" / "build_guest.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"the guest cannot be built (run `sudo make qemu-guest`): {built.stderr}"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "qemu_guest.py"), "--json", "--guest", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True
    assert result["backend"] == "ebpf"
    assert result["accelerator"] in ("kvm", "tcg")
    phases = {phase["label"]: phase for phase in result["phases"]}
    assert list(phases) == [
        "round-robin", "reconfigured", "all on queue 3", "after the guest's ethtool -L", "enabled again",
    ]  # fmt: skip
    steered = [phase for phase in result["phases"] if phase["steered"]]
    for phase in steered:
        assert phase["flows"] >= 200
        assert phase["sent"] >= 1000
        assert phase["observed"] == phase["predicted"], phase
        assert sum(phase["observed"]) == phase["sent"]  # nothing of the guest's or the host's own counted
    # Every queue received: the guest really runs 4 queue pairs, and QEMU serves the TAP's queues in order.
    assert all(phases["round-robin"]["observed"]), phases["round-robin"]
    # The live reconfiguration moved packets: the same flows land elsewhere, and the guest saw it.
    assert phases["round-robin"]["indirection_table"] != phases["reconfigured"]["indirection_table"]
    assert phases["round-robin"]["predicted"] != phases["reconfigured"]["predicted"]
    assert phases["all on queue 3"]["observed"] == [0, 0, 0, phases["all on queue 3"]["sent"]]
    # The guest's multiqueue commands made QEMU detach the program: tun's own steering spread the flows
    # over the queues (all 256 flows on queue 3 by chance: 4**-256); enabling hashing again restored it.
    detached = phases["after the guest's ethtool -L"]
    assert sum(detached["observed"]) == detached["sent"]
    assert detached["observed"][3] < detached["sent"], detached
    assert phases["enabled again"]["observed"] == phases["reconfigured"]["observed"]


def test_missing_guest_is_reported_not_booted(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "qemu_guest.py"), "--guest", str(tmp_path / "nothing")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert "make qemu-guest builds it" in done.stderr
