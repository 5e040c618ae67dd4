"""A small suite result (a pass, a deviation with evidence, a skip) shared by the framework and CLI tests."""

from __future__ import annotations

from pytun_hash._abi import Revision
from pytun_hash.conformance import Basis, Mode, RuleResult, Status, SuiteResult


def sample_suite() -> SuiteResult:
    """The sample: emulated RFC on kernel "6.6.0-test"."""
    results = (
        RuleResult("uapi.capability", Status.PASS, "CAP answers {128, 0x3f}", {"observed": "8000 0000 3f00 0000"}),
        RuleResult(
            "uapi.key-length",
            Status.DEVIATION,
            "4 key bytes read for types without IPv4 | documented: 40",
            {"inputs": {"types": "0x38"}, "expected": 40, "observed": 4},
            Basis.UAPI,
        ),
        RuleResult("data.vlan", Status.SKIP, "no data path here"),
    )
    return SuiteResult("6.6.0-test", Mode.EMULATED, Revision.RFC, results)
