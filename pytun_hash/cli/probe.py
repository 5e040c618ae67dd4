"""``pytun-hash probe``: what this kernel offers for virtio-net hashing on TUN/TAP, measured.

The checks that need a device run on a scratch 2-queue TAP in a private network namespace (in
the current one when no private namespace can be made), which disappears afterwards; an
existing device named with ``--dev`` is only looked at through rtnetlink, never opened.

JSON keys: ``kernel`` (release), ``machine``, ``euid``, ``tun`` {``path``, ``present``,
``accessible``, ``error``}, ``features`` {``value``, ``flags``}, ``scratch`` {``namespace``:
``private``/``current``/null, ``error``}, ``vnet_hdr`` {``default_size``, ``sizes_accepted``,
``sizes_rejected``, ``little_endian``, ``big_endian``}, ``multi_queue`` {``supported``,
``detach_attach``}, ``bpf`` {``usable``, ``error``, ``errno``}, ``steering_ebpf`` {``attachable``,
``error``}, ``hash_ioctls`` {``revision``, ``tried`` (revision -> errno name or ``ok``),
``capability``}, ``backend`` {``auto``: ``native``/``ebpf``/null, ``revision``, ``reason``},
and with ``--dev`` ``device`` {``name``, ``ifindex``, ``kind``, ``mode``, ``flags``,
``vnet_hdr``, ``packet_info``, ``persist``, ``multi_queue``, ``owner``, ``group``,
``numqueues``, ``numdisabled``, ``up``, ``mtu``}.

Exit status: 0 when a backend is usable; 3 when ``/dev/net/tun`` cannot be opened (permission)
or ``--dev`` names no TUN/TAP device, or no backend is usable because ``bpf(2)`` is denied
(``EPERM``: CAP_BPF missing); 4 when there is no tun driver, or the kernel offers neither the hash
ioctls nor eBPF steering.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import platform
import threading
from collections.abc import Callable
from typing import Any

from pytun_hash._abi import HashType, TunFlag
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.prog import Program
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text, pairs
from pytun_hash.device import NetworkNamespace, TunTapDevice, kernel_features, rtnl
from pytun_hash.device.hashctl import ProbeResult, probe_revision
from pytun_hash.device.tap import TUN_PATH, DeviceMode
from pytun_hash.errors import DeviceNotFoundError, KernelError, PrivilegeError, PytunHashError

__all__ = ["add_parser", "probe_device", "probe_kernel", "run"]

_VNET_SIZES = (8, 10, 12, 20, 24)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``probe``."""
    p = sub.add_parser(
        "probe",
        parents=parents,
        help="report what this kernel offers (tun, vnet headers, eBPF, hash ioctl revision)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dev", metavar="NAME", help="also report this existing device's flags and queue counts")
    p.set_defaults(handler=run)


def _flag_names(flags: int) -> list[str]:
    return [m.name or "" for m in TunFlag if m & flags]


def _error_text(exc: BaseException) -> str:
    return str(exc)


def _errno_name(err: int) -> str:
    return "ok" if err == 0 else errno.errorcode.get(err, str(err))


def _capability(result: ProbeResult) -> dict[str, Any] | None:
    cap = result.capability
    if cap is None:
        return None
    return {
        "types": [m.name for m in HashType if m in cap.types],
        "max_indirection_table_length": cap.max_indirection_table_length,
        "rss": cap.rss,
        "report": cap.report,
    }


def _scratch_checks(report: dict[str, Any]) -> None:
    """Everything that needs a device, on a scratch TAP (runs in its own thread)."""
    ns: NetworkNamespace | None = None
    try:
        private = NetworkNamespace(ipv6=False)
        private.enter()
        ns = private
        report["scratch"] = {"namespace": "private", "error": None}
    except PrivilegeError:
        # CAP_NET_ADMIN without CAP_SYS_ADMIN: the scratch device lives briefly next to the others.
        ns = None
        report["scratch"] = {"namespace": "current", "error": None}
    try:
        with TunTapDevice.create("pthprobe%d", queues=2, vnet_hdr=True) as device:
            _device_checks(device, report)
    except PytunHashError as exc:
        report["scratch"] = {"namespace": report["scratch"]["namespace"], "error": _error_text(exc)}
    finally:
        if ns is not None:
            ns.close()


def _attempt(fn: Callable[[], object]) -> str | None:
    try:
        fn()
    except PytunHashError as exc:
        return _error_text(exc)
    return None


