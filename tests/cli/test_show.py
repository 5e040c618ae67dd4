"""``show``, and the record and pins ``apply``/``disable`` keep across processes (root, private namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pytun_hash import traffic
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.pin import get_pinned_map
from pytun_hash.bpf.prog import Program
from pytun_hash.bpf.shared import SLOT_HEADER, SLOT_VALUE_SIZE, Handoff, SlotWriter
from pytun_hash.cli.show import indirection_rows
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapDevice, rtnl
from pytun_hash.device.record import DeviceId, RecordStore
from tests import tracking

SHOW_KEYS = {
    "ok",
    "read_back",
    "queues",
    "device",
    "backend",
    "revision",
    "config",
    "owner",
    "applied_at",
    "verified",
    "ebpf",
    "stale",
    "note",
}


def _pytun(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytun_hash ARGS`` as a separate process, in the calling thread's namespace."""
    return subprocess.run(
        [sys.executable, "-m", "pytun_hash", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _doc(run: subprocess.CompletedProcess[str]) -> Any:
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _queues(ns: NetworkNamespace, device: TunTapDevice, *, seed: int) -> set[int]:
    """The queues 32 TCP/UDP flows sent through ``device`` arrive on."""
    flows = traffic.spread_flows(32, seed=seed)
    capture = traffic.collect(device, expected=traffic.send(ns, flows))
    assert len(capture.frames) == 32
    return {f.queue for f in capture.frames}


@pytest.fixture
def vmm(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    """A 4-queue TAP whose queues the test holds, like a VMM would."""
    with TunTapDevice.create("shw%d", queues=4, vnet_hdr=True) as device:
        yield device


def test_indirection_rows_as_ethtool_prints_them() -> None:
    rows = indirection_rows(list(range(4)) * 3)
    assert rows == ["    0:      0     1     2     3     0     1     2     3", "    8:      0     1     2     3"]


@pytest.mark.kernel
def test_show_without_a_record(cli: Any, vmm: TunTapDevice) -> None:
    run = cli("show", "--dev", vmm.name, "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert set(doc) == SHOW_KEYS and doc["backend"] is None and doc["verified"] is False and doc["read_back"] is None
    assert "automatic queue selection" in doc["note"]
    text = cli("show", "--dev", vmm.name)
    assert text.code == 0 and "kernel default" in text.out and "someone else attached" in text.out
    assert cli("show", "--dev", "lo").code == 3


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_show_disable_in_separate_processes(cli: Any, vmm: TunTapDevice, state_roots: tuple[str, str]) -> None:
    applied = _doc(_pytun("apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random", "--json"))
    pins = applied["in_force"]["ebpf"]
    assert applied["in_force"]["config"] == applied["config"] and pins["program_id"] > 0
    assert pins["pin_dir"].startswith(state_roots[1]) and os.path.exists(pins["program"])
    shown = _doc(_pytun("show", "--dev", vmm.name, "--json"))
    assert set(shown) == SHOW_KEYS and shown["verified"] is True and shown["read_back"] == applied["config"]
    assert (shown["backend"], shown["revision"], shown["config"]) == ("ebpf", None, applied["config"])
    assert shown["applied_at"] == applied["at"] and shown["owner"]["command"][-1] == "--json"
    assert shown["ebpf"] == pins
    text = cli("show", "--dev", vmm.name)
    assert "RX flow hash indirection table" in text.out and "    0:      0     1     2     3" in text.out
    assert VnetHashConfig.from_mapping(applied["config"]).key.hex()[:2] in text.out.replace(":", "")
    off = _doc(_pytun("disable", "--dev", vmm.name, "--json"))
    assert off["backend"] == "ebpf" and off["action"].startswith("steering program detached")
    assert off["in_force"] is None and not os.path.exists(pins["pin_dir"])
    assert tracking.program_freed(pins["program_id"])  # detached and unpinned: nothing holds it
    after = _doc(_pytun("show", "--dev", vmm.name, "--json"))
    assert after["backend"] is None and after["config"] is None and after["verified"] is False


@pytest.mark.kernel
@pytest.mark.bpf
def test_reapply_reconfigures_the_pinned_program_in_place(cli: Any, vmm: TunTapDevice) -> None:
    first = cli("apply", "--dev", vmm.name, "--key", "random", "--json").json()
    second = cli("apply", "--dev", vmm.name, "--key", "random", "--table", "3,2,1,0", "--json").json()
    assert second["in_force"]["ebpf"]["program_id"] == first["in_force"]["ebpf"]["program_id"]
    shown = cli("show", "--dev", vmm.name, "--json").json()
    assert shown["verified"] is True and shown["config"] == second["config"] != first["config"]
    assert cli("disable", "--dev", vmm.name).code == 0


@pytest.mark.kernel
@pytest.mark.bpf
def test_racing_apply_and_disable_end_as_the_last_command_said(cli: Any, vmm: TunTapDevice) -> None:
    base = [sys.executable, "-m", "pytun_hash"]
    commands = []
    for _ in range(20):
        commands.append([*base, "apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random", "--json"])
        commands.append([*base, "disable", "--dev", vmm.name, "--json"])
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    last = max(results, key=lambda d: d["at"])
    assert len({d["at"] for d in results}) == len(results)  # one at a time, under the device's lock
    shown = cli("show", "--dev", vmm.name, "--json").json()
    if last["in_force"] is None:
        assert shown["backend"] is None
    else:
        assert shown["verified"] is True and shown["config"] == last["config"]
        assert shown["applied_at"] == last["at"] and shown["ebpf"] == last["in_force"]["ebpf"]
    assert cli("disable", "--dev", vmm.name).code == 0
    assert cli("show", "--dev", vmm.name, "--json").json()["backend"] is None


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_no_rss_detaches_the_program(cli: Any, netns: NetworkNamespace, vmm: TunTapDevice) -> None:
    rss = cli("apply", "--dev", vmm.name, "--key", "random", "--table", "3", "--json").json()
    program_id = rss["in_force"]["ebpf"]["program_id"]
    traffic.wire(netns, vmm)
    assert _queues(netns, vmm, seed=1) == {3}  # the program steers every frame to queue 3
    off = cli("apply", "--dev", vmm.name, "--no-rss", "--key", "random", "--json")
    assert off.code == 0, off.err
    doc = off.json()
    assert doc["in_force"]["backend"] == "ebpf" and doc["in_force"]["ebpf"] is None
    assert doc["in_force"]["config"]["rss"] is False
    assert tracking.program_freed(program_id)  # the device held the only reference: it was detached
    assert len(_queues(netns, vmm, seed=2)) > 1  # automatic queue selection spreads the flows again
    shown = cli("show", "--dev", vmm.name, "--json").json()
    assert shown["config"]["rss"] is False and shown["ebpf"] is None and shown["verified"] is False
    text = cli("show", "--dev", vmm.name)
    assert "hash types" in text.out and "RSS hash key" in text.out and "none (RSS off" in text.out
    assert "TCPV4 (tcp4)" in text.out
    assert cli("disable", "--dev", vmm.name, "--json").json()["action"].startswith("report-only record removed")


@pytest.mark.kernel
@pytest.mark.bpf
def test_disable_leaves_a_foreign_program_unless_forced(cli: Any, vmm: TunTapDevice) -> None:
    with Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="foreign") as program:
        vmm.attach_steering_program(program.fd, owner="qemu")
        foreign = program.id
    left = cli("disable", "--dev", vmm.name, "--json")
    assert left.code == 0 and left.json()["backend"] is None and "left alone" in left.json()["action"]
    assert not tracking.program_freed(foreign, within=0.2)  # still attached: the device holds it
    assert "--force" in cli("disable", "--dev", vmm.name).out
    forced = cli("disable", "--dev", vmm.name, "--force", "--json")
    assert forced.code == 0 and "--force" in forced.json()["action"]
    assert tracking.program_freed(foreign)


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_stale_record_is_reported_and_not_used(
    cli: Any, netns: NetworkNamespace, state_roots: tuple[str, str]
) -> None:
    assert cli("create", "stale0", "--queues", "2").code == 0
    try:
        run = cli("apply", "--dev", "stale0", "--queues", "2", "--key", "random", "--json")
        assert run.code == 0, run.err
        applied = run.json()
        old = DeviceId.of_link("stale0")
        pins = applied["in_force"]["ebpf"]
        rtnl.delete_link("stale0")  # as `ip link del` does: pytun_hash is not told
        assert cli("create", "stale0", "--queues", "2").code == 0
        assert DeviceId.of_link("stale0").ifindex != old.ifindex
        store = RecordStore(state_roots[0])
        assert store.read(old) is not None
        shown = cli("show", "--dev", "stale0", "--json")
        assert shown.code == 0, shown.err
        doc = shown.json()
        assert doc["backend"] is None and doc["config"] is None and doc["verified"] is False
        assert [s["reason"] for s in doc["stale"]] == ["device-recreated"] and "stale record" in shown.err
        assert store.read(old) is None and not os.path.exists(pins["pin_dir"])  # removed, pins too
        assert tracking.program_freed(pins["program_id"])
        again = cli("show", "--dev", "stale0", "--json").json()
        assert again["stale"] == [] and again["backend"] is None
        assert "left alone" in cli("disable", "--dev", "stale0", "--json").json()["action"]
    finally:
        cli("delete", "stale0", "--force")


@pytest.mark.kernel
@pytest.mark.bpf
def test_without_a_bpffs_apply_warns_and_records_no_pins(
    cli: Any, vmm: TunTapDevice, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("PYTUN_HASH_BPFFS", str(not_a_dir))
    mark = tracking.bpf_mark()
    run = cli("apply", "--dev", vmm.name, "--key", "random", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert "no bpf filesystem" in run.err and doc["in_force"]["ebpf"] is None and doc["config"]["rss"]
    shown = cli("show", "--dev", vmm.name, "--json").json()
    assert shown["backend"] == "ebpf" and shown["verified"] is False and shown["config"] == doc["config"]
    (program_id,) = tracking.bpf_since(mark)[0]
    assert not tracking.program_freed(program_id, within=0.1)  # attached, held by the device only
    off = cli("disable", "--dev", vmm.name, "--json").json()
    assert off["action"].startswith("steering program detached") and tracking.program_freed(program_id)


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_warns_of_folded_queues_only_when_queues_are_held(cli: Any, vmm: TunTapDevice) -> None:
    held = cli("apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random", "--table", "0-5,0,1", "--json")
    assert held.code == 0 and any(
        "queue(s) 4, 5" in w and "4 queue(s) (attached now)" in w for w in held.json()["warnings"]
    )
    assert cli("disable", "--dev", vmm.name).code == 0
    with TunTapDevice.create("pst%d", queues=4, vnet_hdr=True, persist=True) as persistent:
        name = persistent.name
    try:  # a persistent device nobody holds: this command's own queue is no count to fold by
        idle = cli("apply", "--dev", name, "--backend", "ebpf", "--key", "random", "--table", "0-5,0,1", "--json")
        assert idle.code == 0 and "warnings" not in idle.json()
        assert cli("disable", "--dev", name).code == 0
    finally:
        with TunTapDevice.open(name) as again:
            again.set_persist(False)


@pytest.mark.kernel
@pytest.mark.bpf
def test_show_says_when_the_pinned_slot_holds_nothing_pytun_hash_wrote(cli: Any, vmm: TunTapDevice) -> None:
    applied = cli("apply", "--dev", vmm.name, "--backend", "ebpf", "--key", "random", "--json").json()
    maps = applied["in_force"]["ebpf"]["maps"]
    # Someone holding the maps (a VMM) writes bytes that are no configuration into the active slot.
    with (
        get_pinned_map(maps["control"]) as control,
        get_pinned_map(maps["slots"]) as slots,
        SlotWriter(os.dup(control.fd), os.dup(slots.fd), Handoff("tap", "spec", 0, 0)) as writer,
    ):
        region = writer._maps()[1]
        base = writer.active * ((SLOT_VALUE_SIZE + 7) & ~7) + SLOT_HEADER
        region[base + 4 : base + 8] = (5).to_bytes(4, sys.byteorder)  # a table mask no writer writes
    shown = cli("show", "--dev", vmm.name, "--json").json()
    assert shown["verified"] is False and shown["read_back"] is None and shown["config"] == applied["config"]
    text = cli("show", "--dev", vmm.name).out
    assert "holds no configuration pytun_hash wrote" in text and "pytun-hash disable" in text
    assert cli("disable", "--dev", vmm.name).code == 0
