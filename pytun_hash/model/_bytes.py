"""The bytes-like type the model accepts wherever it reads bytes."""

from __future__ import annotations

from typing import TypeAlias

#: Frames, keys and inputs may be any of these; the model never keeps a reference to them.
BytesLike: TypeAlias = bytes | bytearray | memoryview
