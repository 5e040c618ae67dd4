"""Which rules each revision and backend follows, stated once (pytun_hash.model.semantics)."""

from __future__ import annotations

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, HashReport, Revision, VnetHashConfig
from pytun_hash.errors import ValidationError
from pytun_hash.model import (
    ReportOnlyValue,
    Semantics,
    classify,
    report_only_value,
    semantics_for,
    steering_program_queue,
    verify_reports,
)
from pytun_hash.model.frames import ethernet, ipv4, udp


def test_semantics_per_revision() -> None:
    assert semantics_for(Revision.RFC) is Semantics.RFC_2023
    assert [semantics_for(r) for r in (Revision.V3, Revision.V10, Revision.V12, None)] == [Semantics.SPEC] * 4
    with pytest.raises(ValidationError):
        semantics_for("rfc")  # type: ignore[arg-type]


def test_report_only_values_per_revision() -> None:
    assert report_only_value(Revision.RFC) is ReportOnlyValue.TOEPLITZ
    assert report_only_value(None) is ReportOnlyValue.TOEPLITZ
    assert {report_only_value(r) for r in (Revision.V3, Revision.V10, Revision.V12)} == {ReportOnlyValue.AUTOMQ}


@pytest.mark.parametrize("revision", [None, *Revision])
def test_steering_program_results(revision: Revision | None) -> None:
    fallback = revision is not None and revision.steering_precedence
    assert steering_program_queue(0x10001, 3, revision) == 1
    assert steering_program_queue(-1, 3, revision) == (None if fallback else 0xFFFF % 3)
    assert steering_program_queue(0xFFFFFFFF, 4, revision) == (None if fallback else 3)
    assert steering_program_queue(0xFFFFFFFE, 4, revision) == 0xFFFE % 4
    for bad in ((1, 0), (1 << 32, 2), (True, 2)):
        with pytest.raises(ValidationError):
            steering_program_queue(*bad, revision)


def test_report_only_automq_values_are_queue_indexes_or_unpredictable() -> None:
    config = VnetHashConfig(report=True, types=0x3F, key=MICROSOFT_RSS_KEY)
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000, 2000)))
    flow = classify(frame, config.types, config.key)
    assert flow.report is HashReport.UDPV4

    def buffer(value: int) -> bytes:
        return bytes(12) + value.to_bytes(4, "little") + int(flow.report).to_bytes(2, "little") + bytes(2) + frame

    automq = {"report_only": ReportOnlyValue.AUTOMQ, "queue": 3}
    assert verify_reports([buffer(3)], config, **automq) == []  # type: ignore[arg-type]
    (unverified,) = verify_reports([buffer(0x12345678)], config, **automq)  # type: ignore[arg-type]
    assert not unverified.predictable and "not predictable" in unverified.problem
    # Under the RFC (or eBPF) the same buffer is simply wrong, and the Toeplitz value is right.
    (wrong,) = verify_reports([buffer(3)], config)
    assert wrong.predictable
    assert verify_reports([buffer(flow.hash_value)], config) == []
    with pytest.raises(ValidationError, match="queue"):
        verify_reports([buffer(3)], config, report_only=ReportOnlyValue.AUTOMQ)
    # Fewer than 2 queues: nothing is hashed, on any revision.
    assert verify_reports([buffer(0)[:16] + bytes(4) + frame], config, num_queues=1) == []
