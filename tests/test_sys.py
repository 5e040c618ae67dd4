"""pytun_hash._sys: the libc handle, errno-checked syscall(2), setns, unshare and prctl."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

import pytest

from pytun_hash import _sys
from pytun_hash.bpf import syscall as bpf_syscall
from pytun_hash.device import netns

PR_GET_NO_NEW_PRIVS = 39


def test_syscall_result_and_errno() -> None:
    with pytest.raises(OSError) as info:
        _sys.syscall(-1)
    assert info.value.errno == errno.ENOSYS and info.value.strerror == os.strerror(errno.ENOSYS)
    if os.uname().machine == "x86_64":
        assert _sys.syscall(110) == os.getppid()  # __NR_getppid on x86-64: no arguments, never fails


def test_setns_errors_carry_the_errno() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(OSError) as info:
            _sys.setns(read, _sys.CLONE_NEWNET)
        assert info.value.errno == errno.EINVAL
    finally:
        os.close(read)
        os.close(write)
    with pytest.raises(OSError) as info:
        _sys.setns(-1, _sys.CLONE_NEWNET)
    assert info.value.errno == errno.EBADF


def test_unshare_refuses_unknown_flags() -> None:
    with pytest.raises(OSError) as info:
        _sys.unshare(1)  # CSIGNAL bits are no namespace
    assert info.value.errno == errno.EINVAL


@pytest.mark.kernel
def test_unshare_and_setns_move_only_the_calling_thread() -> None:
    home = netns.thread_netns_inode()
    seen: list[int] = []

    def body() -> None:
        back = netns.open_thread_netns()
        try:
            _sys.unshare(_sys.CLONE_NEWNET)
            seen.append(netns.thread_netns_inode())
            _sys.setns(back, _sys.CLONE_NEWNET)
            seen.append(netns.thread_netns_inode())
        finally:
            os.close(back)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen[0] != home and seen[1] == home == netns.thread_netns_inode()


def test_prctl() -> None:
    assert _sys.prctl(PR_GET_NO_NEW_PRIVS) in (0, 1)
    with pytest.raises(OSError) as info:
        _sys.prctl(-1)
    assert info.value.errno == errno.EINVAL


def test_function_prototypes_are_private() -> None:
    a = _sys.function("getpid", ctypes.c_int)
    b = _sys.function("getpid", ctypes.c_long)
    assert a is not b and a.restype is ctypes.c_int and b.restype is ctypes.c_long
    assert a() == b() == os.getpid()


def test_one_libc_handle_and_one_clone_newnet() -> None:
    assert netns.CLONE_NEWNET is _sys.CLONE_NEWNET == 0x40000000
    assert not any(isinstance(v, ctypes.CDLL) for v in vars(bpf_syscall).values())
    assert not any(isinstance(v, ctypes.CDLL) for v in vars(netns).values())


def test_statfs_type_names_the_file_system(tmp_path: Path) -> None:
    assert _sys.statfs_type("/proc") == 0x9FA0  # PROC_SUPER_MAGIC
    with pytest.raises(OSError) as info:
        _sys.statfs_type(str(tmp_path / "missing"))
    assert info.value.errno == errno.ENOENT
    with pytest.raises(ValueError, match="NUL"):
        _sys.statfs_type("/proc\0/x")


def test_fstatfs_type_names_the_file_system_of_an_fd(tmp_path: Path) -> None:
    fd = os.open("/proc/self/status", os.O_PATH | os.O_CLOEXEC)  # O_PATH: nothing is opened for I/O
    try:
        assert _sys.fstatfs_type(fd) == 0x9FA0 == _sys.statfs_type("/proc")
    finally:
        os.close(fd)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        assert _sys.fstatfs_type(fd) == _sys.statfs_type(str(tmp_path))
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        _sys.fstatfs_type(-1)
    assert info.value.errno == errno.EBADF


def test_renameat2_noreplace(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as info:
            _sys.renameat2(fd, "a", fd, "b", _sys.RENAME_NOREPLACE)
        assert info.value.errno == errno.EEXIST and (tmp_path / "b").read_bytes() == b"b"
        _sys.renameat2(fd, "a", fd, "c", _sys.RENAME_NOREPLACE)
        assert sorted(os.listdir(tmp_path)) == ["b", "c"] and (tmp_path / "c").read_bytes() == b"a"
        _sys.renameat2(fd, "c", fd, "b", 0)
        assert os.listdir(tmp_path) == ["b"] and (tmp_path / "b").read_bytes() == b"a"
        with pytest.raises(ValueError, match="NUL"):
            _sys.renameat2(fd, "b\0", fd, "d", 0)
    finally:
        os.close(fd)


def test_mount_and_umount2(tmp_path: Path) -> None:
    target = str(tmp_path)
    with pytest.raises(ValueError, match="NUL"):
        _sys.mount("none", target, "tmpfs\0x")
    with pytest.raises(OSError) as info:
        _sys.umount2(target)  # not a mount point (or not root)
    assert info.value.errno in (errno.EINVAL, errno.EPERM)
    with open("/proc/self/status", encoding="ascii") as status:
        caps = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    if not caps >> 21 & 1:  # no CAP_SYS_ADMIN, root or not
        with pytest.raises(OSError) as info:
            _sys.mount("none", target, "tmpfs")
        assert info.value.errno == errno.EPERM
        return
    with pytest.raises(OSError) as info:
        _sys.mount("none", target, "no-such-fs-type")
    assert info.value.errno == errno.ENODEV
    _sys.mount("none", target, "tmpfs", _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC, "mode=0700,size=64k")
    try:
        assert _sys.statfs_type(target) == 0x01021994  # TMPFS_MAGIC
        assert os.stat(target).st_mode & 0o777 == 0o700
    finally:
        _sys.umount2(target)
    assert _sys.statfs_type(target) != 0x01021994
