"""Starting or joining Ray, and shipping metaray and the task families to every worker.

The ``runtime_env`` built here carries the ``metaray`` package, the repository's ``envs``
package and (if the experiment names one) the user's own family module to every worker,
locally and on a cluster, so nothing has to be installed on the nodes but Ray's own
requirements.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import ray

import metaray
from metaray.config import ConfigError

_QUIET_ENV = {"PYTHONWARNINGS": "ignore::DeprecationWarning", "RAY_DEDUP_LOGS": "1"}


def family_source(family: str) -> Path | None:
    """File or package directory that defines a family outside the repository's envs/."""
    if family.endswith(".py"):
        return Path(family).resolve()
    if "." not in family:
        return None
    top = family.split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise ConfigError(f"task.family: cannot import {family!r} (no module {top!r} on the path)")
    origin = Path(spec.origin)
    return origin.parent if origin.name == "__init__.py" else origin


def runtime_env(family: str) -> dict:
    import envs

    modules = [str(Path(metaray.__file__).parent), str(Path(envs.__file__).parent)]
    source = family_source(family)
    if source is not None:
        modules.append(str(source))
    return {"py_modules": modules, "env_vars": dict(_QUIET_ENV)}


def check_address(address: str | None) -> None:
    """Fail fast (ConfigError) when ``--address`` points at nothing that listens."""
    if address in (None, "auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"--address {address}: nothing listens at {host}:{port} ({exc.strerror or exc})") from None


def init_ray(family: str, address: str | None = None, num_cpus: int | None = None) -> None:
    """Start an embedded local Ray (``address=None``) or join a cluster."""
    os.environ.update(_QUIET_ENV)
    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(
        address=address,
        num_cpus=num_cpus if address is None else None,
        runtime_env=runtime_env(family),
        include_dashboard=False if address is None else None,
        logging_level=logging.ERROR,
        log_to_driver=True,
        ignore_reinit_error=True,
    )
