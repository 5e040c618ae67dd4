"""Loaded eBPF programs that own their fd: load with the verifier log, test runs, info, ids."""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Sequence

import attrs

from pytun_hash.bpf._fd import BpfObject
from pytun_hash.bpf.insn import Insn, encode_program
from pytun_hash.bpf.maps import _encode_name, _ids
from pytun_hash.bpf.syscall import (
    BpfCmd,
    ProgType,
    bpf,
    bpf_attr_info,
    bpf_attr_prog_load,
    bpf_attr_test_run,
    bpf_prog_info,
)
from pytun_hash.errors import BpfError, ValidationError, VerifierError

__all__ = ["ETH_HLEN", "ProgInfo", "Program", "TestRunResult", "prog_ids"]

#: BPF_PROG_TEST_RUN of a socket filter runs eth_type_trans() on the input, which needs
#: a full Ethernet header and strips it: the program sees offsets relative to L3.
ETH_HLEN = 14

_LOG_START = 1 << 20
_LOG_MAX = 1 << 26
_VERIFIER_ERRNOS = frozenset({_errno.EACCES, _errno.EINVAL, _errno.E2BIG, _errno.ERANGE})
_VERIFIER_HINT = (
    "the eBPF verifier rejected the program; the last lines of its log (VerifierError.log) name the "
    "offending instruction"
)


@attrs.frozen
class TestRunResult:
    """The outcome of one ``BPF_PROG_TEST_RUN``.

    Attributes:
        retval: the program's return value (u32).
        duration_ns: the kernel's average time per run, in nanoseconds.
        data_out: the packet after the run (empty unless requested).
    """

    __test__ = False  # not a pytest test class

    retval: int
    duration_ns: int
    data_out: bytes = b""


@attrs.frozen
class ProgInfo:
    """What ``BPF_OBJ_GET_INFO_BY_FD`` reports about a program.

    Attributes:
        id: kernel-wide program id.
        prog_type: ``bpf_prog_type`` value.
        tag: the 8-byte program tag, hex.
        xlated_insns: instructions after the verifier's rewrites.
        jited_bytes: size of the JIT image in bytes (0 when not JITed).
        verified_insns: instructions the verifier processed (its cost of proving the program).
        map_ids: ids of the maps the program references.
        name: the program name.
    """

    id: int
    prog_type: int
    tag: str
    xlated_insns: int
    jited_bytes: int
    verified_insns: int
    map_ids: tuple[int, ...]
    name: str


