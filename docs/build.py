"""Build the API reference from the docstrings (``make docs``), and fail on an undocumented public name.

Public names are those in a module's ``__all__`` (every module of the package lists them), and the
public methods and properties those classes define themselves. The reference is rendered by pdoc
(Google-style docstrings) into ``docs/api/`` with Python warnings turned into errors, so a docstring
pdoc cannot render fails the build too.

Usage: ``python docs/build.py [--check-only] [--output DIR]``; exit 1 lists what is undocumented.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pytun_hash"


def modules() -> Iterator[ModuleType]:
    """Every module of the package, imported."""
    package = importlib.import_module(PACKAGE)
    yield package
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{PACKAGE}."):
        yield importlib.import_module(info.name)


def _own_members(cls: type) -> Iterator[tuple[str, object]]:
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        value = raw.__func__ if isinstance(raw, staticmethod | classmethod) else raw
        if inspect.isfunction(value) or isinstance(value, property):
            yield name, value


def _documented(obj: object) -> bool:
    doc = obj.__doc__ if not isinstance(obj, property) else (obj.fget.__doc__ if obj.fget else None)
    return bool(doc and doc.strip())


def undocumented() -> list[str]:
    """``module.name`` (or ``module.Class.member``) of every public name without a docstring."""
    missing: list[str] = []
    seen: set[int] = set()
    for module in modules():
        if not _documented(module):
            missing.append(f"{module.__name__} (module)")
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if obj is None or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # constants and enum members are documented where they are defined
            if getattr(obj, "__module__", "") != module.__name__ or id(obj) in seen:
                continue  # re-exported: judged where it is defined
            seen.add(id(obj))
            if not _documented(obj):
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                for member, value in _own_members(obj):
                    if not _documented(value):
                        missing.append(f"{module.__name__}.{name}.{member}")
    return missing


def render(output: Path) -> None:
    """Render the reference with pdoc into ``output``; a warning is an error."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=False, search=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # typing.NamedTuple builds __new__ in a namespace of its own, where pdoc cannot resolve the
        # class's (string) annotations; the fields themselves are documented and resolved.
        warnings.filterwarnings("ignore", message=r"Error parsing type annotation .* for [\w.]*\.FlowHash\.__init__")
        # Private members are not rendered; their annotations may use runtime-unsubscriptable types.
        warnings.filterwarnings("ignore", message=r"Error parsing type annotation .* for [\w.]*\._\w+[.:]")
        # Named one by one, since pdoc follows __all__, which lists names, not submodules; a package's
        # own walk then meets some of them again, which pdoc reports and merges.
        warnings.filterwarnings("ignore", message=r"The module specification .* has already been added")
        public = [m.__name__ for m in modules() if not any(p.startswith("_") for p in m.__name__.split("."))]
        pdoc.pdoc(*public, output_directory=output)


def main(argv: list[str] | None = None) -> int:
    """Check, then render; the exit status is 1 when a public name is undocumented."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check-only", action="store_true", help="check the docstrings, render nothing")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "api", help="where the HTML goes")
    args = parser.parse_args(argv)
    missing = undocumented()
    if missing:
        print(f"{len(missing)} public names have no docstring:", file=sys.stderr)
        for name in missing:
            print(f"  {name}", file=sys.stderr)
        return 1
    if not args.check_only:
        render(args.output)
        print(f"API reference written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
