"""Task families: one module per family (see docs/adding_a_task_family.md)."""

import importlib.util


def require_extra(module: str, extra: str) -> None:
    """Raise ValueError (a config error for ``task.params``) when an optional dependency is missing."""
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"this family needs the '{module}' package: pip install 'metaray[{extra}]'")
