"""Pinning BPF objects in the bpf filesystem, so that they outlive the process that loaded them.

A pinned program or map stays alive while its bpffs file exists, and any process (with the
privileges to read bpffs) gets a new fd of it from the path: :func:`pin`, :func:`get_pinned`
(a raw fd), :func:`get_pinned_program` / :func:`get_pinned_map` / :func:`get_pinned_object`
(typed objects that own the fd), :func:`unpin`. :func:`ensure_bpffs` mounts a bpffs where there
is none.

Where pytun_hash pins: ``/sys/fs/bpf/pytun_hash/<netns inode>/<ifindex>/`` per device
(:func:`pin_dir`, :func:`make_pin_dir`, :func:`remove_pin_dir`); directories are 0700.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

from pytun_hash import _sys
from pytun_hash.bpf._fd import BpfObject
from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps, BpfMap, QueueMap
from pytun_hash.bpf.prog import Program
from pytun_hash.bpf.syscall import BpfCmd, MapFlag, MapType, bpf, bpf_attr_obj
from pytun_hash.errors import BpfError, KernelError, PrivilegeError, ValidationError, kernel_error

__all__ = [
    "BPFFS_ROOT",
    "BPF_FS_MAGIC",
    "PIN_SUBDIR",
    "ensure_bpffs",
    "get_pinned",
    "get_pinned_map",
    "get_pinned_object",
    "get_pinned_program",
    "is_bpffs",
    "make_pin_dir",
    "pin",
    "pin_dir",
    "remove_pin_dir",
    "unpin",
]

#: ``linux/magic.h``: ``statfs(2)``'s ``f_type`` of a bpf filesystem.
BPF_FS_MAGIC = 0xCAFE4A11
#: Where a bpf filesystem is mounted by convention (systemd mounts one there at boot).
BPFFS_ROOT = "/sys/fs/bpf"
#: pytun_hash's directory below the bpffs root.
PIN_SUBDIR = "pytun_hash"

_MOUNT_FLAGS = _sys.MS_NOSUID | _sys.MS_NODEV | _sys.MS_NOEXEC
_MOUNT_HINT = (
    "mounting a bpf filesystem needs CAP_SYS_ADMIN; as root run `mount -t bpf bpf {root}` "
    "(in the initial mount namespace, so that every process sees it)"
)


def _check_path(path: object, field: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise ValidationError(field, f"expected a non-empty path as text, got {path!r}")
    if "\0" in path:
        raise ValidationError(field, f"the path {path!r} contains a NUL character")
    return path


def is_bpffs(path: str) -> bool:
    """Whether ``path`` (followed if a symlink) is on a bpf filesystem.

    Raises:
        ValidationError: for a path that is not text or holds a NUL.
        KernelError: when ``statfs`` fails (``ENOENT`` when ``path`` does not exist ...).
    """
    _check_path(path)
    try:
        return _sys.statfs_type(path) == BPF_FS_MAGIC
    except OSError as exc:
        raise kernel_error(exc.errno or errno.EIO, f"statfs({path})", f"check that {path} exists") from None


def ensure_bpffs(root: str = BPFFS_ROOT) -> bool:
    """Make sure a bpf filesystem is mounted on ``root``; mount one (mode 0700) when it is not.

    Already on a bpffs: nothing is done (False). Otherwise ``root`` is created when missing and
    a bpffs is mounted on it with ``nosuid,nodev,noexec,mode=0700`` (True). Concurrent callers are
    serialised by an ``flock`` on ``root``'s directory, so two processes never stack two mounts
    (a second mount would hide the first one's pins).

    Returns:
        True when this call mounted a bpffs, False when one was there already.

    Raises:
        ValidationError: for a bad path, or when ``root`` exists and is not a directory.
        PrivilegeError: ``EPERM`` without CAP_SYS_ADMIN (the hint says how to mount it by hand).
        BpfError: ``ENODEV`` on a kernel without a bpf filesystem, or another mount failure.
        KernelError: when ``root`` cannot be created or opened.
    """
    _check_path(root, "root")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except NotADirectoryError:
        raise ValidationError("root", f"{root} is not a directory") from None
    except FileExistsError:
        raise ValidationError("root", f"{root} is not a directory") from None
    except OSError as exc:
        hint = f"check that {root} can be a directory"
        raise kernel_error(exc.errno or errno.EIO, f"mkdir/open({root})", hint) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Asked again by path under the lock: whoever held it may have mounted in between, and
        # the fd still names the directory underneath the new mount.
        if is_bpffs(root):
            return False
        try:
            _sys.mount("bpf", root, "bpf", _MOUNT_FLAGS, "mode=0700")
        except OSError as exc:
            err = exc.errno or errno.EIO
            request = f"mount(bpf, {root})"
            if err in (errno.EPERM, errno.EACCES):
                raise PrivilegeError(err, request, _MOUNT_HINT.format(root=root)) from None
            if err == errno.ENODEV:
                raise BpfError(err, request, "this kernel has no bpf filesystem (CONFIG_BPF_SYSCALL)") from None
            raise BpfError(err, request, f"mount it by hand: mount -t bpf bpf {root}") from None
        return True
    finally:
        os.close(fd)  # releases the lock


def _obj(cmd: BpfCmd, path: str, fd: int = 0, flags: int = 0) -> int:
    raw = ctypes.create_string_buffer(os.fsencode(path))
    attr = bpf_attr_obj(pathname=ctypes.addressof(raw), bpf_fd=fd, file_flags=flags)
    return bpf(cmd, attr)


def pin(obj: BpfObject | int, path: str) -> None:
    """Pin a program or map (an object of this package, or a raw fd) at ``path`` on a bpffs.

    The object then lives until the path is removed (:func:`unpin`), whatever happens to the
    fds. The kernel creates the file with mode 0600.

    Raises:
        ValidationError: for a bad path or object.
        BpfError: ``EPERM`` when ``path``'s directory is not on a bpf filesystem, ``ENOENT`` when it
            does not exist, ``EEXIST`` when something is at ``path`` already, ``EBADF`` for a closed object.
        PrivilegeError: when the kernel refuses the caller.
    """
    _check_path(path)
    if isinstance(obj, bool) or not isinstance(obj, (BpfObject, int)):
        raise ValidationError("obj", f"expected a BPF program or map, or its fd, got {type(obj).__name__}")
    fd = obj.fd if isinstance(obj, BpfObject) else obj
    request = f"bpf({BpfCmd.BPF_OBJ_PIN.name})"
    parent = os.path.dirname(os.path.abspath(path))
    try:
        on_bpffs = _sys.statfs_type(parent) == BPF_FS_MAGIC
    except OSError as exc:
        raise BpfError(
            exc.errno or errno.EIO, request, f"cannot reach the pin directory {parent}; create it on the bpffs first"
        ) from None
    if not on_bpffs:
        raise BpfError(
            errno.EPERM,
            request,
            f"{parent} is not on a bpf filesystem; pin below a bpffs mount (ensure_bpffs() mounts one on {BPFFS_ROOT})",
        )
    _obj(BpfCmd.BPF_OBJ_PIN, path, fd)


def get_pinned(path: str, *, flags: int = 0) -> int:
    """A new ``O_CLOEXEC`` fd of the object pinned at ``path`` (the caller closes it).

    Args:
        path: the pin path.
        flags: 0, or ``MapFlag.BPF_F_RDONLY`` / ``MapFlag.BPF_F_WRONLY`` for a map fd with less access.

    Raises:
        ValidationError: for a bad path or flags.
        BpfError: ``ENOENT`` when nothing is pinned there, ``EACCES`` when the path is no pinned object.
        PrivilegeError: without the privileges to open it.
    """
    _check_path(path)
    if flags not in (0, MapFlag.BPF_F_RDONLY, MapFlag.BPF_F_WRONLY):
        raise ValidationError("flags", f"expected 0, BPF_F_RDONLY or BPF_F_WRONLY, got {flags!r}")
    return _obj(BpfCmd.BPF_OBJ_GET, path, 0, int(flags))


def _kind(fd: int) -> str:
    """``"prog"``, ``"map"`` or another bpf object kind, from the fd's anonymous inode name."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        raise kernel_error(exc.errno or errno.EIO, "readlink(/proc/self/fd)", "mount procfs on /proc") from None
    return target.removeprefix("anon_inode:bpf-") if target.startswith("anon_inode:bpf-") else target


def _program(fd: int) -> Program:
    # The fd is the caller's from here on: a Program owns it, and closes it should info() fail.
    program = Program(fd, 0, 0)
    try:
        info = program.info()
    except BaseException:
        program.close()
        raise
    program.prog_type = info.prog_type
    program.insn_count = info.xlated_insns  # after the verifier's rewrites: the loaded count is not kept
    return program


_MAP_CLASSES: dict[int, type[BpfMap]] = {
    MapType.BPF_MAP_TYPE_ARRAY: ArrayMap,
    MapType.BPF_MAP_TYPE_ARRAY_OF_MAPS: ArrayOfMaps,
    MapType.BPF_MAP_TYPE_QUEUE: QueueMap,
}


def _map(fd: int) -> BpfMap:
    holder = BpfMap(fd, 0, 0, 0, 0, 0)
    try:
        info = holder.info()
    except BaseException:
        holder.close()
        raise
    holder._fd = None  # handed over to the typed map below
    cls = _MAP_CLASSES.get(info.map_type, BpfMap)
    return cls(fd, info.map_type, info.key_size, info.value_size, info.max_entries, info.map_flags)


def get_pinned_object(path: str) -> Program | BpfMap:
    """The object pinned at ``path`` as a :class:`Program` or a map (:class:`ArrayMap`,
    :class:`ArrayOfMaps`, :class:`QueueMap`, else a plain :class:`BpfMap`), which owns a new fd.

    Maps get their geometry (type, key/value size, max_entries, flags) from the kernel
    (``BPF_OBJ_GET_INFO_BY_FD``); programs their type and instruction count (after the verifier's
    rewrites).

    Raises:
        BpfError: as :func:`get_pinned`, or ``EINVAL`` for another kind of BPF object (a link ...).
    """
    fd = get_pinned(path)
    kind = _kind(fd)
    if kind == "prog":
        return _program(fd)
    if kind == "map":
        return _map(fd)
    os.close(fd)
    raise BpfError(errno.EINVAL, f"bpf({BpfCmd.BPF_OBJ_GET.name})", f"{path} holds a {kind!r}, not a program or map")


def get_pinned_program(path: str) -> Program:
    """The program pinned at ``path`` (a new fd, owned by the result).

    Raises:
        BpfError: as :func:`get_pinned_object`; ``EINVAL`` when a map is pinned there.
    """
    found = get_pinned_object(path)
    if not isinstance(found, Program):
        found.close()
        raise BpfError(errno.EINVAL, f"bpf({BpfCmd.BPF_OBJ_GET.name})", f"{path} holds a map, not a program")
    return found


def get_pinned_map(path: str) -> BpfMap:
    """The map pinned at ``path``, typed by its kind (a new fd, owned by the result).

    Raises:
        BpfError: as :func:`get_pinned_object`; ``EINVAL`` when a program is pinned there.
    """
    found = get_pinned_object(path)
    if not isinstance(found, BpfMap):
        found.close()
        raise BpfError(errno.EINVAL, f"bpf({BpfCmd.BPF_OBJ_GET.name})", f"{path} holds a program, not a map")
    return found


def unpin(path: str, *, missing_ok: bool = False) -> None:
    """Remove the pin at ``path``; the kernel frees the object once no fd or device holds it.

    Raises:
        ValidationError: for a bad path.
        BpfError: ``ENOENT`` when nothing is there (unless ``missing_ok``), ``EISDIR`` for a directory.
        PrivilegeError: ``EPERM``/``EACCES``.
    """
    _check_path(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise BpfError(errno.ENOENT, f"unlink({path})", "nothing is pinned at this path") from None
    except OSError as exc:
        err = exc.errno or errno.EIO
        request = f"unlink({path})"
        if err in (errno.EPERM, errno.EACCES):
            raise PrivilegeError(err, request, "removing a pin needs write access to its bpffs directory") from None
        raise BpfError(err, request, "a pin is a file on a bpf filesystem; remove directories with rmdir") from None


def _check_id(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(field, f"expected a positive integer, got {value!r}")
    return value


def pin_dir(netns: int, ifindex: int, *, root: str = BPFFS_ROOT) -> str:
    """``<root>/pytun_hash/<netns>/<ifindex>``: where a device's objects are pinned (pure).

    Raises:
        ValidationError: for a non-positive namespace inode or ifindex, or a bad root.
    """
    _check_path(root, "root")
    return os.path.join(root, PIN_SUBDIR, str(_check_id("netns", netns)), str(_check_id("ifindex", ifindex)))


def make_pin_dir(netns: int, ifindex: int, *, root: str = BPFFS_ROOT) -> str:
    """Create :func:`pin_dir` (and its parents below ``root``) with mode 0700; return it.

    ``root`` must be on a bpffs already (see :func:`ensure_bpffs`).

    Raises:
        ValidationError: for bad ids or root.
        BpfError: ``EPERM`` when ``root`` is not on a bpffs; ``ENOTDIR`` when a component is a file.
        KernelError: when a directory cannot be created.
    """
    path = pin_dir(netns, ifindex, root=root)
    if not is_bpffs(root):
        raise BpfError(errno.EPERM, f"mkdir({path})", f"{root} is not a bpf filesystem; call ensure_bpffs({root!r})")
    here = root
    for part in os.path.relpath(path, root).split(os.sep):
        here = os.path.join(here, part)
        try:
            os.mkdir(here, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                raise BpfError(errno.ENOTDIR, f"mkdir({here})", f"{here} exists and is not a directory") from None
        except OSError as exc:
            raise kernel_error(exc.errno or errno.EIO, f"mkdir({here})") from None
    return path


def remove_pin_dir(path: str) -> list[str]:
    """Unpin every object in the device directory ``path`` and remove it, and its namespace
    directory when that is empty then. Missing: nothing to do.

    Returns:
        The names unpinned.

    Raises:
        BpfError, PrivilegeError: when an entry cannot be removed (see :func:`unpin`).
        KernelError: when the directory cannot be read.
    """
    _check_path(path)
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise kernel_error(exc.errno or errno.EIO, f"listdir({path})") from None
    for name in names:
        unpin(os.path.join(path, name), missing_ok=True)
    for directory in (path, os.path.dirname(path)):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                break  # the namespace directory still holds another device's pins
            hint = "remove what is left in it by hand"
            raise KernelError(exc.errno or errno.EIO, f"rmdir({directory})", hint) from None
    return names
