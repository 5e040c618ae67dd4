"""The API reference's gate (``docs/build.py``): every public name has a docstring, and the check
catches one that has none."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

_BUILD = Path(__file__).resolve().parents[1] / "docs" / "build.py"


def _load() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pytun_hash_docs_build", _BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_public_name_is_documented() -> None:
    assert _load().undocumented() == []


def test_an_undocumented_public_name_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    build = _load()
    fake = types.ModuleType("pytun_hash_fake", "A module.")

    def bare() -> None:
        pass

    class Documented:
        """A class."""

        def method(self) -> None:
            pass

        @property
        def value(self) -> int:
            return 0

        def _private(self) -> None:
            pass

    class Bare:
        pass

    for obj in (bare, Documented, Bare):
        obj.__module__ = fake.__name__
        setattr(fake, obj.__name__, obj)
    fake.__all__ = ["bare", "Documented", "Bare"]  # type: ignore[attr-defined]
    monkeypatch.setattr(build, "modules", lambda: iter([fake]))
    assert build.undocumented() == [
        "pytun_hash_fake.bare",
        "pytun_hash_fake.Documented.method",
        "pytun_hash_fake.Documented.value",
        "pytun_hash_fake.Bare",
    ]
    assert build.main(["--check-only"]) == 1
