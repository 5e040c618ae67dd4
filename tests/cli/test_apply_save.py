"""``apply --save FILE [--force]`` and the CLI's file readers (issue 14).

The finding: ``--save`` wrote FILE after the configuration was already in force, so a target that could
not be written (a planted symlink, a FIFO, an existing file) ended the command with exit 2 and the new
configuration attached. Now FILE is checked and written beside its target first, and put in place only
after the configuration is in force. The library-level guarantees are in tests/hardening/test_files.py.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.configfile import dump_config, load_config
from pytun_hash.device import NetworkNamespace, TunTapDevice
from tests import tracking
from tests.fuzz.harness import watchdog

VICTIM = b"root-only contents\n"
ROUND_ROBIN = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY)


# ----------------------------------------------------------------------------- no privileges


def test_force_needs_save(cli: Any) -> None:
    run = cli("apply", "--dry-run", "--queues", "4", "--key", "microsoft", "--force")
    assert run.code == 2 and "--force only works with --save" in run.err


def _sysfs_file() -> str:
    for path in ("/sys/kernel/uevent_seqnum", "/sys/power/state", "/sys/kernel/mm/transparent_hugepage/enabled"):
        if os.path.isfile(path):
            return path
    pytest.skip("no known sysfs file exists (is /sys mounted?)")


@pytest.mark.parametrize("path", ["/proc/kmsg", "/proc/self/status", "sysfs"])
def test_config_and_pcap_on_pseudo_filesystems_are_refused(cli: Any, path: str) -> None:
    path = _sysfs_file() if path == "sysfs" else path
    if not os.path.exists(path):
        pytest.skip(f"{path} does not exist here")
    kind = "sysfs" if path.startswith("/sys/") else "procfs"
    with watchdog():
        config = cli("apply", "--dry-run", "--queues", "4", "--config", path, "--json")
        pcap = cli("predict", "--key", "microsoft", "--queues", "4", "--pcap", path, "--json")
    for run, field in ((config, "config"), (pcap, "pcap")):
        assert run.code == 2, run.err
        error = run.json()["error"]
        assert error["field"] == field and f"on {kind}, a pseudo-filesystem" in error["message"]


# ----------------------------------------------------------------------------- the real kernel


@pytest.fixture
def vmm(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    """A 4-queue TAP whose queues the test holds, like a VMM would."""
    with TunTapDevice.create("sav%d", queues=4, vnet_hdr=True) as device:
        yield device


def _nothing_in_force(cli: Any, device: str, mark: int) -> None:
    shown = cli("show", "--dev", device, "--json")
    assert shown.code == 0, shown.err
    assert shown.json()["backend"] is None and shown.json()["config"] is None
    assert tracking.bpf_since(mark) == (set(), set()), "apply loaded BPF objects although it failed first"


def _refused(cli: Any, device: str, *extra: str) -> str:
    mark = tracking.bpf_mark()
    with watchdog():
        run = cli("apply", "--dev", device, "--key", "microsoft", "--backend", "ebpf", *extra, "--json")
    assert run.code == 2, run.err
    error = run.json()["error"]
    assert error["field"] == "save" and "nothing was applied" in error["message"], error
    _nothing_in_force(cli, device, mark)
    return str(error["message"])


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_failed_save_applies_nothing(cli: Any, vmm: TunTapDevice, tmp_path: Path) -> None:
    victim = tmp_path / "shadow"
    victim.write_bytes(VICTIM)
    victim.chmod(0o600)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    (shared / "rss.toml").symlink_to(victim)
    os.mkfifo(shared / "fifo.toml")
    dump_config(VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY), str(shared / "old.toml"))

    assert "symbolic link" in _refused(cli, vmm.name, "--save", str(shared / "rss.toml"))
    assert "symbolic link" in _refused(cli, vmm.name, "--save", str(shared / "rss.toml"), "--force")
    assert "not a regular file" in _refused(cli, vmm.name, "--save", str(shared / "fifo.toml"), "--force")
    assert "already exists" in _refused(cli, vmm.name, "--save", str(shared / "old.toml"))
    assert "on procfs" in _refused(cli, vmm.name, "--save", "/proc/self/rss.toml")
    assert victim.read_bytes() == VICTIM and (shared / "rss.toml").is_symlink()
    assert stat.S_ISFIFO(os.lstat(shared / "fifo.toml").st_mode)
    assert sorted(os.listdir(shared)) == ["fifo.toml", "old.toml", "rss.toml"]  # no temporary file left

    # The same command with --force replaces the existing regular file, mode 0600 even under umask 0.
    previous = os.umask(0)
    try:
        run = cli("apply", "--dev", vmm.name, "--key", "microsoft", "--backend", "ebpf",
                  "--save", str(shared / "old.toml"), "--force", "--json")  # fmt: skip
    finally:
        os.umask(previous)
    assert run.code == 0, run.err
    assert run.json()["saved"] == str(shared / "old.toml")
    assert load_config(str(shared / "old.toml")) == ROUND_ROBIN
    assert stat.S_IMODE(os.stat(shared / "old.toml").st_mode) == 0o600
    shown = cli("show", "--dev", vmm.name, "--json").json()
    assert shown["backend"] == "ebpf" and shown["config"] == ROUND_ROBIN.to_mapping()
    assert cli("disable", "--dev", vmm.name).code == 0


@pytest.mark.kernel
def test_a_failed_apply_leaves_no_file(cli: Any, vmm: TunTapDevice, tmp_path: Path) -> None:
    """Staged, then the apply fails (the kernel refuses a 7-byte vnet header): no file, no temporary file."""
    mark = tracking.bpf_mark()
    run = cli("apply", "--dev", vmm.name, "--key", "microsoft", "--vnet-hdr-size", "7",
              "--save", str(tmp_path / "rss.toml"), "--json")  # fmt: skip
    assert run.code not in (0, 5), run.err
    assert os.listdir(tmp_path) == []
    _nothing_in_force(cli, vmm.name, mark)
