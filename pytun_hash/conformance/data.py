"""The ``data.*`` rules: hash values, reports and queues of frames sent through a scratch device."""

from __future__ import annotations
