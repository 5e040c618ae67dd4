"""Pinning in the bpf filesystem: pin, get back from another process, unpin frees; ensure_bpffs.

Every test pins on its own bpffs, mounted (by ensure_bpffs) on a temporary directory and
unmounted afterwards, and below that in a directory of its own (``pytun_hash-test-<pid>-<n>``);
nothing is mounted on, or unmounted from, the host's /sys/fs/bpf. The test of the default root
runs in a child process with a private mount namespace.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, VnetHashConfig, _sys
from pytun_hash.bpf import pin as pins
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps, QueueMap, map_ids
from pytun_hash.bpf.prog import Program, prog_ids
from pytun_hash.bpf.rss import EbpfRss, open_pinned
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BpfError, KernelError, PrivilegeError, ValidationError
from tests.bpf.conftest import wait_released

ROOT = Path(__file__).resolve().parents[2]
_COUNTER = itertools.count()


def _mounts_on(path: str) -> int:
    """How many mounts sit on ``path`` in this process's mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        points = [line.split()[4].encode().decode("unicode_escape") for line in info]
    return points.count(path)


@pytest.fixture
def bpffs(tmp_path: Path) -> Iterator[str]:
    """A private bpffs on a temporary directory, and a unique test directory on it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a bpffs needs root (CAP_SYS_ADMIN)")
    mount = str(tmp_path / "bpffs")
    assert pins.ensure_bpffs(mount) is True
    try:
        here = os.path.join(mount, f"pytun_hash-test-{os.getpid()}-{next(_COUNTER)}")
        os.mkdir(here, 0o700)
        yield here
    finally:
        _sys.umount2(mount)  # our own mount; it frees whatever a failed test left pinned


def _program() -> Program:
    return Program.load(Assembler().mov64_imm(Reg.R0, 3).exit().assemble(), name="pth_pin")


def _child(code: str, *, timeout: float = 30) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert isinstance(result, dict)
    return result


@pytest.mark.bpf
def test_ensure_bpffs_mounts_once_then_is_a_no_op(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a bpffs needs root (CAP_SYS_ADMIN)")
    mount = str(tmp_path / "fs")  # created by ensure_bpffs
    try:
        assert pins.ensure_bpffs(mount) is True
        assert pins.is_bpffs(mount) and _sys.statfs_type(mount) == pins.BPF_FS_MAGIC
        assert stat.S_IMODE(os.stat(mount).st_mode) & 0o777 == 0o700  # bpffs adds the sticky bit
        assert pins.ensure_bpffs(mount) is False  # already a bpffs: nothing mounted on top
        assert _mounts_on(mount) == 1
    finally:
        _sys.umount2(mount)
    assert not pins.is_bpffs(mount)


@pytest.mark.bpf
def test_ensure_bpffs_default_root_in_a_private_mount_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("mount namespaces and bpffs mounts need root")
    result = _child(
        """
        import json
        from pytun_hash import _sys
        from pytun_hash.bpf import pin
        _sys.unshare(_sys.CLONE_NEWNS)
        _sys.mount(None, "/", None, _sys.MS_REC | _sys.MS_PRIVATE)   # nothing propagates to the host
        before = pin.is_bpffs(pin.BPFFS_ROOT)
        first = pin.ensure_bpffs()
        second = pin.ensure_bpffs()
        print(json.dumps({"before": before, "first": first, "second": second, "after": pin.is_bpffs("/sys/fs/bpf")}))
        """
    )
    assert result["first"] is (not result["before"])
    assert result["second"] is False and result["after"] is True


def test_ensure_bpffs_refuses_a_file_and_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ValidationError, match="not a directory"):
        pins.ensure_bpffs(str(tmp_path / "file"))
    with pytest.raises(ValidationError):
        pins.ensure_bpffs("bad\0path")
    with pytest.raises(ValidationError):
        pins.pin_dir(0, 1)
    with pytest.raises(ValidationError):
        pins.pin_dir(1, True)


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status", encoding="ascii") as status:
        eff = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
    return bool(eff >> 21 & 1)


def test_ensure_bpffs_without_privilege_says_how() -> None:
    if not _has_cap_sys_admin():
        # This process is the unprivileged one: ask directly.
        with tempfile.TemporaryDirectory(prefix="pytun_hash-test-") as where:
            with pytest.raises(PrivilegeError) as info:
                pins.ensure_bpffs(where)
            assert not pins.is_bpffs(where)
        assert info.value.errno in (errno.EPERM, errno.EACCES)
        assert "CAP_SYS_ADMIN" in info.value.hint and "mount -t bpf bpf" in info.value.hint
        return
    with tempfile.TemporaryDirectory(prefix="pytun_hash-test-") as where:
        os.chmod(where, 0o755)  # reachable for nobody
        result = _child(
            f"""
            import json, os
            from pytun_hash.bpf import pin
            from pytun_hash.errors import PrivilegeError
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            try:
                pin.ensure_bpffs({where!r})
            except PrivilegeError as exc:
                print(json.dumps({{"errno": exc.errno, "hint": exc.hint}}))
            """
        )
        assert not pins.is_bpffs(where)
    assert result["errno"] in (errno.EPERM, errno.EACCES)
    assert "CAP_SYS_ADMIN" in str(result["hint"]) and "mount -t bpf bpf" in str(result["hint"])


def test_pin_dir_layout() -> None:
    assert pins.pin_dir(4026531840, 7) == "/sys/fs/bpf/pytun_hash/4026531840/7"
    assert pins.pin_dir(12, 3, root="/x") == "/x/pytun_hash/12/3"


@pytest.mark.bpf
def test_pinned_map_and_program_reach_another_process(bpffs: str) -> None:
    map_path, prog_path = os.path.join(bpffs, "config"), os.path.join(bpffs, "prog")
    with ArrayMap.create(8, 2, name="pth_pin") as m, _program() as prog:
        m.update(0, b"parent!!")
        pins.pin(m, map_path)
        pins.pin(prog.fd, prog_path)  # a raw fd works too
        ids = (m.id, prog.id)
    # Only the pins hold them now.
    assert ids[0] in map_ids() and ids[1] in prog_ids()
    assert stat.S_IMODE(os.stat(map_path).st_mode) == 0o600
    result = _child(
        f"""
        import json
        from pytun_hash.bpf import pin
        from pytun_hash.bpf.maps import ArrayMap
        with pin.get_pinned_map({map_path!r}) as m, pin.get_pinned_program({prog_path!r}) as prog:
            assert isinstance(m, ArrayMap), m
            seen = m.lookup(0).decode()
            m.update(1, b"child!!!")
            run = prog.test_run(bytes(60)).retval
            print(json.dumps({{"seen": seen, "map_id": m.id, "prog_id": prog.id, "run": run,
                               "geometry": [m.key_size, m.value_size, m.max_entries]}}))
        """
    )
    assert result == {
        "seen": "parent!!",
        "map_id": ids[0],
        "prog_id": ids[1],
        "run": 3,
        "geometry": [4, 8, 2],
    }
    with pins.get_pinned_map(map_path) as again:
        assert isinstance(again, ArrayMap)
        assert again.lookup(1) == b"child!!!"
    with pins.get_pinned_program(prog_path) as program:
        assert program.prog_type == 1 and program.insn_count == 2
    pins.unpin(map_path)
    pins.unpin(prog_path)
    assert not os.path.exists(map_path)
    assert wait_released({ids[1]}, {ids[0]}) == (set(), set())  # unpinned and no fd: freed


@pytest.mark.bpf
def test_pinned_objects_come_back_typed(bpffs: str) -> None:
    with ArrayMap.create(16, 1) as inner, ArrayOfMaps.create(inner, 1) as outer, QueueMap.create(4, 8) as queue:
        outer.set(0, inner)
        for obj, name in ((outer, "outer"), (queue, "queue"), (inner, "inner")):
            pins.pin(obj, os.path.join(bpffs, name))
        inner_id = inner.id
    with pins.get_pinned_object(os.path.join(bpffs, "outer")) as got:
        assert isinstance(got, ArrayOfMaps) and got.lookup_id(0) == inner_id
    with pins.get_pinned_object(os.path.join(bpffs, "queue")) as got:
        assert isinstance(got, QueueMap) and (got.value_size, got.max_entries) == (4, 8)
        assert got.pop() is None
    with pins.get_pinned_object(os.path.join(bpffs, "inner")) as got:
        assert type(got) is ArrayMap and got.value_size == 16
    for name in ("outer", "queue", "inner"):
        pins.unpin(os.path.join(bpffs, name))


@pytest.mark.bpf
def test_pin_errors_are_typed_with_hints(bpffs: str, tmp_path: Path) -> None:
    path = os.path.join(bpffs, "m")
    with ArrayMap.create(4, 1) as m:
        with pytest.raises(BpfError) as exc:
            pins.pin(m, str(tmp_path / "not-bpffs"))
        assert exc.value.errno == errno.EPERM and "ensure_bpffs" in exc.value.hint
        assert not isinstance(exc.value, PrivilegeError)  # the path, not the caller's privileges
        with pytest.raises(BpfError) as exc:
            pins.pin(m, os.path.join(bpffs, "missing-dir", "m"))
        assert exc.value.errno == errno.ENOENT
        pins.pin(m, path)
        with pytest.raises(BpfError) as exc:
            pins.pin(m, path)
        assert exc.value.errno == errno.EEXIST and "unpin" in exc.value.hint
        with pytest.raises(ValidationError):
            pins.pin(True, path)
    closed = ArrayMap.create(4, 1)
    closed.close()
    with pytest.raises(BpfError) as exc:
        pins.pin(closed, os.path.join(bpffs, "closed"))
    assert exc.value.errno == errno.EBADF
    with pytest.raises(BpfError) as exc:
        pins.get_pinned(os.path.join(bpffs, "nothing"))
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(BpfError) as exc:
        pins.get_pinned(bpffs)  # a directory
    assert exc.value.errno == errno.EACCES
    with pytest.raises(BpfError) as exc:
        pins.get_pinned_program(path)  # a map is pinned there; its fd is closed again (the guard checks)
    assert exc.value.errno == errno.EINVAL and "map" in str(exc.value)
    with pytest.raises(ValidationError):
        pins.get_pinned(path, flags=99)
    with pytest.raises(ValidationError):
        pins.get_pinned("a\0b")
    readonly = pins.get_pinned(path, flags=2**3)  # BPF_F_RDONLY
    os.close(readonly)
    pins.unpin(path)
    with pytest.raises(BpfError) as exc:
        pins.unpin(path)
    assert exc.value.errno == errno.ENOENT
    pins.unpin(path, missing_ok=True)


@pytest.mark.bpf
def test_device_pin_directories(bpffs: str) -> None:
    mount = os.path.dirname(bpffs)
    first = pins.make_pin_dir(11, 2, root=mount)
    second = pins.make_pin_dir(11, 3, root=mount)
    assert first == os.path.join(mount, "pytun_hash", "11", "2") and os.path.isdir(second)
    assert pins.make_pin_dir(11, 2, root=mount) == first  # exists: fine
    for path in (os.path.join(mount, "pytun_hash"), os.path.join(mount, "pytun_hash", "11"), first):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    with ArrayMap.create(4, 1) as m, _program() as prog:
        pins.pin(m, os.path.join(first, "config"))
        pins.pin(prog, os.path.join(first, "prog"))
        ids = ({prog.id}, {m.id})
    assert pins.remove_pin_dir(first) == ["config", "prog"]
    assert not os.path.exists(first) and os.path.isdir(second)  # the namespace directory keeps the other device
    assert pins.remove_pin_dir(second) == []
    assert not os.path.exists(os.path.join(mount, "pytun_hash", "11"))
    assert pins.remove_pin_dir(second) == []  # gone: nothing to do
    assert wait_released(*ids) == (set(), set())
    with pytest.raises(BpfError) as exc:
        pins.make_pin_dir(1, 1, root=str(Path(mount).parent))  # not a bpffs
    assert exc.value.errno == errno.EPERM


def test_is_bpffs_of_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(KernelError) as exc:
        pins.is_bpffs(str(tmp_path / "missing"))
    assert exc.value.errno == errno.ENOENT
    assert not pins.is_bpffs(str(tmp_path))


@pytest.mark.bpf
def test_an_rss_program_taken_over_from_its_pins_reconfigures_through_the_same_objects(bpffs: str) -> None:
    first = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY)
    second = first.replace(indirection_table=(3, 2))
    third = first.replace(unclassified_queue=2)
    with EbpfRss.load(first) as rss:
        paths = rss.pin(bpffs)
        ids = rss.object_ids()
        rss.reconfigure(second)
        # Another process would take it over with the record's configuration: the one in force.
        with pytest.raises(BpfError) as info:
            EbpfRss.from_pinned(bpffs, first, DeviceMode.TAP, program_id=ids[0])
        assert info.value.errno == errno.ESTALE
        with EbpfRss.from_pinned(bpffs, second, DeviceMode.TAP, program_id=ids[0]) as taken:
            assert taken.object_ids() == ids and taken.pins == paths
            assert taken.in_force() == second
            taken.reconfigure(third)
            assert rss.in_force() == third  # through the very maps the first instance holds
            taken.release()
        assert sorted(os.listdir(bpffs)) == ["control", "prog", "slots"]
        with pytest.raises(BpfError, match="someone replaced it"):
            EbpfRss.from_pinned(bpffs, third, DeviceMode.TAP, program_id=ids[0] + 1000)


@pytest.mark.bpf
def test_pins_of_the_earlier_map_in_map_layout_are_named(bpffs: str) -> None:
    with (
        ArrayMap.create(16, 1) as inner,
        ArrayOfMaps.create(inner, 1) as outer,
        Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble()) as program,
    ):
        for obj, name in ((program, "prog"), (outer, "outer"), (inner, "config")):
            pins.pin(obj, os.path.join(bpffs, name))
    with pytest.raises(BpfError, match="earlier pytun_hash") as info:
        open_pinned(bpffs, None)
    assert info.value.errno == errno.ESTALE and "disable" in str(info.value)
