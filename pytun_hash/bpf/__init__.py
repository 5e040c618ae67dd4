"""eBPF RSS from pure Python: ``bpf(2)`` through ctypes, an instruction encoder, maps and
programs that own their fds, and the RSS steering program generated from a
:class:`~pytun_hash.config.VnetHashConfig`, assembled here: no compiler, libbpf or bcc.

* :mod:`~pytun_hash.bpf.syscall`: the syscall, per-architecture numbers, commands, typed errors.
* :mod:`~pytun_hash.bpf.insn`: instruction encoder and assembler with labels.
* :mod:`~pytun_hash.bpf.maps`: array maps (optionally mmap-able), arrays of maps, map ids.
* :mod:`~pytun_hash.bpf.prog`: program load with the verifier log, test runs, program ids.
* :mod:`~pytun_hash.bpf.rss_program`: the generated steering program and its config map value.
* :mod:`~pytun_hash.bpf.layered`: steering programs for the layered policy (steer a flow set, fall
  back to native RSS otherwise; v10+).
* :mod:`~pytun_hash.bpf.rss`: :class:`EbpfRss` (load, attach, atomic reconfigure, detach).
* :mod:`~pytun_hash.bpf.report`: :class:`HashReporter`, hash reports filled in user space.
"""

from __future__ import annotations

from pytun_hash._lazy import lazy_names

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pytun_hash.bpf.insn import Assembler, Helper, Insn, Reg, encode_program
    from pytun_hash.bpf.layered import FALLBACK_RETURN, PortRule, generate_fallback_program, load_fallback_program
    from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps, BpfMap, MapInfo, MappedArray, QueueMap, map_ids
    from pytun_hash.bpf.prog import ProgInfo, Program, TestRunResult, prog_ids
    from pytun_hash.bpf.report import HashReporter
    from pytun_hash.bpf.rss import EBPF_RSS_OWNER, EbpfRss, SharedEbpfRss, enable_ebpf_rss
    from pytun_hash.bpf.rss_program import (
        SUPPORTED_HASH_TYPES,
        L3Base,
        RssOutput,
        config_value,
        generate_shared_rss_program,
        toeplitz_tables,
    )
    from pytun_hash.bpf.syscall import BpfCmd, MapFlag, MapType, ProgType, bpf, bpf_syscall_number, synchronize_rcu

__all__ = [
    "EBPF_RSS_OWNER",
    "FALLBACK_RETURN",
    "SUPPORTED_HASH_TYPES",
    "ArrayMap",
    "ArrayOfMaps",
    "QueueMap",
    "Assembler",
    "BpfCmd",
    "BpfMap",
    "EbpfRss",
    "SharedEbpfRss",
    "HashReporter",
    "Helper",
    "Insn",
    "L3Base",
    "MapFlag",
    "MapInfo",
    "MapType",
    "MappedArray",
    "ProgInfo",
    "PortRule",
    "ProgType",
    "Program",
    "Reg",
    "RssOutput",
    "TestRunResult",
    "bpf",
    "bpf_syscall_number",
    "config_value",
    "enable_ebpf_rss",
    "encode_program",
    "generate_fallback_program",
    "generate_shared_rss_program",
    "load_fallback_program",
    "map_ids",
    "prog_ids",
    "synchronize_rcu",
    "toeplitz_tables",
]

# Where each name lives: `probe` needs the assembler and maps, not the RSS program or the reporter.
_WHERE = {
    "Assembler": "insn",
    "Helper": "insn",
    "Insn": "insn",
    "Reg": "insn",
    "encode_program": "insn",
    "FALLBACK_RETURN": "layered",
    "PortRule": "layered",
    "generate_fallback_program": "layered",
    "load_fallback_program": "layered",
    "ArrayMap": "maps",
    "ArrayOfMaps": "maps",
    "BpfMap": "maps",
    "MapInfo": "maps",
    "MappedArray": "maps",
    "QueueMap": "maps",
    "map_ids": "maps",
    "ProgInfo": "prog",
    "Program": "prog",
    "TestRunResult": "prog",
    "prog_ids": "prog",
    "HashReporter": "report",
    "EBPF_RSS_OWNER": "rss",
    "EbpfRss": "rss",
    "SharedEbpfRss": "rss",
    "enable_ebpf_rss": "rss",
    "SUPPORTED_HASH_TYPES": "rss_program",
    "L3Base": "rss_program",
    "RssOutput": "rss_program",
    "config_value": "rss_program",
    "generate_shared_rss_program": "rss_program",
    "toeplitz_tables": "rss_program",
    "BpfCmd": "syscall",
    "MapFlag": "syscall",
    "MapType": "syscall",
    "ProgType": "syscall",
    "bpf": "syscall",
    "bpf_syscall_number": "syscall",
    "synchronize_rcu": "syscall",
}

# Hidden from type checkers: with a module __getattr__ they would accept any name at all.
if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _WHERE, globals(), __all__)
