"""Fixtures of the Hashing tests: each test's records and pins in its own roots (as the CLI
tests keep them), and BPF objects checked as freed afterwards."""

from __future__ import annotations

from tests.cli.conftest import _bpf_guard, state_roots

__all__ = ["_bpf_guard", "state_roots"]
