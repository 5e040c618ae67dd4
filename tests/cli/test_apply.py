"""``apply`` and ``disable``: dry-run plans, eBPF on the real kernel, the native path through the emulator."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytun_hash import traffic
from pytun_hash._abi import Revision
from pytun_hash.codec import decode_plan, ioctl_plan
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.configfile import load_config
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.model import predict_queue
from pytun_hash.testing import EmulatorError, KernelEmulator
from tests import tracking

APPLY_KEYS = {"ok", "device", "backend", "revision", "reason", "config", "reports", "saved", "in_force", "at"}
DRY_KEYS = {"ok", "dry_run", "device", "backend", "revision", "arch", "config", "calls"}
ROUND_ROBIN = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY)


# ----------------------------------------------------------------------------- dry run (no privileges)


@pytest.mark.parametrize("revision", list(Revision))
def test_dry_run_prints_the_codec_plan(cli: Any, revision: Revision) -> None:
    run = cli(
        "apply", "--dry-run", "--revision", revision.value, "--queues", "4", "--key", "microsoft", "--json"
    )
    assert run.code == 0, run.err
    doc = run.json()
    assert set(doc) == DRY_KEYS and doc["dry_run"] is True and doc["device"] is None
    assert doc["revision"] == revision.value and doc["config"] == ROUND_ROBIN.to_mapping()
    plan = ioctl_plan(ROUND_ROBIN, revision)
    assert [
        (c["name"], int(c["request"], 16), bytes.fromhex(c["payload"]), c["size"]) for c in doc["calls"]
    ] == [(c.name, c.request, c.payload, len(c.payload)) for c in plan]
    assert decode_plan(plan, revision) == ROUND_ROBIN


def test_dry_run_defaults_to_the_rfc_and_shows_the_key_workaround(cli: Any) -> None:
    run = cli("apply", "--dry-run", "--table", "0,1", "--types", "ipv6,tcpv6", "--key", "microsoft")
    assert run.code == 0
    assert "revision RFC (8 Oct 2023)" in run.out
    # The binding always loads the whole key: an IPv6-only type set is preceded by a call that loads all 40 bytes.
    assert run.out.count("TUNSETVNETHASH request 0x400454e5") == 2
    assert "load all 40 key bytes" in run.out


def test_dry_run_for_another_architecture(cli: Any) -> None:
    doc = cli("apply", "--dry-run", "--queues", "2", "--key", "microsoft", "--revision", "v3",
              "--arch", "ppc64",
              "--json").json()  # fmt: skip
    plan = ioctl_plan(VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY), Revision.V3, arch="ppc64")
    assert doc["arch"] == "ppc64" and doc["calls"][0]["payload"] == plan[0].payload.hex()
    assert int(doc["calls"][0]["request"], 16) == plan[0].request
    flags = struct.unpack(">H", bytes.fromhex(doc["calls"][0]["payload"])[:2])[0]
    assert flags == 0x0002  # big-endian RSS flag of v3


def test_dry_run_ebpf_warns_and_config_files(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('rss = true\ntypes = "all"\nindirection_table = [0, 1]\nkey = "microsoft"\n')
    run = cli("apply", "--dry-run", "--config", str(path), "--backend", "ebpf", "--report", "--json")
    assert run.code == 0
    doc = run.json()
    assert doc["config"]["report"] is True and doc["config"]["indirection_table"] == [0, 1]
    assert "issues no hash ioctls" in run.err and doc["warnings"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--queues", "4"], "needs --dev"),
        (["--dry-run", "--queues", "4", "--arch", "vax"], "unknown machine 'vax'"),
        (["--dev", "x", "--arch", "ppc64"], "--arch only works with --dry-run"),
        (["--dry-run", "--revision", "v2", "--queues", "4"], "unknown revision"),
        (["--dry-run", "--queues", "4", "--unclassified-queue", "-1"], "invalid unclassified_queue"),
    ],
)
def test_apply_usage_errors(cli: Any, args: list[str], needle: str) -> None:
    run = cli("apply", *args)
    assert run.code == 2 and needle in run.err and run.err.count("\n") == 1


@pytest.mark.parametrize("text", ['key = ""\n', 'key = "0x"\n', 'key = " "\n'])
def test_an_empty_key_in_a_config_file_is_refused_like_the_flag(cli: Any, tmp_path: Path, text: str) -> None:
    # Once applied with exit 0 as an all-zero key: every flow on queue 0.
    path = tmp_path / "c.toml"
    path.write_text(text)
    from_file = cli("apply", "--dry-run", "--queues", "4", "--config", str(path), "--json")
    from_flag = cli("apply", "--dry-run", "--queues", "4", "--key", "", "--json")
    assert from_file.code == from_flag.code == 2
    file_error, flag_error = from_file.json()["error"], from_flag.json()["error"]
    assert (file_error["field"], flag_error["field"]) == ("key", "--key")
    assert file_error["message"].split(": ", 1)[1] == flag_error["message"].split(": ", 1)[1]


def test_dry_run_refuses_what_a_revision_cannot_express(cli: Any) -> None:
    run = cli(
        "apply", "--dry-run", "--revision", "v12", "--queues", "2", "--types", "ipv6", "--key", "microsoft"
    )
    assert run.code == 2 and "invalid types: on v12" in run.err and "add an IPv4 type" in run.err


# ----------------------------------------------------------------------------- the real kernel


@pytest.fixture
def persistent(cli: Any, netns: NetworkNamespace) -> Iterator[str]:
    """A persistent 4-queue TAP with 20-byte LE vnet headers, made with the CLI; deleted afterwards."""
    assert cli("create", "rss0", "--queues", "4", "--vnet-hdr-size", "20", "--vnet-le").code == 0
    yield "rss0"
    cli("delete", "rss0", "--force")


@pytest.mark.kernel
def test_apply_on_a_kernel_without_native_hashing(cli: Any, persistent: str) -> None:
    native = cli("apply", "--dev", persistent, "--queues", "4", "--backend", "native")
    if native.code == 0:
        pytest.skip("this kernel has native hash ioctls")
    assert native.code == 4 and "use the eBPF backend" in native.err
    v12 = cli("apply", "--dev", persistent, "--queues", "4", "--revision", "v12", "--json")
    assert v12.code == 4 and v12.json()["error"]["errno"] == "EINVAL"


@pytest.mark.parametrize(
    ("dev", "needle"), [("nosuch0", "no TUN/TAP device named"), ("lo", "not a TUN/TAP device")]
)
def test_apply_and_disable_need_a_tun_device(cli: Any, isolated: None, dev: str, needle: str) -> None:
    # rtnetlink lookups: no privilege needed (in a private namespace where one can be made).
    for args in (["apply", "--queues", "2"], ["disable"]):
        run = cli(*args, "--dev", dev)
        assert run.code == 3 and needle in run.err


def _traffic(
    ns: NetworkNamespace, device: TunTapDevice, count: int, seed: int = 3
) -> list[traffic.CapturedFrame]:
    """Send ``count`` TCP/UDP flows through ``device`` and return the frames, each exactly once."""
    traffic.wire(ns, device)
    flows = traffic.spread_flows(count, seed=seed)
    capture = traffic.collect(device, expected=traffic.send(ns, flows))
    assert len(capture.frames) == count and all(m.flow is not None for m in capture.match(flows))
    return list(capture.frames)


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_ebpf_stays_in_force_after_the_command(
    cli: Any, netns: NetworkNamespace, persistent: str, tmp_path: Path
) -> None:
    saved = tmp_path / "applied.toml"
    mark = tracking.bpf_mark()
    run = cli("apply", "--dev", persistent, "--key", "random", "--queues", "4", "--report",
              "--backend", "ebpf", "--save", str(saved),
              "--json")  # fmt: skip
    assert run.code == 0, run.err
    doc = run.json()
    assert (
        set(doc) == APPLY_KEYS | {"warnings"} and doc["backend"] == "ebpf" and doc["reports"] == "user-space"
    )
    assert doc["saved"] == str(saved) and "HashReporter" in run.err and "HashReporter" in doc["warnings"][0]
    config = load_config(str(saved))
    assert config.to_mapping() == doc["config"] and config.report and config.rss
    # The program outlives the command: the device holds it.
    assert len(tracking.alive_bpf(*tracking.bpf_since(mark))[0]) == 1
    with TunTapDevice.open(persistent, queues=4) as device:
        frames = _traffic(netns, device, 40)
        assert all(f.queue == predict_queue(config, f.frame, 4) for f in frames)
        assert {f.queue for f in frames} == {0, 1, 2, 3}
        off = cli("disable", "--dev", persistent, "--backend", "ebpf", "--json")
        assert off.code == 0 and off.json()["action"].startswith("steering program detached")
        assert _released(mark)  # detached: the kernel frees the program after an RCU grace period
    assert cli("delete", persistent).code == 0


def _released(mark: int) -> bool:
    """Whether every program this process loaded after ``mark`` is gone within 2 s."""
    progs, _maps = tracking.bpf_since(mark)
    deadline = time.monotonic() + 2.0
    while tracking.alive_bpf(progs, set())[0] and time.monotonic() < deadline:
        time.sleep(0.005)
    return not tracking.alive_bpf(progs, set())[0]


@pytest.mark.kernel
@pytest.mark.bpf
def test_apply_while_a_vmm_holds_the_queues(cli: Any, netns: NetworkNamespace) -> None:
    """apply detaches its own queue before attaching the program: the VMM's 4 queues keep their numbers."""
    with TunTapDevice.create("vmmq%d", queues=4, vnet_hdr=True) as vmm:
        run = cli(
            "apply", "--dev", vmm.name, "--key", "microsoft", "--json"
        )  # the table follows the 4 queues
        assert run.code == 0, run.err
        config = VnetHashConfig.from_mapping(run.json()["config"])
        # The published key is warned about, and nothing else: no queue beyond the VMM's 4.
        assert config.indirection_table == ROUND_ROBIN.indirection_table
        assert [line for line in run.err.splitlines() if "published microsoft key" not in line] == []
        assert vmm.kernel_queue_counts() == (4, 0)
        frames = _traffic(netns, vmm, 32, seed=8)
        assert all(f.queue == predict_queue(config, f.frame, 4) for f in frames)
        assert cli("disable", "--dev", vmm.name).code == 0


