"""``pytun-hash conformance``: where a kernel's virtio-net hashing departs from the specification and its UAPI.

``conformance`` runs the rules of :mod:`pytun_hash.conformance` as root, on scratch multi-queue TAPs
in a private network namespace, with raw calls (it measures the kernel, never the binding's
workarounds). Each rule says ``pass``, ``deviation`` or ``skip`` in one line, with its evidence
(inputs, expected, observed) and the basis of its expectation (``spec``: the virtio
specification; ``uapi``: the revision's documented UAPI; ``choice``: both are silent, and the
project's documented choice is used).

Where: natively (default) on the running kernel's hash ioctls, held to the UAPI of the revision it
answers (``--revision R`` holds it to another); ``--emulate R`` under pytun_hash's kernel emulator of
revision R, data path included, on any kernel; ``--backend ebpf`` the data rules against pytun_hash's
generated steering program (no hash ioctls there: the uapi rules are skipped). ``--rules GLOB``
(repeatable, or comma-separated) picks rules by id: ``uapi.*``, ``data.toeplitz``. ``--report FILE``
also writes the result as Markdown for a review thread (mode 0600; an existing FILE only with
``--force``).

Exit status: 0 when no rule deviates, 1 when one does; 4 natively on a kernel without the hash
ioctls (every rule would be skipped: use ``--emulate`` or ``--backend ebpf``).

JSON keys: ``kernel`` (release), ``revision``, ``mode`` (``native``, ``emulated``, ``ebpf``),
``rules`` (list of {``id``, ``status``, ``summary``, ``basis``, ``evidence``}), ``counts`` ({``pass``,
``deviation``, ``skip``}), ``report`` (the Markdown file written, or null).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pytun_hash._abi import Revision
from pytun_hash._files import check_target, write_file
from pytun_hash.backend import Backend
from pytun_hash.cli.common import add_backend_argument, parse_revision
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text, table
from pytun_hash.conformance import Mode, Rule, RuleResult, Status, SuiteResult, markdown, run_suite
from pytun_hash.errors import ValidationError

__all__ = ["add_parser", "run_conformance"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``conformance``."""
    p = sub.add_parser(
        "conformance",
        parents=parents,
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--revision", type=parse_revision, metavar="REV", help="natively, held to revision REV's UAPI (rfc, v3..v12)"
    )
    where.add_argument(
        "--emulate", type=parse_revision, metavar="REV", help="under the kernel emulator of revision REV"
    )
    add_backend_argument(where, help="ebpf: the data rules against pytun_hash's steering program")
    p.add_argument(
        "--rules",
        action="append",
        metavar="GLOB",
        help="rule ids to run, shell patterns (uapi.*, data.toeplitz); repeatable or comma-separated",
    )
    p.add_argument("--report", metavar="FILE", help="also write the result as Markdown to FILE (mode 0600)")
    p.add_argument("--force", action="store_true", help="with --report: replace an existing regular FILE")
    p.set_defaults(handler=run_conformance)


def _mode(args: argparse.Namespace) -> tuple[Mode, Revision | None]:
    if args.emulate is not None:
        return Mode.EMULATED, args.emulate
    if args.backend is Backend.EBPF:
        return Mode.EBPF, None
    if args.backend is Backend.NATIVE or args.backend is Backend.AUTO:
        return Mode.NATIVE, args.revision
    raise CliError(f"--backend {args.backend.value} is not a conformance mode", "use --backend ebpf, or none")


def _patterns(args: argparse.Namespace) -> list[str] | None:
    if not args.rules:
        return None
    return [p.strip() for given in args.rules for p in given.split(",") if p.strip()]


_MARK = {Status.PASS: "pass", Status.DEVIATION: "DEVIATION", Status.SKIP: "skip"}


def _text(suite: SuiteResult, report: str | None) -> str:
    revision = suite.revision.title if suite.revision is not None else "none"
    lines = [f"conformance of kernel {suite.kernel}: mode {suite.mode.value}, revision {revision}"]
    lines.append(table(("rule", "status", "basis", "summary"), [_row(r) for r in suite.results]))
    lines.append(
        f"{suite.count(Status.PASS)} pass, {suite.count(Status.DEVIATION)} deviation(s), "
        f"{suite.count(Status.SKIP)} skipped" + ("" if suite.ok else ": `--json` or --report FILE shows the evidence")
    )
    if report:
        lines.append(f"report written to {report}")
    return "\n".join(lines)


def _row(result: RuleResult) -> tuple[str, str, str, str]:
    return (result.id, _MARK[result.status], result.basis.value, result.summary)


def _report_error(write: Callable[[], None]) -> None:
    try:
        write()
    except ValidationError as exc:
        raise CliError(
            f"--report: {exc.rule}",
            "name a new file in a writable directory (--force replaces an existing regular file)",
            field="report",
        ) from None


def run_conformance(args: argparse.Namespace, out: Output) -> int:
    """Run ``conformance``; see the module documentation."""
    if args.force and not args.report:
        raise CliError("--force only works with --report", "drop --force, or add --report FILE")
    mode, revision = _mode(args)
    patterns = _patterns(args)
    if args.report:
        # Checked before the run, so a report that cannot be written does not cost it.
        _report_error(lambda: check_target(args.report, "report", overwrite=args.force))
    with out.progress("conformance rules") as progress:
        done = [0]

        def step(rule: Rule, result: RuleResult) -> None:
            done[0] += 1
            progress.update(done[0])

        suite = run_suite(mode, revision=revision, rules=patterns, progress=step)
    if mode is Mode.NATIVE and suite.revision is None:
        raise CliError(
            "this kernel answers none of the hash ioctls: there is nothing native to check",
            "run `pytun-hash conformance --emulate v12` (any revision) or `--backend ebpf`",
            ExitCode.UNSUPPORTED,
        )
    if args.report:
        _report_error(lambda: write_file(args.report, markdown(suite).encode(), "report", overwrite=args.force))
    document = suite.to_mapping()
    document.pop("ok")
    document["counts"] = {s.value: suite.count(s) for s in Status}
    document["report"] = args.report
    return out.result(document, lambda: _text(suite, args.report), ExitCode.OK if suite.ok else ExitCode.MISMATCH)
