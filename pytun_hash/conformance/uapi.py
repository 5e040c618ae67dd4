"""The ``uapi.*`` rules: what the hash ioctls read, write, refuse and commit, measured with raw calls."""

from __future__ import annotations
