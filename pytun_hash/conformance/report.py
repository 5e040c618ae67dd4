"""The suite's result as Markdown a kernel developer can paste into a review thread."""

from __future__ import annotations

import json

from pytun_hash.conformance.rules import RuleResult, Status
from pytun_hash.conformance.runner import SuiteResult

__all__ = ["markdown"]

_MARK = {Status.PASS: "pass", Status.DEVIATION: "**deviation**", Status.SKIP: "skip"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _details(result: RuleResult) -> list[str]:
    evidence = json.dumps(result.evidence, indent=2, sort_keys=True, default=str)
    return [
        f"### `{result.id}`: {result.status.value}",
        "",
        f"{result.summary} (expected by: {result.basis.value})",
        "",
        "```json",
        evidence,
        "```",
        "",
    ]


def markdown(suite: SuiteResult) -> str:
    """The report: what ran where, a table of every rule, then the evidence of each deviation."""
    revision = suite.revision.title if suite.revision is not None else "none"
    lines = [
        "## pytun-hash conformance",
        "",
        f"Kernel `{suite.kernel}`, mode {suite.mode.value}, revision {revision}: "
        f"{suite.count(Status.PASS)} pass, {suite.count(Status.DEVIATION)} deviation(s), "
        f"{suite.count(Status.SKIP)} skipped.",
        "",
        "| rule | status | basis | summary |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{r.id}` | {_MARK[r.status]} | {r.basis.value} | {_cell(r.summary)} |" for r in suite.results]
    deviations = [r for r in suite.results if r.status is Status.DEVIATION]
    if deviations:
        lines += ["", "## Evidence", ""]
        for result in deviations:
            lines += _details(result)
    return "\n".join(lines).rstrip() + "\n"
