"""The revisions of the tun virtio-net hashing UAPI that pytun_hash speaks."""

from __future__ import annotations

import enum


class Revision(enum.Enum):
    """A revision of the (unmerged) tun virtio-net hashing UAPI.

    ``RFC``: the RFC of 8 October 2023 (``TUNGETVNETHASHCAP`` ``_IO``, 12-byte ``tun_vnet_hash``).
    ``V3``: revisions v3 to v11 (September 2024 to March 2025): 8-byte ``tun_vnet_hash`` plus
    ``tun_vnet_hash_rss``.
    ``V12``: revision v12 (May 2025): ``TUNGETVNETHASHTYPES`` and three setters with ``tun_vnet_rss``.
    """

    RFC = "rfc"
    V3 = "v3"
    V12 = "v12"

    @property
    def title(self) -> str:
        """A human-readable name with the revision's date."""
        return {
            Revision.RFC: "RFC (8 Oct 2023)",
            Revision.V3: "v3-v11 (Sep 2024 - Mar 2025)",
            Revision.V12: "v12 (30 May 2025)",
        }[self]

    @classmethod
    def parse(cls, text: str) -> Revision:
        """Return the revision named ``text`` (``"rfc"``, ``"v3"`` ... ``"v11"``, ``"v12"``, case-insensitive).

        Raises:
            ValueError: for an unknown name.
        """
        t = text.strip().lower()
        if t in ("rfc", "v1", "rfc-v1"):
            return cls.RFC
        if t.startswith("v") and t[1:].isdigit() and 3 <= int(t[1:]) <= 11:
            return cls.V3
        if t == "v12":
            return cls.V12
        raise ValueError(f"unknown revision {text!r}: use rfc, v3 (v3 to v11) or v12")
