"""The kernel's queue numbering, replayed without an fd: tun.c's ``tfiles[]`` and ``disabled`` list.

No ioctl reports which number the kernel gives a queue, yet a steering program must return
that number to reach it. tun.c (``tun_attach``, ``__tun_detach``) numbers the attached queues
``0 .. numqueues-1`` in ``tun->tfiles[]``:

* a queue that attaches (``TUNSETIFF``, or ``TUNSETQUEUE`` with ``IFF_ATTACH_QUEUE``) takes
  index ``numqueues``, the end of the array;
* a queue that leaves (``TUNSETQUEUE`` with ``IFF_DETACH_QUEUE``, or its fd closed) frees its
  index, and the *last* queue moves into it (``tfiles[index] = tfiles[numqueues - 1]``);
* a detached queue goes to the tail of ``tun->disabled`` and keeps no index; closing it only
  removes it from that list.

:class:`QueueNumbering` applies these rules to the queues one holder knows, with a placeholder
(``None``) for each attached queue held elsewhere, so it stays exact while that holder is the
only one that attaches, detaches or closes queues. It makes no syscall: the caller changes it
after the kernel accepted the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["QueueNumbering"]

T = TypeVar("T")


class QueueNumbering(Generic[T]):
    """``tun->tfiles[]`` and ``tun->disabled`` as one holder of queues sees them.

    Entries are any objects (the device's :class:`~pytun_hash.device.queue.Queue` objects),
    compared by identity. Not thread-safe: the device changes it under its lock.
    """

    def __init__(self) -> None:
        # tfiles[0 .. numqueues-1]; None marks a queue attached by another holder.
        self._slots: list[T | None] = []
        # tun->disabled, oldest first, for this holder's entries only.
        self._detached: list[T] = []

    def __repr__(self) -> str:
        slots = ["?" if s is None else repr(s) for s in self._slots]
        return f"QueueNumbering(slots=[{', '.join(slots)}], detached={self._detached!r})"

    def __contains__(self, entry: object) -> bool:
        return self.index_of(entry) is not None or self._position(self._detached, entry) is not None

    def __iter__(self) -> Iterator[T]:
        """This holder's entries: the attached ones in index order, then the detached ones."""
        yield from self.attached
        yield from self._detached

    @property
    def numqueues(self) -> int:
        """``tun->numqueues`` as far as known: this holder's attached entries plus the placeholders."""
        return len(self._slots)

    @property
    def slots(self) -> tuple[T | None, ...]:
        """``tfiles[0 .. numqueues-1]``, None where a queue held elsewhere sits."""
        return tuple(self._slots)

    @property
    def attached(self) -> tuple[T, ...]:
        """This holder's attached entries in index order."""
        return tuple(s for s in self._slots if s is not None)

    @property
    def detached(self) -> tuple[T, ...]:
        """This holder's detached entries, in the order they were detached (``tun->disabled``)."""
        return tuple(self._detached)

    def index_of(self, entry: object) -> int | None:
        """The kernel's number of ``entry`` (``tfile->queue_index``); None while detached or unknown."""
        return self._position(self._slots, entry)

    def is_attached(self, entry: object) -> bool:
        """Whether ``entry`` holds an index."""
        return self.index_of(entry) is not None

    def attach(self, entry: T) -> int:
        """``tun_attach``: ``entry`` (new, or detached before) takes the last index; return it.

        Raises:
            ValueError: when ``entry`` is attached already (the kernel answers ``EINVAL``).
        """
        if self.is_attached(entry):
            raise ValueError(f"{entry!r} is attached already, at index {self.index_of(entry)}")
        detached_at = self._position(self._detached, entry)
        if detached_at is not None:
            del self._detached[detached_at]  # tun_enable_queue
        self._slots.append(entry)
        return len(self._slots) - 1

    def detach(self, entry: T) -> int:
        """``__tun_detach(tfile, false)``: free ``entry``'s index and keep it detached; return that index.

        The last attached queue (``entry`` itself, or one held elsewhere) moves into the freed slot.

        Raises:
            ValueError: when ``entry`` holds no index (the kernel answers ``EINVAL``).
        """
        index = self._free(entry)
        self._detached.append(entry)  # tun_disable_queue: list_add_tail(&tfile->next, &tun->disabled)
        return index

    def remove(self, entry: object) -> int | None:
        """``tun_detach(tfile, true)`` when the fd closes: forget ``entry``; return the index it freed.

        An attached entry frees its index as :meth:`detach` does; a detached one only leaves the
        disabled list (None); an unknown one changes nothing (None).
        """
        if self.is_attached(entry):
            return self._free(entry)
        detached_at = self._position(self._detached, entry)
        if detached_at is not None:
            del self._detached[detached_at]
        return None

    def add_foreign(self, count: int, *, before: bool) -> None:
        """Record ``count`` attached queues held elsewhere, as placeholders.

        Args:
            count: how many (``numqueues`` as the kernel reports it, less this holder's attached
                entries); 0 or less adds nothing.
            before: they attached before this holder's entries (which then follow them), as when
                a device is opened again; else after them, as assumed for adopted fds.
        """
        if count <= 0:
            return
        padding: list[T | None] = [None] * count
        self._slots = padding + self._slots if before else self._slots + padding

    def clear(self) -> tuple[T, ...]:
        """Forget everything (every fd closed at once); return this holder's entries as :meth:`__iter__` orders them."""
        entries = tuple(self)
        self._slots = []
        self._detached = []
        return entries

    def _free(self, entry: object) -> int:
        index = self.index_of(entry)
        if index is None:
            raise ValueError(f"{entry!r} holds no queue index")
        last = self._slots.pop()
        if index < len(self._slots):
            self._slots[index] = last  # tfiles[index] = tfiles[numqueues - 1]
        return index

    @staticmethod
    def _position(items: list[T] | list[T | None], entry: object) -> int | None:
        for i, item in enumerate(items):
            if item is entry and item is not None:
                return i
        return None
