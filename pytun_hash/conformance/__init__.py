"""A conformance suite for kernel implementations of tun's virtio-net hashing.

For a kernel in front of it, the suite says where the hash ioctls and the data path depart from
the virtio specification and from the documented UAPI of the revision they implement, with
evidence: :func:`run_suite` runs the rules (:data:`RULES`, ids ``uapi.*`` and ``data.*``) on scratch
TAPs in a private network namespace with raw calls, natively, under the kernel emulator of any
revision, or against pytun_hash's own eBPF steering program; :func:`markdown` writes the report.
``pytun-hash conformance`` is its command line.
"""

from __future__ import annotations

from pytun_hash.conformance.context import Context, Mode
from pytun_hash.conformance.report import markdown
from pytun_hash.conformance.rules import RULES, Basis, Rule, RuleResult, Status, rule, select
from pytun_hash.conformance.runner import SuiteResult, run_suite

__all__ = [
    "RULES",
    "Basis",
    "Context",
    "Mode",
    "Rule",
    "RuleResult",
    "Status",
    "SuiteResult",
    "markdown",
    "rule",
    "run_suite",
    "select",
]
