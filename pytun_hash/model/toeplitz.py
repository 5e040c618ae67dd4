"""The Toeplitz hash of the virtio specification (and of Microsoft RSS), table-driven.

Definition (virtio 1.2, section 5.1.6.4.3, which takes it from Microsoft's "RSS hashing functions"):
the key is a bit string, most significant bit of key byte 0
first, with bits past its end counting as zero. For every input bit ``i`` that is set (input byte 0,
most significant bit first) the 32-bit key window that starts at key bit ``i`` is XORed into the
result. Hence only the first ``len(key)`` input bytes can change the hash, and appending zero bytes
never does.

Speed comes from linearity: the hash is the XOR of one contribution per input byte, so each key
yields per-position lookup tables. :class:`Toeplitz` holds them:

* byte tables: for input position ``p`` and byte value ``b``, the contribution of ``b`` at ``p``
  (``len(key)`` tables of 256 entries, built eagerly, about 10 KiB of entries for a 40-byte key).
  Pure-Python hashing unpacks the input into locals and looks each byte up in unrolled blocks of
  12, 8 and 4 bytes: one subscript and one XOR per byte, no interpreted loop;
* wide tables, for the numpy batch path only: the same for 16-bit words at even positions
  (65536 entries each, for the first :data:`WIDE_TABLE_BYTES` input bytes, built on first use),
  which halves the number of vectorised gathers.

:func:`toeplitz_for` keeps the :class:`Toeplitz` of the :data:`TOEPLITZ_CACHE_SIZE` most recently
built keys (about 0.5 MB each, 5.7 MB once the numpy tables exist), so :func:`toeplitz_hash` builds
tables once per key. Pure: no I/O; numpy is optional and imported lazily by the batch path.
"""

from __future__ import annotations

import functools
import struct
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Sequence
from operator import getitem, xor
from typing import TYPE_CHECKING

from pytun_hash.errors import ValidationError
from pytun_hash.model._bytes import BytesLike

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "TOEPLITZ_CACHE_SIZE",
    "WIDE_TABLE_BYTES",
    "HashFunction",
    "Toeplitz",
    "numpy_available",
    "rfc_input",
    "toeplitz_for",
    "toeplitz_hash",
    "toeplitz_hash_batch",
    "toeplitz_hash_reference",
]

#: How many input bytes the 16-bit tables cover (the longest virtio input is 36 bytes).
WIDE_TABLE_BYTES = 40
#: How many keys :func:`toeplitz_for` keeps tables for.
TOEPLITZ_CACHE_SIZE = 4

_MASK32 = 0xFFFFFFFF
# Rows per numpy chunk: small enough that a chunk's index and result arrays stay in L2.
_NUMPY_CHUNK_ROWS = 16384


def _u32_typecode() -> str:
    for code in ("I", "L"):
        if array(code).itemsize == 4:
            return code
    raise RuntimeError("no 4-byte unsigned array type on this platform")  # pragma: no cover


_U32 = _u32_typecode()

#: A hash function for one input length: takes the input, returns the unsigned 32-bit hash.
HashFunction = Callable[[BytesLike], int]


def _as_key(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, (bytearray, memoryview)):
        return bytes(key)
    raise ValidationError("key", f"expected bytes, got {type(key).__name__}")


def toeplitz_hash_reference(key: BytesLike, data: BytesLike) -> int:
    """The Toeplitz hash computed bit by bit, straight from the definition (slow; for cross-checks).

    Args:
        key: the key, any length; bits past its end count as zero.
        data: the input bytes, any length.

    Returns:
        The 32-bit hash as an unsigned int.

    Raises:
        ValidationError: when ``key`` is not bytes-like.
    """
    key = _as_key(key)
    total = 8 * len(key) + 32
    padded = int.from_bytes(key, "big") << 32
    result = 0
    for i, byte in enumerate(bytes(data)[: len(key)]):
        for j in range(8):
            if byte & (0x80 >> j):
                result ^= (padded >> (total - 32 - (8 * i + j))) & _MASK32
    return result


