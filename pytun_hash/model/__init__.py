"""The software model of virtio-net hashing: pure functions, no I/O.

* :mod:`~pytun_hash.model.toeplitz`: the Toeplitz hash (table-driven; batch path with optional numpy).
* :mod:`~pytun_hash.model.packet`: parsing frames as tun/tap queues see them.
* :mod:`~pytun_hash.model.classify`: hash type selection, hash reports and queue prediction, under
  the virtio specification or as a kernel with the October 2023 RFC would do it.
* :mod:`~pytun_hash.model.vnet`: virtio-net header codecs.
* :mod:`~pytun_hash.model.verify`: checking reported hashes against the model.
* :mod:`~pytun_hash.model.semantics`: which rules each revision and backend follows.
* :mod:`~pytun_hash.model.frames`: building frames byte by byte (the counterpart of ``packet``).
* :mod:`~pytun_hash.model.vectors`: published Toeplitz known answers (Microsoft's tables).
"""

from __future__ import annotations

from pytun_hash.model.classify import (
    FlowHash,
    Semantics,
    classify,
    classify_parsed,
    predict_queue,
    queue_for_flow,
    rfc_key_in_force,
)
from pytun_hash.model.packet import (
    MAX_IPV6_EXTENSION_HEADERS,
    MAX_VLAN_TAGS,
    Framing,
    ParsedFrame,
    parse_frame,
)
from pytun_hash.model.semantics import (
    ReportOnlyValue,
    report_only_value,
    semantics_for,
    steering_program_queue,
)
from pytun_hash.model.toeplitz import (
    Toeplitz,
    numpy_available,
    rfc_input,
    toeplitz_for,
    toeplitz_hash,
    toeplitz_hash_batch,
    toeplitz_hash_reference,
)
from pytun_hash.model.verify import ReportMismatch, expected_report, verify_reports
from pytun_hash.model.vnet import (
    VNET_HDR_LAYOUTS,
    VnetHeader,
    build_frame,
    default_layout,
    hash_tail,
    read_hash_fields,
    split_frame,
    write_hash_fields,
)

__all__ = [
    "MAX_IPV6_EXTENSION_HEADERS",
    "MAX_VLAN_TAGS",
    "VNET_HDR_LAYOUTS",
    "FlowHash",
    "Framing",
    "ParsedFrame",
    "ReportMismatch",
    "ReportOnlyValue",
    "Semantics",
    "Toeplitz",
    "VnetHeader",
    "build_frame",
    "classify",
    "classify_parsed",
    "default_layout",
    "expected_report",
    "hash_tail",
    "numpy_available",
    "parse_frame",
    "predict_queue",
    "queue_for_flow",
    "read_hash_fields",
    "report_only_value",
    "rfc_input",
    "rfc_key_in_force",
    "semantics_for",
    "split_frame",
    "steering_program_queue",
    "toeplitz_for",
    "toeplitz_hash",
    "toeplitz_hash_batch",
    "toeplitz_hash_reference",
    "verify_reports",
    "write_hash_fields",
]
