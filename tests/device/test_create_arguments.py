"""What the device layer decides without a device of its own, and without privileges: TunTapDevice
arguments refused before any syscall, which sysfs flags describe a link, opening a device that is
missing (rtnetlink lookups) and adopting fds that are not queues (an unattached /dev/net/tun fd)."""

from __future__ import annotations

import errno
import os

import pytest

from pytun_hash._abi.tun import TunFlag
from pytun_hash.device import TunTapDevice
from pytun_hash.device import rtnl as rtnl_mod
from pytun_hash.errors import DeviceGoneError, KernelError, UnsupportedError, ValidationError
from tests.hardening.conftest import no_syscalls


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a b", "a:b", "%d%d", "tap%s"])
def test_bad_names_are_refused_before_any_syscall(name: str) -> None:
    with no_syscalls(), pytest.raises(ValidationError) as info:
        TunTapDevice.create(name)
    assert info.value.field == "name"


def test_bad_queue_counts_are_refused() -> None:
    with no_syscalls():
        with pytest.raises(ValidationError):
            TunTapDevice.create(queues=0)
        with pytest.raises(ValidationError):
            TunTapDevice.create(queues=257)
        with pytest.raises(ValidationError, match="multi_queue"):
            TunTapDevice.create(queues=2, multi_queue=False)


def test_sysfs_tun_flags_are_used_only_when_they_describe_the_same_link(monkeypatch: pytest.MonkeyPatch) -> None:
    data = rtnl_mod.TunLinkData(
        type=TunFlag.IFF_TAP, packet_info=False, vnet_hdr=True, persist=False, multi_queue=False
    )
    link = rtnl_mod.LinkInfo(
        index=5,
        name="t",
        flags=0,
        mtu=1500,
        address=b"\x02" * 6,
        kind="tun",
        num_tx_queues=1,
        num_rx_queues=1,
        tun=data,
    )
    files = {"tun_flags": "0x5012", "ifindex": "5", "address": "02:02:02:02:02:02"}
    monkeypatch.setattr(rtnl_mod, "_read_sysfs", lambda _name, leaf: files[leaf])
    assert rtnl_mod._sysfs_tun_flags(link, data.flags) == TunFlag(0x5012)  # includes IFF_NAPI
    files["ifindex"] = "6"
    assert rtnl_mod._sysfs_tun_flags(link, data.flags) is None
    files["ifindex"], files["tun_flags"] = "5", "0x1012"  # no IFF_VNET_HDR: another device
    assert rtnl_mod._sysfs_tun_flags(link, data.flags) is None


def test_open_of_a_missing_device_creates_nothing(isolated: None) -> None:
    before = {link.name for link in rtnl_mod.list_links(kind="tun")}
    with pytest.raises(KernelError) as info:
        TunTapDevice.open("absent0")
    assert info.value.errno == errno.ENODEV
    assert "create it" in info.value.hint
    assert {link.name for link in rtnl_mod.list_links(kind="tun")} == before
    with pytest.raises(KernelError) as info:
        TunTapDevice.open("lo")
    assert "not a TUN/TAP device" in info.value.hint
    with pytest.raises(ValidationError):
        TunTapDevice.open("tap%d")


def test_adopt_refuses_fds_that_are_not_queues(unattached_tun_fd: int) -> None:
    with pytest.raises(ValidationError):
        TunTapDevice.adopt([])
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(UnsupportedError) as info:
            TunTapDevice.adopt([read_end])
        assert info.value.errno == errno.ENOTTY
    finally:
        os.close(read_end)
        os.close(write_end)
    with pytest.raises(DeviceGoneError) as gone:
        TunTapDevice.adopt([unattached_tun_fd])
    assert gone.value.errno == errno.EBADFD
