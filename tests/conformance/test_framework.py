"""The conformance suite's framework: rule registry and selection, results as JSON and Markdown, the CLI."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytun_hash.conformance import (
    Rule,
    RuleResult,
    Status,
    markdown,
    rule,
    select,
)
from pytun_hash.conformance import rules as rules_module
from pytun_hash.errors import ValidationError
from tests.conformance.samples import sample_suite


def _never(ctx: Any) -> RuleResult:
    raise AssertionError("not run")


RULES = [
    Rule("uapi.capability", "cap", _never),
    Rule("uapi.byte-counts", "bytes", _never),
    Rule("data.queue", "q", _never),
]


def test_select_by_shell_patterns_keeps_the_suite_order() -> None:
    assert select(None, RULES) == RULES
    assert [r.id for r in select(["data.*", "uapi.cap*"], RULES)] == ["uapi.capability", "data.queue"]
    with pytest.raises(ValidationError, match=r"no rule matches uapi\.nope"):
        select(["uapi.nope"], RULES)


def test_rule_ids_are_checked_and_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules_module, "RULES", [])
    rule("data.x", "x")(_never)
    with pytest.raises(ValidationError, match="twice"):
        rule("data.x", "x again")(_never)
    with pytest.raises(ValidationError, match=r"uapi\.<name> or data\.<name>"):
        rule("other.x", "x")(_never)
    assert [r.id for r in rules_module.RULES] == ["data.x"] and rules_module.RULES[0].family == "data"


def test_suite_result_as_json() -> None:
    suite = sample_suite()
    doc = suite.to_mapping()
    assert doc["ok"] is False and not suite.ok and doc["mode"] == "emulated" and doc["revision"] == "rfc"
    assert [r["status"] for r in doc["rules"]] == ["pass", "deviation", "skip"]
    assert doc["rules"][1] == {
        "id": "uapi.key-length",
        "status": "deviation",
        "summary": "4 key bytes read for types without IPv4 | documented: 40",
        "basis": "uapi",
        "evidence": {"inputs": {"types": "0x38"}, "expected": 40, "observed": 4},
    }
    assert (suite.count(Status.PASS), suite.count(Status.DEVIATION), suite.count(Status.SKIP)) == (1, 1, 1)
    json.dumps(doc)


def test_markdown_report_has_a_row_per_rule_and_the_evidence_of_each_deviation() -> None:
    text = markdown(sample_suite())
    assert "Kernel `6.6.0-test`, mode emulated, revision RFC (8 Oct 2023): 1 pass, 1 deviation(s), 1 skipped." in text
    row = "| `uapi.key-length` | **deviation** | uapi | 4 key bytes read for types without IPv4 \\| documented: 40 |"
    assert row in text
    assert text.count("### `") == 1 and '"observed": 4' in text and "```json" in text
