"""TUN/TAP devices against the real kernel: create, open, adopt, flags, vnet header, I/O, deletion.

Arguments refused before any syscall are in test_create_arguments.py (they need no kernel).
"""

from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from pyroute2 import IPRoute

from pytun_hash._abi.tun import TunFlag, TunOffload
from pytun_hash.device import DeviceMode, NetworkNamespace, TunTapDevice, get_iff, kernel_features, tun_flags_of
from pytun_hash.device import rtnl as rtnl_mod
from pytun_hash.device._ioctl import ioctl_get_int
from pytun_hash.errors import (
    BusyError,
    DeviceFlagsMismatchError,
    DeviceGoneError,
    KernelError,
    UnsupportedError,
    ValidationError,
)
from tests.device.traffic import PEER_ADDR, TAP_ADDR, udp_frame, udp_socket, wire_tap

pytestmark = pytest.mark.kernel

MQ_TAP = TunFlag.IFF_TAP | TunFlag.IFF_NO_PI | TunFlag.IFF_VNET_HDR | TunFlag.IFF_MULTI_QUEUE


def _pyroute2_tun(name: str) -> dict[str, int]:
    """The tun attributes of ``name`` as pyroute2 decodes them (an oracle independent of our rtnl)."""
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        (link,) = ipr.get_links(index)
    data = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    return dict(data["attrs"])


# ----------------------------------------------------------------------------- creation


def test_multi_queue_tap_is_created_with_the_requested_flags(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=4) as dev:
        assert dev.name == "tap0"
        assert dev.mode is DeviceMode.TAP
        assert dev.flags == MQ_TAP
        assert dev.multi_queue and dev.vnet_hdr and not dev.packet_info and not dev.persist
        assert [q.index for q in dev.queues] == [0, 1, 2, 3]
        assert all(q.attached and not q.closed and q.device is dev for q in dev.queues)
        assert len({q.fd for q in dev.queues}) == 4
        assert all(not os.get_inheritable(q.fd) for q in dev.queues)  # O_CLOEXEC
        assert all(not q.blocking for q in dev.queues)
        assert dev.getiff() & ~TunFlag.IFF_NOFILTER == MQ_TAP & ~TunFlag.IFF_NO_PI
        assert tun_flags_of(dev.name) & MQ_TAP == MQ_TAP
        info = dev.link_info()
        assert info.index == dev.ifindex and info.kind == "tun" and len(info.address) == 6
        assert info.tun is not None
        assert (info.tun.numqueues, info.tun.numdisabled, info.tun.flags) == (4, 0, MQ_TAP)
        assert dev.kernel_queue_counts() == (4, 0)
        oracle = _pyroute2_tun(dev.name)
        assert oracle["IFLA_TUN_TYPE"] == TunFlag.IFF_TAP
        assert (oracle["IFLA_TUN_PI"], oracle["IFLA_TUN_VNET_HDR"], oracle["IFLA_TUN_MULTI_QUEUE"]) == (0, 1, 1)
        assert oracle["IFLA_TUN_NUM_QUEUES"] == 4
    assert netns.list_links(kind="tun") == []


