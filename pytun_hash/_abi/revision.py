"""The revisions of the tun virtio-net hashing UAPI that pytun_hash speaks."""

from __future__ import annotations

import enum

from pytun_hash.errors import ValidationError, shorten


class Revision(enum.Enum):
    """A revision of the (unmerged) tun virtio-net hashing UAPI.

    ``RFC``: the RFC of 8 October 2023 (``TUNGETVNETHASHCAP`` ``_IO``, 12-byte ``tun_vnet_hash``).
    ``V3``: revisions v3 to v9 (September 2024 to March 2025): 8-byte ``tun_vnet_hash`` plus
    ``tun_vnet_hash_rss``; RSS and a steering program refuse each other with ``EBUSY``.
    ``V10``: revisions v10 and v11 (March 2025): the ABI of ``V3``, but a steering program takes
    precedence over RSS and may return ``TUN_STEERINGEBPF_FALLBACK`` (-1) to defer to it.
    ``V12``: revision v12 (May 2025): ``TUNGETVNETHASHTYPES`` and three setters with ``tun_vnet_rss``;
    steering precedence as ``V10``.

    ``V3`` and ``V10`` use the same request numbers and structures: a probe by get-ioctl cannot tell
    them apart and reports ``V3``; name ``V10`` where the kernel is known to be v10 or v11, or ask
    ``pytun_hash.probe.refine_revision``, which tries :attr:`steering_precedence` on a scratch device.
    """

    RFC = "rfc"
    V3 = "v3"
    V10 = "v10"
    V12 = "v12"

    @property
    def abi(self) -> Revision:
        """The revision whose request numbers and structures this one uses (``V10`` -> ``V3``)."""
        return Revision.V3 if self is Revision.V10 else self

    @property
    def steering_precedence(self) -> bool:
        """True from v10 on: a steering program overrides RSS (and -1 falls back to it) instead of ``EBUSY``."""
        return self in (Revision.V10, Revision.V12)

    @property
    def title(self) -> str:
        """A human-readable name with the revision's date."""
        return {
            Revision.RFC: "RFC (8 Oct 2023)",
            Revision.V3: "v3-v9 (Sep 2024 - Mar 2025)",
            Revision.V10: "v10-v11 (Mar 2025)",
            Revision.V12: "v12 (30 May 2025)",
        }[self]

    @classmethod
    def parse(cls, text: str) -> Revision:
        """Return the revision named ``text`` (``"rfc"``, ``"v3"`` ... ``"v11"``, ``"v12"``, case-insensitive).

        Raises:
            ValidationError: (a ValueError) for an unknown name or a value that is not text.
        """
        if not isinstance(text, str):
            raise ValidationError("revision", f"expected a revision name (rfc, v3 ... v12), got {shorten(text)}")
        t = text.strip().lower()
        if t in ("rfc", "v1", "rfc-v1"):
            return cls.RFC
        # ASCII decimal digits only: str.isdigit() also accepts "²", which int() refuses; and few of
        # them, as int() refuses more than 4,300 digits.
        number = t[1:]
        plain = number.isascii() and number.isdecimal() and len(number) <= 2
        if t.startswith("v") and plain and 3 <= int(number) <= 11:
            return cls.V3 if int(number) <= 9 else cls.V10
        if t == "v12":
            return cls.V12
        raise ValidationError("revision", f"unknown revision {shorten(text)}: use rfc, v3 ... v9, v10, v11 or v12")


def require_revision(value: object, field: str = "revision") -> Revision:
    """Return ``value`` when it is a :class:`Revision`; refuse anything else before it reaches a table.

    A name given as text is refused too, not guessed: decoding or encoding for the wrong revision
    would silently produce other bytes. Convert text with :meth:`Revision.parse` first.

    Raises:
        ValidationError: naming ``field``, for a value that is not a Revision member.
    """
    if isinstance(value, Revision):
        return value
    hint = " (convert it with Revision.parse())" if isinstance(value, str) else ""
    raise ValidationError(field, f"expected a Revision member, got {shorten(value)}{hint}")
