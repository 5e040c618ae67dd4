"""Check the hash reports a device wrote against the software model."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport
from pytun_hash.config import VnetHashConfig
from pytun_hash.errors import ValidationError
from pytun_hash.model._bytes import BytesLike
from pytun_hash.model.classify import FlowHash, Semantics, classify
from pytun_hash.model.packet import Framing
from pytun_hash.model.semantics import ReportOnlyValue
from pytun_hash.model.vnet import read_hash_fields

__all__ = ["ReportMismatch", "expected_report", "verify_reports"]

_NOT_REPORTED = FlowHash(0, HashReport.NONE, b"")


@attrs.frozen
class ReportMismatch:
    """One buffer whose reported hash disagrees with the model, or that the model cannot predict.

    Attributes:
        index: position of the buffer in the input, from 0.
        expected: what the model computed (value 0 and NONE where nothing should be reported).
        hash_value: the value read from the header, or None when the buffer was too short.
        hash_report: the raw report value read (an unknown value stays an int), or None.
        problem: a sentence saying what differs.
        predictable: False when the value is one the model cannot know (report-only mode of v3
            and later: ``skb->hash`` of a frame that carried an L4 hash); such a buffer is not a
            mismatch, only unverified.
    """

    index: int
    expected: FlowHash
    hash_value: int | None
    hash_report: HashReport | int | None
    problem: str
    predictable: bool = True


def expected_report(
    config: VnetHashConfig,
    frame: BytesLike,
    *,
    l2: Framing = Framing.ETHERNET,
    semantics: Semantics = Semantics.SPEC,
    num_queues: int | None = None,
    report_only: ReportOnlyValue = ReportOnlyValue.TOEPLITZ,
    queue: int | None = None,
) -> FlowHash:
    """The hash value and report a device with ``config`` writes for ``frame``.

    Nothing is reported (value 0, NONE) when ``config.report`` is off, or when ``num_queues`` is
    given and below 2: a kernel hashes only when it selects among queues (the RFC and every later
    revision). Leave ``num_queues`` None for reports filled in user space (the eBPF backend's
    :class:`~pytun_hash.bpf.HashReporter`), which do not depend on it. Without RSS, ``report_only``
    says what the value is: the Toeplitz hash, or (v3 and later, :data:`ReportOnlyValue.AUTOMQ`)
    the index of the queue the frame was steered to, ``queue``, for frames without an L4 hash.

    Raises:
        ValidationError: when ``num_queues`` is given and below 1, or ``report_only`` is AUTOMQ
            without ``queue``.
    """
    if num_queues is not None and (isinstance(num_queues, bool) or not isinstance(num_queues, int) or num_queues < 1):
        raise ValidationError("num_queues", f"must be an integer >= 1, got {num_queues!r}")
    if not config.report:
        return _NOT_REPORTED
    if num_queues is not None and num_queues < 2:
        return _NOT_REPORTED
    flow = classify(frame, config.types, config.key, l2=l2, semantics=semantics)
    if not config.rss and report_only is ReportOnlyValue.AUTOMQ:
        if queue is None:
            raise ValidationError("queue", "report-only hashes of v3 and later are queue indexes: name the queue read")
        return FlowHash(queue, flow.report, flow.hashed)
    return flow


def verify_reports(
    buffers: Iterable[BytesLike],
    config: VnetHashConfig,
    *,
    vnet_hdr_size: int = VIRTIO_NET_HDR_V1_HASH_SIZE,
    l2: Framing = Framing.ETHERNET,
    semantics: Semantics = Semantics.SPEC,
    num_queues: int | None = None,
    report_only: ReportOnlyValue = ReportOnlyValue.TOEPLITZ,
    queue: int | None = None,
) -> list[ReportMismatch]:
    """Compare the ``hash_value``/``hash_report`` of buffers read from a queue with the model.

    Args:
        buffers: what ``read()`` returned, each a ``virtio_net_hdr_v1_hash`` (in a vnet header of
            ``vnet_hdr_size`` bytes) followed by the frame.
        config: the device's hashing configuration (its types, key and report flag count).
        vnet_hdr_size: the queue's vnet header size, at least 20 bytes.
        l2: the frames' framing.
        semantics: the rules in force (:func:`~pytun_hash.model.semantics_for` of the revision or
            backend).
        num_queues: the device's queue count when the kernel wrote the reports (no hash below 2);
            None for reports filled in user space.
        report_only: what a report-only device reports (:func:`~pytun_hash.model.report_only_value`).
        queue: the index of the queue the buffers were read from (needed for AUTOMQ).

    Returns:
        One :class:`ReportMismatch` per disagreeing buffer, in input order; empty when all agree.

    Raises:
        ValidationError: when ``vnet_hdr_size`` is below 20 (no hash fields) or ``num_queues`` < 1.
    """
    if (
        isinstance(vnet_hdr_size, bool)
        or not isinstance(vnet_hdr_size, int)
        or vnet_hdr_size < VIRTIO_NET_HDR_V1_HASH_SIZE
    ):
        raise ValidationError(
            "vnet_hdr_size", f"hash reports need a vnet header of at least {VIRTIO_NET_HDR_V1_HASH_SIZE} bytes"
        )
    mismatches: list[ReportMismatch] = []
    for index, buffer in enumerate(buffers):
        frame = bytes(buffer[vnet_hdr_size:])
        expected = expected_report(
            config, frame, l2=l2, semantics=semantics, num_queues=num_queues, report_only=report_only, queue=queue
        )
        if len(buffer) < vnet_hdr_size:
            mismatches.append(
                ReportMismatch(
                    index, expected, None, None, f"buffer of {len(buffer)} bytes is shorter than the vnet header"
                )
            )
            continue
        value, raw_report = read_hash_fields(buffer)
        report: HashReport | int = HashReport(raw_report) if raw_report in HashReport._value2member_map_ else raw_report
        problems = []
        if value != expected.hash_value:
            problems.append(f"hash_value {value:#010x}, model {expected.hash_value:#010x}")
        if report != expected.report:
            shown = report.name if isinstance(report, HashReport) else f"unknown value {report}"
            problems.append(f"hash_report {shown}, model {expected.report.name}")
        if problems:
            automq = not config.rss and report_only is ReportOnlyValue.AUTOMQ
            if automq and report == expected.report and value != expected.hash_value:
                # The kernel reported skb->hash: the frame carried an L4 hash, which the model
                # cannot know. Unverified, not wrong.
                problems = [f"hash_value {value:#010x} is not the queue index {queue}: skb->hash, not predictable"]
                mismatches.append(ReportMismatch(index, expected, value, report, problems[0], predictable=False))
            else:
                mismatches.append(ReportMismatch(index, expected, value, report, "; ".join(problems)))
    return mismatches
