"""Probe documents for the compat tests: the real one captured on a mainline 6.18 kernel
(samples/probe-6.18-ebpf.json, what ``pytun-hash probe --json`` printed), edited into other hosts."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

SAMPLE = Path(__file__).parent / "samples" / "probe-6.18-ebpf.json"

SIX = ["IPV4", "TCPV4", "UDPV4", "IPV6", "TCPV6", "UDPV6"]


def ebpf_host() -> dict[str, Any]:
    """The captured mainline host: no hash ioctls, eBPF steering attaches."""
    document: dict[str, Any] = json.loads(SAMPLE.read_text())
    return document


def native_host(revision: str, capability: dict[str, Any] | None = None) -> dict[str, Any]:
    """The captured host as if its kernel answered ``revision``'s get-ioctl with ``capability``."""
    document = copy.deepcopy(ebpf_host())
    document["hash_ioctls"]["revision"] = revision
    document["hash_ioctls"]["tried"][revision] = "ok"
    document["hash_ioctls"]["capability"] = capability
    document["backend"] = {"auto": "native", "revision": revision, "reason": f"the kernel speaks {revision}"}
    return document


def rfc_host(max_table: int = 128) -> dict[str, Any]:
    """An RFC kernel: its capability reports the table limit."""
    capability = {"types": SIX, "max_indirection_table_length": max_table, "rss": True, "report": True}
    return native_host("rfc", capability)


def v12_host() -> dict[str, Any]:
    """A v12 kernel: TUNGETVNETHASHTYPES reports the types only."""
    return native_host("v12", {"types": SIX, "max_indirection_table_length": None, "rss": True, "report": True})


def bare_host() -> dict[str, Any]:
    """No hash ioctls and bpf(2) denied."""
    document = copy.deepcopy(ebpf_host())
    document["bpf"] = {"usable": False, "error": "bpf(BPF_MAP_CREATE) failed with EPERM", "errno": "EPERM"}
    document["steering_ebpf"] = {"attachable": False, "error": "bpf(2) is not usable"}
    document["backend"] = {"auto": None, "revision": None, "reason": "neither"}
    return document
