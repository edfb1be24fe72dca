"""Task families: one module per family (see docs/adding_a_task_family.md)."""

import importlib.util

#: Families that need an optional dependency -> the package, which is also its pyproject extra.
OPTIONAL_EXTRAS = {"mujoco_locomotion": "mujoco", "metaworld_family": "metaworld"}


def missing_extra(family: str) -> str | None:
    """The optional package a built-in family needs and that is not installed, if any."""
    package = OPTIONAL_EXTRAS.get(family)
    return package if package and importlib.util.find_spec(package) is None else None


def require_extra(package: str) -> None:
    """Raise ValueError (a config error for ``task.params``) when an optional package is missing."""
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"this family needs the '{package}' package: pip install 'metaray[{package}]'")
