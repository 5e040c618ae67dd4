"""Packages whose names load on first use (PEP 562): the one implementation of the lazy facade.

A package lists where each public name lives; importing the package loads none of its modules, and
``package.name`` imports the one module that defines ``name`` the first time it is asked for. So a
command that needs one enum does not pay for ctypes structures, eBPF assemblers or netlink.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

__all__ = ["lazy_names"]


def lazy_names(
    package: str, where: Mapping[str, str | None], namespace: dict[str, object], public: Sequence[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a lazy package.

    Args:
        package: the package's ``__name__``.
        where: public name -> the submodule (relative to ``package``) that defines it; ``None`` when
            the name is itself a submodule.
        namespace: the package's ``globals()``: a name, once loaded, is kept there, so it costs one
            dictionary lookup from then on.
        public: the package's ``__all__``, for ``dir()``.

    The returned ``__getattr__`` raises ``AttributeError`` for a name ``where`` does not list.
    """

    def module_getattr(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = where[name]
        value: object = (
            importlib.import_module(f"{package}.{name}")
            if module is None
            else getattr(importlib.import_module(f"{package}.{module}"), name)
        )
        namespace[name] = value
        return value

    def module_dir() -> list[str]:
        return sorted({*namespace, *public})

    return module_getattr, module_dir
