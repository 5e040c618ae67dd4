"""The package facade (``pytun_hash/__init__.py``): every public name, loaded on first use.

``import pytun_hash`` must stay next to instant: the console script and ``python -m pytun_hash``
import it before the command line can install its SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pytun_hash

INIT = Path(pytun_hash.__file__)


def _static_imports() -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` (what type checkers see)."""
    tree = ast.parse(INIT.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module is not None
                found.update({alias.name: imp.module for alias in imp.names})
    return found


def test_the_lazy_table_is_what_type_checkers_see_and_all_exports() -> None:
    homes = {name: module for module, names in pytun_hash._HOMES.items() for name in names}
    assert homes == _static_imports()
    assert sorted(homes) == sorted(pytun_hash.__all__)
    assert len(set(pytun_hash.__all__)) == len(pytun_hash.__all__)


@pytest.mark.parametrize("name", pytun_hash.__all__)
def test_each_name_is_its_modules_object(name: str) -> None:
    module = importlib.import_module(pytun_hash._NAMES[name])
    assert getattr(pytun_hash, name) is getattr(module, name)
    assert name in dir(pytun_hash)


def test_import_loads_nothing_else() -> None:
    code = "import sys, pytun_hash; print(sorted(m for m in sys.modules if m.startswith('pytun_hash')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "['pytun_hash']"


def test_submodules_and_unknown_names() -> None:
    assert pytun_hash.device is importlib.import_module("pytun_hash.device")
    unknown = "no_such_name"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(pytun_hash, unknown)
    from pytun_hash import Hashing, TunTapDevice  # noqa: F401 - the from-import form works too