class Toeplitz:
    """The lookup tables of one Toeplitz key, and hashing with them.

    Instances are immutable after construction apart from tables built lazily on first use; get
    shared instances through :func:`toeplitz_for`.

    Args:
        key: the key bytes, any length (the virtio key is 40 bytes); bits past the end count as zero.

    Raises:
        ValidationError: when ``key`` is not bytes-like.
    """

    __slots__ = ("_byte_tables", "_functions", "_key", "_wide_arrays", "hash8", "hash12", "hash32", "hash36")

    def __init__(self, key: BytesLike) -> None:
        self._key = _as_key(key)
        n = len(self._key)
        total = 8 * n + 32
        padded = int.from_bytes(self._key, "big") << 32
        tables: list[list[int]] = []
        for p in range(n):
            table = [0]
            # Bit j of a byte value (least significant first) meets key window 8p + 7 - j; doubling
            # the table per bit enumerates every byte value.
            for j in range(8):
                window = (padded >> (total - 32 - (8 * p + 7 - j))) & _MASK32
                table += [x ^ window for x in table]
            tables.append(table)
        self._byte_tables: tuple[list[int], ...] = tuple(tables)
        self._wide_arrays: list[array[int] | None] = [None] * (WIDE_TABLE_BYTES // 2)
        self._functions: dict[int, HashFunction] = {}
        #: Hash functions for 8- and 12-byte inputs (IPv4 addresses, IPv4 addresses + ports).
        self.hash8: HashFunction = self.function(8)
        self.hash12: HashFunction = self.function(12)
        # The IPv6 inputs (addresses; addresses and ports), for the classifier's inline path.
        self.hash32: HashFunction = self.function(32)
        self.hash36: HashFunction = self.function(36)

    @property
    def key(self) -> bytes:
        """The key bytes."""
        return self._key

    def __repr__(self) -> str:
        return f"Toeplitz(key=bytes.fromhex({self._key.hex()!r}))"

    def byte_table(self, position: int) -> tuple[int, ...]:
        """The 256 contributions (u32) of input byte ``position`` (all zero past the key).

        Raises:
            ValidationError: for a negative position.
        """
        if position < 0:
            raise ValidationError("position", f"must be >= 0, got {position}")
        if position >= len(self._byte_tables):
            return (0,) * 256
        return tuple(self._byte_tables[position])

    def _byte_table_or_zero(self, position: int) -> list[int]:
        if position < len(self._byte_tables):
            return self._byte_tables[position]
        return [0] * 256

    def _wide_array(self, pair: int) -> array[int]:
        table = self._wide_arrays[pair]
        if table is None:
            hi = self._byte_table_or_zero(2 * pair)
            lo = self._byte_table_or_zero(2 * pair + 1)
            # out[(h << 8) | l] = hi[h] ^ lo[l]: one XOR of two 256 KiB big integers instead of
            # 65536 interpreted XORs (the byte order only has to be the same on both sides).
            lo_row = array(_U32, lo).tobytes() * 256
            hi_rows = b"".join(array(_U32, (h,)).tobytes() * 256 for h in hi)
            mixed = int.from_bytes(hi_rows, "little") ^ int.from_bytes(lo_row, "little")
            table = array(_U32)
            table.frombytes(mixed.to_bytes(len(lo_row), "little"))
            self._wide_arrays[pair] = table
        return table

    def _wide_numpy(self, pair: int) -> npt.NDArray[np.uint32]:
        """The 16-bit table of ``pair`` as a numpy array, built with numpy when not built yet (an
        outer XOR: microseconds, where the big-integer trick of :meth:`_wide_array` takes milliseconds)."""
        import numpy as np

        table = self._wide_arrays[pair]
        if table is None:
            hi = np.array(self._byte_table_or_zero(2 * pair), dtype=np.uint32)
            lo = np.array(self._byte_table_or_zero(2 * pair + 1), dtype=np.uint32)
            table = array(_U32)
            table.frombytes(np.bitwise_xor.outer(hi, lo).astype(f"={_U32}").tobytes())
            self._wide_arrays[pair] = table
        wide: npt.NDArray[np.uint32] = np.frombuffer(table, dtype=np.uint32)
        return wide

    def function(self, length: int) -> HashFunction:
        """A function that hashes inputs of exactly ``length`` bytes (built once per length).

        It looks bytes up in unrolled blocks of 12, 8 and 4 bytes; a leftover of up to 3 bytes goes
        through a short loop and bytes past the key are skipped. An input of another length gives a
        wrong result or raises ``ValueError``; :meth:`hash` and :func:`toeplitz_hash` pick the
        function by length.

        Raises:
            ValidationError: for a negative length.
        """
        fn = self._functions.get(length)
        if fn is None:
            if length < 0:
                raise ValidationError("length", f"must be >= 0, got {length}")
            fn = self._build_function(length)
            self._functions[length] = fn
        return fn

    def _build_function(self, length: int) -> HashFunction:
        used = min(length, len(self._byte_tables))
        tables = self._byte_tables
        # Unrolled blocks of 12, 8 and 4 bytes (one lookup per byte, no loop); a leftover of up
        # to 3 bytes goes through the general loop. Input bytes past the key contribute nothing.
        parts: list[tuple[int, int, HashFunction]] = []
        pos = 0
        for size, make in ((36, _unrolled36), (12, _unrolled12), (8, _unrolled8), (4, _unrolled4)):
            while used - pos >= size:
                parts.append((pos, pos + size, make(tables[pos : pos + size])))
                pos += size
        if pos < used:
            parts.append((pos, used, _looped(tables[pos:used])))
        if not parts:
            return _zero_hash
        if len(parts) == 1 and parts[0][1] == length:
            return parts[0][2]
        frozen = tuple(parts)

        def hash_blocks(data: BytesLike) -> int:
            result = 0
            for start, stop, fn in frozen:
                result ^= fn(data[start:stop])
            return result

        return hash_blocks

    def hash(self, data: BytesLike) -> int:
        """The Toeplitz hash of ``data`` (any bytes-like object, any length), as an unsigned 32-bit int."""
        return self.function(len(data))(data)

    def hash_batch(self, rows: Iterable[BytesLike], *, use_numpy: bool | None = None) -> list[int]:
        """Hash many inputs of one length; see :func:`toeplitz_hash_batch`.

        Raises:
            ValidationError: when the rows differ in length, or ``use_numpy`` is True without numpy.
        """
        batch = rows if isinstance(rows, (list, tuple)) else list(rows)
        length = batch_rows(batch)
        if not batch:
            return []
        if not _want_numpy(use_numpy):
            return list(map(self.function(length), batch))
        import numpy as np

        matrix = np.frombuffer(b"".join(batch), dtype=np.uint8).reshape(len(batch), length)
        result: list[int] = self.hash_array(matrix).tolist()
        return result

    def hash_array(self, rows: npt.ArrayLike) -> npt.NDArray[np.uint32]:
        """Hash every row of a 2-D uint8 array (numpy required): returns a uint32 array, one hash per row.

        Rows are processed in chunks: the first :data:`WIDE_TABLE_BYTES` columns through 16-bit
        tables, later columns (long keys only) through byte tables.

        Raises:
            ValidationError: when ``rows`` is not 2-D or not uint8-compatible.
            ImportError: when numpy is not installed.
        """
        import numpy as np

        matrix = np.asarray(rows)
        if matrix.ndim != 2:
            raise ValidationError("rows", f"expected a 2-D array of bytes, got {matrix.ndim} dimension(s)")
        if matrix.dtype != np.uint8:
            if not np.issubdtype(matrix.dtype, np.integer) or (
                matrix.size and (matrix.min() < 0 or matrix.max() > 255)
            ):
                raise ValidationError("rows", "expected byte values (uint8)")
            matrix = matrix.astype(np.uint8)
        count, width = matrix.shape
        out = np.zeros(count, dtype=np.uint32)
        used = min(width, len(self._key))
        if used == 0 or count == 0:
            return out
        wide_cols = min(used, WIDE_TABLE_BYTES)
        pairs = (wide_cols + 1) // 2
        wide_tables = [self._wide_numpy(q) for q in range(pairs)]
        narrow_tables = {p: np.array(self._byte_tables[p], dtype=np.uint32) for p in range(WIDE_TABLE_BYTES, used)}
        chunk = min(count, _NUMPY_CHUNK_ROWS)
        staging = np.zeros((chunk, 2 * pairs), dtype=np.uint8)
        scratch = np.empty(chunk, dtype=np.uint32)
        for start in range(0, count, chunk):
            stop = min(start + chunk, count)
            m = stop - start
            acc = out[start:stop]
            tmp = scratch[:m]
            # A zeroed staging buffer pads an odd column count with a zero byte, which hashes as nothing.
            staging[:m, :wide_cols] = matrix[start:stop, :wide_cols]
            words = staging[:m].view(">u2")
            for q in range(pairs):
                np.take(wide_tables[q], words[:, q], out=tmp)
                acc ^= tmp
            for p in range(WIDE_TABLE_BYTES, used):
                np.take(narrow_tables[p], matrix[start:stop, p], out=tmp)
                acc ^= tmp
        return out


def _zero_hash(data: BytesLike) -> int:
    return 0


def _looped(tables: Sequence[list[int]]) -> HashFunction:
    def hash_looped(data: BytesLike) -> int:
        # map() stops at the shorter argument.
        return functools.reduce(xor, map(getitem, tables, data), 0)

    return hash_looped


# The unrolled blocks unpack the bytes into locals and index list tables held in closure cells:
# the interpreter specialises list[int] subscripts, and 256-entry tables stay in the CPU caches
# (16-bit tables were faster only while their 1.5 MB fitted, i.e. for few distinct inputs).


def _unrolled4(t: Sequence[list[int]]) -> HashFunction:
    t0, t1, t2, t3 = t

    def hash4(data: BytesLike) -> int:
        a, b, c, d = data
        return t0[a] ^ t1[b] ^ t2[c] ^ t3[d]

    return hash4


def _unrolled8(t: Sequence[list[int]]) -> HashFunction:
    t0, t1, t2, t3, t4, t5, t6, t7 = t

    def hash8(data: BytesLike) -> int:
        a, b, c, d, e, f, g, h = data
        return t0[a] ^ t1[b] ^ t2[c] ^ t3[d] ^ t4[e] ^ t5[f] ^ t6[g] ^ t7[h]

    return hash8


def _unrolled12(t: Sequence[list[int]]) -> HashFunction:
    t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11 = t

    def hash12(data: BytesLike) -> int:
        a, b, c, d, e, f, g, h, i, j, k, m = data
        return t0[a] ^ t1[b] ^ t2[c] ^ t3[d] ^ t4[e] ^ t5[f] ^ t6[g] ^ t7[h] ^ t8[i] ^ t9[j] ^ t10[k] ^ t11[m]

    return hash12


def _unrolled36(t: Sequence[list[int]]) -> HashFunction:
    # IPv6 addresses and ports (the TCPV6/UDPV6 input) in one call: no slices, no loop over blocks.
    (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15, t16, t17,
     t18, t19, t20, t21, t22, t23, t24, t25, t26, t27, t28, t29, t30, t31, t32, t33, t34, t35) = t  # fmt: skip

    def hash36(data: BytesLike) -> int:
        (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17,
         a18, a19, a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35) = data  # fmt: skip
        return (
            t0[a0] ^ t1[a1] ^ t2[a2] ^ t3[a3] ^ t4[a4] ^ t5[a5] ^ t6[a6] ^ t7[a7] ^ t8[a8] ^ t9[a9]
            ^ t10[a10] ^ t11[a11] ^ t12[a12] ^ t13[a13] ^ t14[a14] ^ t15[a15] ^ t16[a16] ^ t17[a17]
            ^ t18[a18] ^ t19[a19] ^ t20[a20] ^ t21[a21] ^ t22[a22] ^ t23[a23] ^ t24[a24] ^ t25[a25]
            ^ t26[a26] ^ t27[a27] ^ t28[a28] ^ t29[a29] ^ t30[a30] ^ t31[a31] ^ t32[a32] ^ t33[a33]
            ^ t34[a34] ^ t35[a35]
        )

    return hash36


# The tables of recently used keys. A bounded memo of a pure function (like functools.lru_cache,
# but a hit is one dict lookup, which the per-frame hot path needs): when full, the entry built
# first is dropped. Misses are serialised so that concurrent threads cannot evict twice.
_TABLES_BY_KEY: dict[BytesLike, Toeplitz] = {}
_TABLES_LOCK = threading.Lock()


def toeplitz_for(key: BytesLike) -> Toeplitz:
    """The shared :class:`Toeplitz` tables of ``key``, built on first use.

    The tables of the :data:`TOEPLITZ_CACHE_SIZE` most recently built keys are kept; when a new key
    arrives with the cache full, the oldest entry is dropped.

    Raises:
        ValidationError: when ``key`` is not bytes-like.
    """
    if type(key) is not bytes:
        key = _as_key(key)
    tz = _TABLES_BY_KEY.get(key)
    if tz is None:
        built = Toeplitz(key)
        with _TABLES_LOCK:
            tz = _TABLES_BY_KEY.get(key)
            if tz is None:
                while len(_TABLES_BY_KEY) >= TOEPLITZ_CACHE_SIZE:
                    del _TABLES_BY_KEY[next(iter(_TABLES_BY_KEY))]
                _TABLES_BY_KEY[key] = tz = built
    return tz


def toeplitz_hash(key: BytesLike, data: BytesLike) -> int:
    """The standard Toeplitz hash of ``data`` under ``key`` (defined in the module documentation).

    Args:
        key: the key, any length (virtio uses 40 bytes); key bits past its end count as zero.
        data: the input, any length, fields concatenated in network byte order.

    Returns:
        The hash as an unsigned 32-bit int (the kernel stores it little-endian in ``hash_value``).

    Raises:
        ValidationError: when ``key`` is not bytes-like.
    """
    # A hit costs two dict subscripts. A new key or length (KeyError), or a key the dict cannot
    # hash (bytearray: TypeError, writable memoryview: ValueError), takes the slow path, which also
    # re-raises any error of the hash itself.
    try:
        return _TABLES_BY_KEY[key]._functions[len(data)](data)
    except (KeyError, TypeError, ValueError):
        return toeplitz_for(key).function(len(data))(data)


def numpy_available() -> bool:
    """True when numpy can be imported (the optional ``pytun_hash[numpy]`` extra)."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _want_numpy(use_numpy: bool | None) -> bool:
    if use_numpy is False:
        return False
    if numpy_available():
        return True
    if use_numpy:
        raise ValidationError(
            "use_numpy", "numpy is not installed; install the pytun_hash[numpy] extra or pass use_numpy=False"
        )
    return False


def toeplitz_hash_batch(key: BytesLike, rows: Iterable[BytesLike], *, use_numpy: bool | None = None) -> list[int]:
    """Hash many inputs of the same length under one key (pcap analysis, tests).

    Args:
        key: the key, any length.
        rows: bytes-like inputs, all of one length.
        use_numpy: None uses numpy when it is installed; True requires it; False forces the
            pure-Python path (a table-driven function applied to every row).

    Returns:
        One unsigned 32-bit hash per row, in order.

    Raises:
        ValidationError: when the rows differ in length, ``key`` is not bytes-like, or
            ``use_numpy`` is True and numpy is missing.
    """
    return toeplitz_for(key).hash_batch(rows, use_numpy=use_numpy)


def _word_reversed(data: BytesLike) -> bytes:
    """``data`` with the bytes of each 32-bit word reversed (the length must be a multiple of 4)."""
    words = len(data) // 4
    return struct.pack(f"<{words}I", *struct.unpack(f">{words}I", data))


def rfc_input(data: BytesLike) -> bytes:
    """The input the RFC kernel's Toeplitz effectively hashed on this host, given the network-order input.

    The RFC ("tun: Introduce virtio-net hashing feature", 8 Oct 2023) loads each 32-bit input word in
    host byte order, so on a little-endian host its result equals the standard Toeplitz of the input
    with every word byte-reversed (verified on a kernel carrying it); on a big-endian host the input
    is unchanged. Inputs are 8, 12, 32 or 36 bytes.

    Raises:
        ValidationError: when ``len(data)`` is not a multiple of 4.
    """
    if len(data) % 4:
        raise ValidationError("data", f"the RFC hashes whole 32-bit words; got {len(data)} bytes")
    return _word_reversed(data) if sys.byteorder == "little" else bytes(data)


def batch_rows(rows: Sequence[BytesLike]) -> int:
    """The common length of ``rows`` (0 for no rows).

    Raises:
        ValidationError: when the rows differ in length.
    """
    if not rows:
        return 0
    lengths = set(map(len, rows))
    length = len(rows[0])
    if len(lengths) > 1:
        index = next(i for i, row in enumerate(rows) if len(row) != length)
        raise ValidationError(f"rows[{index}]", f"length {len(rows[index])} differs from the first row's {length}")
    return length
