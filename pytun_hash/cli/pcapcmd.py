"""``predict --pcap``: the engines, the progress line and the ``pcap`` JSON member.

Two engines compute the same result (the same JSON document but for ``pcap.engine``):

* ``batch`` (when numpy is installed): the capture is read in chunks of
  :data:`~pytun_hash.capture.reader.DEFAULT_BATCH_RECORDS` records
  (:func:`~pytun_hash.capture.chunks.frame_chunks`) and every chunk is classified, hashed and
  predicted at once (:func:`~pytun_hash.model.batch.predict_frames`). Peak memory stays under
  200 MiB whatever the capture's size (a 4 MiB piece of the file and about 22 MiB of arrays per
  chunk, besides the interpreter and numpy).
* ``scalar`` (without numpy): the model frame by frame, in constant memory.

Imported by :func:`pytun_hash.cli.hashcmd._predict_pcap` only when ``--pcap`` is given.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from pytun_hash._abi import HashReport
from pytun_hash.capture.reader import CaptureReader
from pytun_hash.cli.output import EntryStream, Output, Progress
from pytun_hash.config import VnetHashConfig
from pytun_hash.model import Semantics, parse_frame
from pytun_hash.model.flow import parsed_flow_text
from pytun_hash.model.toeplitz import numpy_available

__all__ = ["BATCH", "SCALAR", "CaptureProgress", "Tally", "choose_engine", "pcap_member", "predict_batch"]

#: The vectorised engine (numpy).
BATCH = "batch"
#: The frame-by-frame engine (standard library only).
SCALAR = "scalar"


class Tally(Protocol):
    """The counters ``predict`` keeps (``hashcmd._Tally``)."""

    queues: int
    packets: Counter[int]
    unclassified: Counter[int]
    reports: Counter[str]


def choose_engine() -> str:
    """:data:`BATCH` when numpy can be imported, else :data:`SCALAR`.

    numpy is imported here (when nothing imported it before) with ``OPENBLAS_NUM_THREADS=1`` unless
    the environment sets it: importing numpy starts OpenBLAS's thread pool, which costs tens of
    milliseconds of CPU at start-up (about 60 ms on a 2-CPU machine, a fifth of ``predict --pcap``'s
    start-up), and the batch engine does no linear algebra. The variable is restored at once, so
    only this process's BLAS is affected (it reads the variable when numpy loads it).
    """
    if "numpy" in sys.modules or "OPENBLAS_NUM_THREADS" in os.environ:
        return BATCH if numpy_available() else SCALAR
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        return BATCH if numpy_available() else SCALAR
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


class CaptureProgress:
    """The progress line of reading a capture: packets done, the total (estimated from the bytes read
    so far and the file's size until the end, shown with ``~``), the share of the file done and the
    rate (context manager around :meth:`Output.progress`).

    Args:
        out: the command's output.
        reader: the capture being read.
    """

    def __init__(self, out: Output, reader: CaptureReader) -> None:
        self._reader = reader
        self._progress: Progress = out.progress(f"reading {reader.path}", unit="packets")

    def update(self, done: int) -> None:
        """Record ``done`` packets read (the reader's position gives the share of the file)."""
        reader = self._reader
        total = None
        if 0 < reader.position < reader.size and done:
            total = round(done * reader.size / reader.position)
        self._progress.update(done, total=total, estimated=True)

    def finish(self, done: int) -> None:
        """Record the end: ``done`` packets, all of them."""
        self._progress.update(done, total=done, estimated=False)

    def __enter__(self) -> CaptureProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)


def pcap_member(reader: CaptureReader, engine: str, truncated: int, unparsed: int) -> dict[str, Any]:
    """The ``pcap`` JSON member: ``file``, ``linktype``, ``packets``, ``truncated``, ``unparsed`` (as
    before pcapng support), then ``format`` (``pcap``/``pcapng``), ``linktypes`` (of the interfaces
    whose packets were read) and ``engine`` (:data:`BATCH` or :data:`SCALAR`)."""
    return {
        "file": reader.path,
        "linktype": reader.linktype,
        "packets": reader.count,
        "truncated": truncated,
        "unparsed": unparsed,
        "format": reader.format,
        "linktypes": sorted(reader.linktypes),
        "engine": engine,
    }


def predict_batch(
    reader: CaptureReader,
    config: VnetHashConfig,
    semantics: Semantics,
    tally: Tally,
    progress: CaptureProgress,
    stream: EntryStream | None,
    line: Callable[..., str],
    no_flow: str,
) -> int:
    """Predict every packet of ``reader`` with the batch engine into ``tally``; with ``stream``, write
    an entry per packet (``line`` formats the text row, ``no_flow`` fills the flow column of a frame
    with no IP flow) as each chunk is done.

    Returns:
        The packets the capture truncated.

    Raises:
        ValidationError: for a malformed capture (after the packets before the fault were counted
            and, with ``stream``, written).
        ImportError: when numpy is not installed.
    """
    import numpy as np

    from pytun_hash.capture.chunks import frame_chunks
    from pytun_hash.model.batch import add_counts, predict_frames

    queues = tally.queues
    histogram = np.zeros(queues, dtype=np.int64)
    unclassified = np.zeros(queues, dtype=np.int64)
    by_report = np.zeros(len(HashReport), dtype=np.int64)
    truncated = 0
    index = 0
    try:
        # Per packet, the output is what takes time: small chunks keep memory as low as the scalar engine's.
        chunks = frame_chunks(reader) if stream is None else frame_chunks(reader, 1024, read_bytes=0)
        for chunk in chunks:
            result = predict_frames(chunk, config, queues, semantics=semantics)
            add_counts(result, histogram, unclassified, by_report)
            truncated += chunk.truncated
            if stream is not None:
                rows = zip(result.hashes.tolist(), result.reports.tolist(), result.queues.tolist(), strict=True)
                for i, (value, report, queue) in enumerate(rows):
                    parsed = parse_frame(chunk.frame(i), chunk.framing)
                    flow = None if parsed is None else parsed_flow_text(parsed)
                    text = f"{value:#010x}"
                    name = HashReport(report).name
                    entry = {"index": index + i, "flow": flow, "hash": text, "report": name, "queue": queue}
                    stream.entry(entry, line(index + i, flow or no_flow, text, name, queue))
            index += len(chunk)
            progress.update(index)
    finally:
        # What was counted before an error is kept, as the scalar engine keeps it.
        for queue, count in enumerate(histogram.tolist()):
            if count:
                tally.packets[queue] += count
        for queue, count in enumerate(unclassified.tolist()):
            if count:
                tally.unclassified[queue] += count
        for value, count in enumerate(by_report.tolist()):
            if count:
                tally.reports[HashReport(value).name] += count
    return truncated
