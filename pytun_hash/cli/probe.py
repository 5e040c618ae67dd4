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
``capability``, ``steering_precedence``}, ``backend`` {``auto``: ``native``/``ebpf``/null, ``revision``,
``reason``},
and with ``--dev`` ``device`` {``name``, ``ifindex``, ``kind``, ``mode``, ``flags``,
``vnet_hdr``, ``packet_info``, ``persist``, ``multi_queue``, ``owner``, ``group``,
``numqueues``, ``numdisabled``, ``up``, ``mtu``}.

v3-v9 and v10/v11 answer the same request numbers (``tried`` shows ``v3: ok`` for both); where they
do, the probe asks whether a steering program takes precedence over native RSS
(:func:`pytun_hash.probe.tap_probe_steering_precedence`), and ``hash_ioctls.revision`` and
``backend.revision`` are the refined answer: ``v10`` when it did (``steering_precedence`` true),
``v3`` when it was refused with ``EBUSY`` (false) or could not be told (null, also where it was not
asked: another revision or none answered).

Exit status: 0 when a backend is usable; 3 when ``/dev/net/tun`` cannot be opened (permission)
or ``--dev`` names no TUN/TAP device, or no backend is usable because ``bpf(2)`` is denied
(``EPERM``: CAP_BPF missing); 4 when there is no tun driver, or the kernel offers neither the hash
ioctls nor eBPF steering.
"""

from __future__ import annotations

import argparse
import errno
from typing import Any

from pytun_hash._abi import HashType, TunFlag
from pytun_hash.cli.common import tun_link
from pytun_hash.cli.output import ExitCode, Output, help_text, pairs
from pytun_hash.device.hashctl import ProbeResult
from pytun_hash.device.tap import TUN_PATH, DeviceMode
from pytun_hash.probe import KernelProbe
from pytun_hash.probe import probe_kernel as probe_kernel_checks

__all__ = ["add_parser", "probe_device", "probe_kernel", "run"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``probe``."""
    p = sub.add_parser(
        "probe",
        parents=parents,
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dev", metavar="NAME", help="also report this existing device's flags and queue counts")
    p.set_defaults(handler=run)


def _flag_names(flags: int) -> list[str]:
    return [m.name or "" for m in TunFlag if m & flags]


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


def _document(found: KernelProbe) -> dict[str, Any]:
    """The JSON document of a :class:`~pytun_hash.probe.KernelProbe` (keys in the module documentation)."""
    report: dict[str, Any] = {
        "kernel": found.kernel,
        "machine": found.machine,
        "euid": found.euid,
        "tun": {
            "path": TUN_PATH,
            "present": found.tun_present,
            "accessible": found.tun_accessible,
            "error": found.tun_error,
        },
        "features": None
        if found.features is None
        else {"value": f"{int(found.features):#06x}", "flags": _flag_names(found.features)},
        "scratch": {"namespace": found.scratch_namespace, "error": found.scratch_error},
    }
    if found.vnet_hdr is not None:
        vnet = found.vnet_hdr
        report["vnet_hdr"] = {
            "default_size": vnet.default_size,
            "sizes_accepted": list(vnet.sizes_accepted),
            "sizes_rejected": list(vnet.sizes_rejected),
            "little_endian": vnet.little_endian,
            "big_endian": vnet.big_endian,
        }
        report["multi_queue"] = {"supported": True, "detach_attach": bool(found.detach_attach)}
    if found.bpf is not None:
        report["bpf"] = {"usable": found.bpf.usable, "error": found.bpf.error, "errno": found.bpf.errno}
        report["steering_ebpf"] = {"attachable": found.steering_attachable, "error": found.steering_error}
    if found.hash is not None:
        result = found.hash
        report["hash_ioctls"] = {
            "revision": result.revision.value if result.revision else None,
            "tried": {r.value: _errno_name(e) for r, e in result.tried},
            "capability": _capability(result),
            "steering_precedence": found.precedence,
        }
    elif found.hash_error is not None:
        report["hash_ioctls"] = {
            "revision": None,
            "tried": {},
            "capability": None,
            "steering_precedence": None,
            "error": found.hash_error,
        }
    decision = found.auto_backend()
    report["backend"] = {
        "auto": decision.backend,
        "revision": decision.revision.value if decision.revision else None,
        "reason": decision.reason,
    }
    return report


def probe_kernel() -> dict[str, Any]:
    """Run every kernel check (:func:`pytun_hash.probe.probe_kernel`); return the JSON document.

    Never raises for a missing feature or privilege: each check records what it found.
    """
    return _document(probe_kernel_checks())


def probe_device(name: str) -> dict[str, Any]:
    """Describe the existing device ``name`` through rtnetlink (nothing is opened or changed).

    Raises:
        CliError: (exit 3) when there is no such link, or it is not a TUN/TAP device.
        KernelError: when the netlink query fails.
    """
    link = tun_link(name)
    tun = link.tun
    assert tun is not None  # tun_link refuses other links
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


# Only asked where v3's numbers answered: there it tells v10/v11 from v3-v9.
_PRECEDENCE = {
    True: "yes: a steering program attached while native RSS was on (v10 or later)",
    False: "no: EBUSY attaching a steering program while native RSS was on (v3-v9)",
    None: "could not be told (read as v3-v9)",
}


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _render(report: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    tun = report["tun"]
    rows.append(("kernel", f"{report['kernel']} ({report['machine']}), euid {report['euid']}"))
    state = "accessible" if tun["accessible"] else ("present, not accessible" if tun["present"] else "missing")
    rows.append(("tun", f"{tun['path']}: {state}" + (f" ({tun['error']})" if tun["error"] else "")))
    if report["features"]:
        rows.append(("TUNGETFEATURES", f"{report['features']['value']} = {'|'.join(report['features']['flags'])}"))
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
        rows.append(("steering eBPF", "attachable" if steer["attachable"] else f"not attachable: {steer['error']}"))
    hio = report.get("hash_ioctls")
    if hio:
        tried = ", ".join(f"{r}: {e}" for r, e in hio["tried"].items())
        what = f"revision {hio['revision']}" if hio["revision"] else "none"
        rows.append(("hash ioctls", f"{what} (probed {tried})" if tried else what))
        if "v3" in hio["tried"] and hio["tried"]["v3"] == "ok":
            rows.append(("steering precedence", _PRECEDENCE[hio["steering_precedence"]]))
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
        counts = f"{dev['numqueues']} attached, {dev['numdisabled']} detached" if dev["multi_queue"] else "single-queue"
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
    if not report["tun"]["accessible"]:
        code = ExitCode.KERNEL if report["tun"]["present"] else ExitCode.UNSUPPORTED
    elif report["backend"]["auto"]:
        code = ExitCode.OK
    else:
        denied = (report.get("bpf") or {}).get("errno") in ("EPERM", "EACCES")
        code = ExitCode.KERNEL if denied else ExitCode.UNSUPPORTED
    return out.result(report, lambda: _render(report), code)
