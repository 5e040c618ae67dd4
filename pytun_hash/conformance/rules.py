"""The vocabulary of the conformance suite: rules, their outcomes and evidence, and the registry.

A rule checks one property of a kernel's virtio-net hashing with raw calls and says ``pass``,
``deviation`` or ``skip``, in one line, with the evidence behind it (inputs, expected, observed)
and the basis of its expectation: the virtio specification, the revision's documented UAPI, or,
where both are silent, the project's documented choice.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from pytun_hash.errors import ValidationError

if TYPE_CHECKING:
    from pytun_hash.conformance.context import Context

__all__ = [
    "RULES",
    "Basis",
    "Rule",
    "RuleResult",
    "Status",
    "rule",
    "select",
]


class Status(enum.Enum):
    """A rule's outcome."""

    #: The kernel does what the basis says.
    PASS = "pass"
    #: It does something else; the evidence shows what.
    DEVIATION = "deviation"
    #: The rule does not apply here (the mode, the revision, or a missing facility); the summary says why.
    SKIP = "skip"


class Basis(enum.Enum):
    """Where a rule's expectation comes from."""

    #: The virtio specification (the model's ``Semantics.SPEC``).
    SPEC = "spec"
    #: The revision's documented UAPI (its patch's header comments and documentation).
    UAPI = "uapi"
    #: Both are silent; the project's documented choice (the rule's description says which).
    CHOICE = "choice"


def _evidence(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen
class RuleResult:
    """One rule's outcome on one kernel.

    Attributes:
        id: the rule's id (``uapi.byte-counts``, ``data.toeplitz`` ...).
        status: pass, deviation or skip.
        summary: one line that says what was found.
        evidence: JSON-able facts behind it; by convention ``inputs``, ``expected`` and
            ``observed``, and for a deviation the cases that departed (at most a few, and how many).
        basis: where the expectation comes from.
    """

    id: str
    status: Status
    summary: str
    evidence: dict[str, Any] = attrs.field(factory=dict, converter=_evidence)
    basis: Basis = Basis.SPEC

    def to_mapping(self) -> dict[str, Any]:
        """The result as JSON: ``id``, ``status``, ``summary``, ``basis``, ``evidence``."""
        return {
            "id": self.id,
            "status": self.status.value,
            "summary": self.summary,
            "basis": self.basis.value,
            "evidence": self.evidence,
        }


RuleCheck = Callable[["Context"], RuleResult]


@attrs.frozen
class Rule:
    """A check of one property.

    Attributes:
        id: ``<family>.<name>``; the family is ``uapi`` (the ioctls) or ``data`` (frames).
        title: what the rule checks, one line.
        check: the function that runs it on a :class:`~pytun_hash.conformance.context.Context`.
    """

    id: str
    title: str
    check: RuleCheck = attrs.field(repr=False)

    @property
    def family(self) -> str:
        """``uapi`` or ``data``."""
        return self.id.split(".", 1)[0]

    def result(self, status: Status, summary: str, *, basis: Basis = Basis.SPEC, **evidence: Any) -> RuleResult:
        """A :class:`RuleResult` of this rule."""
        return RuleResult(self.id, status, summary, evidence, basis)


#: Every rule, filled by :func:`rule` (the suite runs uapi rules first, then data: :func:`select`).
RULES: list[Rule] = []


def rule(rule_id: str, title: str) -> Callable[[RuleCheck], RuleCheck]:
    """Register the decorated function as the check of rule ``rule_id``.

    Raises:
        ValidationError: for an id registered twice or not of the form ``uapi.x`` / ``data.x``.
    """

    def register(check: RuleCheck) -> RuleCheck:
        family, dot, name = rule_id.partition(".")
        if family not in ("uapi", "data") or not dot or not name:
            raise ValidationError("rule", f"rule ids are uapi.<name> or data.<name>, got {rule_id}")
        if any(r.id == rule_id for r in RULES):
            raise ValidationError("rule", f"rule {rule_id} is registered twice")
        RULES.append(Rule(rule_id, title, check))
        return check

    return register


def select(patterns: Iterable[str] | None, rules: Iterable[Rule] | None = None) -> list[Rule]:
    """The rules whose id matches any of the shell-style ``patterns`` (all of them for None).

    Raises:
        ValidationError: when a pattern matches no rule (a typo would otherwise run nothing).
    """
    # uapi before data whatever the order the rule modules were imported in.
    known = sorted(RULES if rules is None else rules, key=lambda r: r.family != "uapi")
    if patterns is None:
        return known
    chosen: list[Rule] = []
    for pattern in patterns:
        matched = [r for r in known if fnmatch.fnmatchcase(r.id, pattern)]
        if not matched:
            raise ValidationError("rules", f"no rule matches {pattern}; rules: {', '.join(r.id for r in known)}")
        chosen.extend(r for r in matched if r not in chosen)
    return [r for r in known if r in chosen]
