"""The ioctl layer's error translation, request numbers and struct ifreq codec."""

from __future__ import annotations

import errno
import os
import platform
import struct

import pytest

from pytun_hash._abi.tun import TunFlag
from pytun_hash.device._ioctl import (
    describe_flags,
    ioctl_get_int,
    ioctl_int,
    ioctl_ptr,
    request_number,
    translate_error,
)
from pytun_hash.device.primitives import (
    check_kept_flags,
    check_queue_count,
    decode_ifreq,
    encode_ifreq,
    learned_flags,
)
from pytun_hash.device.rtnl import TunLinkData
from pytun_hash.errors import (
    BusyError,
    DeviceFlagsMismatchError,
    DeviceGoneError,
    KernelError,
    PrivilegeError,
    PytunHashError,
    UnsupportedError,
    ValidationError,
)

x86_64_only = pytest.mark.skipif(platform.machine() != "x86_64", reason="request numbers measured on x86_64")


@x86_64_only
@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("TUNSETIFF", 0x400454CA),
        ("TUNSETOFFLOAD", 0x400454D0),
        ("TUNGETFEATURES", 0x800454CF),
        ("TUNGETIFF", 0x800454D2),
        ("TUNGETVNETHDRSZ", 0x800454D7),
        ("TUNSETVNETHDRSZ", 0x400454D8),
        ("TUNSETQUEUE", 0x400454D9),
        ("TUNSETVNETLE", 0x400454DC),
        ("TUNGETVNETLE", 0x800454DD),
        ("TUNSETVNETBE", 0x400454DE),
        ("TUNSETSTEERINGEBPF", 0x800454E0),
        ("TUNSETFILTEREBPF", 0x800454E1),
        ("TUNSETCARRIER", 0x400454E2),
        ("TUNGETDEVNETNS", 0x000054E3),
    ],
)
def test_request_numbers_match_the_measured_kernel(name: str, number: int) -> None:
    assert request_number(name) == number


def _ifreq(name: bytes, flags: int) -> bytearray:
    return bytearray(name.ljust(16, b"\0") + struct.pack("=H", flags) + bytes(22))


@pytest.mark.parametrize(
    ("name", "err", "cls", "words"),
    [
        ("TUNSETVNETBE", errno.EINVAL, UnsupportedError, "CONFIG_TUN_VNET_CROSS_LE"),
        ("TUNGETVNETBE", errno.EINVAL, UnsupportedError, "CONFIG_TUN_VNET_CROSS_LE"),
        ("TUNSETQUEUE", errno.EINVAL, KernelError, "already in the requested state"),
        ("TUNSETSTEERINGEBPF", errno.EINVAL, KernelError, "SOCKET_FILTER"),
        ("TUNSETVNETHDRSZ", errno.EINVAL, KernelError, "at least 10 bytes"),
        ("TUNSETIFF", errno.EPERM, PrivilegeError, "CAP_NET_ADMIN"),
        ("TUNSETPERSIST", errno.EPERM, PrivilegeError, "CAP_NET_ADMIN"),
        ("TUNSETSTEERINGEBPF", errno.EACCES, PrivilegeError, "CAP_NET_ADMIN"),
        ("TUNGETVNETHDRSZ", errno.EBADFD, DeviceGoneError, "deleted"),
    ],
)
def test_errors_carry_errno_request_and_an_actionable_sentence(
    name: str, err: int, cls: type[KernelError], words: str
) -> None:
    exc = translate_error(err, name)
    assert type(exc) is cls
    assert isinstance(exc, PytunHashError)
    assert exc.errno == err
    assert exc.request == name
    assert words in exc.hint
    assert name in str(exc)


def test_caller_hint_replaces_the_built_in_sentence() -> None:
    exc = translate_error(errno.EINVAL, "TUNSETVNETHASH", hint="this kernel lacks the hash ioctls")
    assert exc.hint == "this kernel lacks the hash ioctls"
    assert exc.errno == errno.EINVAL


def test_tunsetiff_ebusy_tells_exclusive_creation_from_a_held_queue() -> None:
    held = translate_error(errno.EBUSY, "TUNSETIFF", buf=_ifreq(b"tap7", TunFlag.IFF_TAP))
    excl = translate_error(errno.EBUSY, "TUNSETIFF", buf=_ifreq(b"tap7", TunFlag.IFF_TAP | TunFlag.IFF_TUN_EXCL))
    assert isinstance(held, BusyError)
    assert isinstance(excl, BusyError)
    assert "O_CLOEXEC" in held.hint
    assert "'tap7'" in held.hint
    assert "IFF_TUN_EXCL" in excl.hint


