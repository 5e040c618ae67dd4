"""The replayed queue numbering, without a kernel: plain cases and a property against tun.c's own steps.

The kernel tests (``test_queues_steering.py``) check the same rules against real frames; these run
anywhere, unprivileged.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytun_hash.device.numbering import QueueNumbering


class Q:
    """A queue stand-in; equal only to itself, like a device's Queue."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def test_attach_appends_and_detach_moves_the_last_queue_into_the_freed_slot() -> None:
    table: QueueNumbering[Q] = QueueNumbering()
    q0, q1, q2, q3 = (Q(f"q{i}") for i in range(4))
    assert [table.attach(q) for q in (q0, q1, q2, q3)] == [0, 1, 2, 3]
    assert table.detach(q1) == 1
    assert [table.index_of(q) for q in (q0, q1, q2, q3)] == [0, None, 2, 1]
    assert list(table.detached) == [q1] and not table.is_attached(q1) and q1 in table
    assert table.attach(q1) == 3  # re-attached at the end
    assert list(table.attached) == [q0, q3, q2, q1] and list(table.detached) == []
    assert table.remove(q0) == 0  # closing an attached queue renumbers like a detach
    assert list(table.attached) == [q1, q3, q2]
    table.detach(q2)
    assert table.remove(q2) is None  # closing a detached queue moves nothing
    assert list(table.attached) == [q1, q3] and list(table.detached) == [] and q2 not in table
    assert table.remove(q2) is None  # unknown: nothing changes
    assert list(table) == [q1, q3] and table.numqueues == 2


def test_the_last_queue_leaving_moves_nothing() -> None:
    table: QueueNumbering[Q] = QueueNumbering()
    q0, q1 = Q("q0"), Q("q1")
    table.attach(q0)
    table.attach(q1)
    assert table.detach(q1) == 1
    assert list(table.slots) == [q0]


def test_detached_queues_keep_the_order_they_left_in() -> None:
    table: QueueNumbering[Q] = QueueNumbering()
    queues = [Q(f"q{i}") for i in range(4)]
    for q in queues:
        table.attach(q)
    for i in (2, 0, 3):
        table.detach(queues[i])
    assert list(table.detached) == [queues[2], queues[0], queues[3]]
    assert list(table) == [queues[1], queues[2], queues[0], queues[3]]


def test_queues_held_elsewhere_are_placeholders_that_move_like_any_queue() -> None:
    opened: QueueNumbering[Q] = QueueNumbering()
    mine = [Q("a"), Q("b")]
    for q in mine:
        opened.attach(q)
    opened.add_foreign(2, before=True)  # a second holder opened the device after 2 others
    assert list(opened.slots) == [None, None, mine[0], mine[1]] and opened.numqueues == 4
    assert opened.index_of(mine[0]) == 2
    opened.detach(mine[0])
    assert list(opened.slots) == [None, None, mine[1]]
    adopted: QueueNumbering[Q] = QueueNumbering()
    adopted.attach(mine[0])
    adopted.add_foreign(2, before=False)  # adopted fds are assumed to come first
    assert list(adopted.slots) == [mine[0], None, None]
    adopted.remove(mine[0])
    assert list(adopted.slots) == [None, None] and list(adopted.attached) == []  # a foreign queue took index 0
    adopted.add_foreign(0, before=True)
    adopted.add_foreign(-3, before=False)
    assert adopted.numqueues == 2


def test_refusals_match_the_kernel_s_einval_and_change_nothing() -> None:
    table: QueueNumbering[Q] = QueueNumbering()
    q0, q1 = Q("q0"), Q("q1")
    table.attach(q0)
    with pytest.raises(ValueError, match="attached already"):
        table.attach(q0)
    with pytest.raises(ValueError, match="holds no queue index"):
        table.detach(q1)
    table.attach(q1)
    table.detach(q1)
    with pytest.raises(ValueError, match="holds no queue index"):
        table.detach(q1)
    assert list(table.slots) == [q0] and list(table.detached) == [q1]


