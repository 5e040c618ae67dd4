"""``pytun-hash probe`` on the real kernel (as root) and without privileges (as nobody)."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest

from pytun_hash import Revision, default_capability
from pytun_hash.device import thread_netns_inode
from pytun_hash.device.hashctl import ProbeResult
from pytun_hash.probe import BpfProbe, KernelProbe, tap_probe_bpf
from pytun_hash.testing import EmulatorError, KernelEmulator
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
        assert doc["backend"]["auto"] == "ebpf" and hio["steering_precedence"] is None
    else:
        # Asked only where v3's numbers answered; v10 only where the program took precedence.
        if hio["tried"].get("v3") == "ok":
            assert hio["revision"] == ("v10" if hio["steering_precedence"] else "v3")
        else:
            assert hio["steering_precedence"] is None
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


# ----------------------------------------------------------------------------- v10 told from v3


V3_ANSWERED = ((Revision.V12, errno.EINVAL), (Revision.V3, 0))


def _found(revision: Revision, precedence: bool | None, tried: tuple[tuple[Revision, int], ...]) -> KernelProbe:
    return KernelProbe(
        "6.x",
        "x86_64",
        0,
        True,
        True,
        bpf=BpfProbe(True),
        hash=ProbeResult(revision, default_capability(revision), tried),
        precedence=precedence,
    )


@pytest.mark.parametrize(
    ("revision", "precedence", "text"),
    [
        (Revision.V10, True, "yes: a steering program attached while native RSS was on (v10 or later)"),
        (Revision.V3, False, "no: EBUSY attaching a steering program while native RSS was on (v3-v9)"),
        (Revision.V3, None, "could not be told (read as v3-v9)"),
    ],
    ids=["v10", "v3", "v3-untold"],
)
def test_probe_says_how_v10_was_told_from_v3(
    cli: Any, monkeypatch: pytest.MonkeyPatch, revision: Revision, precedence: bool | None, text: str
) -> None:
    monkeypatch.setattr("pytun_hash.cli.probe.probe_kernel_checks", lambda: _found(revision, precedence, V3_ANSWERED))
    doc = cli("probe", "--json").json()
    hio = doc["hash_ioctls"]
    assert hio["revision"] == revision.value and hio["tried"] == {"v12": "EINVAL", "v3": "ok"}
    assert hio["steering_precedence"] is precedence
    assert doc["backend"]["auto"] == "native" and doc["backend"]["revision"] == revision.value
    out = cli("probe").out.splitlines()
    assert any(line.startswith("hash ioctls") and f"revision {revision.value}" in line for line in out)
    assert any(line.startswith("steering precedence") and line.endswith(text) for line in out)


def test_probe_asks_no_precedence_of_v12(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    found = _found(Revision.V12, None, ((Revision.V12, 0),))
    monkeypatch.setattr("pytun_hash.cli.probe.probe_kernel_checks", lambda: found)
    assert cli("probe", "--json").json()["hash_ioctls"]["steering_precedence"] is None
    assert not any(line.startswith("steering precedence") for line in cli("probe").out.splitlines())


@pytest.mark.kernel
@pytest.mark.parametrize("revision", [Revision.V3, Revision.V10])
def test_probe_tells_v10_from_v3_under_the_emulator(cli: Any, revision: Revision) -> None:
    bpf = tap_probe_bpf()
    if not bpf.usable:
        pytest.skip(f"bpf(2) cannot create a map here ({bpf.errno}): {bpf.error}; the probe attaches a program")
    try:
        emu = KernelEmulator(revision)
    except EmulatorError as exc:
        pytest.skip(f"seccomp user notification unavailable: {exc}")
    with emu:
        run = emu.run(cli, "probe", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    hio = doc["hash_ioctls"]
    assert hio["revision"] == revision.value and hio["tried"] == {"v12": "EINVAL", "v3": "ok"}
    assert hio["steering_precedence"] is (revision is Revision.V10)
    assert doc["backend"]["revision"] == revision.value
