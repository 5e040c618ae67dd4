"""The layers are visible in the tree: a lower layer never imports a higher one, and only code about
testing imports the test kit (:mod:`pytun_hash.testing`)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

import pytun_hash

PACKAGE = Path(pytun_hash.__file__).parent
ROOT = Path(__file__).resolve().parents[1]

# Rank of each top-level part of the package; a module may import only equal or lower ranks.
RANKS = {
    "errors": 0,
    "_abi": 0,
    # Opening user-named files safely (config files, pcap files).
    "_files": 0,
    # The libc handle, raw syscall(2), setns/unshare and the constants they share.
    "_sys": 0,
    # The lazy package facade (PEP 562) of _abi, model and bpf: importlib only.
    "_lazy": 0,
    # Toeplitz keys: sizes, published keys, the parser of keys users write (standard library only).
    "keys": 1,
    # Hash type names users write (virtio's, ethtool's, all), on the ABI's enum only.
    "hashtypes": 1,
    "config": 1,
    "codec": 1,
    # Config files (TOML/JSON) to and from VnetHashConfig.
    "configfile": 1,
    # The guest's structures (virtio_net_config, the control-queue RSS/hash commands) and what a host
    # may advertise: on _abi, errors, config, keys and hashtypes only (pure).
    "virtio": 1,
    "model": 2,
    # Capture files (pcap, pcapng) read into frames for the model.
    "capture": 3,
    "device": 3,
    "bpf": 4,
    # Real flows onto a device's queues from its namespace's stack; uses device and model.
    "traffic": 4,
    # The kernel emulator steers and records with eBPF.
    "testing": 5,
    "backend": 5,
    # Hashing on a device from any process: records, pins, locks, both backends.
    "hashing": 5,
    "probe": 5,
    # The conformance suite: raw calls on scratch devices, traffic, the model; the emulator for --emulate.
    "conformance": 5,
    "cli": 6,
    "__main__": 6,
}

TESTING = "pytun_hash.testing"

# Code outside tests/ that imports the test kit although it is not itself about testing (the
# pytun_hash/testing/ package is). Each entry says why; "lazy" means only inside a function, never
# at module level, so importing the module does not load the test kit. An entry whose file no
# longer imports the test kit fails test_testing_allow_list_is_current.
TESTING_ALLOWED: dict[str, Literal["lazy", "anywhere"]] = {
    # `pytun-hash demo --emulate REVISION` runs the demo under the kernel emulator; the rest of the
    # CLI, and a plain demo, never load the test kit.
    "pytun_hash/cli/demo.py": "lazy",
    # `pytun-hash conformance --emulate REVISION` runs the suite under the kernel emulator; the
    # native and eBPF modes never load the test kit.
    "pytun_hash/conformance/runner.py": "lazy",
    # Benchmarks the emulator itself (µs per emulated ioctl and per emulated frame read).
    "benchmarks/bench_emulator.py": "anywhere",
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pytun_hash":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _package_of(path: Path) -> list[str]:
    """The dotted package a file of pytun_hash belongs to (for relative imports), or [] outside it."""
    try:
        rel = path.relative_to(PACKAGE.parent)
    except ValueError:
        return []
    return list(rel.parts[:-1])


def _imported(node: ast.AST, path: Path) -> list[str]:
    """The absolute names of the modules ``node`` imports (``from pytun_hash import x`` gives
    ``pytun_hash.x``; the caller decides whether ``x`` is a module); [] when it imports nothing."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            package = _package_of(path)
            base = package[: len(package) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        if module == "pytun_hash":
            return [f"pytun_hash.{a.name}" for a in node.names]
        return [module]
    if (
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Name) and node.func.id == "__import__")
            or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
        )
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_imports(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    assert own in RANKS, f"{rel}: new top-level part {own!r}; give it a rank in RANKS"
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        for name in _imported(node, path):
            part = _part(name)
            if part == "__init__" or (part is not None and part not in RANKS and name.count(".") == 1):
                offenders.append(f"{name} (the package facade)")
            elif part is not None and RANKS.get(part, 99) > RANKS[own]:
                offenders.append(name)
    assert offenders == [], f"{rel} imports higher layers: {offenders}"


def _outside_tests() -> Iterator[Path]:
    """Every Python file of the repository outside tests/ (and outside virtual environments, caches
    and hidden directories)."""
    for top, dirs, files in os.walk(ROOT):
        here = Path(top)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith((".", "__pycache__"))
            and not d.endswith(".egg-info")
            and not (here == ROOT and d in ("tests", "build", "dist"))
            and not (here / d / "pyvenv.cfg").exists()
        )
        for name in sorted(files):
            if name.endswith((".py", ".pyi")):
                yield here / name


def _testing_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of every import of the test kit in ``path``."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        names = _imported(node, path)
        if any(n == TESTING or n.startswith(TESTING + ".") for n in names):
            found.append((getattr(node, "lineno", 0), top))
        nested = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, nested)

    visit(tree, True)
    return found


def _is_the_test_kit(rel: str) -> bool:
    return rel.startswith("pytun_hash/testing/")


@pytest.mark.parametrize(
    "path", [p for p in _outside_tests() if not _is_the_test_kit(p.relative_to(ROOT).as_posix())],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_only_testing_code_imports_the_test_kit(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    found = _testing_imports(path)
    allowed = TESTING_ALLOWED.get(rel)
    if allowed is None:
        lines = [line for line, _ in found]
        assert found == [], f"{rel} imports {TESTING} (lines {lines}); outside tests/ only code about testing may"
    elif allowed == "lazy":
        eager = [line for line, top in found if top]
        assert eager == [], f"{rel} may import {TESTING} only inside a function, not at module level (lines {eager})"


def test_testing_allow_list_is_current() -> None:
    for rel in TESTING_ALLOWED:
        assert (ROOT / rel).is_file(), f"TESTING_ALLOWED names {rel}, which does not exist"
        assert _testing_imports(ROOT / rel), f"{rel} no longer imports {TESTING}; remove it from TESTING_ALLOWED"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_library_and_cli_load_without_the_test_kit() -> None:
    """Importing every module outside pytun_hash/testing/ leaves the test kit unloaded (indirect imports too)."""
    every = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    names = sorted(n for n in every if n != TESTING and not n.startswith(TESTING + "."))
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(' '.join(sorted(m for m in sys.modules if m == {TESTING!r} or m.startswith({TESTING + '.'!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert len(names) > 40 and "pytun_hash.cli.demo" in names
    assert done.stdout.strip() == "", f"importing the library and the CLI loaded {done.stdout.strip()}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_sys_loads_libc(path: Path) -> None:
    """pytun_hash/_sys.py holds the one libc handle: nobody else loads a C library through ctypes."""
    if path == PACKAGE / "_sys.py":
        return
    loaders = ("CDLL", "PyDLL", "cdll", "pydll", "LoadLibrary")
    loads = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Attribute) and node.attr in loaders)
        or (isinstance(node, ast.ImportFrom) and any(a.name in loaders for a in node.names))
    ]
    assert loads == [], f"{path.relative_to(PACKAGE)} loads a C library at lines {loads}; use pytun_hash._sys"


def test_documented_layout_is_the_ranks_table() -> None:
    """The Layout table (docs/layout.md, linked from the README) lists every top-level part with its rank in RANKS."""
    section = (ROOT / "docs" / "layout.md").read_text()
    documented: dict[str, int] = {}
    for rank, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, flags=re.MULTILINE):
        for name in re.findall(r"`([^`]+)`", modules):
            documented[name.removesuffix(".py").removesuffix("/")] = int(rank)
    assert documented == RANKS
