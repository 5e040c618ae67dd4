"""BPF maps that own their fd: arrays (optionally mmap-able) and arrays of maps.

Every map is a context manager; :meth:`BpfMap.close` is idempotent and is also what
``__exit__`` calls, so the fd is released on every path. Keys of array maps are u32
indexes; values are raw bytes of exactly ``value_size``.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import mmap
import sys
from types import TracebackType
from typing import Self

import attrs

from pytun_hash.bpf._fd import BpfObject
from pytun_hash.bpf.syscall import (
    BPF_ANY,
    BpfCmd,
    MapFlag,
    MapType,
    bpf,
    bpf_attr_get_id,
    bpf_attr_info,
    bpf_attr_map_create,
    bpf_attr_map_elem,
    bpf_map_info,
)
from pytun_hash.errors import BpfError, KernelError, ValidationError

__all__ = ["ArrayMap", "ArrayOfMaps", "BpfMap", "MapInfo", "MappedArray", "QueueMap", "map_ids"]


@attrs.frozen
class MapInfo:
    """What ``BPF_OBJ_GET_INFO_BY_FD`` reports about a map.

    Attributes:
        id: the kernel-wide map id (stable while the map lives).
        map_type: the ``bpf_map_type`` value.
        key_size / value_size: in bytes.
        max_entries: number of slots.
        map_flags: creation flags.
        name: the map name (at most 15 characters).
    """

    id: int
    map_type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str


def _encode_name(name: str) -> bytes:
    raw = name.encode("ascii", "replace")
    if len(raw) > 15 or not all(chr(c).isalnum() or chr(c) in "_." for c in raw):
        raise ValidationError("name", f"a BPF object name is at most 15 of [A-Za-z0-9_.], got {name!r}")
    return raw


class BpfMap(BpfObject):
    """A BPF map fd with its geometry. Use a subclass's ``create`` to make one.

    Attributes:
        map_type, key_size, value_size, max_entries, map_flags: as created (bytes for sizes).
    """

    _KIND = "bpf map"
    _AGAIN = "create a new one"

    def __init__(
        self, fd: int, map_type: int, key_size: int, value_size: int, max_entries: int, map_flags: int
    ) -> None:
        super().__init__(fd)
        self.map_type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.map_flags = map_flags

    @classmethod
    def _create(
        cls,
        map_type: MapType,
        key_size: int,
        value_size: int,
        max_entries: int,
        *,
        flags: int = 0,
        inner_map_fd: int = 0,
        name: str = "",
    ) -> int:
        if value_size < 1 or max_entries < 1:
            raise ValidationError("map", f"value_size and max_entries must be >= 1, got {value_size}/{max_entries}")
        attr = bpf_attr_map_create(
            map_type=int(map_type),
            key_size=key_size,
            value_size=value_size,
            max_entries=max_entries,
            map_flags=int(flags),
            inner_map_fd=inner_map_fd,
            map_name=_encode_name(name),
        )
        return bpf(BpfCmd.BPF_MAP_CREATE, attr)

    def info(self) -> MapInfo:
        """Query the kernel's view of this map.

        Raises:
            BpfError: when the query fails (closed map).
        """
        raw = bpf_map_info()
        attr = bpf_attr_info(bpf_fd=self.fd, info_len=ctypes.sizeof(raw), info=ctypes.addressof(raw))
        bpf(BpfCmd.BPF_OBJ_GET_INFO_BY_FD, attr)
        return MapInfo(
            id=raw.id,
            map_type=raw.type,
            key_size=raw.key_size,
            value_size=raw.value_size,
            max_entries=raw.max_entries,
            map_flags=raw.map_flags,
            name=raw.name.decode("ascii", "replace"),
        )

    @property
    def id(self) -> int:
        """The kernel-wide map id (see :func:`map_ids`)."""
        return self.info().id

    def _elem(
        self, cmd: BpfCmd, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char], flags: int
    ) -> None:
        attr = bpf_attr_map_elem(map_fd=self.fd, key=ctypes.addressof(key), value=ctypes.addressof(value), flags=flags)
        bpf(cmd, attr)

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.max_entries:
            raise ValidationError("index", f"must be in 0..{self.max_entries - 1}, got {index!r}")

    @staticmethod
    def _key(index: int) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(index.to_bytes(4, sys.byteorder), 4)

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return f"{type(self).__name__}({state}, value_size={self.value_size}, max_entries={self.max_entries})"


class ArrayMap(BpfMap):
    """``BPF_MAP_TYPE_ARRAY``: ``max_entries`` preallocated, zero-initialised values."""

    @classmethod
    def create(
        cls, value_size: int, max_entries: int = 1, *, mmapable: bool = False, flags: int = 0, name: str = ""
    ) -> ArrayMap:
        """Create an array map.

        Args:
            value_size: bytes per element (the kernel rounds the slot up to 8 bytes).
            max_entries: number of elements (>= 1).
            mmapable: add ``BPF_F_MMAPABLE`` so :meth:`mmap` works.
            flags: further ``BPF_MAP_CREATE`` flags (:class:`~pytun_hash.bpf.syscall.MapFlag`).
            name: up to 15 characters of ``[A-Za-z0-9_.]``.

        Raises:
            ValidationError: for non-positive sizes or a bad name.
            PrivilegeError: without CAP_BPF.
            BpfError: when the kernel refuses the map.
        """
        if mmapable:
            flags |= MapFlag.BPF_F_MMAPABLE
        fd = cls._create(MapType.BPF_MAP_TYPE_ARRAY, 4, value_size, max_entries, flags=flags, name=name)
        return cls(fd, int(MapType.BPF_MAP_TYPE_ARRAY), 4, value_size, max_entries, int(flags))

    def lookup(self, index: int) -> bytes:
        """Return the ``value_size`` bytes of element ``index``.

        Raises:
            ValidationError: for an index out of range.
            BpfError: when the kernel refuses.
        """
        self._check_index(index)
        value = ctypes.create_string_buffer(self.value_size)
        self._elem(BpfCmd.BPF_MAP_LOOKUP_ELEM, self._key(index), value, 0)
        return value.raw

    def update(self, index: int, value: bytes | bytearray | memoryview, flags: int = BPF_ANY) -> None:
        """Replace element ``index`` with ``value`` (exactly ``value_size`` bytes).

        The kernel copies the whole value under no lock: a program running concurrently may
        see a mix of old and new bytes. For atomicity swap whole maps (:class:`ArrayOfMaps`), or
        write a slot no program reads and then switch to it (:mod:`pytun_hash.bpf.shared`).

        Raises:
            ValidationError: for a wrong length or index.
            BpfError: when the kernel refuses.
        """
        self._check_index(index)
        raw = bytes(value)
        if len(raw) != self.value_size:
            raise ValidationError("value", f"must be {self.value_size} bytes, got {len(raw)}")
        buf = ctypes.create_string_buffer(raw, len(raw))
        self._elem(BpfCmd.BPF_MAP_UPDATE_ELEM, self._key(index), buf, flags)

    @property
    def elem_size(self) -> int:
        """Bytes between consecutive elements in the mmap view: ``value_size`` rounded up to 8."""
        return (self.value_size + 7) & ~7

    def mmap(self) -> MappedArray:
        """Map the values into this process (needs ``mmapable=True`` at creation).

        Raises:
            ValidationError: when the map is not mmap-able.
            BpfError: when the kernel refuses the mapping.
        """
        if not self.map_flags & MapFlag.BPF_F_MMAPABLE:
            raise ValidationError("mmapable", "the map was created without BPF_F_MMAPABLE")
        length = self.elem_size * self.max_entries
        length = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            region = mmap.mmap(self.fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise BpfError(
                exc.errno or _errno.EINVAL,
                "mmap(bpf array map)",
                "the kernel refused to map the values; check RLIMIT_MEMLOCK / address space",
            ) from exc
        return MappedArray(region, self.value_size, self.elem_size, self.max_entries)


class MappedArray:
    """The values of an mmap-able :class:`ArrayMap`, shared with the kernel (context manager).

    Writes are visible to programs at once, with no atomicity across bytes. Element ``i``
    starts at byte ``i * elem_size``.
    """

    def __init__(self, region: mmap.mmap, value_size: int, elem_size: int, max_entries: int) -> None:
        self._region: mmap.mmap | None = region
        self.value_size = value_size
        self.elem_size = elem_size
        self.max_entries = max_entries

    def _span(self, index: int) -> tuple[mmap.mmap, int]:
        if self._region is None:
            raise ValidationError("mmap", "the mapping was closed")
        if not 0 <= index < self.max_entries:
            raise ValidationError("index", f"must be in 0..{self.max_entries - 1}, got {index}")
        return self._region, index * self.elem_size

    def read(self, index: int, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``offset .. offset+length`` of element ``index`` (default: the whole value).

        Raises:
            ValidationError: for a range outside the value or a closed mapping.
        """
        region, base = self._span(index)
        n = self.value_size - offset if length is None else length
        if offset < 0 or n < 0 or offset + n > self.value_size:
            raise ValidationError("range", f"{offset}+{n} is outside the {self.value_size}-byte value")
        return region[base + offset : base + offset + n]

    def write(self, index: int, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Overwrite bytes of element ``index`` starting at ``offset``.

        Raises:
            ValidationError: for a range outside the value or a closed mapping.
        """
        region, base = self._span(index)
        raw = bytes(data)
        if offset < 0 or offset + len(raw) > self.value_size:
            raise ValidationError("range", f"{offset}+{len(raw)} is outside the {self.value_size}-byte value")
        region[base + offset : base + offset + len(raw)] = raw

    def close(self) -> None:
        """Unmap (idempotent)."""
        region, self._region = self._region, None
        if region is not None:
            region.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ArrayOfMaps(BpfMap):
    """``BPF_MAP_TYPE_ARRAY_OF_MAPS``: slots that hold references to inner maps.

    Every inner map must match the template's type, key/value size, max_entries and flags.
    Replacing a slot is atomic for programs: a lookup sees the old or the new inner map. The
    kernel also waits for running programs (``synchronize_rcu``) before the update returns,
    so when :meth:`set` returns no program still uses the previous inner map.
    """

    @classmethod
    def create(cls, template: BpfMap, max_entries: int = 1, *, name: str = "") -> ArrayOfMaps:
        """Create an array of ``max_entries`` empty slots for maps shaped like ``template``.

        The template is only read at creation; it may be closed afterwards.

        Raises:
            PrivilegeError: without CAP_BPF.
            BpfError: when the kernel refuses.
        """
        fd = cls._create(MapType.BPF_MAP_TYPE_ARRAY_OF_MAPS, 4, 4, max_entries, inner_map_fd=template.fd, name=name)
        return cls(fd, int(MapType.BPF_MAP_TYPE_ARRAY_OF_MAPS), 4, 4, max_entries, 0)

    def set(self, index: int, inner: BpfMap) -> None:
        """Point slot ``index`` at ``inner`` (the slot holds its own reference to it).

        Raises:
            ValidationError: for an index out of range.
            BpfError: (``EINVAL``) when ``inner`` does not match the template.
        """
        self._check_index(index)
        value = ctypes.create_string_buffer(inner.fd.to_bytes(4, sys.byteorder), 4)
        self._elem(BpfCmd.BPF_MAP_UPDATE_ELEM, self._key(index), value, BPF_ANY)

    def clear(self, index: int) -> None:
        """Empty slot ``index`` (programs then see a failed lookup).

        Raises:
            BpfError: (``ENOENT``) when the slot is already empty.
        """
        self._check_index(index)
        key = self._key(index)
        attr = bpf_attr_map_elem(map_fd=self.fd, key=ctypes.addressof(key))
        bpf(BpfCmd.BPF_MAP_DELETE_ELEM, attr)

    def lookup_id(self, index: int) -> int:
        """The id of the map in slot ``index``.

        Raises:
            BpfError: (``ENOENT``) when the slot is empty.
        """
        self._check_index(index)
        value = ctypes.create_string_buffer(4)
        self._elem(BpfCmd.BPF_MAP_LOOKUP_ELEM, self._key(index), value, 0)
        return int.from_bytes(value.raw, sys.byteorder)


class QueueMap(BpfMap):
    """``BPF_MAP_TYPE_QUEUE``: a FIFO of ``max_entries`` values that programs push and user space pops."""

    @classmethod
    def create(cls, value_size: int, max_entries: int, *, name: str = "") -> QueueMap:
        """Create a queue map (no keys).

        Raises:
            ValidationError: for non-positive sizes or a bad name.
            PrivilegeError: without CAP_BPF.
            BpfError: when the kernel refuses the map.
        """
        fd = cls._create(MapType.BPF_MAP_TYPE_QUEUE, 0, value_size, max_entries, name=name)
        return cls(fd, int(MapType.BPF_MAP_TYPE_QUEUE), 0, value_size, max_entries, 0)

    def pop(self) -> bytes | None:
        """Remove and return the oldest value; None when the queue is empty.

        Raises:
            BpfError: when the kernel refuses (closed map).
        """
        value = ctypes.create_string_buffer(self.value_size)
        attr = bpf_attr_map_elem(map_fd=self.fd, key=0, value=ctypes.addressof(value), flags=0)
        try:
            bpf(BpfCmd.BPF_MAP_LOOKUP_AND_DELETE_ELEM, attr)
        except KernelError as exc:
            if exc.errno == _errno.ENOENT:
                return None
            raise
        return value.raw


def map_ids() -> list[int]:
    """Every BPF map id alive in the kernel right now (``BPF_MAP_GET_NEXT_ID``).

    Raises:
        PrivilegeError: without CAP_SYS_ADMIN.
    """
    return _ids(BpfCmd.BPF_MAP_GET_NEXT_ID)


def _ids(cmd: BpfCmd) -> list[int]:
    found: list[int] = []
    attr = bpf_attr_get_id(start_id=0)
    while True:
        try:
            bpf(cmd, attr)
        except BpfError as exc:
            if exc.errno == _errno.ENOENT:
                return found
            raise
        found.append(attr.next_id)
        attr = bpf_attr_get_id(start_id=attr.next_id)
