"""Anonymous network namespaces and the rtnetlink helpers, checked against pyroute2 and the kernel."""

from __future__ import annotations

import errno
import os
import socket
import threading

import pytest
from pyroute2 import IPRoute

from pytun_hash.device import NetworkNamespace, TunTapDevice, rtnl, thread_netns_inode
from pytun_hash.device.netns import read_sysctl, run_in_netns, write_sysctl
from pytun_hash.errors import KernelError, ValidationError
from tests import tracking


@pytest.mark.kernel
def test_enter_moves_only_this_thread_and_exit_restores_it() -> None:
    outside = thread_netns_inode()
    go = threading.Event()
    other: list[int] = []

    def observe() -> None:
        go.wait(5)
        other.append(thread_netns_inode())

    bystander = threading.Thread(target=observe)  # started outside: stays outside
    bystander.start()
    born_inside: list[int] = []
    with NetworkNamespace() as ns:
        inside = thread_netns_inode()
        assert inside == ns.inode != outside
        assert ns.contains_current_thread
        go.set()
        bystander.join()
        child = threading.Thread(target=lambda: born_inside.append(thread_netns_inode()))
        child.start()  # a thread inherits its creator's namespace
        child.join()
        assert rtnl.get_link("lo").up
        assert [link.name for link in rtnl.list_links()] == ["lo"]
    assert other == [outside]
    assert born_inside == [inside]
    assert thread_netns_inode() == outside
    assert not ns.active
    # Anonymous: no /run/netns entry ever named it (others' entries are not this test's business).
    assert tracking.namespace_entries(inside) == []


@pytest.mark.kernel
def test_namespaces_nest() -> None:
    outside = thread_netns_inode()
    with NetworkNamespace() as outer:
        with NetworkNamespace() as inner:
            assert thread_netns_inode() == inner.inode != outer.inode
        assert thread_netns_inode() == outer.inode
    assert thread_netns_inode() == outside


@pytest.mark.kernel
def test_ipv6_off_sets_the_sysctls_of_the_new_namespace_only() -> None:
    if not os.path.exists("/proc/sys/net/ipv6"):
        pytest.skip("no IPv6 in this kernel")
    before = read_sysctl("net.ipv6.conf.default.disable_ipv6")
    with NetworkNamespace(ipv6=False) as ns:
        assert read_sysctl("net.ipv6.conf.default.disable_ipv6") == "1"
        assert ns.read_sysctl("net/ipv6/conf/all/disable_ipv6") == "1"
        write_sysctl("net.ipv4.ip_forward", 1)
        assert ns.read_sysctl("net.ipv4.ip_forward") == "1"
    assert read_sysctl("net.ipv6.conf.default.disable_ipv6") == before


def test_sysctl_errors() -> None:
    with pytest.raises(ValidationError):
        read_sysctl("net..ipv4")
    with pytest.raises(KernelError) as info:
        read_sysctl("net.ipv4.no_such_knob")
    assert info.value.errno == errno.ENOENT


@pytest.mark.kernel
def test_run_executes_inside_from_any_thread() -> None:
    results: list[tuple[int, int]] = []
    ready = threading.Event()
    box: list[NetworkNamespace] = []

    def from_worker() -> None:
        ready.wait(5)
        before = thread_netns_inode()
        results.append((box[0].run(thread_netns_inode), before))
        results.append((thread_netns_inode(), before))

    worker = threading.Thread(target=from_worker)  # started outside the namespace
    worker.start()
    with NetworkNamespace() as ns:
        box.append(ns)
        ready.set()
        worker.join()
        assert ns.run(thread_netns_inode) == ns.inode  # already inside: runs directly
        inode = ns.inode
    (ran_inside, worker_home), (worker_after, _) = results
    assert ran_inside == inode
    assert worker_after == worker_home != inode


