"""Starting or joining Ray, and shipping metaray and the task families to every worker.

The ``runtime_env`` built here carries the ``metaray`` package, the repository's ``envs``
package and (if the experiment names them) the user's own family and memory-core modules to every worker,
locally and on a cluster, so nothing has to be installed on the nodes but Ray's own
requirements.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from urllib.parse import urlparse

import ray
from ray._private import ray_constants, services  # services resolves "auto" exactly as ray.init does
from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

import metaray
from metaray.config import ConfigError, ExperimentConfig
from metaray.models.cores import CORES
from metaray.plugins import module_source

_QUIET_ENV = {"PYTHONWARNINGS": "ignore::DeprecationWarning", "RAY_DEDUP_LOGS": "1"}


def job_runtime_env() -> dict:
    """The runtime_env of the Ray job this driver runs in (``ray job submit``), else {}."""
    job_config = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    return (json.loads(job_config).get("runtime_env") or {}) if job_config else {}


def user_sources(cfg: ExperimentConfig) -> list[Path]:
    """Files or packages outside the repository that the config names (family, memory core)."""
    refs = [(cfg.task.family, "task.family"), (CORES.module_of(cfg.model.arch), "model.arch")]
    return [source for ref, key in refs if ref and (source := module_source(ref, key)) is not None]


def runtime_env(cfg: ExperimentConfig) -> dict:
    """py_modules and env vars every worker needs, merged into the job's own runtime_env.

    Inside ``ray job submit`` Ray merges this with the job's runtime_env (its working_dir,
    say) and refuses keys that both set; so the job's py_modules are kept and extended (and
    :func:`init_ray` lets this list replace the job's), and env vars the job sets win over ours.
    """
    import envs

    job = job_runtime_env()
    modules = list(job.get("py_modules") or [])
    modules += [str(Path(metaray.__file__).parent), str(Path(envs.__file__).parent)]
    modules += [str(source) for source in user_sources(cfg)]
    job_vars = job.get("env_vars") or {}
    return {"py_modules": modules, "env_vars": {k: v for k, v in _QUIET_ENV.items() if k not in job_vars}}


def resolve_address(address: str | None, num_cpus: int | None) -> str | None:
    """The Ray cluster to join (None: start a local Ray); ConfigError if nothing listens there.

    ``RAY_ADDRESS`` (set by Ray inside ``ray job submit`` drivers) counts as ``--address``.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        return None
    if num_cpus is not None:
        raise ConfigError(f"--num-cpus sizes the embedded local Ray; the cluster at {address} has its own CPUs")
    if address == "auto":
        try:
            target = services.canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise ConfigError(f"--address auto: {exc}".splitlines()[0]) from None
    else:
        target = address
    parsed = urlparse(target if "://" in target else f"ray://{target}")
    host, port = parsed.hostname, parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise ConfigError(f"--address {address}: nothing listens at {host}:{port} ({exc.strerror or exc})") from None
    return address


@contextmanager
def loopback_node() -> Iterator[None]:
    """Ray's single-node mode while a local Ray starts: node IP 127.0.0.1, unreachable from other hosts.

    Ray binds its servers (GCS, raylet, workers, agents, metrics) to loopback only when the
    node IP is loopback, else to all interfaces; and it swaps a loopback node IP for the
    machine's address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray reads that variable
    once, at import, into ``ray_constants.ENABLE_RAY_CLUSTER``, so the constant is set here, and
    only for this start: a driver that joins a cluster must advertise its real address.

    >>> with loopback_node():
    ...     services.get_node_ip_address()
    '127.0.0.1'
    """
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def init_ray(cfg: ExperimentConfig, address: str | None = None, num_cpus: int | None = None) -> None:
    """Start an embedded local Ray on loopback (``address=None``) or join the cluster at ``address``."""
    os.environ.update(_QUIET_ENV)
    logging.getLogger("ray").setLevel(logging.ERROR)
    if job_runtime_env().get("py_modules"):
        # Ours lists the job's py_modules too; let it replace the job's list instead of clashing.
        os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    with loopback_node() if address is None else nullcontext():
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            runtime_env=runtime_env(cfg),
            include_dashboard=False if address is None else None,
            logging_level=logging.ERROR,
            log_to_driver=True,
            ignore_reinit_error=True,
        )
