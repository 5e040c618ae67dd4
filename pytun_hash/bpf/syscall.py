"""``bpf(2)`` through ctypes: syscall numbers, commands, ``union bpf_attr`` pieces, typed errors.

Only what pytun_hash needs is mirrored: map create/lookup/update, program load, test runs,
object ids, object info and pinning in the bpf filesystem. Each command's part of ``union bpf_attr`` is its own ctypes
structure with the kernel's field names; the kernel accepts a short attr as long as every
byte it does not know is zero, so each structure is passed with its own size.
"""

from __future__ import annotations

import ctypes
import enum
import errno as _errno
import platform
import sysconfig
import time

from pytun_hash import _sys
from pytun_hash.errors import BpfError, KernelError, PrivilegeError

__all__ = [
    "BPF_OBJ_NAME_LEN",
    "BPF_SYSCALL_NUMBERS",
    "MEMBARRIER_SYSCALL_NUMBERS",
    "BpfCmd",
    "MapFlag",
    "MapType",
    "ProgType",
    "bpf",
    "bpf_error",
    "bpf_syscall_number",
    "synchronize_rcu",
    "syscall_abi",
]

BPF_OBJ_NAME_LEN = 16

#: ``__NR_bpf`` per native syscall ABI, from each architecture's syscall table.
BPF_SYSCALL_NUMBERS: dict[str, int] = {
    "x86_64": 321,
    "x32": 0x40000000 + 321,  # __X32_SYSCALL_BIT | 321
    "i386": 357,
    "aarch64": 280,  # asm-generic/unistd.h
    "arm": 386,
    "riscv64": 280,
    "riscv32": 280,
    "loongarch64": 280,
    "powerpc": 361,  # ppc, ppc64, ppc64le
    "s390": 351,  # s390 and s390x
    "mips-o32": 4000 + 355,
    "mips-n64": 5000 + 315,
    "mips-n32": 6000 + 319,
    "sparc": 349,  # sparc and sparc64
    "parisc": 341,
    "alpha": 515,
}

_MACHINE_ABI: dict[str, str] = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i386": "i386",
    "i486": "i386",
    "i586": "i386",
    "i686": "i386",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "riscv64": "riscv64",
    "riscv32": "riscv32",
    "loongarch64": "loongarch64",
    "ppc": "powerpc",
    "ppcle": "powerpc",
    "ppc64": "powerpc",
    "ppc64le": "powerpc",
    "s390": "s390",
    "s390x": "s390",
    "mips": "mips-o32",
    "mipsel": "mips-o32",
    "mips64": "mips-n64",
    "mips64el": "mips-n64",
    "sparc": "sparc",
    "sparc64": "sparc",
    "parisc": "parisc",
    "parisc64": "parisc",
    "alpha": "alpha",
}


def syscall_abi(machine: str | None = None, *, pointer_size: int | None = None, multiarch: str | None = None) -> str:
    """The native syscall ABI of a process of ``machine`` with ``pointer_size``-byte pointers
    (a key of :data:`BPF_SYSCALL_NUMBERS`).

    ``platform.machine()`` names the *kernel's* machine, so a 32-bit Python on a 64-bit kernel
    (i386 on x86_64, arm on aarch64, mips o32/n32 on mips64) is told apart by its pointer size
    and its multiarch tuple (``x86_64-linux-gnux32``, ``mips64el-linux-gnuabin32``).

    Args:
        machine: a ``platform.machine()`` spelling; None = this host.
        pointer_size: the process's pointer size in bytes; None = this interpreter's.
        multiarch: the interpreter's multiarch tuple; None = this interpreter's (may be empty).

    Raises:
        ValueError: for a machine this table does not know.
    """
    name = platform.machine() if machine is None else machine
    if pointer_size is None:
        pointer_size = ctypes.sizeof(ctypes.c_void_p)
    if multiarch is None:
        multiarch = str(sysconfig.get_config_var("MULTIARCH") or "") if machine is None else ""
    try:
        abi = _MACHINE_ABI[name]
    except KeyError:
        known = ", ".join(sorted(_MACHINE_ABI))
        raise ValueError(f"no syscall ABI known for machine {name!r}; known: {known}") from None
    if pointer_size == 4:
        if abi == "x86_64":
            abi = "x32" if multiarch.endswith("x32") else "i386"
        elif abi == "aarch64":
            abi = "arm"
        elif abi == "mips-n64":
            abi = "mips-n32" if "abin32" in multiarch else "mips-o32"
    return abi


