"""``pytun-hash compat``: can a guest configured on host A move to host B?

``compat HOST_A.json HOST_B.json`` reads two documents printed by ``pytun-hash probe --json`` (one per
host), works out what a VMM on each host may advertise to its guest (the virtio-net feature bits
``VIRTIO_NET_F_RSS``, ``_HASH_REPORT``, ``_MQ``, ``_CTRL_VQ`` and the RSS fields of the device
configuration), and compares them: B must offer every feature bit and hash type A advertised, and at
least A's ``rss_max_key_size``, ``rss_max_indirection_table_length`` and queue pairs. ``--queues N``
is the device's queue pairs (one TAP queue each; default 1). On an eBPF host the hash reports are
computed in user space by the VMM; ``--no-user-space-reports`` says the data path (vhost-net) cannot,
so such a host offers no ``VIRTIO_NET_F_HASH_REPORT``. See docs/virtio.md.

JSON keys of ``compat``: ``compatible``, ``a`` and ``b`` (each ``file``, ``semantics`` (the rules RSS
follows there: ``rfc-2023`` on the RFC's kernels, else ``spec``), ``features``,
``feature_bits``, ``max_virtqueue_pairs``, ``rss_max_key_size``, ``rss_max_indirection_table_length``,
``supported_hash_types``, ``withheld`` (why a feature is not offered) and ``host`` (``backend``,
``revision``, ``types`` ...)), ``differences`` (each ``field``, ``a``, ``b``, ``message``), ``notes``
(a compatible move that still changes something the guest sees: the two hosts follow different rules).

Exit status: 0 compatible; 1 not compatible; 2 a file that cannot be read or is not a probe document.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from pytun_hash._files import open_regular_file
from pytun_hash.cli.args import int_arg
from pytun_hash.cli.output import ExitCode, Output, help_text, pairs
from pytun_hash.errors import ValidationError, clip
from pytun_hash.virtio.negotiation import Advertisement, advertised, compare, host_from_probe

__all__ = ["MAX_PROBE_BYTES", "add_parser", "run"]

#: The largest probe document read, bytes (a real one is about 2 KiB).
MAX_PROBE_BYTES = 1 << 20


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``compat``."""
    p = sub.add_parser(
        "compat",
        parents=parents,
        description=help_text(__doc__, "compat"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("host_a", metavar="HOST_A.json", help="`pytun-hash probe --json` of the host the guest runs on")
    p.add_argument("host_b", metavar="HOST_B.json", help="`pytun-hash probe --json` of the host it would move to")
    p.add_argument("--queues", type=int_arg, default=1, metavar="N", help="queue pairs of the device (default 1)")
    p.add_argument(
        "--no-user-space-reports",
        dest="user_space_reports",
        action="store_false",
        help="the data path cannot fill hash reports in user space (vhost-net): eBPF hosts offer none",
    )
    p.set_defaults(handler=run)


def read_probe(path: str, field: str) -> dict[str, Any]:
    """The JSON object in ``path`` (at most :data:`MAX_PROBE_BYTES`).

    Raises:
        ValidationError: naming ``field`` for a file that cannot be read, is too large, or is not a JSON object.
    """
    with open_regular_file(path, field) as f:
        if os.fstat(f.fileno()).st_size > MAX_PROBE_BYTES:
            raise ValidationError(field, f"{path} is larger than 1 MiB; a probe document is a few KiB")
        try:
            raw = f.read(MAX_PROBE_BYTES + 1)
        except OSError as exc:
            raise ValidationError(field, f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_PROBE_BYTES:
        raise ValidationError(field, f"{path} is larger than 1 MiB; a probe document is a few KiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValidationError(field, f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            field, f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (RecursionError, ValueError) as exc:
        raise ValidationError(field, f"{path}: cannot be parsed: {clip(str(exc), 200)}") from None
    if not isinstance(data, dict):
        raise ValidationError(field, f"{path} holds no JSON object; expected the output of `pytun-hash probe --json`")
    return data


def _advertisement(path: str, field: str, args: argparse.Namespace) -> Advertisement:
    document = read_probe(path, field)
    try:
        host = host_from_probe(document, user_space_reports=args.user_space_reports, name=path)
    except ValidationError as exc:
        raise ValidationError(f"{field}: {exc.field}" if exc.field else field, f"{path}: {exc.rule}") from None
    return advertised(host, queues=args.queues)


def _side(ad: Advertisement, label: str, path: str) -> str:
    dc = ad.device_config
    rows: list[tuple[str, object]] = [
        ("host", f"{path}: {ad.host.describe()}"),
        ("features", ", ".join(f"{m}" for m in ad.to_mapping()["features"]) or "none"),
        ("hash types", "|".join(ad.to_mapping()["supported_hash_types"]) or "none"),
        ("rss_max_key_size", dc.rss_max_key_size),
        ("rss_max_indirection_table_length", dc.rss_max_indirection_table_length),
        ("max_virtqueue_pairs", dc.max_virtqueue_pairs),
    ]
    rows += [("withheld", reason) for reason in ad.withheld]
    return f"{label}\n{pairs(rows, indent='  ')}"


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``compat``; see the module documentation for keys and exit status."""
    a = _advertisement(args.host_a, "HOST_A", args)
    b = _advertisement(args.host_b, "HOST_B", args)
    result = compare(a, b)
    # Not a negotiation field, but the guest sees it: the RFC kernel hashes and steers by rules of its
    # own in a few cases (docs/backends.md), every other host by the specification's.
    from pytun_hash.model.semantics import semantics_for

    rules = (semantics_for(a.host.revision).value, semantics_for(b.host.revision).value)
    notes = []
    if rules[0] != rules[1] and result.compatible:
        notes.append(
            f"A hashes and steers by the {rules[0]} rules and B by the {rules[1]} rules: after the move some "
            "packets (the cases docs/backends.md lists) get another queue or hash report for the same configuration"
        )
    document = {
        "compatible": result.compatible,
        "a": {"file": args.host_a, "semantics": rules[0], **a.to_mapping()},
        "b": {"file": args.host_b, "semantics": rules[1], **b.to_mapping()},
        "differences": [d.to_mapping() for d in result.differences],
        "notes": notes,
    }

    def text() -> str:
        lines = [_side(a, "A (the guest's host now)", args.host_a), _side(b, "B (where it would move)", args.host_b)]
        if result.compatible:
            lines.append("compatible: a guest configured on A can move to B")
            lines += [f"  note: {n}" for n in notes]
        else:
            lines.append("not compatible: B offers less than A advertised")
            lines += [f"  {d.message}" for d in result.differences]
        return "\n".join(lines)

    return out.result(document, text, ExitCode.OK if result.compatible else ExitCode.MISMATCH)