class Program(BpfObject):
    """A loaded program fd (context manager; :meth:`close` is idempotent).

    Attributes:
        prog_type: the ``bpf_prog_type``.
        insn_count: number of instruction slots loaded.
        verifier_log: the verifier's log when a log was requested at load, else "".
    """

    _KIND = "bpf program"
    _AGAIN = "load it again"

    def __init__(self, fd: int, prog_type: int, insn_count: int, verifier_log: str = "") -> None:
        super().__init__(fd)
        self.prog_type = prog_type
        self.insn_count = insn_count
        self.verifier_log = verifier_log

    @classmethod
    def load(
        cls,
        insns: Sequence[Insn] | bytes,
        *,
        prog_type: ProgType = ProgType.BPF_PROG_TYPE_SOCKET_FILTER,
        name: str = "",
        license: str = "GPL",
        log_level: int = 0,
    ) -> Program:
        """Load a program.

        Args:
            insns: instructions, or their encoding (8 bytes per slot, host order).
            prog_type: the program type; the tun steering hook takes SOCKET_FILTER.
            name: up to 15 characters of ``[A-Za-z0-9_.]``.
            license: license string; helpers such as ``bpf_skb_load_bytes`` need no GPL, but
                "GPL" keeps every helper available.
            log_level: 0 = no log unless the load fails (then it is reloaded with level 1 to
                fetch the reason), 1 = log, 2 = verbose log; kept in :attr:`verifier_log`.

        Raises:
            VerifierError: the verifier rejected the program; ``.log`` holds its log.
            PrivilegeError: without CAP_BPF.
            BpfError: for any other refusal.
            ValidationError: for a malformed encoding.
        """
        code = insns if isinstance(insns, bytes) else encode_program(insns)
        if not code or len(code) % 8:
            raise ValidationError("insns", f"need a non-empty multiple of 8 bytes, got {len(code)}")
        raw_name = _encode_name(name)
        if log_level:
            fd, log = _load(code, prog_type, raw_name, license, log_level)
            return cls(fd, int(prog_type), len(code) // 8, log)
        try:
            fd, _ = _load(code, prog_type, raw_name, license, 0)
        except BpfError as first:
            if first.errno not in _VERIFIER_ERRNOS:
                raise
            # Load again with a log only to explain the failure: a verifier rejection is
            # deterministic, so the second attempt fails the same way and says why.
            try:
                fd, _ = _load(code, prog_type, raw_name, license, 1)
            except VerifierError as explained:
                raise VerifierError(
                    first.errno or _errno.EINVAL, first.request, _VERIFIER_HINT, log=explained.log
                ) from None
            os.close(fd)
            raise
        return cls(fd, int(prog_type), len(code) // 8)

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return f"Program({state}, insns={self.insn_count})"

    def test_run(
        self, data: bytes | bytearray | memoryview, *, repeat: int = 1, want_data: bool = False
    ) -> TestRunResult:
        """Run the program on ``data`` in the kernel (``BPF_PROG_TEST_RUN``).

        For a socket filter ``data`` must start with a 14-byte Ethernet header, which the
        kernel strips before the program runs (packet offsets become L3-relative; the MAC
        header pointer still points at the Ethernet header).

        Args:
            data: the input packet.
            repeat: run this many times; :attr:`TestRunResult.duration_ns` is the mean.
            want_data: also return the packet as the program left it.

        Raises:
            ValidationError: for ``repeat < 1`` or a socket-filter input shorter than 14 bytes.
            BpfError: when the kernel refuses the run.
        """
        raw = bytes(data)
        if repeat < 1:
            raise ValidationError("repeat", f"must be >= 1, got {repeat}")
        if self.prog_type == ProgType.BPF_PROG_TYPE_SOCKET_FILTER and len(raw) < ETH_HLEN:
            raise ValidationError("data", f"a socket filter test run needs >= {ETH_HLEN} bytes, got {len(raw)}")
        data_in = ctypes.create_string_buffer(raw, len(raw))
        out_size = len(raw) + 256 if want_data else 0
        data_out = ctypes.create_string_buffer(out_size) if want_data else None
        attr = bpf_attr_test_run(
            prog_fd=self.fd,
            data_size_in=len(raw),
            data_in=ctypes.addressof(data_in),
            data_size_out=out_size,
            data_out=ctypes.addressof(data_out) if data_out is not None else 0,
            repeat=repeat,
        )
        bpf(BpfCmd.BPF_PROG_TEST_RUN, attr)
        out = data_out.raw[: attr.data_size_out] if data_out is not None else b""
        return TestRunResult(retval=attr.retval, duration_ns=attr.duration, data_out=out)

    def info(self) -> ProgInfo:
        """Query the kernel's view of this program.

        Raises:
            BpfError: when the query fails.
        """
        raw = bpf_prog_info()
        attr = bpf_attr_info(bpf_fd=self.fd, info_len=ctypes.sizeof(raw), info=ctypes.addressof(raw))
        bpf(BpfCmd.BPF_OBJ_GET_INFO_BY_FD, attr)
        n_maps = raw.nr_map_ids
        ids = (ctypes.c_uint32 * max(n_maps, 1))()
        if n_maps:
            raw2 = bpf_prog_info(nr_map_ids=n_maps, map_ids=ctypes.addressof(ids))
            attr = bpf_attr_info(bpf_fd=self.fd, info_len=ctypes.sizeof(raw2), info=ctypes.addressof(raw2))
            bpf(BpfCmd.BPF_OBJ_GET_INFO_BY_FD, attr)
        return ProgInfo(
            id=raw.id,
            prog_type=raw.type,
            tag=bytes(raw.tag).hex(),
            xlated_insns=raw.xlated_prog_len // 8,
            jited_bytes=raw.jited_prog_len,
            verified_insns=raw.verified_insns,
            map_ids=tuple(ids[i] for i in range(n_maps)),
            name=raw.name.decode("ascii", "replace"),
        )

    @property
    def id(self) -> int:
        """The kernel-wide program id (see :func:`prog_ids`)."""
        return self.info().id


def _load(code: bytes, prog_type: ProgType, name: bytes, license: str, log_level: int) -> tuple[int, str]:
    """Issue BPF_PROG_LOAD, growing the log buffer on ENOSPC; a failure with a log is a VerifierError."""
    insn_buf = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode("ascii"))
    size = _LOG_START
    while True:
        log = ctypes.create_string_buffer(size) if log_level else None
        attr = bpf_attr_prog_load(
            prog_type=int(prog_type),
            insn_cnt=len(code) // 8,
            insns=ctypes.addressof(insn_buf),
            license=ctypes.addressof(lic),
            log_level=log_level,
            log_size=size if log is not None else 0,
            log_buf=ctypes.addressof(log) if log is not None else 0,
            prog_name=name,
        )
        try:
            fd = bpf(BpfCmd.BPF_PROG_LOAD, attr)
        except BpfError as exc:
            if log is None:
                raise
            if exc.errno == _errno.ENOSPC and size < _LOG_MAX:
                size *= 4
                continue
            text = log.value.decode("utf-8", "replace")
            if not text.strip():
                raise
            raise VerifierError(exc.errno or _errno.EINVAL, exc.request, _VERIFIER_HINT, log=text) from exc
        return fd, (log.value.decode("utf-8", "replace") if log is not None else "")


def prog_ids() -> list[int]:
    """Every BPF program id alive in the kernel right now (``BPF_PROG_GET_NEXT_ID``).

    Raises:
        PrivilegeError: without CAP_SYS_ADMIN.
    """
    return _ids(BpfCmd.BPF_PROG_GET_NEXT_ID)
