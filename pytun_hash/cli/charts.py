"""Horizontal bars for the CLI's per-queue tables (``predict``'s histogram, ``demo``'s queues).

A chart's bars are scaled to its largest value, which gets the full :data:`BAR_WIDTH`: the
differences between queues are what a reader looks for, and bars scaled to the share of the
total leave them a few cells apart. A non-zero value always gets at least one cell, so no queue
that received something looks empty. Lengths are rounded half up in integer arithmetic: the same
counts draw the same bars everywhere.

Where the output is UTF-8, bars are drawn with the block elements U+2588..U+258F, eight steps
per cell; elsewhere with ``#``, one step per cell (:func:`blocks_for`).
"""

from __future__ import annotations

import codecs
from typing import TextIO

__all__ = ["BAR_WIDTH", "bar", "blocks_for"]

#: Cells of the longest bar in a chart.
BAR_WIDTH = 40

_FULL = "\u2588"
# Index n: a cell filled n eighths from the left (index 0 unused: nothing is drawn).
_EIGHTHS = ("", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b", "\u258a", "\u2589")


def blocks_for(stream: TextIO) -> bool:
    """True when ``stream`` encodes UTF-8, so bars may use the eighth-block characters.

    A stream without an encoding (``io.StringIO``) or with an unknown one gets ``#`` bars: they
    survive any encoding.
    """
    name = getattr(stream, "encoding", None)
    if not name:
        return False
    try:
        return codecs.lookup(name).name == "utf-8"
    except LookupError:
        return False


def bar(value: int, largest: int, *, blocks: bool, width: int = BAR_WIDTH) -> str:
    """The bar of ``value`` in a chart whose largest value is ``largest`` (drawn ``width`` cells long).

    Args:
        value: what this bar stands for (a count, >= 0).
        largest: the chart's largest value; 0 draws every bar empty.
        blocks: draw with eighth blocks (see :func:`blocks_for`) rather than ``#``.
        width: cells of the largest bar.

    Returns:
        The bar without padding: empty for 0, at least one cell for any other value.
    """
    if value <= 0 or largest <= 0:
        return ""
    steps = 8 if blocks else 1
    length = max(1, (2 * value * width * steps + largest) // (2 * largest))
    if not blocks:
        return "#" * length
    full, rest = divmod(length, 8)
    return _FULL * full + _EIGHTHS[rest]