def test_clear_returns_attached_then_detached() -> None:
    table: QueueNumbering[Q] = QueueNumbering()
    q0, q1, q2 = Q("q0"), Q("q1"), Q("q2")
    for q in (q0, q1, q2):
        table.attach(q)
    table.detach(q0)
    table.add_foreign(1, before=True)
    assert repr(table) == "QueueNumbering(slots=[?, q2, q1], detached=[q0])"
    assert table.clear() == (q2, q1, q0)
    assert table.numqueues == 0 and list(table) == []


class TunModel:
    """tun.c's own steps, transcribed: ``tfiles[]``, ``tfile->queue_index``, ``numqueues``, ``disabled``.

    Every queue is a real object here, those of other holders too; the table under test sees the
    others only as placeholders.
    """

    def __init__(self) -> None:
        self.tfiles: dict[int, object] = {}
        self.queue_index: dict[int, int] = {}  # id(tfile) -> index
        self.numqueues = 0
        self.disabled: list[object] = []

    def tun_attach(self, tfile: object) -> None:
        if tfile in self.disabled:
            self.disabled.remove(tfile)  # tun_enable_queue
        self.tfiles[self.numqueues] = tfile
        self.queue_index[id(tfile)] = self.numqueues
        self.numqueues += 1

    def tun_detach(self, tfile: object, *, clean: bool) -> None:
        if id(tfile) in self.queue_index:  # attached
            index = self.queue_index[id(tfile)]
            ntfile = self.tfiles[self.numqueues - 1]
            self.tfiles[index] = ntfile
            self.queue_index[id(ntfile)] = index
            del self.tfiles[self.numqueues - 1]
            self.numqueues -= 1
            del self.queue_index[id(tfile)]
            if not clean:
                self.disabled.append(tfile)  # tun_disable_queue
        elif clean and tfile in self.disabled:
            self.disabled.remove(tfile)


_OPS = st.lists(
    st.tuples(st.sampled_from(["attach", "detach", "close", "open"]), st.integers(0, 15)), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(initial=st.integers(1, 4), foreign=st.integers(0, 3), foreign_first=st.booleans(), ops=_OPS)
def test_the_table_follows_tun_c_for_any_sequence(
    initial: int, foreign: int, foreign_first: bool, ops: list[tuple[str, int]]
) -> None:
    kernel = TunModel()
    table: QueueNumbering[Q] = QueueNumbering()
    others = [Q(f"other{i}") for i in range(foreign)]
    mine = [Q(f"q{i}") for i in range(initial)]
    for q in (others + mine) if foreign_first else (mine + others):
        kernel.tun_attach(q)
    for q in mine:
        table.attach(q)
    table.add_foreign(foreign, before=foreign_first)
    open_queues = list(mine)
    for op, pick in ops:
        if op == "open":
            q = Q(f"q{len(mine)}")
            mine.append(q)
            open_queues.append(q)
            kernel.tun_attach(q)
            assert table.attach(q) == kernel.numqueues - 1
            continue
        if not open_queues:
            continue
        q = open_queues[pick % len(open_queues)]
        attached = table.is_attached(q)
        if op == "close":
            freed = table.remove(q)
            assert freed == kernel.queue_index.get(id(q))
            kernel.tun_detach(q, clean=True)
            open_queues.remove(q)
        elif op == "detach" and attached:
            assert table.detach(q) == kernel.queue_index[id(q)]
            kernel.tun_detach(q, clean=False)
        elif op == "attach" and not attached:
            kernel.tun_attach(q)
            assert table.attach(q) == kernel.queue_index[id(q)]
        else:  # the kernel answers EINVAL and nothing changes
            with pytest.raises(ValueError):
                (table.detach if op == "detach" else table.attach)(q)
        known = {id(x) for x in mine}
        expected = tuple(kernel.tfiles[i] if id(kernel.tfiles[i]) in known else None for i in range(kernel.numqueues))
        assert table.slots == expected
        assert table.numqueues == kernel.numqueues
        assert table.detached == tuple(x for x in kernel.disabled if id(x) in known)
        for x in open_queues:
            assert table.index_of(x) == kernel.queue_index.get(id(x))
