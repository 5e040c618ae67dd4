"""Capture records as fixed-size :class:`~pytun_hash.model.batch.FrameArray` chunks (numpy required).

:func:`frame_chunks` reads a :class:`~pytun_hash.capture.reader.CaptureReader` batch by batch and
makes each batch (at most ``chunk_frames`` records of one link type from one piece of the file) a
:class:`~pytun_hash.model.batch.FrameArray` without copying frames: the array's buffer is the file
piece itself, and the captured lengths,
original lengths and link-layer adjustments (the cooked SLL/SLL2 headers, see
:class:`~pytun_hash.capture.reader.LinkType`) are computed column-wise. numpy is imported inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pytun_hash.capture.reader import DEFAULT_BATCH_RECORDS, READ_BYTES, CaptureReader, RecordBatch
from pytun_hash.model.batch import FrameArray

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["frame_chunks", "frames_of_batch"]


def frames_of_batch(batch: RecordBatch, padded: npt.NDArray[np.uint8] | None = None) -> FrameArray:
    """The frames the model reads of ``batch``'s records.

    Args:
        batch: records from :meth:`CaptureReader.batches`.
        padded: ``batch.buffer`` as a uint8 array (made here when None; pass it for every batch of
            one piece to make it once).
    """
    import numpy as np

    if padded is None:
        padded = np.frombuffer(batch.buffer, dtype=np.uint8)
    starts = np.asarray(batch.starts, dtype=np.int64) if len(batch.starts) else np.zeros(0, dtype=np.int64)
    if batch.lengths is None:
        # Every u32 of the piece, at any offset (unaligned loads): one gather per field.
        fields = np.ndarray((max(len(padded) - 3, 0),), dtype=batch.order + "u4", buffer=padded, strides=(1,))
        captured = fields[starts - 8].astype(np.int64)
        original = fields[starts - 4]
    else:
        assert batch.originals is not None
        captured = np.asarray(batch.lengths, dtype=np.int64)
        original = np.asarray(batch.originals, dtype=np.int64)
    truncated = int(np.count_nonzero(captured < original))
    link = batch.link
    ethertypes = None
    if link.cooked2:
        # SLL2: the frame is record bytes 6:18, the protocol (bytes 0:2), then the payload from 20.
        lengths = np.where(captured >= 20, captured - 6, 0)
        # The protocol of a record too short to have one is never read (frames under 14 bytes keep
        # their own bytes 12 and 13): gathered from the record's start, which is inside the piece.
        protocol_at = np.where(captured >= 2, starts, 0)
        ethertypes = np.stack([padded[protocol_at], padded[protocol_at + 1]], axis=1)
        # Frame bytes 14.. are record bytes 20..; records shorter than the header give empty frames.
        skip = 6
    else:
        lengths = np.maximum(captured - link.skip, 0)
        skip = link.skip
    # An empty frame starts where its record does: a record at the very end of a piece has no bytes
    # after it to skip into.
    frame_starts = np.where(lengths > 0, starts + skip, starts)
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

    piece: bytes | bytearray | None = None
    array = None
    for batch in reader.batches(chunk_frames, read_bytes=read_bytes):
        if batch.buffer is not piece:
            piece = batch.buffer
            array = np.frombuffer(piece, dtype=np.uint8)
        yield frames_of_batch(batch, array)
