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

Importing this package loads none of them: each name below comes from its module on first use, so
``pytun-hash hash`` pays for classification and Toeplitz only.
"""

from __future__ import annotations

from pytun_hash._lazy import lazy_names

# Eager: the function classify would otherwise lose its name to the submodule of the same name,
# which the import system binds here whenever anything imports pytun_hash.model.classify.
from pytun_hash.model.classify import (
    FlowHash,
    Semantics,
    classify,
    classify_parsed,
    predict_queue,
    queue_for_flow,
    rfc_key_in_force,
)

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
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

# Where each name lives.
_WHERE = {
    "MAX_IPV6_EXTENSION_HEADERS": "packet",
    "MAX_VLAN_TAGS": "packet",
    "Framing": "packet",
    "ParsedFrame": "packet",
    "parse_frame": "packet",
    "ReportOnlyValue": "semantics",
    "report_only_value": "semantics",
    "semantics_for": "semantics",
    "steering_program_queue": "semantics",
    "Toeplitz": "toeplitz",
    "numpy_available": "toeplitz",
    "rfc_input": "toeplitz",
    "toeplitz_for": "toeplitz",
    "toeplitz_hash": "toeplitz",
    "toeplitz_hash_batch": "toeplitz",
    "toeplitz_hash_reference": "toeplitz",
    "ReportMismatch": "verify",
    "expected_report": "verify",
    "verify_reports": "verify",
    "VNET_HDR_LAYOUTS": "vnet",
    "VnetHeader": "vnet",
    "build_frame": "vnet",
    "default_layout": "vnet",
    "hash_tail": "vnet",
    "read_hash_fields": "vnet",
    "split_frame": "vnet",
    "write_hash_fields": "vnet",
}

# Hidden from type checkers: with a module __getattr__ they would accept any name at all.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals(), __all__)
