"""Registries filled by import: every module of a package registers what it defines (a method, a
task family), so adding one is adding a file. `import_package_modules` imports them all, once."""
from __future__ import annotations

import functools
import importlib
import pkgutil


@functools.cache
def import_package_modules(package: str) -> None:
    """Import every module of `package`. Cached per package rather than keyed on the registry being
    empty: one module imported directly (a test, say) must not hide the others."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{mod.name}")
