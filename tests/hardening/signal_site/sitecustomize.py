"""Loaded by the ``pytun-hash`` children of tests/hardening/test_signals.py (``PYTHONPATH``): logs the id
of every BPF program and map the child creates to ``$PYTUN_HASH_TEST_BPF_LOG``, so the test can check
that none outlives the child, whatever other processes load meanwhile; and with
``$PYTUN_HASH_TEST_INTERRUPT_IMPORT`` (a module name) raises ``KeyboardInterrupt`` when that module is
imported, as a Ctrl-C would while the command line is still importing.

Kept cheap: it runs before the child's own code, and only hooks the import of the one module through
which every BPF object of pytun_hash is made (:class:`pytun_hash.bpf._fd.BpfObject`).
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_TARGET = "pytun_hash.bpf._fd"


def _ids(fd: int) -> str | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith(("prog_id:", "map_id:")):
                    key, value = line.split()
                    return f"{'prog' if key == 'prog_id:' else 'map'} {value}\n"
    except OSError:
        return None
    return None


def _log_objects(module: ModuleType, log: int) -> None:
    cls: Any = module.BpfObject
    made = cls.__init__

    def init(self: object, fd: int) -> None:
        made(self, fd)
        line = _ids(fd)
        if line is not None:
            os.write(log, line.encode())

    cls.__init__ = init


class _Hook(MetaPathFinder):
    def __init__(self, log: int) -> None:
        self._log = log

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            _log_objects(module, self._log)

        loader.exec_module = exec_module
        return spec


class _Interrupt(MetaPathFinder):
    def __init__(self, module: str) -> None:
        self._module = module

    def find_spec(self, name: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name == self._module:
            raise KeyboardInterrupt
        return None


_PATH = os.environ.get("PYTUN_HASH_TEST_BPF_LOG")
if _PATH:
    sys.meta_path.insert(0, _Hook(os.open(_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)))
_INTERRUPTED = os.environ.get("PYTUN_HASH_TEST_INTERRUPT_IMPORT")
if _INTERRUPTED:
    sys.meta_path.insert(0, _Interrupt(_INTERRUPTED))
