"""``create``, ``delete`` and ``probe --dev`` on the real kernel, inside an anonymous namespace; their
usage errors and failed lookups, which need no privilege, everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from pytun_hash.device import NetworkNamespace, TunTapDevice, rtnl
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import DeviceNotFoundError
from tests.hardening.conftest import no_syscalls

CREATE_KEYS = {
    "ok", "device", "ifindex", "mode", "flags", "multi_queue", "queues_checked", "queues", "intent", "vnet_hdr",
    "vnet_hdr_size", "vnet_le", "owner", "group", "persist",
}  # fmt: skip


def exists(name: str) -> bool:
    try:
        rtnl.get_link(name)
    except DeviceNotFoundError:
        return False
    return True


@pytest.mark.kernel
def test_create_probe_delete(cli: Any, netns: NetworkNamespace) -> None:
    run = cli("create", "mq0", "--queues", "4", "--vnet-hdr-size", "20", "--vnet-le",
              "--owner", "nobody", "--group", "0", "--json")  # fmt: skip
    assert run.code == 0, run.err
    doc = run.json()
    assert set(doc) == CREATE_KEYS
    assert (
        doc["device"] == "mq0" and doc["mode"] == "tap" and doc["multi_queue"] and doc["queues_checked"] == 4
    )
    assert (
        doc["vnet_hdr_size"] == 20 and doc["vnet_le"] is True and doc["owner"] == 65534 and doc["group"] == 0
    )
    assert "IFF_MULTI_QUEUE" in doc["flags"] and "IFF_VNET_HDR" in doc["flags"]
    link = rtnl.get_link("mq0")
    assert link.tun is not None and link.tun.persist and link.tun.owner == 65534 and link.tun.numqueues == 0
    # The vnet header settings live in the device, not in the fds that set them.
    with TunTapDevice.open("mq0") as device:
        assert device.get_vnet_hdr_size() == 20 and device.get_vnet_le()
        probe = cli("probe", "--dev", "mq0", "--json").json()["device"]
        assert probe["numqueues"] == 1 and probe["persist"] and probe["owner"] == 65534
        assert (
            probe["mode"] == "tap" and probe["multi_queue"] and probe["vnet_hdr"] and not probe["packet_info"]
        )
    gone = cli("delete", "mq0", "--json")
    assert gone.code == 0 and gone.json() == {
        "ok": True, "device": "mq0", "deleted": True, "held_elsewhere": 0, "method": "persist-off"
    }  # fmt: skip
    assert not exists("mq0")


@pytest.mark.kernel
def test_create_tun_single_queue_human_output(cli: Any, netns: NetworkNamespace) -> None:
    run = cli("create", "tun9", "--tun", "--no-vnet-hdr")
    assert run.code == 0
    assert run.out == "created persistent tun tun9: single-queue, no vnet header\n"
    assert rtnl.get_link("tun9").tun is not None
    assert cli("delete", "tun9").out == "deleted tun9\n"


@pytest.mark.kernel
def test_create_existing_name_fails(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "dup0").code == 0
    run = cli("create", "dup0")
    assert run.code == 3 and "exists already" in run.err and "pytun-hash delete dup0" in run.err
    assert cli("delete", "dup0").code == 0


@pytest.mark.kernel
def test_delete_while_held_elsewhere(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "held0", "--queues", "2").code == 0
    with TunTapDevice.open("held0", queues=2) as holder:
        run = cli("delete", "held0", "--json")
        doc = run.json()
        assert doc["deleted"] is False and doc["held_elsewhere"] == 2
        assert exists("held0")  # not persistent any more: goes with its last fd
        assert not holder.link_info().tun.persist  # type: ignore[union-attr]
    assert not exists("held0")


@pytest.mark.kernel
def test_delete_single_queue_busy_and_force(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "busy0").code == 0
    with TunTapDevice.open("busy0"):
        refused = cli("delete", "busy0")
        assert refused.code == 3 and "--force" in refused.err
        forced = cli("delete", "busy0", "--force", "--json").json()
        assert forced["deleted"] is True and forced["method"] == "rtnetlink"
    assert not exists("busy0")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["create", "x0", "--owner", "no-such-user-here"], "no user named"),
        (["create", "x0", "--group", "no-such-group-here"], "no group named"),
        (["create", "x0", "--no-vnet-hdr", "--vnet-le"], "needs a vnet header"),
        (["create", "x0", "--no-vnet-hdr", "--vnet-hdr-size", "20"], "needs a vnet header"),
        (["create", "bad/name"], "invalid name"),
        (["create", "x0", "--queues", "300"], "invalid queues"),
        # Digits of other scripts are not uids: int() would take Arabic-Indic 1000 as 1000, fullwidth 0 as root.
        (["create", "x0", "--owner", "\u0661\u0660\u0660\u0660"], "invalid --owner: expected a number in ASCII digits"),
        (["create", "x0", "--owner", "\uff10"], "invalid --owner: expected a number in ASCII digits"),
        (["create", "x0", "--group", "\u0660"], "invalid --group: expected a number in ASCII digits"),
        (["create", "x0", "--queues", "\u0664"], "argument --queues: expected a number in ASCII digits"),
        (["create", "x0", "--owner", "u" * 100_000], "cannot be a user name"),
    ],
)
def test_usage_errors_are_refused_before_any_syscall(cli: Any, args: list[str], needle: str) -> None:
    with no_syscalls():  # nothing is opened or created: no privilege needed
        run = cli(*args)
    assert run.code == 2, run.err
    assert needle in run.err and run.err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["delete", "nosuch0"], "no device named 'nosuch0'"),
        (["delete", "lo"], "not a TUN/TAP device"),
        (["probe", "--dev", "nosuch0"], "no TUN/TAP device named"),
        (["probe", "--dev", "lo"], "not a TUN/TAP device"),
    ],
)
def test_lookup_errors(cli: Any, isolated: None, args: list[str], needle: str) -> None:
    # rtnetlink lookups: no privilege needed (in a private namespace where one can be made).
    run = cli(*args)
    assert run.code == 3, run.err
    assert needle in run.err and run.err.count("\n") == 1


@pytest.mark.kernel
def test_kernel_refusal_leaves_nothing_behind(cli: Any, netns: NetworkNamespace) -> None:
    run = cli("create", "x0", "--vnet-hdr-size", "8")
    assert run.code == 3, run.err
    assert "TUNSETVNETHDRSZ failed with EINVAL" in run.err and run.err.count("\n") == 1
    assert not exists("x0")  # a failed create leaves nothing behind


@pytest.mark.kernel
def test_created_device_is_usable_by_its_owner_flags(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "pi0", "--packet-info", "--multi-queue").code == 0
    with TunTapDevice.open("pi0") as device:
        assert device.packet_info and device.multi_queue and device.mode is DeviceMode.TAP
    assert cli("delete", "pi0").code == 0
