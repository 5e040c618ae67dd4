"""Which rules are in force: the semantics of each hash UAPI revision and backend, stated once.

Every prediction and verification in the package asks :func:`semantics_for` rather than assuming
the virtio specification, because the kernels that carry the series do not all compute the same
values:

========  ===============  ==================================================================
revision  semantics        source
========  ===============  ==================================================================
RFC       ``RFC_2023``     the RFC's ``virtio_net_hash()`` (patch 4/7 of 8 Oct 2023) and its
                           selftest's expected values (patch 6/7); verified frame by frame on a
                           kernel carrying patches 1/7-5/7: input words byte-reversed on
                           little-endian hosts, a zero table entry means "unclassified",
                           unclassified frames use ``table[0]``, fragments hash as TCP/UDP with
                           ports 0, no hash at all with fewer than 2 queues.
v3-v9     ``SPEC``         *inferred from the patch texts, not observed on a kernel*: from v3 the
                           input is loaded big-endian (standard Toeplitz) and report NONE goes to
                           ``unclassified_queue``; from v5 fragments hash as IP only. v3 and v4
                           still hashed fragments as TCP/UDP with ports 0 (not modelled).
v10-v11   ``SPEC``         the v10 selftest (08/10) expects the standard Toeplitz values.
v12       ``SPEC``         as v10; verified on a v12 kernel (540/540 frames: queue, value, report).
eBPF      ``SPEC``         pytun_hash's own steering program and user-space reports.
========  ===============  ==================================================================

Report-only mode (hash reports with automatic queue selection, no RSS) is where the revisions
part further: the RFC reports the Toeplitz value, while v3 and later report the value of the
automatic queue choice, not a Toeplitz hash: ``skb->hash`` when the frame carries an L4 hash
(not predictable from the frame), otherwise the index of the queue the frame was steered to
(observed on v12: 180/180 frames injected without an L4 hash). :func:`report_only_value` says
which; :class:`ReportOnlyValue` names the cases.

:func:`steering_program_queue` says what tun does with a steering program's return value, which
changed in v10: ``TUN_STEERINGEBPF_FALLBACK`` (-1) then defers to RSS or automatic selection,
where earlier kernels truncate it to a queue number like any other value.
"""

from __future__ import annotations

import enum

from pytun_hash._abi.revision import Revision, require_revision
from pytun_hash.errors import ValidationError
from pytun_hash.model.classify import Semantics

__all__ = ["ReportOnlyValue", "report_only_value", "semantics_for", "steering_program_queue"]


def semantics_for(revision: Revision | None) -> Semantics:
    """The hashing rules a kernel of ``revision`` follows; None means the eBPF backend (the specification).

    Raises:
        ValidationError: when ``revision`` is neither None nor a :class:`Revision` member.
    """
    if revision is None:
        return Semantics.SPEC
    return Semantics.RFC_2023 if require_revision(revision) is Revision.RFC else Semantics.SPEC


class ReportOnlyValue(enum.Enum):
    """What ``hash_value`` holds when reports are on and RSS is off (automatic queue selection).

    ``TOEPLITZ``: the Toeplitz hash under the revision's semantics, as with RSS (the RFC, and
    user-space reports on the eBPF backend). ``AUTOMQ``: the value of the automatic queue choice
    (v3 and later): the index of the queue the frame was steered to when the frame had no L4
    hash, else ``skb->hash``, which depends on the sender's socket and is not predictable.
    """

    TOEPLITZ = "toeplitz"
    AUTOMQ = "automq"


def report_only_value(revision: Revision | None) -> ReportOnlyValue:
    """What a device of ``revision`` reports without RSS; None means the eBPF backend.

    Raises:
        ValidationError: when ``revision`` is neither None nor a :class:`Revision` member.
    """
    if revision is None or require_revision(revision) is Revision.RFC:
        return ReportOnlyValue.TOEPLITZ
    return ReportOnlyValue.AUTOMQ


def steering_program_queue(result: int, num_queues: int, revision: Revision | None = None) -> int | None:
    """The queue tun picks for a steering program that returned ``result``.

    Args:
        result: the program's return value, as a u32 (-1 is taken as 0xffffffff).
        num_queues: attached queues, at least 1.
        revision: the kernel's hash revision; None for a kernel without the series (mainline).

    Returns:
        ``(u16)result % num_queues``; or None from v10 on when ``result`` is
        ``TUN_STEERINGEBPF_FALLBACK`` (0xffffffff): the kernel then uses RSS when it is set, else
        automatic selection.

    Raises:
        ValidationError: for ``num_queues`` < 1, a ``result`` outside the u32/s32 range, or a bad
            ``revision``.
    """
    if isinstance(num_queues, bool) or not isinstance(num_queues, int) or num_queues < 1:
        raise ValidationError("num_queues", f"must be an integer >= 1, got {num_queues!r}")
    if isinstance(result, bool) or not isinstance(result, int) or not -(1 << 31) <= result <= 0xFFFFFFFF:
        raise ValidationError("result", f"must be a 32-bit program return value, got {result!r}")
    result &= 0xFFFFFFFF
    if revision is not None and require_revision(revision).steering_precedence and result == 0xFFFFFFFF:
        return None
    return (result & 0xFFFF) % num_queues