@pytest.mark.kernel
def test_run_reraises_what_the_callable_raises() -> None:
    def fail() -> None:
        raise LookupError("from inside")

    with NetworkNamespace() as ns:
        outside_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # From the main thread's namespace (outside_fd) into ns: a helper thread runs it.
            with pytest.raises(LookupError, match="from inside"):
                run_in_netns(outside_fd, lambda: ns.run(fail))
        finally:
            os.close(outside_fd)


@pytest.mark.kernel
def test_only_the_entering_thread_may_leave() -> None:
    ns = NetworkNamespace()
    ns.enter()
    try:
        errors: list[BaseException] = []

        def close_elsewhere() -> None:
            try:
                ns.close()
            except ValidationError as exc:
                errors.append(exc)

        worker = threading.Thread(target=close_elsewhere)
        worker.start()
        worker.join()
        assert len(errors) == 1
        assert "thread that entered" in str(errors[0])
        assert ns.active
        with pytest.raises(ValidationError):
            ns.enter()
    finally:
        ns.close()
    assert not ns.active
    ns.close()  # idempotent
    with pytest.raises(ValidationError):
        _ = ns.fd


@pytest.mark.kernel
def test_link_address_neighbour_vlan_and_mtu_helpers(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("hlp%d") as dev:
        netns.add_address(dev.name, "10.77.0.1/24")
        netns.add_address(dev.name, "10.77.0.1/24")  # replacing is not an error
        netns.set_link_up(dev.name)
        netns.add_neighbour(dev.name, "10.77.0.2", "02:00:00:00:00:02")
        netns.set_link_mtu(dev.name, 1280)
        with IPRoute() as ipr:
            (index,) = ipr.link_lookup(ifname=dev.name)
            (link,) = ipr.get_links(index)
            addrs = [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=index)]
            neighbours = [
                (n.get("NDA_DST"), n.get("NDA_LLADDR"), n["state"]) for n in ipr.get_neighbours(ifindex=index)
            ]
        assert index == dev.ifindex
        assert link.get("IFLA_MTU") == 1280
        assert link["flags"] & rtnl.IFF_UP
        assert addrs == [("10.77.0.1", 24)]
        assert neighbours == [("10.77.0.2", "02:00:00:00:00:02", rtnl.NUD_PERMANENT)]
        # The address works: a UDP socket can bind to it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("10.77.0.1", 0))
        with pytest.raises(KernelError) as info:
            netns.set_link_mtu(dev.name, 10)  # below ETH_MIN_MTU
        assert info.value.errno == errno.EINVAL


@pytest.mark.kernel
def test_vlan_helper_or_a_precise_error(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("hlp%d") as dev:
        try:
            netns.add_vlan(dev.name, "vl10", 10)
        except KernelError as exc:
            # Kernels built without CONFIG_VLAN_8021Q (like the CI one) do not know the link kind.
            assert exc.errno == errno.EOPNOTSUPP
            assert "CONFIG_VLAN_8021Q" in exc.hint
            return
        with IPRoute() as ipr:
            (vlan_index,) = ipr.link_lookup(ifname="vl10")
            (vlan,) = ipr.get_links(vlan_index)
        assert vlan.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "vlan"
        assert vlan.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID") == 10
        assert netns.get_link("vl10").kind == "vlan"
        netns.delete_link("vl10")
        assert [link.name for link in netns.list_links(kind="vlan")] == []


@pytest.mark.kernel
def test_helper_errors_are_typed(netns: NetworkNamespace) -> None:
    with pytest.raises(KernelError) as info:
        netns.add_address("nosuch0", "10.0.0.1/24")
    assert info.value.errno == errno.ENODEV
    assert info.value.request == "RTM_GETLINK"
    with pytest.raises(ValidationError):
        netns.add_address("lo", "10.0.0.300/24")
    with pytest.raises(ValidationError):
        netns.add_neighbour("lo", "10.0.0.2", "02:00:00")
    with pytest.raises(ValidationError):
        netns.add_vlan("lo", "vl0", 4095)
    with pytest.raises(KernelError) as info:
        rtnl.get_link(index=9999)
    assert info.value.errno == errno.ENODEV
