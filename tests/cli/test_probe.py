"""``pytun-hash probe`` on the real kernel (as root) and without privileges (as nobody)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytun_hash.device import thread_netns_inode
from tests import tracking
from tests.cli.helpers import run_as_nobody

PROBE_KEYS = {
    "ok", "kernel", "machine", "euid", "tun", "features", "scratch", "vnet_hdr", "multi_queue", "bpf",
    "steering_ebpf", "hash_ioctls", "backend",
}  # fmt: skip


@pytest.mark.kernel
@pytest.mark.bpf
def test_probe_reports_this_kernel(cli: Any) -> None:
    home = thread_netns_inode()
    run = cli("probe", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert set(doc) == PROBE_KEYS
    assert doc["tun"] == {"path": "/dev/net/tun", "present": True, "accessible": True, "error": None}
    assert {"IFF_TAP", "IFF_MULTI_QUEUE", "IFF_VNET_HDR", "IFF_NO_PI"} <= set(doc["features"]["flags"])
    assert doc["scratch"] == {"namespace": "private", "error": None}
    vnet = doc["vnet_hdr"]
    assert vnet["default_size"] == 10 and {10, 12, 20} <= set(vnet["sizes_accepted"]) and 8 in vnet["sizes_rejected"]
    assert vnet["little_endian"] is True
    assert doc["multi_queue"] == {"supported": True, "detach_attach": True}
    assert doc["bpf"]["usable"] is True and doc["steering_ebpf"]["attachable"] is True
    hio = doc["hash_ioctls"]
    if hio["revision"] is None:  # mainline (the kernel this suite is developed on)
        assert hio["tried"] == {"v12": "EINVAL", "v3": "EINVAL", "rfc": "EINVAL"} and hio["capability"] is None
        assert doc["backend"]["auto"] == "ebpf"
    else:
        assert doc["backend"] == {
            "auto": "native",
            "revision": hio["revision"],
            "reason": doc["backend"]["reason"],
        }
    # The scratch device lived in its own namespace: nothing the suite created is left here.
    assert tracking.devices_left(home) == [] and thread_netns_inode() == home


@pytest.mark.kernel
def test_probe_human_output(cli: Any) -> None:
    run = cli("probe")
    assert run.code in (0, 3, 4)
    for label in ("kernel", "tun", "TUNGETFEATURES", "vnet header", "multi-queue", "bpf(2)", "hash ioctls",
                  "apply would use"):  # fmt: skip
        assert any(line.startswith(label) for line in run.out.splitlines()), label


def test_probe_leaves_the_thread_in_its_namespace(cli: Any) -> None:
    # As root the probe works in a private namespace; without privileges, in this one: either way the
    # calling thread ends where it started.
    inode = thread_netns_inode()
    cli("probe", "--json")
    assert thread_netns_inode() == inode


def test_probe_without_privileges() -> None:
    done = run_as_nobody("probe", "--json")
    doc = json.loads(done.stdout)
    if not doc["tun"]["present"]:
        pytest.skip("no /dev/net/tun on this machine")
    if doc["tun"]["accessible"]:
        pytest.skip("/dev/net/tun is accessible to uid 65534 here (mode 0666)")
    assert done.returncode == 3
    assert "EACCES" in doc["tun"]["error"] and doc["backend"]["auto"] is None and doc["euid"] == 65534
    assert "vnet_hdr" not in doc and doc["scratch"]["namespace"] is None
    assert done.stderr == ""
