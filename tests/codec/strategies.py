"""Hypothesis strategies for configurations."""

from __future__ import annotations

from hypothesis import strategies as st

from pytun_hash import HashType, VnetHashConfig


def hash_types(*, min_bits: int = 0) -> st.SearchStrategy[HashType]:
    return st.integers(0, 0x1FF).filter(lambda v: bin(v).count("1") >= min_bits).map(HashType)


@st.composite
def configs(draw: st.DrawFn, *, ipv4_types_when_rss: bool = False) -> VnetHashConfig:
    rss = draw(st.booleans())
    report = draw(st.booleans())
    types = draw(hash_types(min_bits=1 if rss or report else 0))
    if ipv4_types_when_rss and rss and not types & 0x7:
        types |= HashType(1 << draw(st.integers(0, 2)))
    length = 1 << draw(st.integers(0, 7))
    table = draw(st.lists(st.integers(0, 0xFFFF), min_size=length, max_size=length))
    key = draw(st.binary(min_size=0, max_size=40))
    unclassified = draw(st.integers(0, 0xFFFF))
    return VnetHashConfig(
        rss=rss, report=report, types=types, indirection_table=table, key=key, unclassified_queue=unclassified
    )
