"""The layers are visible in the tree: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytun_hash

PACKAGE = Path(pytun_hash.__file__).parent

# Rank of each top-level part of the package; a module may import only equal or lower ranks.
RANKS = {
    "errors": 0,
    "_abi": 0,
    # Opening user-named files safely (config files, pcap files).
    "_files": 0,
    "config": 1,
    "codec": 1,
    # Config files (TOML/JSON) to and from VnetHashConfig.
    "configfile": 1,
    "model": 2,
    "device": 3,
    "bpf": 4,
    # The kernel emulator steers and records with eBPF.
    "testing": 5,
    "backend": 5,
    "cli": 6,
    "__main__": 6,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pytun_hash":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_upward_imports(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    own = rel.parts[0].removesuffix(".py")
    assert own in RANKS, f"{rel}: new top-level part {own!r}; give it a rank in RANKS"
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            part = _part(name)
            if part == "__init__":
                offenders.append(f"{name} (the package facade)")
            elif part is not None and RANKS.get(part, 99) > RANKS[own]:
                offenders.append(name)
    assert offenders == [], f"{rel} imports higher layers: {offenders}"
