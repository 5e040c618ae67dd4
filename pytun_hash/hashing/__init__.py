"""Hashing on a device, from any process: the one public entry, the two backends, the state kept.

* :class:`Hashing` (:mod:`~pytun_hash.hashing.core`): ``enable``, ``adopt``, ``reconfigure``,
  ``disable``, ``close(keep=...)``, the configuration and record in force, ``reporter``.
* :class:`QueueReader` (:mod:`~pytun_hash.hashing.reader`): frames with their hash fields filled the
  same way on both backends, for VMMs.
* :mod:`~pytun_hash.hashing.backends`: the native and eBPF backends behind one protocol.
* :mod:`~pytun_hash.hashing.state`: where records and pins live (:class:`StateLocation`), staleness,
  verification against the kernel.
"""

from __future__ import annotations

from pytun_hash.hashing.backends import EbpfBackend, HashingBackend, HashingWarning, NativeBackend
from pytun_hash.hashing.core import Hashing
from pytun_hash.hashing.reader import QueueReader, ReceivedFrame
from pytun_hash.hashing.state import StateLocation, in_force, verify

__all__ = [
    "EbpfBackend",
    "Hashing",
    "HashingBackend",
    "HashingWarning",
    "NativeBackend",
    "QueueReader",
    "ReceivedFrame",
    "StateLocation",
    "in_force",
    "verify",
]