def bpf_syscall_number(
    machine: str | None = None, *, pointer_size: int | None = None, multiarch: str | None = None
) -> int:
    """Return ``__NR_bpf`` for a process of ``machine`` with ``pointer_size``-byte pointers
    (arguments as :func:`syscall_abi`).

    Raises:
        ValueError: for a machine this table does not know.
    """
    return BPF_SYSCALL_NUMBERS[syscall_abi(machine, pointer_size=pointer_size, multiarch=multiarch)]


#: ``__NR_membarrier`` for the ABIs where pytun_hash uses it (elsewhere it waits instead, see
#: :func:`synchronize_rcu`).
MEMBARRIER_SYSCALL_NUMBERS: dict[str, int] = {
    "x86_64": 324,
    "x32": 0x40000000 + 324,
    "i386": 375,
    "aarch64": 283,  # asm-generic/unistd.h
    "riscv64": 283,
    "riscv32": 283,
    "loongarch64": 283,
    "arm": 389,
    "powerpc": 365,
    "s390": 356,
}
MEMBARRIER_CMD_GLOBAL = 1 << 0
#: How long :func:`synchronize_rcu` sleeps where ``membarrier`` cannot wait for a grace period, seconds:
#: well beyond the grace periods measured here (8-15 ms).
GRACE_PERIOD_FALLBACK_S = 0.1


def synchronize_rcu() -> None:
    """Wait until every RCU read-side section that had begun has ended: every steering program run
    that had started (tun runs them under ``rcu_read_lock``) is over.

    ``membarrier(MEMBARRIER_CMD_GLOBAL)`` is ``synchronize_rcu()`` in the kernel (any process may
    call it; one grace period, 8-15 ms here). Where it is refused (``nohz_full`` kernels, an ABI
    without a known number, a seccomp profile) this sleeps :data:`GRACE_PERIOD_FALLBACK_S` instead.
    It raises nothing.
    """
    try:
        number = MEMBARRIER_SYSCALL_NUMBERS.get(syscall_abi())
    except ValueError:
        number = None
    if number is not None:
        try:
            _sys.syscall(number, MEMBARRIER_CMD_GLOBAL, 0, 0)
            return
        except OSError:
            pass
    time.sleep(GRACE_PERIOD_FALLBACK_S)


class BpfCmd(enum.IntEnum):
    """``enum bpf_cmd`` (the commands pytun_hash issues, with their kernel values)."""

    BPF_MAP_CREATE = 0
    BPF_MAP_LOOKUP_ELEM = 1
    BPF_MAP_UPDATE_ELEM = 2
    BPF_MAP_DELETE_ELEM = 3
    BPF_MAP_GET_NEXT_KEY = 4
    BPF_PROG_LOAD = 5
    BPF_OBJ_PIN = 6
    BPF_OBJ_GET = 7
    BPF_PROG_TEST_RUN = 10
    BPF_PROG_GET_NEXT_ID = 11
    BPF_MAP_GET_NEXT_ID = 12
    BPF_PROG_GET_FD_BY_ID = 13
    BPF_MAP_GET_FD_BY_ID = 14
    BPF_OBJ_GET_INFO_BY_FD = 15
    BPF_MAP_LOOKUP_AND_DELETE_ELEM = 21
    BPF_MAP_FREEZE = 22


class MapType(enum.IntEnum):
    """``enum bpf_map_type`` (the types pytun_hash creates)."""

    BPF_MAP_TYPE_HASH = 1
    BPF_MAP_TYPE_ARRAY = 2
    BPF_MAP_TYPE_PERCPU_ARRAY = 6
    BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
    BPF_MAP_TYPE_QUEUE = 22


