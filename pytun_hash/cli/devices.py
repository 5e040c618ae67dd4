"""``pytun-hash create`` and ``pytun-hash delete``: persistent TUN/TAP devices.

``create NAME`` makes a persistent device in the current network namespace (run it under
``ip netns exec NS`` for another one): TAP by default, multi-queue when ``--queues`` > 1 (all
the queues are opened once to check that they attach, then closed: the device keeps no queue
until a VMM opens them), with a vnet header whose size and endianness are set on the device
and kept, and an owner/group allowed to open it without CAP_NET_ADMIN. The queue count is
recorded with the device (its intent, kept beside the records of the hashing in force), so
that ``apply --dev NAME`` builds its table over that many queues before any is attached.

JSON keys of ``create``: ``device``, ``ifindex``, ``mode``, ``flags``, ``multi_queue``,
``queues_checked``, ``queues`` (the count recorded for ``apply``), ``intent`` (the intent file's
path), ``vnet_hdr``, ``vnet_hdr_size``, ``vnet_le``, ``owner``, ``group``, ``persist``. ``flags``
are the device's ``IFF_*`` flags as ``TUNGETIFF`` reports them after ``TUNSETPERSIST``
(``IFF_PERSIST`` included).

``delete NAME`` clears the persist flag (``TUNSETPERSIST 0``): the device goes away when the
last queue fd is closed, at once when nobody else holds one; what pytun_hash kept for it (its
intent, and the record and pins of the hashing that went with it) is removed. ``--force`` deletes it through
rtnetlink even while queues are held (their fds then fail with ``EBADFD``).

JSON keys of ``delete``: ``device``, ``deleted`` (bool), ``held_elsewhere`` (queues other
processes still hold; the device goes with the last), ``method`` (``persist-off``/``rtnetlink``).
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import pwd
from typing import Any

from pytun_hash._abi import TunFlag
from pytun_hash.cli.common import int_arg, parse_int
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text
from pytun_hash.device import TunTapDevice, rtnl
from pytun_hash.device.record import DeviceId
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BusyError, DeviceNotFoundError, PytunHashError, shorten
from pytun_hash.hashing.state import forget_device, record_intent

__all__ = ["add_parsers", "owner_uid", "run_create", "run_delete"]


def add_parsers(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``create`` and ``delete``."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "create",
        parents=parents,
        description=help_text(__doc__, "create"),
        formatter_class=fmt,
    )
    p.add_argument("name", help="interface name (1..15 bytes)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--tap", dest="mode", action="store_const", const=DeviceMode.TAP, help="Ethernet frames (default)"
    )
    kind.add_argument("--tun", dest="mode", action="store_const", const=DeviceMode.TUN, help="raw IP packets")
    p.set_defaults(mode=DeviceMode.TAP)
    p.add_argument("--queues", type=int_arg, default=1, metavar="N", help="number of queues (> 1 makes it multi-queue)")
    p.add_argument("--multi-queue", action="store_true", help="multi-queue even with one queue")
    p.add_argument(
        "--vnet-hdr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="frames carry a virtio-net header",
    )
    p.add_argument(
        "--vnet-hdr-size", type=int_arg, metavar="BYTES", help="vnet header size: 10, 12, or 20 for hash reports"
    )
    p.add_argument("--vnet-le", action="store_true", help="little-endian vnet headers (virtio 1.0; needed for reports)")
    p.add_argument("--packet-info", action="store_true", help="frames carry the 4-byte tun_pi header")
    p.add_argument("--owner", metavar="USER", help="user (name or uid) allowed to open the device")
    p.add_argument("--group", metavar="GROUP", help="group (name or gid) allowed to open the device")
    p.set_defaults(handler=run_create)

    d = sub.add_parser(
        "delete",
        parents=parents,
        description=help_text(__doc__, "delete"),
        formatter_class=fmt,
    )
    d.add_argument("name", help="interface name")
    d.add_argument("--force", action="store_true", help="delete at once even while other processes hold queues")
    d.set_defaults(handler=run_delete)


#: The longest user or group name looked up (the kernel's and glibc's LOGIN_NAME_MAX).
MAX_ACCOUNT_NAME = 256


def _account_name(text: str, field: str, what: str) -> str:
    """``text`` when it can be a user or group name: printable ASCII without ':', '/' or spaces, at
    most :data:`MAX_ACCOUNT_NAME` characters.

    Checked before the name server sees it: systemd's NSS module aborts the whole process (an
    assertion) on a name of more than 4 MiB, and no such name exists anyway.
    """
    if len(text) > MAX_ACCOUNT_NAME or not text.isascii() or not text.isprintable() or any(c in text for c in ": /"):
        raise CliError(
            f"{shorten(text)} cannot be a {what} name (printable ASCII without ':', '/' or spaces, "
            f"at most {MAX_ACCOUNT_NAME} characters)",
            f"give a {what} name from /etc/{'passwd' if what == 'user' else 'group'} or a numeric id in ASCII digits",
            field=field,
        )
    return text


def owner_uid(text: str) -> int:
    """The uid ``--owner`` names: a user name from /etc/passwd or a numeric uid in ASCII digits.

    Raises:
        CliError: for a malformed name or an unknown user.
        ValidationError: for a number that is not ASCII digits.
    """
    # isdecimal() is true for digits of any script: parse_int refuses those that are not ASCII
    # rather than taking Arabic-Indic one-zero-zero-zero as uid 1000 or a fullwidth zero as root.
    if text.isdecimal():
        return parse_int(text, "--owner")
    try:
        return pwd.getpwnam(_account_name(text, "--owner", "user")).pw_uid
    except KeyError:
        raise CliError(
            f"no user named {shorten(text)}", "give a user name from /etc/passwd or a numeric uid", field="--owner"
        ) from None


def _gid(text: str) -> int:
    if text.isdecimal():
        return parse_int(text, "--group")
    try:
        return grp.getgrnam(_account_name(text, "--group", "group")).gr_gid
    except KeyError:
        raise CliError(
            f"no group named {shorten(text)}", "give a group name from /etc/group or a numeric gid", field="--group"
        ) from None


def run_create(args: argparse.Namespace, out: Output) -> int:
    """Run ``create``; see the module documentation."""
    owner = owner_uid(args.owner) if args.owner is not None else None
    group = _gid(args.group) if args.group is not None else None
    if args.vnet_hdr_size is not None and not args.vnet_hdr:
        raise CliError("--vnet-hdr-size needs a vnet header", "drop --no-vnet-hdr")
    if args.vnet_le and not args.vnet_hdr:
        raise CliError("--vnet-le needs a vnet header", "drop --no-vnet-hdr")
    try:
        device = TunTapDevice.create(
            args.name,
            mode=args.mode,
            queues=args.queues,
            vnet_hdr=args.vnet_hdr,
            packet_info=args.packet_info,
            multi_queue=True if args.multi_queue else None,
            persist=True,
            owner=owner,
            group=group,
            exclusive=True,
        )
    except BusyError as exc:
        raise CliError(
            f"a device named {args.name!r} exists already ({exc.request}: EBUSY)",
            f"pick another name, or delete it first with `pytun-hash delete {args.name}`",
            ExitCode.KERNEL,
        ) from None
    with device:
        try:
            if args.vnet_hdr_size is not None:
                device.set_vnet_hdr_size(args.vnet_hdr_size)
            if args.vnet_le:
                device.set_vnet_le(True)
            queues = args.queues if device.multi_queue else 1
            intent = record_intent(device.device_id(), queues)
            document: dict[str, Any] = {
                "device": device.name,
                "ifindex": device.ifindex,
                "mode": device.mode.value,
                # The kernel's own word after TUNSETPERSIST, so IFF_PERSIST is there when "persist" is.
                "flags": [m.name for m in TunFlag if m & device.getiff()],
                "multi_queue": device.multi_queue,
                "queues_checked": len(device.attached_queues),
                "queues": queues,
                "intent": intent,
                "vnet_hdr": device.vnet_hdr,
                "vnet_hdr_size": device.get_vnet_hdr_size() if device.vnet_hdr else None,
                "vnet_le": device.get_vnet_le() if device.vnet_hdr else None,
                "owner": owner,
                "group": group,
                "persist": True,
            }
        except BaseException:
            # Leave nothing half-configured behind: the device was made by this call.
            device.set_persist(False)
            with contextlib.suppress(PytunHashError):
                forget_device(device.device_id())
            raise

    def text() -> str:
        vnet = (
            f"vnet header {document['vnet_hdr_size']} bytes{' little-endian' if document['vnet_le'] else ''}"
            if device.vnet_hdr
            else "no vnet header"
        )
        mq = (
            f"multi-queue for {queues} queues (all {document['queues_checked']} checked; the count is recorded "
            f"for `pytun-hash apply --dev {device.name}`)"
            if document["multi_queue"]
            else "single-queue"
        )
        who = ""
        if owner is not None or group is not None:
            who = f", owner {owner if owner is not None else '-'} group {group if group is not None else '-'}"
        return f"created persistent {device.mode.value} {device.name}: {mq}, {vnet}{who}"

    out.result(document, text)
    return int(ExitCode.OK)


def _exists(name: str) -> rtnl.LinkInfo | None:
    try:
        return rtnl.get_link(name)
    except DeviceNotFoundError:
        return None


def run_delete(args: argparse.Namespace, out: Output) -> int:
    """Run ``delete``; see the module documentation."""
    link = _exists(args.name)
    if link is None:
        raise CliError(
            f"no device named {args.name!r} in this network namespace",
            "check the name with `ip link` (and the namespace)",
            ExitCode.KERNEL,
        )
    if link.tun is None:
        raise CliError(
            f"{args.name!r} is a {link.kind or 'non-tun'} device, not a TUN/TAP device",
            "pytun-hash only deletes TUN/TAP devices; use `ip link del` for others",
            ExitCode.KERNEL,
        )
    method = "persist-off"
    held = 0
    try:
        with TunTapDevice.open(args.name) as device:
            device.set_persist(False)
    except BusyError:
        # A single-queue device whose queue another process holds: it cannot be opened.
        if not args.force:
            raise CliError(
                f"{args.name!r} is a single-queue device held by another process",
                "it goes away when that process closes it, unless it is persistent; --force deletes it now",
                ExitCode.KERNEL,
            ) from None
    after = _exists(args.name)
    if after is not None and after.index == link.index and args.force:
        with contextlib.suppress(DeviceNotFoundError):  # the last holder may have closed it meanwhile
            rtnl.delete_link(args.name)
        method = "rtnetlink"
        after = _exists(args.name)
    deleted = after is None or after.index != link.index
    if deleted:
        stale = forget_device(DeviceId(rtnl.thread_netns_inode(), link.index, link.name))
        if stale is not None:
            out.warn(f"the hashing recorded for {args.name} went with it; its record and pins were removed")
    if not deleted and after is not None and after.tun is not None:
        held = after.tun.numqueues or 1
    document = {"device": args.name, "deleted": deleted, "held_elsewhere": held, "method": method}
    if deleted:
        text = f"deleted {args.name}"
    else:
        text = (
            f"{args.name} is no longer persistent; other processes hold {held} queue(s), it goes away "
            "when they close them (use --force to delete it now)"
        )
    out.result(document, text)
    return int(ExitCode.OK)