def _device_checks(device: TunTapDevice, report: dict[str, Any]) -> None:
    default = device.get_vnet_hdr_size()
    accepted: list[int] = []
    rejected: list[int] = []
    for size in _VNET_SIZES:
        (rejected if _attempt(functools.partial(device.set_vnet_hdr_size, size)) else accepted).append(size)
    device.set_vnet_hdr_size(default)
    little = _attempt(lambda: device.set_vnet_le(True)) is None and device.get_vnet_le()
    _attempt(lambda: device.set_vnet_le(False))
    big = _attempt(lambda: device.set_vnet_be(True)) is None
    if big:
        _attempt(lambda: device.set_vnet_be(False))
    report["vnet_hdr"] = {
        "default_size": default,
        "sizes_accepted": accepted,
        "sizes_rejected": rejected,
        "little_endian": little,
        "big_endian": big,
    }
    queue = device.attached_queues[1]

    def detach_attach() -> None:
        device.detach_queue(queue)
        device.attach_queue(queue)

    detach_error = _attempt(detach_attach)
    report["multi_queue"] = {"supported": True, "detach_attach": detach_error is None}
    report["bpf"] = {"usable": True, "error": None, "errno": None}
    report["steering_ebpf"] = {"attachable": False, "error": None}
    try:
        ArrayMap.create(4, 1).close()
    except PytunHashError as exc:
        err = _errno_name(exc.errno) if isinstance(exc, KernelError) and exc.errno else None
        report["bpf"] = {"usable": False, "error": _error_text(exc), "errno": err}
        report["steering_ebpf"]["error"] = "bpf(2) is not usable"
    else:
        try:
            with Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="pth_probe") as prog:
                device.attach_steering_program(prog.fd, owner="probe")
                device.detach_steering_program()
            report["steering_ebpf"]["attachable"] = True
        except PytunHashError as exc:
            report["steering_ebpf"]["error"] = _error_text(exc)
    try:
        result = probe_revision(device)
    except PytunHashError as exc:
        report["hash_ioctls"] = {"revision": None, "tried": {}, "capability": None, "error": _error_text(exc)}
        return
    report["hash_ioctls"] = {
        "revision": result.revision.value if result.revision else None,
        "tried": {r.value: _errno_name(e) for r, e in result.tried},
        "capability": _capability(result),
    }


def _backend(report: dict[str, Any]) -> dict[str, Any]:
    revision = report.get("hash_ioctls", {}).get("revision")
    if revision:
        return {
            "auto": "native",
            "revision": revision,
            "reason": f"the kernel speaks hash UAPI revision {revision}",
        }
    if report.get("steering_ebpf", {}).get("attachable"):
        return {
            "auto": "ebpf",
            "revision": None,
            "reason": "the kernel lacks the hash ioctls; RSS through an eBPF steering program, "
            "hash reports computed in user space",
        }
    return {"auto": None, "revision": None, "reason": "neither the hash ioctls nor eBPF steering are usable"}


def probe_kernel() -> dict[str, Any]:
    """Run every kernel check; return the report (the JSON document without ``device``).

    Never raises for a missing feature or privilege: each check records what it found.
    """
    report: dict[str, Any] = {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "euid": os.geteuid(),
    }
    present = os.path.exists(TUN_PATH)
    report["tun"] = {"path": TUN_PATH, "present": present, "accessible": False, "error": None}
    report["features"] = None
    try:
        features = kernel_features()
    except PytunHashError as exc:
        report["tun"]["error"] = _error_text(exc)
    else:
        report["tun"]["accessible"] = True
        report["features"] = {"value": f"{int(features):#06x}", "flags": _flag_names(features)}
    if report["tun"]["accessible"]:
        failure: list[BaseException] = []

        def body() -> None:
            try:
                _scratch_checks(report)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)

        worker = threading.Thread(target=body, name="pytun-hash-probe")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
    else:
        report["scratch"] = {"namespace": None, "error": f"{TUN_PATH} is not accessible"}
    report["backend"] = _backend(report)
    return report