def test_tunsetiff_einval_without_a_type_flag_says_so() -> None:
    exc = translate_error(errno.EINVAL, "TUNSETIFF", buf=_ifreq(b"tap7", TunFlag.IFF_NO_PI))
    assert exc.errno == errno.EINVAL
    assert "neither IFF_TUN nor IFF_TAP" in exc.hint


def test_one_ifreq_codec_round_trips_what_the_kernel_reads() -> None:
    raw = encode_ifreq("tap\udcff%d", 0x8000 | TunFlag.IFF_TAP)  # a non-UTF-8 byte, a flag in the sign bit
    assert bytes(raw[:7]) == b"tap\xff%d\0" and len(raw) == 40
    assert decode_ifreq(raw) == ("tap\udcff%d", TunFlag(0x8000 | TunFlag.IFF_TAP))
    assert decode_ifreq(_ifreq(b"tap7", 0x5102)) == ("tap7", TunFlag(0x5102))
    with pytest.raises(ValueError, match="18 bytes"):
        decode_ifreq(bytes(17))


def test_a_refused_tunsetiff_is_explained_from_the_same_decoding() -> None:
    # A name with a non-UTF-8 byte is named as the caller spelled it (os.fsdecode's surrogate).
    held = translate_error(errno.EBUSY, "TUNSETIFF", buf=encode_ifreq("q\udcff", TunFlag.IFF_TAP))
    assert "'q\\udcff'" in held.hint
    short = translate_error(errno.EBUSY, "TUNSETIFF", buf=bytearray(4))
    assert isinstance(short, BusyError) and "'?'" in short.hint


def test_flags_a_device_kept_are_named_and_the_learned_flags_come_from_rtnetlink() -> None:
    data = TunLinkData(TunFlag.IFF_TAP, packet_info=False, vnet_hdr=False, persist=False, multi_queue=True)
    # TUNGETIFF: IFF_NOFILTER shares IFF_NO_PI's bit, so the packet-info answer comes from rtnetlink.
    got = TunFlag.IFF_TAP | TunFlag.IFF_MULTI_QUEUE | TunFlag.IFF_NAPI
    assert learned_flags(data, got) == TunFlag.IFF_TAP | TunFlag.IFF_NO_PI | TunFlag.IFF_MULTI_QUEUE | TunFlag.IFF_NAPI
    same = TunFlag.IFF_TAP | TunFlag.IFF_NO_PI | TunFlag.IFF_MULTI_QUEUE
    check_kept_flags("tap7", same, got, data)
    with pytest.raises(DeviceFlagsMismatchError) as info:
        check_kept_flags("tap7", same | TunFlag.IFF_VNET_HDR, got, data)
    assert info.value.errno == errno.EINVAL and "'tap7'" in info.value.hint
    assert info.value.detail == "IFF_VNET_HDR: requested but the device lacks it"


def test_queue_counts_are_checked_before_any_syscall() -> None:
    check_queue_count(256, True)
    for queues, multi in ((0, True), (257, True), (2, False)):
        with pytest.raises(ValidationError) as info:
            check_queue_count(queues, multi)
        assert info.value.field == "queues"


def test_describe_flags_names_each_bit_once() -> None:
    assert describe_flags(0x5102) == "IFF_TAP|IFF_MULTI_QUEUE|IFF_NO_PI|IFF_VNET_HDR"
    assert describe_flags(0) == "0"


def test_ioctl_on_a_non_tun_fd_is_unsupported() -> None:
    fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        with pytest.raises(UnsupportedError) as info:
            ioctl_get_int(fd, "TUNGETVNETHDRSZ")
        assert info.value.errno == errno.ENOTTY
        assert info.value.request == "TUNGETVNETHDRSZ"
    finally:
        os.close(fd)


def test_ioctl_on_a_closed_fd_is_ebadf() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(KernelError) as info:
        ioctl_int(read_end, "TUNSETOFFLOAD", 0)
    assert info.value.errno == errno.EBADF


def test_ioctl_int_rejects_values_beyond_a_c_int() -> None:
    with pytest.raises(ValidationError):
        ioctl_int(0, "TUNSETOFFLOAD", 1 << 40)


def test_unknown_request_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="TUNFROBNICATE"):
        ioctl_ptr(0, "TUNFROBNICATE", bytearray(4))


def test_fresh_tun_fd_without_tunsetiff_is_ebadfd(unattached_tun_fd: int) -> None:
    # Needs /dev/net/tun, not root: an fd never attached to a device.
    fd = unattached_tun_fd
    with pytest.raises(DeviceGoneError) as info:
        ioctl_get_int(fd, "TUNGETVNETHDRSZ")
    assert info.value.errno == errno.EBADFD
    assert "open the device again" in info.value.hint
    features = bytearray(4)
    ioctl_ptr(fd, "TUNGETFEATURES", features)  # needs no device
    assert struct.unpack("=I", features)[0] & TunFlag.IFF_MULTI_QUEUE
