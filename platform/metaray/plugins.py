"""User code named in a config (task families, memory cores) and the registries that find it.

A *module reference* is a bare name (looked up in a default package, e.g. ``envs``), a dotted
module path importable from the working directory, or a file ending in ``.py`` (for code kept
outside the repository). :mod:`metaray.cluster` ships the file or package behind a reference
to every Ray worker, where a file arrives as a top-level module of the same stem.

A :class:`Registry` maps names to implementations; ``"REFERENCE:NAME"`` first imports the
module, whose ``@registry.register("NAME")`` decorator adds the entry.

Example:
    >>> widgets = Registry("model.widget")
    >>> @widgets.register("plain")
    ... class Plain: ...
    >>> widgets.get("plain").__name__, widgets.names()
    ('Plain', ('plain',))
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Generic, TypeVar

from metaray.config import ConfigError

T = TypeVar("T")


def import_module_ref(ref: str, key: str, default_package: str | None = None) -> ModuleType:
    """Import the module behind ``ref``; a ConfigError naming ``key`` if there is none."""
    if ref.endswith(".py"):
        path = Path(ref)
        if path.is_file():
            if path.stem not in sys.modules:
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)
            return sys.modules[path.stem]
        module_name, missing = path.stem, f"no such file {ref}"  # a worker gets it as a module
    else:
        module_name = ref if "." in ref or default_package is None else f"{default_package}.{ref}"
        missing = f"no module {module_name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(f"{key}: cannot import {ref!r} ({missing})") from None
        raise


def module_source(ref: str, key: str) -> Path | None:
    """The file or package folder behind a reference outside the repository's packages
    (what workers need shipped), or None for a bare name."""
    if ref.endswith(".py"):
        return Path(ref).resolve()
    if "." not in ref:
        return None
    top = ref.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{key}: cannot import {ref!r} (no module {top!r} on the path)")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def module_file(ref: str, key: str, default_package: str | None = None) -> str:
    """The file that importing ``ref`` would run (found without running it).

    Example:
        >>> module_file("bandit", "task.family", "envs").endswith("envs/bandit.py")
        True
    """
    if ref.endswith(".py"):
        return str(Path(ref).resolve())
    name = ref if "." in ref or default_package is None else f"{default_package}.{ref}"
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        raise ConfigError(f"{key}: cannot import {ref!r} (no module {name})")
    return spec.origin


class Registry(Generic[T]):
    """Named implementations of one config key (e.g. ``model.arch``)."""

    def __init__(self, key: str):
        self.key = key
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise ValueError(f"{self.key}: {name!r} is registered already ({self._entries[name]!r})")
            self._entries[name] = entry
            return entry

        return add

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, ref: str) -> T:
        """The entry ``ref`` names: ``NAME``, or ``MODULE_REFERENCE:NAME`` (imported first)."""
        module, sep, name = ref.rpartition(":")
        if sep:
            import_module_ref(module, self.key)
        if name not in self._entries:
            raise ConfigError(f"{self.key} must be one of {list(self._entries)} or MODULE:NAME "
                              f"of a module that registers NAME, got {ref!r}")
        return self._entries[name]

    @staticmethod
    def module_of(ref: str) -> str | None:
        """The module reference part of ``MODULE:NAME`` (None for a plain name)."""
        module, sep, _ = ref.rpartition(":")
        return module if sep else None
