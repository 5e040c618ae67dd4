"""Classification, hashing and queue prediction of whole arrays of frames (numpy required).

:func:`predict_frames` gives, for every frame of a :class:`FrameArray`, exactly what
:func:`~pytun_hash.model.classify.classify` and :func:`~pytun_hash.model.classify.queue_for_flow`
give it (hash value, report, queue), under either :class:`~pytun_hash.model.classify.Semantics`,
for every :class:`~pytun_hash.model.packet.Framing`. :func:`predict_chunks` sums those over a stream
of arrays into a per-queue histogram and report counts.

How: the first :data:`WINDOW_BYTES` bytes of every frame (enough for two VLAN tags, a packet
information header, an IPv4 header with the longest options and the ports; the model never reads
further except in IPv6 extension headers) are gathered into a matrix, and the rules of
:mod:`~pytun_hash.model.packet` and :mod:`~pytun_hash.model.classify` are applied column-wise: tags,
ethertype, IPv4 (options, fragments), IPv6 without extension headers, ports, length checks of frames
cut short, the type choice of each semantics. The Toeplitz inputs (zero-padded to 12 bytes for IPv4
and 36 for IPv6, which does not change a Toeplitz hash; word-reversed for the RFC) go through
:meth:`~pytun_hash.model.toeplitz.Toeplitz.hash_array`. Frames the columns cannot decide exactly
(IPv6 with extension headers, whose walk is sequential) take the slow lane: the scalar model, frame by
frame. Results are therefore always those of the scalar model.

Memory: a call holds the window matrix and about thirty arrays of one value per frame: about
``frames * (WINDOW_BYTES + 250)`` bytes, 22 MiB for 65536 frames, besides the frames themselves.

Pure: no I/O, no state kept between calls; numpy is imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.errors import ValidationError
from pytun_hash.model._bytes import BytesLike
from pytun_hash.model.classify import Semantics, classify, queue_for_flow
from pytun_hash.model.packet import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_EXTENSION_HEADERS,
    Framing,
)
from pytun_hash.model.toeplitz import toeplitz_for

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pytun_hash.config import VnetHashConfig

__all__ = [
    "DEFAULT_CHUNK_FRAMES",
    "WINDOW_BYTES",
    "FrameArray",
    "FramePredictions",
    "PredictionSummary",
    "predict_chunks",
    "predict_frames",
]

#: Bytes of each frame the vectorised rules read: packet information (4) + Ethernet (14) + two tags
#: (8) + the longest IPv4 header (60) + ports (4) = 90, rounded up.
WINDOW_BYTES = 96
_BLOCK_ROWS = 16384
#: Frames per array that keep a call's working set small (see the module documentation).
DEFAULT_CHUNK_FRAMES = 65536

_VLAN = (ETH_P_8021Q, ETH_P_8021AD)
_NONE = int(HashReport.NONE)
_RFC_TYPES = int(HashType.supported_by_kernel_series())
_REPORT_NAMES = {int(r): r.name for r in HashReport}


@attrs.frozen(eq=False)
class FrameArray:
    """Frames as a queue reads them, all framed alike, held as offsets into one byte array.

    Build one with :meth:`from_frames`, or from a capture with
    :func:`pytun_hash.capture.chunks.frame_chunks`.

    Attributes:
        buffer: 1-D uint8 array holding the frames.
        starts: int64 array: offset of each frame in ``buffer``.
        lengths: int64 array: each frame's length, bytes.
        framing: how every frame is framed.
        ethertypes: None, or a (frames, 2) uint8 array that replaces bytes 12 and 13 of every frame
            of length >= 14 (Linux cooked SLL2 captures keep the ethertype apart from the payload).
        truncated: how many of the frames a capture cut short (carried into the summary).
    """

    buffer: npt.NDArray[np.uint8]
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    framing: Framing = Framing.ETHERNET
    ethertypes: npt.NDArray[np.uint8] | None = None
    truncated: int = 0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.framing, Framing):
            raise ValidationError("framing", f"expected a Framing member, got {self.framing!r}")
        n = len(self.starts)
        if self.buffer.ndim != 1 or len(self.lengths) != n:
            raise ValidationError("frames", "buffer must be 1-D and starts and lengths of one length")
        if n and (
            int(self.starts.min()) < 0
            or int(self.lengths.min()) < 0
            or int((self.starts + self.lengths).max()) > len(self.buffer)
        ):
            raise ValidationError("frames", "a frame lies outside the buffer")
        if self.ethertypes is not None and self.ethertypes.shape != (n, 2):
            raise ValidationError("ethertypes", f"expected shape ({n}, 2), got {self.ethertypes.shape}")

    @classmethod
    def from_frames(cls, frames: Sequence[BytesLike], framing: Framing = Framing.ETHERNET) -> FrameArray:
        """The frames ``frames`` (bytes-like, any lengths) framed as ``framing``.

        Raises:
            ValidationError: when ``framing`` is not a :class:`Framing`.
        """
        import numpy as np

        blobs = [bytes(f) for f in frames]
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
        starts = np.zeros(len(blobs), dtype=np.int64)
        if len(blobs) > 1:
            np.cumsum(lengths[:-1], out=starts[1:])
        buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        return cls(buffer, starts, lengths, framing)

    def __len__(self) -> int:
        return len(self.starts)

    def frame(self, index: int) -> bytes:
        """Frame ``index`` as bytes (with the ``ethertypes`` replacement applied)."""
        start = int(self.starts[index])
        data = self.buffer[start : start + int(self.lengths[index])].tobytes()
        if self.ethertypes is not None and len(data) >= 14:
            data = data[:12] + self.ethertypes[index].tobytes() + data[14:]
        return data

    def windows(self, lo: int = 0, hi: int | None = None) -> npt.NDArray[np.uint8]:
        """The first :data:`WINDOW_BYTES` bytes of frames ``lo:hi`` (default all), a (frames,
        WINDOW_BYTES) matrix; bytes past a frame's end are unspecified (every rule checks the length
        first)."""
        import numpy as np

        buffer = self.buffer
        starts = self.starts[lo:hi]
        n = len(starts)
        if not n:
            return np.zeros((0, WINDOW_BYTES), dtype=np.uint8)
        # Frames starting in the last WINDOW_BYTES of the buffer take their windows from a zero-padded
        # copy of that tail, not from a padded copy of the whole buffer.
        limit = len(buffer) - WINDOW_BYTES
        late = starts > limit
        if not late.any():
            matrix: npt.NDArray[np.uint8] = _runs(buffer)[starts].view(np.uint8).reshape(n, WINDOW_BYTES)
        else:
            matrix = np.empty((n, WINDOW_BYTES), dtype=np.uint8)
            if limit >= 0:
                early = ~late
                matrix[early] = _runs(buffer)[starts[early]].view(np.uint8).reshape(-1, WINDOW_BYTES)
            first = max(limit, 0)
            tail = np.zeros(2 * WINDOW_BYTES + 1, dtype=np.uint8)
            tail[: len(buffer) - first] = buffer[first:]
            matrix[late] = _runs(tail)[starts[late] - first].view(np.uint8).reshape(-1, WINDOW_BYTES)
        if self.ethertypes is not None:
            matrix[:, 12:14] = self.ethertypes[lo:hi]
        return matrix


def _runs(buffer: npt.NDArray[np.uint8]) -> Any:
    """Every :data:`WINDOW_BYTES`-byte run of ``buffer`` (a 1-D byte array) as one opaque item per
    start offset: gathering windows copies each at once, about 2.5 times faster than indexing rows
    of a sliding-window view."""
    import numpy as np

    contiguous = np.ascontiguousarray(buffer)
    return np.ndarray((len(contiguous) - WINDOW_BYTES + 1,), dtype=f"V{WINDOW_BYTES}", buffer=contiguous, strides=(1,))


@attrs.frozen(eq=False)
class FramePredictions:
    """What the model gives every frame of one :class:`FrameArray` (arrays of one entry per frame).

    Attributes:
        hashes: uint32 hash values (0 when not hashed).
        reports: uint8 ``VIRTIO_NET_HASH_REPORT_*`` values.
        queues: int64 receive queues.
        slow: how many frames took the scalar slow lane.
    """

    hashes: npt.NDArray[np.uint32]
    reports: npt.NDArray[np.uint8]
    queues: npt.NDArray[np.int64]
    slow: int

    def __len__(self) -> int:
        return len(self.hashes)


@attrs.frozen
class PredictionSummary:
    """Per-queue and per-report counts over many frames.

    Attributes:
        packets: frames counted.
        histogram: frames per queue (index = queue).
        unclassified: frames per queue that were not hashed (report NONE).
        reports: frames per report name, for the reports that occurred (sorted by name).
        truncated: frames the capture cut short (from :attr:`FrameArray.truncated`).
        slow: frames that took the scalar slow lane.
    """

    packets: int
    histogram: tuple[int, ...]
    unclassified: tuple[int, ...]
    reports: dict[str, int]
    truncated: int = 0
    slow: int = 0


def _check(config: VnetHashConfig, num_queues: int, semantics: Semantics) -> None:
    if isinstance(num_queues, bool) or not isinstance(num_queues, int) or num_queues < 1:
        raise ValidationError("num_queues", f"must be an integer >= 1, got {num_queues!r}")
    if not config.rss:
        raise ValidationError("rss", "queue prediction needs RSS enabled (see queue_for_flow)")
    if not isinstance(semantics, Semantics):
        raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")


def predict_frames(
    frames: FrameArray, config: VnetHashConfig, num_queues: int, *, semantics: Semantics = Semantics.SPEC
) -> FramePredictions:
    """Classify, hash and predict the queue of every frame of ``frames`` (numpy required).

    Each frame gets exactly what ``classify(frame, config.types, config.key, l2=frames.framing,
    semantics=semantics)`` and :func:`~pytun_hash.model.classify.queue_for_flow` give it.

    Args:
        frames: the frames.
        config: the hashing config (RSS on).
        num_queues: attached queues, >= 1.
        semantics: whose rules.

    Returns:
        Per-frame hashes, reports and queues. Memory: about ``len(frames) * 350`` bytes besides the
        frames (module documentation).

    Raises:
        ValidationError: when RSS is off, ``num_queues`` < 1 or ``semantics`` is not a :class:`Semantics`.
        ImportError: when numpy is not installed.
    """
    import numpy as np

    _check(config, num_queues, semantics)
    n = len(frames)
    hashes = np.zeros(n, dtype=np.uint32)
    reports = np.zeros(n, dtype=np.uint8)
    slow_rows = np.zeros(0, dtype=np.int64)
    # Blocks of rows small enough that the window matrix stays in the CPU caches while the rules
    # read its columns one after the other.
    parts = []
    tables = _byte_tables(config.key)
    for lo in range(0, n, _BLOCK_ROWS):
        hi = min(lo + _BLOCK_ROWS, n)
        part = _classify(frames, lo, hi, config, tables, semantics, hashes[lo:hi], reports[lo:hi])
        parts.append(part + lo)
    if parts:
        slow_rows = np.concatenate(parts)
    queues = _queues(config, num_queues, semantics, hashes, reports)
    for i in slow_rows.tolist():
        flow = classify(frames.frame(i), config.types, config.key, l2=frames.framing, semantics=semantics)
        hashes[i] = flow.hash_value
        reports[i] = int(flow.report)
        queues[i] = queue_for_flow(config, flow, num_queues, semantics=semantics)
    return FramePredictions(hashes, reports, queues, len(slow_rows))


def predict_chunks(
    chunks: Iterable[FrameArray],
    config: VnetHashConfig,
    num_queues: int,
    *,
    semantics: Semantics = Semantics.SPEC,
) -> PredictionSummary:
    """Sum :func:`predict_frames` over ``chunks`` into a per-queue histogram and report counts.

    Frames are classified chunk by chunk and only counts are kept, so memory is bounded by the
    largest chunk (with :func:`pytun_hash.capture.chunks.frame_chunks` at its default size, the
    whole computation stays under 200 MiB of peak resident memory whatever the capture's size:
    a file piece of at most 4.3 MiB, about 22 MiB of arrays, the interpreter and numpy).

    Raises:
        ValidationError: as :func:`predict_frames`, and whatever iterating ``chunks`` raises.
        ImportError: when numpy is not installed.
    """
    import numpy as np

    _check(config, num_queues, semantics)
    histogram = np.zeros(num_queues, dtype=np.int64)
    unclassified = np.zeros(num_queues, dtype=np.int64)
    by_report = np.zeros(len(_REPORT_NAMES), dtype=np.int64)
    packets = truncated = slow = 0
    for chunk in chunks:
        result = predict_frames(chunk, config, num_queues, semantics=semantics)
        add_counts(result, histogram, unclassified, by_report)
        packets += len(chunk)
        truncated += chunk.truncated
        slow += result.slow
    return summary_of(packets, histogram, unclassified, by_report, truncated=truncated, slow=slow)


def add_counts(
    result: FramePredictions,
    histogram: npt.NDArray[np.int64],
    unclassified: npt.NDArray[np.int64],
    by_report: npt.NDArray[np.int64],
) -> None:
    """Add ``result`` to running counts: frames per queue, unclassified frames per queue, frames per
    report value (the arrays are updated in place; ``histogram`` and ``unclassified`` have one entry per
    queue, ``by_report`` one per ``HashReport`` value)."""
    import numpy as np

    queues = len(histogram)
    histogram += np.bincount(result.queues, minlength=queues)
    unclassified += np.bincount(result.queues[result.reports == _NONE], minlength=queues)
    by_report += np.bincount(result.reports, minlength=len(by_report))


def summary_of(
    packets: int,
    histogram: npt.NDArray[np.int64],
    unclassified: npt.NDArray[np.int64],
    by_report: npt.NDArray[np.int64],
    *,
    truncated: int = 0,
    slow: int = 0,
) -> PredictionSummary:
    """A :class:`PredictionSummary` of counts made with :func:`add_counts`."""
    reports = {_REPORT_NAMES[value]: int(count) for value, count in enumerate(by_report.tolist()) if count}
    return PredictionSummary(
        packets,
        tuple(int(x) for x in histogram.tolist()),
        tuple(int(x) for x in unclassified.tolist()),
        dict(sorted(reports.items())),
        truncated,
        slow,
    )


def _queues(
    config: VnetHashConfig,
    num_queues: int,
    semantics: Semantics,
    hashes: npt.NDArray[np.uint32],
    reports: npt.NDArray[np.uint8],
) -> npt.NDArray[np.int64]:
    """:func:`~pytun_hash.model.classify.queue_for_flow` for every frame."""
    import numpy as np

    table = np.asarray(config.indirection_table, dtype=np.int64)
    picked = table[hashes & np.uint32(len(table) - 1)]
    if semantics is Semantics.SPEC:
        queues = np.where(reports == _NONE, config.unclassified_queue, picked)
    else:
        if num_queues < 2:
            return np.zeros(len(hashes), dtype=np.int64)
        queues = np.where(picked == 0, config.unclassified_queue, picked)
    result: npt.NDArray[np.int64] = queues % num_queues
    return result


def _classify(
    frames: FrameArray,
    lo: int,
    hi: int,
    config: VnetHashConfig,
    tables: npt.NDArray[np.uint32],
    semantics: Semantics,
    hashes: npt.NDArray[np.uint32],
    reports: npt.NDArray[np.uint8],
) -> npt.NDArray[np.int64]:
    """Fill ``hashes`` and ``reports`` for frames ``lo:hi`` the columns decide; return the slow-lane
    rows (counted from ``lo``).

    Every test mirrors :func:`~pytun_hash.model.packet._parse` (a frame too short for a byte the
    parser reads is not parseable) and the type choice of ``_select_spec`` / ``_select_rfc``. The
    tests run over all rows with masks (cheaper than selecting rows first); only the Toeplitz inputs
    are gathered for the selected rows.
    """
    import numpy as np

    matrix = np.ascontiguousarray(frames.windows(lo, hi))
    n = hi - lo
    length = frames.lengths[lo:hi]
    framing = frames.framing
    # The network header's offset: one number while every frame has it at the same place (no tags,
    # or the same tags everywhere), else one per frame.
    offset: int | Any
    if framing is Framing.ETHERNET or framing is Framing.ETHERNET_WITH_PI:
        base = 14 if framing is Framing.ETHERNET else 18
        ok = length >= base
        ethertype = matrix[:, base - 2].astype(np.uint16) << 8 | matrix[:, base - 1]
        offset = base
        tagged = ok & ((ethertype == _VLAN[0]) | (ethertype == _VLAN[1]))
        if tagged.any():
            flat = matrix.reshape(-1)
            row_base = np.arange(n, dtype=np.int64) * WINDOW_BYTES
            offsets = np.full(n, base, dtype=np.int64)
            for _ in range(2):
                # The parser reads the inner ethertype at offset + 2 and + 3.
                ok &= ~tagged | (length >= offsets + 4)
                at = row_base + offsets
                inner = flat[at + 2].astype(np.uint16) << 8 | flat[at + 3]
                ethertype = np.where(tagged, inner, ethertype)
                offsets = np.where(tagged, offsets + 4, offsets)
                tagged = ok & ((ethertype == _VLAN[0]) | (ethertype == _VLAN[1]))
            # A third tag (MAX_VLAN_TAGS is 2) is not 0x0800 or 0x86DD: those frames fall out below.
            offset = int(offsets[0]) if bool((offsets == offsets[0]).all()) else offsets
        is4 = ok & (ethertype == ETH_P_IP)
        is6 = ok & (ethertype == ETH_P_IPV6)
    elif framing is Framing.IP:
        version = matrix[:, 0] >> 4
        present = length >= 1
        is4 = present & (version == 4)
        is6 = present & (version == 6)
        offset = 0
    else:  # IP_WITH_PI: the packet information header's ethertype names the protocol
        ok = length >= 4
        ethertype = matrix[:, 2].astype(np.uint16) << 8 | matrix[:, 3]
        is4 = ok & (ethertype == ETH_P_IP)
        is6 = ok & (ethertype == ETH_P_IPV6)
        offset = 4

    if isinstance(offset, int):
        columns: dict[int, Any] = {}

        def byte(k: int) -> Any:
            # A contiguous copy of the column, made once: the rules read some columns several times.
            column = columns.get(k)
            if column is None:
                column = columns[k] = np.ascontiguousarray(matrix[:, offset + k])
            return column

        def gather(rows: Any, first: Any, count: int) -> Any:
            # Bytes offset + first .. + count of each row; ``first`` one number or one per row.
            if isinstance(first, int) or bool((first == first[0]).all()):
                at = offset + int(first if isinstance(first, int) else first[0])
                # The bytes as one opaque item per row: a gather copies each row's run at once
                # (about 2.5 times faster than indexing rows and a column range).
                runs = np.ndarray((n,), dtype=f"V{count}", buffer=matrix, offset=at, strides=(WINDOW_BYTES,))
                return runs[rows].view(np.uint8).reshape(-1, count)
            return matrix.reshape(-1)[(rows * WINDOW_BYTES + offset + first)[:, None] + np.arange(count)]

    else:
        flat = matrix.reshape(-1)
        starts = np.arange(n, dtype=np.int64) * WINDOW_BYTES + offset

        def byte(k: int) -> Any:
            return flat[starts + k]

        def gather(rows: Any, first: Any, count: int) -> Any:
            return flat[(starts[rows] + first)[:, None] + np.arange(count)]

    room = length - offset  # bytes from the network header to the frame's end
    types = int(config.types)
    if semantics is Semantics.RFC_2023:
        types &= _RFC_TYPES
    spec = semantics is Semantics.SPEC
    rfc_order = not spec and sys.byteorder == "little"

    # ------------------------------------------------------------------ IPv4
    if is4.any():
        vihl = byte(0)
        protocol = byte(9)
        ihl = (vihl & 0x0F).astype(np.int64) << 2
        good = is4 & (room >= 10) & (vihl >> 4 == 4) & (ihl >= 20) & (ihl <= room)
        fragment = ((byte(6) & 0x3F) | byte(7)) != 0
        tcp = protocol == IPPROTO_TCP
        udp = protocol == IPPROTO_UDP
        has_ports = ~fragment & (tcp | udp)
        good &= ~has_ports | (ihl + 4 <= room)
        if spec:
            tcp &= has_ports
            udp &= has_ports
        report = np.full(n, int(HashReport.IPV4) if types & int(HashType.IPV4) else _NONE, dtype=np.uint8)
        if types & int(HashType.UDPV4):
            report[udp] = int(HashReport.UDPV4)
        if types & int(HashType.TCPV4):
            report[tcp] = int(HashReport.TCPV4)
        keep = good & (report != _NONE)
        np.copyto(reports, report, where=keep)
        sel = np.flatnonzero(keep)
        if len(sel):
            # Ports where the report uses them and the parser found them; zeros (RFC fragments)
            # contribute nothing to the hash.
            ported = has_ports[sel] & (report[sel] != int(HashReport.IPV4))
            if bool(((ihl[sel] == 20) | ~ported).all()):
                # Usual: no options where ports are used, so the ports follow the addresses: one
                # gather of 12 bytes, and zeros where the ports are not used.
                inputs = gather(sel, 12, 12)
                if not bool(ported.all()):
                    inputs[~ported, 8:12] = 0
            else:
                inputs = np.zeros((len(sel), 12), dtype=np.uint8)
                inputs[:, :8] = gather(sel, 12, 8)
                if ported.any():
                    rows = sel[ported]
                    inputs[ported, 8:12] = gather(rows, ihl[rows], 4)
            hashes[sel] = _hash_rows(tables, _fed(inputs, rfc_order))

    # ------------------------------------------------------------------ IPv6
    slow = np.zeros(0, dtype=np.int64)
    if is6.any():
        good = is6 & (room >= 40) & (byte(0) >> 4 == 6)
        nexthdr = byte(6)
        extension = np.zeros(n, dtype=bool)
        for kind in IPV6_EXTENSION_HEADERS:
            extension |= nexthdr == kind
        slow = np.flatnonzero(good & extension)
        good &= ~extension
        tcp = nexthdr == IPPROTO_TCP
        udp = nexthdr == IPPROTO_UDP
        good &= ~(tcp | udp) | (room >= 44)
        report = np.full(n, int(HashReport.IPV6) if types & int(HashType.IPV6) else _NONE, dtype=np.uint8)
        if types & int(HashType.UDPV6):
            report[udp] = int(HashReport.UDPV6)
        if types & int(HashType.TCPV6):
            report[tcp] = int(HashReport.TCPV6)
        keep = good & (report != _NONE)
        np.copyto(reports, report, where=keep)
        sel = np.flatnonzero(keep)
        if len(sel):
            inputs = gather(sel, 8, 36)
            # The addresses only, unless the report uses ports: zero the port bytes.
            inputs[report[sel] == int(HashReport.IPV6), 32:36] = 0
            hashes[sel] = _hash_rows(tables, _fed(inputs, rfc_order))
    return slow


def _byte_tables(key: BytesLike) -> npt.NDArray[np.uint32]:
    """The Toeplitz byte tables of ``key`` for the 36 input positions virtio uses, a (positions, 256)
    array (fewer rows for a shorter key: later bytes contribute nothing)."""
    import numpy as np

    tz = toeplitz_for(key)
    return np.array([tz.byte_table(p) for p in range(min(36, len(tz.key)))], dtype=np.uint32).reshape(-1, 256)


def _hash_rows(tables: npt.NDArray[np.uint32], inputs: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """The Toeplitz hash of every row of ``inputs`` with per-position byte ``tables``.

    One gather per input byte from a 1 KiB table (they all stay in the L1 cache) over a contiguous
    column: faster here than :meth:`~pytun_hash.model.toeplitz.Toeplitz.hash_array`'s 16-bit tables
    (half the gathers, but from 256 KiB tables) for the 12- and 36-byte virtio inputs (measured
    again in this engine: 16-bit tables took 1.5 times as long). The columns are made index-typed
    at once, in the same copy that makes them contiguous, so that no gather converts its own.
    """
    import numpy as np

    n, width = inputs.shape
    used = min(width, len(tables))
    if not used or not n:
        return np.zeros(n, dtype=np.uint32)
    columns = np.ascontiguousarray(inputs[:, :used].T, dtype=np.intp)
    # mode="clip": byte values never leave a 256-entry table, and clipping skips the bounds check
    # that makes the default mode take about 1.5 times as long.
    result: npt.NDArray[np.uint32] = tables[0].take(columns[0], mode="clip")
    scratch = np.empty(n, dtype=np.uint32)
    for position in range(1, used):
        tables[position].take(columns[position], out=scratch, mode="clip")
        result ^= scratch
    return result


def _fed(inputs: npt.NDArray[np.uint8], reversed_words: bool) -> npt.NDArray[np.uint8]:
    """The Toeplitz input rows: as they are, or with the bytes of every 32-bit word reversed (the
    RFC kernel on a little-endian host, :func:`~pytun_hash.model.toeplitz.rfc_input`)."""
    if not reversed_words:
        return inputs
    n, width = inputs.shape
    result: npt.NDArray[np.uint8] = inputs.reshape(n, width // 4, 4)[:, :, ::-1].reshape(n, width)
    return result