def test_single_queue_tun_with_packet_info_and_blocking_queue(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(mode=DeviceMode.TUN, packet_info=True, vnet_hdr=False, nonblocking=False) as dev:
        assert dev.name == "tun0"
        assert dev.flags == TunFlag.IFF_TUN
        assert dev.packet_info and not dev.vnet_hdr and not dev.multi_queue
        assert dev.queues[0].blocking
        assert dev.queues[0].index == 0
        info = dev.link_info()
        assert info.tun is not None and info.tun.packet_info and info.tun.numqueues is None
        assert info.address == b""
        with pytest.raises(ValidationError):
            dev.kernel_queue_counts()
        with pytest.raises(ValidationError):
            dev.add_queue()


def test_explicit_names_and_templates(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("vm7tap") as a, TunTapDevice.create("vm%dq") as b, TunTapDevice.create("vm%dq") as c:
        assert (a.name, b.name, c.name) == ("vm7tap", "vm0q", "vm1q")
        assert sorted(link.name for link in netns.list_links(kind="tun")) == ["vm0q", "vm1q", "vm7tap"]


def test_features_and_getiff(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2) as dev:
        features = dev.features()
        for flag in (TunFlag.IFF_TUN, TunFlag.IFF_TAP, TunFlag.IFF_MULTI_QUEUE, TunFlag.IFF_VNET_HDR):
            assert flag in features
        assert kernel_features() == features
        q0, q1 = dev.queues
        dev.detach_queue(q1)
        assert TunFlag.IFF_DETACH_QUEUE in dev.getiff(q1)
        assert TunFlag.IFF_DETACH_QUEUE not in dev.getiff(q0)
        assert get_iff(q1.fd)[0] == dev.name


def test_tun_flags_of_ignores_a_sysfs_that_shows_another_namespace(netns: NetworkNamespace) -> None:
    # sysfs shows the namespace it was mounted in, where "lo" is a different device.
    with TunTapDevice.create("lo2", mode=DeviceMode.TUN) as dev:
        flags = tun_flags_of(dev.name)
        assert flags & (TunFlag.IFF_TUN | TunFlag.IFF_TAP | TunFlag.IFF_VNET_HDR) == TunFlag.IFF_TUN | (
            TunFlag.IFF_VNET_HDR
        )
    with pytest.raises(KernelError) as info:
        tun_flags_of("lo")
    assert info.value.errno == errno.EINVAL
    assert "not a TUN/TAP device" in info.value.hint


# ----------------------------------------------------------------------------- existing devices


def test_open_attaches_new_queues_after_the_existing_ones(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2) as dev:
        with TunTapDevice.open(dev.name, queues=2) as other:
            assert other.flags == dev.flags
            assert [q.index for q in other.queues] == [2, 3]
            assert other.numqueues == 4
            assert other.kernel_queue_counts() == (4, 0)
        assert dev.kernel_queue_counts() == (2, 0)


def test_tunsetiff_einval_names_the_differing_flags(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("mq0", queues=2) as dev:
        with pytest.raises(DeviceFlagsMismatchError) as info:
            TunTapDevice.create(dev.name, mode=DeviceMode.TUN, queues=2)
        exc = info.value
        assert exc.errno == errno.EINVAL and exc.request == "TUNSETIFF"
        assert exc.detail is not None
        assert "IFF_TUN: requested but the device lacks it" in exc.detail
        assert "IFF_TAP: the device has it but it was not requested" in exc.detail
        with pytest.raises(DeviceFlagsMismatchError) as info:
            TunTapDevice.create(dev.name, queues=1)  # single-queue request on a multi-queue device
        assert info.value.detail is not None
        assert "IFF_MULTI_QUEUE" in info.value.detail
        assert "IFF_TUN:" not in info.value.detail
        assert dev.kernel_queue_counts() == (2, 0)


def test_flags_the_kernel_silently_keeps_are_reported(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("mq0", queues=2) as dev:
        with pytest.raises(DeviceFlagsMismatchError) as info:
            TunTapDevice.create(dev.name, queues=1, multi_queue=True, vnet_hdr=False)
        assert info.value.detail == "IFF_VNET_HDR: the device has it"
        assert dev.kernel_queue_counts() == (2, 0)  # the extra queue was closed again


def test_exclusive_create_refuses_an_existing_name(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("ex0", queues=2) as dev:
        with pytest.raises(BusyError) as info:
            TunTapDevice.create(dev.name, queues=2, exclusive=True)
        assert info.value.errno == errno.EBUSY
        assert "IFF_TUN_EXCL" in info.value.hint


def test_busy_single_queue_device_hints_at_o_cloexec(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("sq0") as dev:
        with pytest.raises(BusyError) as info:
            TunTapDevice.open(dev.name)
        assert "O_CLOEXEC" in info.value.hint


def test_adopt_learns_name_flags_and_queue_order(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=3) as dev:
        dev.set_vnet_hdr_size(12)
        dev.detach_queue(dev.queues[2])
        dups = [os.dup(q.fd) for q in (*dev.attached_queues, *dev.detached_queues)]
        with TunTapDevice.adopt(dups) as adopted:
            assert adopted.name == dev.name
            assert adopted.flags == dev.flags
            assert adopted.ifindex == dev.ifindex
            assert [q.index for q in adopted.queues] == [0, 1, None]
            assert adopted.detached_queues[0].fd == dups[2]
            assert adopted.get_vnet_hdr_size() == 12
            assert all(not os.get_inheritable(fd) for fd in dups)
        for fd in dups:
            with pytest.raises(OSError):
                os.fstat(fd)
        assert dev.get_vnet_hdr_size() == 12  # the original fds live on


def test_adopt_can_borrow_fds(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(mode=DeviceMode.TUN, packet_info=True) as dev:
        fd = os.dup(dev.queues[0].fd)
        try:
            borrowed = TunTapDevice.adopt([fd], close=False)
            assert borrowed.packet_info and borrowed.mode is DeviceMode.TUN
            borrowed.close()
            os.fstat(fd)  # still open
        finally:
            os.close(fd)


def test_a_failed_adopt_leaves_the_fds_with_the_caller(
    netns: NetworkNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_self: TunTapDevice) -> rtnl_mod.LinkInfo:
        raise KernelError(errno.EIO, "RTM_GETLINK", "simulated")

    with TunTapDevice.create(queues=2) as dev:
        fds = [os.dup(q.fd) for q in dev.queues]
        try:
            monkeypatch.setattr(TunTapDevice, "link_info", broken)
            with pytest.raises(KernelError, match="simulated"):
                TunTapDevice.adopt(fds)
            for fd in fds:
                os.fstat(fd)  # still open
        finally:
            for fd in fds:
                os.close(fd)


def test_a_failed_create_leaves_nothing_behind(netns: NetworkNamespace) -> None:
    with pytest.raises(ValidationError):
        TunTapDevice.create("half0", queues=3, owner=2**32 - 1)
    assert netns.list_links(kind="tun") == []


def test_adopt_refuses_queues_of_different_devices(netns: NetworkNamespace) -> None:
    # Fds that are not queues at all: test_create_arguments.py (they need no device).
    with TunTapDevice.create() as a, TunTapDevice.create() as b:
        with pytest.raises(ValidationError, match="different devices"):
            TunTapDevice.adopt([a.queues[0].fd, b.queues[0].fd], close=False)
        with pytest.raises(ValidationError):
            TunTapDevice.adopt([a.queues[0].fd, a.queues[0].fd], close=False)


def test_add_queue_works_from_outside_the_device_namespace(netns: NetworkNamespace) -> None:
    with NetworkNamespace(ipv6=False) as inner:
        dev = TunTapDevice.create(queues=2)
    with dev:
        assert not inner.active  # the thread is back in the test's namespace
        queue = dev.add_queue()
        assert queue.index == 2
        assert dev.kernel_queue_counts() == (3, 0)
        assert netns.list_links(kind="tun") == []  # nothing was created here
        assert dev.link_info().name == dev.name


def test_add_queue_never_recreates_a_deleted_device(netns: NetworkNamespace) -> None:
    dev = TunTapDevice.create(queues=2)
    for queue in dev.queues:
        queue.close()
    with pytest.raises(DeviceGoneError) as info:
        dev.add_queue()
    assert info.value.errno == errno.EBADFD
    assert netns.list_links(kind="tun") == []
    dev.close()
    with TunTapDevice.create("pq0", queues=2, persist=True) as keep:
        for queue in keep.queues:
            queue.close()
        again = keep.add_queue()  # a persistent device outlives its fds
        assert again.index == 0
        assert keep.kernel_queue_counts() == (1, 0)
        netns.delete_link("pq0")
        with pytest.raises(DeviceGoneError):
            keep.add_queue()
    assert netns.list_links(kind="tun") == []


# ----------------------------------------------------------------------------- settings


def test_vnet_header_size_is_per_device(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=3) as dev:
        assert dev.get_vnet_hdr_size() == 10
        dev.set_vnet_hdr_size(20)
        assert [ioctl_get_int(q.fd, "TUNGETVNETHDRSZ") for q in dev.queues] == [20, 20, 20]
        dev.set_vnet_hdr_size(11)
        assert dev.get_vnet_hdr_size() == 11
        with pytest.raises(KernelError) as info:
            dev.set_vnet_hdr_size(8)
        assert info.value.errno == errno.EINVAL
        assert "at least 10 bytes" in info.value.hint
        assert dev.get_vnet_hdr_size() == 11
        with pytest.raises(ValidationError):
            dev.set_vnet_hdr_size(1 << 40)


def test_vnet_endianness(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2) as dev:
        assert dev.get_vnet_le() is False
        dev.set_vnet_le(True)
        assert dev.get_vnet_le() is True
        assert ioctl_get_int(dev.queues[1].fd, "TUNGETVNETLE") == 1
        dev.set_vnet_le(False)
        assert dev.get_vnet_le() is False
        try:
            dev.set_vnet_be(True)
        except UnsupportedError as exc:
            # Kernels without CONFIG_TUN_VNET_CROSS_LE (like the CI one) refuse both directions.
            assert exc.errno == errno.EINVAL and exc.request == "TUNSETVNETBE"
            assert "CONFIG_TUN_VNET_CROSS_LE" in exc.hint
            with pytest.raises(UnsupportedError):
                dev.get_vnet_be()
        else:
            assert dev.get_vnet_be() is True
            dev.set_vnet_be(False)
            assert dev.get_vnet_be() is False


def test_offload(netns: NetworkNamespace) -> None:
    with TunTapDevice.create() as dev:
        dev.set_offload(TunOffload.TUN_F_CSUM | TunOffload.TUN_F_TSO4 | TunOffload.TUN_F_TSO6)
        dev.set_offload(0)
        with pytest.raises(KernelError) as info:
            dev.set_offload(TunOffload.TUN_F_TSO4)  # TSO without checksum offload
        assert info.value.errno == errno.EINVAL
        assert "TUN_F_CSUM" in info.value.hint
        with pytest.raises(KernelError):
            dev.set_offload(1 << 20)


def test_persist_owner_group_and_carrier(netns: NetworkNamespace) -> None:
    with TunTapDevice.create("keep0", persist=True, owner=4321, group=8765, queues=2) as dev:
        assert dev.persist
        info = dev.link_info()
        assert info.tun is not None
        assert (info.tun.persist, info.tun.owner, info.tun.group) == (True, 4321, 8765)
        oracle = _pyroute2_tun(dev.name)
        assert (oracle["IFLA_TUN_OWNER"], oracle["IFLA_TUN_GROUP"]) == (4321, 8765)
        dev.set_carrier(False)
        dev.set_carrier(True)
        with pytest.raises(ValidationError):
            dev.set_owner(-1)
    link = netns.get_link("keep0")  # outlived its fds
    assert link.tun is not None and link.tun.persist and link.tun.numqueues == 0
    with TunTapDevice.open("keep0") as again:
        assert again.persist and again.multi_queue and again.vnet_hdr
        assert [q.index for q in again.queues] == [0]
        again.set_persist(False)
    with pytest.raises(KernelError) as gone:
        netns.get_link("keep0")
    assert gone.value.errno == errno.ENODEV


# ----------------------------------------------------------------------------- frames


def test_frames_sent_by_the_stack_are_read_with_their_vnet_header(netns: NetworkNamespace) -> None:
    with TunTapDevice.create() as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        dev.set_vnet_hdr_size(20)
        queue = dev.queues[0]
        assert queue.try_read() is None
        with pytest.raises(KernelError) as info:
            queue.read()
        assert info.value.errno == errno.EAGAIN
        sock.sendto(b"hello", (PEER_ADDR, 4242))
        assert queue.poll(1.0)
        frame = queue.read()
        eth = frame[20:]
        assert len(frame) == 20 + 14 + 20 + 8 + 5
        assert eth[:6] == bytes.fromhex("020000000002")
        assert eth[12:14] == b"\x08\x00"
        assert struct.unpack("!H", eth[14 + 22 : 14 + 24])[0] == 4242
        assert eth.endswith(b"hello")
        sock.sendto(b"again", (PEER_ADDR, 4243))
        buf = bytearray(2048)
        n = queue.readinto(buf)
        assert n == len(frame) and bytes(buf[n - 5 : n]) == b"again"
        assert queue.drain() == []


def test_a_too_small_read_drops_the_frame_with_einval(netns: NetworkNamespace) -> None:
    with TunTapDevice.create() as dev, udp_socket() as sock:
        wire_tap(netns, dev.name)
        sock.sendto(b"x", (PEER_ADDR, 9))
        with pytest.raises(KernelError) as info:
            dev.queues[0].read(4)
        assert info.value.errno == errno.EINVAL
        assert "dropped" in info.value.hint
        assert dev.queues[0].try_read() is None


def test_frames_written_to_a_queue_reach_the_stack(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2) as dev, udp_socket() as receiver:
        wire_tap(netns, dev.name)
        receiver.bind((TAP_ADDR, 5555))
        receiver.settimeout(1.0)
        mac = dev.link_info().address
        frame = udp_frame(mac, PEER_ADDR, TAP_ADDR, 7777, 5555, b"injected")
        written = dev.queues[1].write(bytes(10) + frame)
        assert written == 10 + len(frame)
        payload, source = receiver.recvfrom(64)
        assert (payload, source) == (b"injected", (PEER_ADDR, 7777))


def test_tun_mode_frames_are_ip_packets(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(mode=DeviceMode.TUN, vnet_hdr=False, packet_info=True) as dev, udp_socket() as sock:
        netns.add_address(dev.name, "10.78.0.1/24")
        netns.set_link_up(dev.name)
        sock.sendto(b"ip", ("10.78.0.2", 53))
        frame = dev.queues[0].read()
        flags, proto = struct.unpack("!HH", frame[:4])
        assert (flags, proto) == (0, 0x0800)
        assert frame[4] >> 4 == 4
        assert socket.inet_ntoa(frame[4 + 16 : 4 + 20]) == "10.78.0.2"


# ----------------------------------------------------------------------------- lifetime


def test_deleted_device_answers_ebadfd_on_every_queue(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=3) as dev:
        dev.detach_queue(dev.queues[0])
        netns.delete_link(dev.name)
        assert netns.list_links(kind="tun") == []
        for queue in dev.queues:
            with pytest.raises(DeviceGoneError) as info:
                queue.read()
            assert info.value.errno == errno.EBADFD
            assert "deleted" in info.value.hint
            with pytest.raises(DeviceGoneError):
                queue.write(bytes(64))
        for call in (dev.get_vnet_hdr_size, dev.get_vnet_le, dev.link_info, dev.detach_steering_program):
            with pytest.raises(DeviceGoneError) as info:
                call()
            assert info.value.errno == errno.EBADFD
        assert TunFlag.IFF_TAP in dev.features()  # TUNGETFEATURES needs no device
    assert dev.closed and dev.queues == ()


def test_closed_objects_refuse_use(netns: NetworkNamespace) -> None:
    dev = TunTapDevice.create(queues=2)
    q0, q1 = dev.queues
    q0.close()
    q0.close()  # idempotent
    assert q0.closed and q0.index is None and not q0.attached
    with pytest.raises(KernelError) as info:
        _ = q0.fd
    assert info.value.errno == errno.EBADF
    assert q1.index == 0
    dev.close()
    dev.close()
    assert q1.closed and dev.closed
    with pytest.raises(KernelError) as info:
        dev.get_vnet_hdr_size()
    assert info.value.errno == errno.EBADF
    with pytest.raises(KernelError):
        dev.add_queue()
    assert netns.list_links(kind="tun") == []


def test_queue_ioctl_uses_the_first_attached_queue(netns: NetworkNamespace) -> None:
    with TunTapDevice.create(queues=2, vnet_hdr=True) as dev:
        q0, q1 = dev.queues
        buf = bytearray(40)
        assert dev.queue_ioctl("TUNGETIFF", buf) == 0
        assert get_iff(q0.fd) == (dev.name, TunFlag(struct.unpack_from("=H", buf, 16)[0]))
        dev.detach_queue(q0)
        size = bytearray(4)
        dev.queue_ioctl("TUNGETVNETHDRSZ", size)
        assert struct.unpack("=i", size)[0] == 10
        dev.detach_queue(q1)
        with pytest.raises(ValidationError) as info:
            dev.queue_ioctl("TUNGETIFF", buf)  # every queue detached: nothing to hash on
        assert info.value.field == "device" and "no attached queue" in info.value.rule
        dev.attach_queue(q1)
        with pytest.raises(ValidationError):
            dev.queue_ioctl("TUNGETVNETHASHTYPES", bytearray(4))  # a v12 name, no revision given
        netns.delete_link(dev.name)
        dev.steering.native_rss = True
        with pytest.raises(DeviceGoneError):
            dev.queue_ioctl("TUNGETIFF", buf)
        assert not dev.steering.native_rss  # the kernel freed the hash state with the device
