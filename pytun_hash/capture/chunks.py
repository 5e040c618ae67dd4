"""Capture records as fixed-size :class:`~pytun_hash.model.batch.FrameArray` chunks (numpy required).

:func:`frame_chunks` reads a :class:`~pytun_hash.capture.reader.CaptureReader` batch by batch and
makes each batch (at most ``chunk_frames`` records of one link type from one piece of the file) a
:class:`~pytun_hash.model.batch.FrameArray` without copying frames: the array's buffer is the file
piece itself (padded once per piece so every frame has a full window), and the captured lengths,
original lengths and link-layer adjustments (the cooked SLL/SLL2 headers, see
:class:`~pytun_hash.capture.reader.LinkType`) are computed column-wise. numpy is imported inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pytun_hash.capture.reader import DEFAULT_BATCH_RECORDS, READ_BYTES, CaptureReader, RecordBatch
from pytun_hash.model.batch import WINDOW_BYTES, FrameArray

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["frame_chunks", "frames_of_batch"]


def _u32(buffer: Any, at: Any, order: str) -> Any:
    """The ``order`` u32 at offsets ``at`` of a uint8 array, as int64."""
    import numpy as np

    b = [buffer[at + k].astype(np.int64) for k in range(4)]
    if order == "<":
        return b[0] | b[1] << 8 | b[2] << 16 | b[3] << 24
    return b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]


def frames_of_batch(batch: RecordBatch, padded: npt.NDArray[np.uint8] | None = None) -> FrameArray:
    """The frames the model reads of ``batch``'s records.

    Args:
        batch: records from :meth:`CaptureReader.batches`.
        padded: ``batch.buffer`` as a uint8 array with at least :data:`WINDOW_BYTES` bytes appended
            (made here when None; pass it for every batch of one piece to pad the piece once).
    """
    import numpy as np

    if padded is None:
        padded = np.frombuffer(batch.buffer + bytes(WINDOW_BYTES), dtype=np.uint8)
    starts = np.frombuffer(batch.starts, dtype=np.int64) if len(batch.starts) else np.zeros(0, dtype=np.int64)
    if batch.lengths is None:
        captured = _u32(padded, starts - 8, batch.order)
        original = _u32(padded, starts - 4, batch.order)
    else:
        assert batch.originals is not None
        captured = np.frombuffer(batch.lengths, dtype=np.int64)
        original = np.frombuffer(batch.originals, dtype=np.int64)
    truncated = int(np.count_nonzero(captured < original))
    link = batch.link
    ethertypes = None
    if link.cooked2:
        # SLL2: the frame is record bytes 6:18, the protocol (bytes 0:2), then the payload from 20.
        lengths = np.where(captured >= 20, captured - 6, 0)
        ethertypes = np.stack([padded[starts], padded[starts + 1]], axis=1)
        # Frame bytes 14.. are record bytes 20..; records shorter than the header give empty frames.
        frame_starts = starts + 6
    else:
        lengths = np.maximum(captured - link.skip, 0)
        frame_starts = starts + link.skip
    return FrameArray(padded, frame_starts, lengths, link.framing, ethertypes, truncated)


def frame_chunks(
    reader: CaptureReader, chunk_frames: int = DEFAULT_BATCH_RECORDS, *, read_bytes: int = READ_BYTES
) -> Iterator[FrameArray]:
    """The packets of ``reader`` as :class:`FrameArray` chunks of at most ``chunk_frames`` frames.

    Memory: one file piece of ``read_bytes`` (:meth:`CaptureReader.batches`), twice (the piece and
    its padded copy), and one chunk's arrays at a time: with the defaults under 40 MiB.

    Raises:
        ValidationError: (field ``pcap``) for a malformed file, after the chunks before the fault; or
            when ``chunk_frames`` < 1.
        ImportError: when numpy is not installed.
    """
    import numpy as np

    piece: bytes | None = None
    padded = None
    for batch in reader.batches(chunk_frames, read_bytes=read_bytes):
        if batch.buffer is not piece:
            piece = batch.buffer
            padded = np.frombuffer(piece + bytes(WINDOW_BYTES), dtype=np.uint8)
        yield frames_of_batch(batch, padded)