def probe_device(name: str) -> dict[str, Any]:
    """Describe the existing device ``name`` through rtnetlink (nothing is opened or changed).

    Raises:
        CliError: (exit 3) when there is no such link, or it is not a TUN/TAP device.
        KernelError: when the netlink query fails.
    """
    try:
        link = rtnl.get_link(name)
    except DeviceNotFoundError:
        raise CliError(
            f"no device named {name!r} in this network namespace",
            "check the name with `ip link`",
            ExitCode.KERNEL,
        ) from None
    tun = link.tun
    if tun is None:
        raise CliError(
            f"{name!r} is a {link.kind or 'non-tun'} device, not a TUN/TAP device",
            "name a TUN/TAP device (`ip -d link show type tun`)",
            ExitCode.KERNEL,
        )
    return {
        "name": link.name,
        "ifindex": link.index,
        "kind": link.kind,
        "mode": DeviceMode.from_flags(tun.type).value,
        "flags": _flag_names(tun.flags),
        "vnet_hdr": tun.vnet_hdr,
        "packet_info": tun.packet_info,
        "persist": tun.persist,
        "multi_queue": tun.multi_queue,
        "owner": tun.owner,
        "group": tun.group,
        "numqueues": tun.numqueues,
        "numdisabled": tun.numdisabled,
        "up": link.up,
        "mtu": link.mtu,
    }


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _render(report: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    tun = report["tun"]
    rows.append(("kernel", f"{report['kernel']} ({report['machine']}), euid {report['euid']}"))
    state = (
        "accessible" if tun["accessible"] else ("present, not accessible" if tun["present"] else "missing")
    )
    rows.append(("tun", f"{tun['path']}: {state}" + (f" ({tun['error']})" if tun["error"] else "")))
    if report["features"]:
        rows.append(
            ("TUNGETFEATURES", f"{report['features']['value']} = {'|'.join(report['features']['flags'])}")
        )
    scratch = report.get("scratch") or {}
    if scratch.get("error"):
        rows.append(("scratch device", f"not created: {scratch['error']}"))
    elif scratch.get("namespace"):
        rows.append(("scratch device", f"2-queue TAP in the {scratch['namespace']} network namespace"))
    vnet = report.get("vnet_hdr")
    if vnet:
        sizes = ", ".join(map(str, vnet["sizes_accepted"]))
        refused = ", ".join(map(str, vnet["sizes_rejected"])) or "none"
        rows.append(("vnet header", f"default {vnet['default_size']}; accepted {sizes}; refused {refused}"))
        rows.append(
            (
                "vnet endianness",
                f"little-endian {_yes(vnet['little_endian'])}, big-endian {_yes(vnet['big_endian'])}",
            )
        )
    mq = report.get("multi_queue")
    if mq:
        rows.append(("multi-queue", f"{_yes(mq['supported'])}; detach/attach {_yes(mq['detach_attach'])}"))
    bpf = report.get("bpf")
    if bpf:
        rows.append(("bpf(2)", "usable" if bpf["usable"] else f"not usable: {bpf['error']}"))
    steer = report.get("steering_ebpf")
    if steer:
        rows.append(
            ("steering eBPF", "attachable" if steer["attachable"] else f"not attachable: {steer['error']}")
        )
    hio = report.get("hash_ioctls")
    if hio:
        tried = ", ".join(f"{r}: {e}" for r, e in hio["tried"].items())
        what = f"revision {hio['revision']}" if hio["revision"] else "none"
        rows.append(("hash ioctls", f"{what} (probed {tried})" if tried else what))
        if hio.get("capability"):
            cap = hio["capability"]
            rows.append(
                (
                    "hash capability",
                    f"types {'|'.join(cap['types'])}, table <= {cap['max_indirection_table_length']}",
                )
            )
    backend = report["backend"]
    rows.append(("apply would use", f"{backend['auto'] or 'nothing'}: {backend['reason']}"))
    dev = report.get("device")
    if dev:
        counts = (
            f"{dev['numqueues']} attached, {dev['numdisabled']} detached"
            if dev["multi_queue"]
            else "single-queue"
        )
        flags = "|".join(dev["flags"])
        described = (
            f"{dev['mode']}, flags {flags}, queues: {counts}, persist {_yes(dev['persist'])}, "
            f"owner {dev['owner']}, group {dev['group']}, up {_yes(dev['up'])}"
        )
        rows.append((f"device {dev['name']}", described))
    return pairs(rows)


def run(args: argparse.Namespace, out: Output) -> int:
    """Run ``probe``; see the module documentation for keys and exit status."""
    report = probe_kernel()
    if args.dev:
        report["device"] = probe_device(args.dev)
    out.result(report, lambda: _render(report))
    if not report["tun"]["accessible"]:
        return int(ExitCode.KERNEL if report["tun"]["present"] else ExitCode.UNSUPPORTED)
    if report["backend"]["auto"]:
        return int(ExitCode.OK)
    denied = (report.get("bpf") or {}).get("errno") in ("EPERM", "EACCES")
    return int(ExitCode.KERNEL if denied else ExitCode.UNSUPPORTED)