class ProgType(enum.IntEnum):
    """``enum bpf_prog_type`` (TUNSETSTEERINGEBPF accepts only SOCKET_FILTER)."""

    BPF_PROG_TYPE_SOCKET_FILTER = 1
    BPF_PROG_TYPE_SCHED_CLS = 3


class MapFlag(enum.IntFlag):
    """``BPF_MAP_CREATE`` flags."""

    BPF_F_NO_PREALLOC = 1 << 0
    BPF_F_RDONLY = 1 << 3
    BPF_F_WRONLY = 1 << 4
    BPF_F_RDONLY_PROG = 1 << 7
    BPF_F_WRONLY_PROG = 1 << 8
    BPF_F_MMAPABLE = 1 << 10
    BPF_F_INNER_MAP = 1 << 12


# Map update flags.
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2


class bpf_attr_map_create(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_MAP_CREATE`` part of ``union bpf_attr``."""

    _fields_ = (
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    )


class bpf_attr_map_elem(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_MAP_*_ELEM`` part of ``union bpf_attr`` (key/value are user pointers)."""

    _fields_ = (
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    )


class bpf_attr_prog_load(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_PROG_LOAD`` part of ``union bpf_attr`` (up to ``expected_attach_type``)."""

    _fields_ = (
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    )


class bpf_attr_test_run(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_PROG_TEST_RUN`` part of ``union bpf_attr``."""

    _fields_ = (
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    )


class bpf_attr_get_id(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_*_GET_NEXT_ID`` / ``BPF_*_GET_FD_BY_ID`` part of ``union bpf_attr``."""

    _fields_ = (
        ("start_id", ctypes.c_uint32),  # also prog_id / map_id
        ("next_id", ctypes.c_uint32),
        ("open_flags", ctypes.c_uint32),
    )


class bpf_attr_obj(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_OBJ_PIN`` / ``BPF_OBJ_GET`` part of ``union bpf_attr``.

    ``pathname`` is a user pointer to a NUL-terminated path; ``bpf_fd`` the object to pin (0 for
    ``BPF_OBJ_GET``); ``file_flags`` 0 or ``BPF_F_RDONLY``/``BPF_F_WRONLY`` for the new fd;
    ``path_fd`` only with ``BPF_F_PATH_FD`` (not used: 0).
    """

    _fields_ = (
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("path_fd", ctypes.c_int32),
    )


class bpf_attr_info(ctypes.Structure):  # noqa: N801 - kernel layout
    """The ``BPF_OBJ_GET_INFO_BY_FD`` part of ``union bpf_attr``."""

    _fields_ = (
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    )


class bpf_prog_info(ctypes.Structure):  # noqa: N801 - kernel layout
    """``struct bpf_prog_info`` up to ``verified_insns`` (the kernel fills what fits)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    )


class bpf_map_info(ctypes.Structure):  # noqa: N801 - kernel layout
    """``struct bpf_map_info`` up to ``map_flags`` and ``name``."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
    )


#: The kernel-internal "operation not supported" errno that bpf(2) leaks to user space.
ENOTSUPP = 524

_NR_BPF: int | None
try:
    _NR_BPF = bpf_syscall_number()
except ValueError:
    _NR_BPF = None

_HINTS: dict[tuple[BpfCmd | None, int], str] = {
    (None, _errno.EPERM): (
        "bpf(2) needs root, or CAP_BPF plus CAP_NET_ADMIN (kernel.unprivileged_bpf_disabled forbids "
        "unprivileged use); run the program privileged or hand it pre-loaded fds"
    ),
    (None, _errno.ENOSYS): "this kernel was built without CONFIG_BPF_SYSCALL; eBPF steering is unavailable",
    (None, _errno.EBADF): "a map or program fd passed to bpf(2) is closed or of the wrong kind",
    (None, _errno.ENOMEM): "the kernel could not allocate the object; lower its size or raise RLIMIT_MEMLOCK",
    (BpfCmd.BPF_MAP_CREATE, _errno.EINVAL): (
        "the map attributes are invalid for this map type (key/value size, max_entries or flags, "
        "e.g. BPF_F_MMAPABLE only on ARRAY maps)"
    ),
    (BpfCmd.BPF_MAP_CREATE, ENOTSUPP): ("this kernel does not support the requested map flags or type (ENOTSUPP)"),
    (BpfCmd.BPF_MAP_UPDATE_ELEM, _errno.E2BIG): "the key is past max_entries of the array map",
    (BpfCmd.BPF_MAP_UPDATE_ELEM, _errno.EINVAL): (
        "the value does not fit the map (for a map-in-map: the inner map differs from the template)"
    ),
    (BpfCmd.BPF_MAP_LOOKUP_ELEM, _errno.ENOENT): "the key is not in the map (past max_entries of an array)",
    (BpfCmd.BPF_PROG_TEST_RUN, _errno.EINVAL): (
        "the test input is invalid for this program type (socket filters need at least a 14-byte Ethernet header)"
    ),
    (BpfCmd.BPF_PROG_TEST_RUN, ENOTSUPP): ("BPF_PROG_TEST_RUN is not supported for this program type on this kernel"),
    (BpfCmd.BPF_PROG_GET_FD_BY_ID, _errno.ENOENT): "no BPF program has this id (it was freed)",
    (BpfCmd.BPF_MAP_GET_FD_BY_ID, _errno.ENOENT): "no BPF map has this id (it was freed)",
    (BpfCmd.BPF_OBJ_PIN, _errno.EEXIST): "something is pinned (or exists) at this path already; unpin it first",
    (BpfCmd.BPF_OBJ_PIN, _errno.ENOENT): "the directory of the pin path does not exist; create it on the bpffs first",
    (BpfCmd.BPF_OBJ_PIN, _errno.EPERM): (
        "the pin path is not on a bpf filesystem (or the caller lacks CAP_BPF); mount one with "
        "pytun_hash.bpf.pin.ensure_bpffs() (mount -t bpf bpf /sys/fs/bpf) and pin below it"
    ),
    (BpfCmd.BPF_OBJ_GET, _errno.ENOENT): "nothing is pinned at this path (it was unpinned, or the bpffs was remounted)",
    (BpfCmd.BPF_OBJ_GET, _errno.EACCES): (
        "the path is not a pinned BPF object (not on a bpf filesystem, or a directory), or its mode forbids access"
    ),
}


def bpf_error(cmd: BpfCmd, err: int, hint: str | None = None) -> KernelError:
    """Build the typed error for ``bpf(cmd)`` failing with ``err``.

    ``EPERM`` gives a :class:`~pytun_hash.errors.PrivilegeError` (the caller lacks CAP_BPF);
    everything else a :class:`~pytun_hash.errors.BpfError`.
    """
    request = f"bpf({cmd.name})"
    text = hint or _HINTS.get((cmd, err)) or _HINTS.get((None, err)) or "see bpf(2) for this command"
    if err == _errno.EPERM:
        return PrivilegeError(err, request, text)
    return BpfError(err, request, text)


def bpf(cmd: BpfCmd, attr: ctypes.Structure) -> int:
    """Issue ``bpf(cmd, &attr, sizeof(attr))`` and return its non-negative result (often an fd).

    The GIL is released during the call (ctypes foreign call).

    Raises:
        PrivilegeError: on ``EPERM`` (no CAP_BPF).
        BpfError: on any other failure, with errno and a hint.
    """
    if _NR_BPF is None:
        raise BpfError(_errno.ENOSYS, f"bpf({cmd.name})", f"no bpf(2) syscall number known for {platform.machine()}")
    while True:
        try:
            return _sys.syscall(_NR_BPF, int(cmd), ctypes.byref(attr), ctypes.sizeof(attr))
        except OSError as exc:
            err = exc.errno or _errno.EIO
            if err != _errno.EINTR:
                raise bpf_error(cmd, err) from None