# ----------------------------------------------------------------------------- native, through the emulator


@pytest.fixture
def emulator_ok() -> None:
    try:
        KernelEmulator(Revision.RFC).close()
    except EmulatorError as exc:
        pytest.skip(f"seccomp user notification unavailable: {exc}")


@pytest.mark.kernel
@pytest.mark.parametrize("revision", list(Revision))
def test_native_apply_and_disable_through_the_emulator(
    cli: Any, netns: NetworkNamespace, emulator_ok: None, revision: Revision
) -> None:
    with TunTapDevice.create("emu%d", queues=4) as device, KernelEmulator(revision) as emu:
        name = device.name
        refused = emu.run(cli, "apply", "--dev", name, "--key", "microsoft", "--report", "--json")
        error = refused.json()["error"]  # the device has the default 10-byte header
        assert refused.code == 2 and error["field"] == "report"
        assert "--vnet-hdr-size 20 --vnet-le" in error["hint"]
        run = emu.run(cli, "apply", "--dev", name, "--key", "microsoft", "--report", "--vnet-hdr-size", "20",
                      "--vnet-le", "--json")  # fmt: skip
        assert run.code == 0, run.err
        doc = run.json()
        assert doc["backend"] == "native" and doc["revision"] == revision.value and doc["reports"] == "kernel"
        expected = VnetHashConfig.from_mapping(doc["config"])
        assert expected == ROUND_ROBIN.replace(report=True)
        assert emu.device_state(name).as_config() == expected
        off = emu.run(cli, "disable", "--dev", name, "--json")
        assert (
            off.code == 0
            and off.json()["backend"] == "native"
            and off.json()["action"].startswith("hash ioctl")
        )
        assert not emu.device_state(name).enabled


@pytest.mark.kernel
def test_native_apply_counts_the_queues_held_elsewhere(
    cli: Any, netns: NetworkNamespace, emulator_ok: None
) -> None:
    with TunTapDevice.create("emu%d", queues=4) as device, KernelEmulator(Revision.V12) as emu:
        run = emu.run(cli, "apply", "--dev", device.name, "--key", "microsoft")
        assert run.code == 0, run.err
        # The VMM's 4 queues plus the command's own: queue 3 exists, nothing to warn about.
        assert "steers to queue" not in run.err
