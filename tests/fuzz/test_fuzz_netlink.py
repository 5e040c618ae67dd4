"""Fuzzing the decoders of kernel answers: rtnetlink link messages and eBPF instructions.

The kernel is trusted, but a decoder that meets a message it does not expect (a newer kernel's
attributes, a truncated read) must still answer with pytun_hash's own error or a result, never
crash. The link messages start from what this kernel really sends for ``lo``.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash.bpf.insn import Insn
from pytun_hash.device import rtnl
from tests.fuzz.harness import call
from tests.fuzz.strategies import damaged

_NLMSGHDR = struct.Struct("=IHHII")


def _lo_payloads() -> list[bytes]:
    with rtnl.RtnlSocket() as sock:
        return sock.request(rtnl.RTM_GETLINK, rtnl.NLM_F_DUMP, rtnl._ifinfo(), name="RTM_GETLINK")


try:
    REAL = _lo_payloads()
except Exception as exc:
    REAL = []
    _REASON = f"no rtnetlink seed messages: {exc}"
else:
    _REASON = ""


def _tun_attrs(draw: st.DrawFn) -> bytes:
    kinds = st.integers(0, 12)
    data = b"".join(rtnl._attr(draw(kinds), draw(st.binary(max_size=6))) for _ in range(draw(st.integers(0, 5))))
    info = rtnl._attr(1, b"tun\0") + rtnl._attr(2 | 0x8000, data)
    return rtnl._attr(18 | 0x8000, info)  # IFLA_LINKINFO, nested


@st.composite
def link_messages(draw: st.DrawFn) -> bytes:
    """An RTM_NEWLINK payload: a real one, or one with a tun link info, then damaged."""
    real = draw(st.booleans())
    if REAL and real:
        base = draw(st.sampled_from(REAL))
    else:
        base = rtnl._ifinfo(draw(st.integers(0, 2**31 - 1))) + rtnl._attr(3, b"fz0\0") + _tun_attrs(draw)
    return draw(damaged(base))


@pytest.mark.skipif(not REAL, reason=_REASON or "no seed messages")
@given(payload=link_messages())
def test_parse_link(payload: bytes) -> None:
    link = call(rtnl._parse_link, payload)
    if link.ok:
        info = link.get()
        assert isinstance(info.name, str)
        assert info.tun is None or info.kind == "tun"


@given(data=st.data())
def test_iter_messages(data: st.DataObject) -> None:
    bodies = [data.draw(link_messages()) for _ in range(data.draw(st.integers(0, 3)))]
    stream = b"".join(_NLMSGHDR.pack(16 + len(b), 16, 2, 7, 0) + b + bytes(-len(b) % 4) for b in bodies)
    messages = call(lambda: list(rtnl._iter_messages(data.draw(damaged(stream)))))
    if messages.ok:
        assert all(isinstance(m[3], bytes) for m in messages.get())


@given(raw=st.binary(min_size=0, max_size=12), order=st.sampled_from(["little", "big"]))
def test_decode_bpf_instruction(raw: bytes, order: str) -> None:
    insn = call(Insn.decode, raw, order)
    if insn.ok:
        assert insn.get().encode(order) == raw
