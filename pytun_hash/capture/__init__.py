"""Capture files: reading packets recorded by tcpdump, Wireshark or dumpcap.

* :mod:`~pytun_hash.capture.reader`: classic pcap and pcapng files, Ethernet, raw IP and Linux
  cooked (SLL, SLL2) link types, record by record or in batches of records (standard library only).
* :mod:`~pytun_hash.capture.chunks`: those batches as fixed-size numpy arrays of frames for the
  vectorised model (:mod:`pytun_hash.model.batch`; numpy required, imported on use).

Importing this package loads neither.
"""

from __future__ import annotations
