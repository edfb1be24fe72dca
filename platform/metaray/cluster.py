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
from typing import Any
from urllib.parse import urlparse

import grpc
import ray
from ray._private import ray_constants, services  # services resolves "auto" exactly as ray.init does
from ray._private.authentication.grpc_authentication_client_interceptor import (
    SyncAuthenticationMetadataClientInterceptor,
)
from ray._private.resource_and_label_spec import ResourceAndLabelSpec
from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

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


#: Seconds a cluster has to answer before ``--address`` is refused.
PROBE_TIMEOUT_S = 5.0


def resolve_address(address: str | None, num_cpus: int | None) -> str | None:
    """The Ray cluster to join (None: start a local Ray; ``auto`` resolved to the GCS address
    of the cluster found, so the driver joins the one checked); ConfigError if no Ray answers.

    ``RAY_ADDRESS`` (set by Ray inside ``ray job submit`` drivers) counts as ``--address``.
    A GCS address (``HOST:PORT``, ``auto``) must answer Ray's own health RPC within
    :data:`PROBE_TIMEOUT_S` and run this driver's Ray version; a Ray Client address
    (``ray://``) must complete a gRPC handshake. Otherwise ``ray.init`` would hang on a port
    where something else listens, or fail after a long traceback.
    """
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be >= 1, got {num_cpus}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "local"):
        return None
    if num_cpus is not None:
        raise ConfigError(f"--num-cpus sizes the embedded local Ray; the cluster at {address} has its own CPUs")
    target = _gcs_target(address)
    parsed = urlparse(target if "://" in target else f"ray://{target}")
    try:
        host, port = parsed.hostname, 6379 if parsed.port is None else parsed.port
    except ValueError:
        raise ConfigError(f"--address {address}: the port must be a number in 1-65535") from None
    if not host or port == 0:
        raise ConfigError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        # Ray resolves `auto` from Ray processes running on this machine, anyone's, or the last
        # `ray start`: say so, or the address looks like one the user typed.
        found = " (the cluster that Ray found on this machine)" if address == "auto" else ""
        raise ConfigError(f"--address {address}: nothing listens at {host}:{port}{found} "
                          f"({exc.strerror or exc})") from None
    if target.startswith("ray://"):
        channel = grpc.insecure_channel(f"{host}:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=PROBE_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise ConfigError(f"--address {address}: {host}:{port} accepts connections but no Ray Client "
                              f"server answered within {PROBE_TIMEOUT_S:g} s") from None
        finally:
            channel.close()
    else:
        version = _gcs_call(address, f"{host}:{port}", "CheckAlive", gcs_service_pb2.CheckAliveRequest()).ray_version
        if version and version != ray.__version__:
            raise ConfigError(f"--address {address}: the cluster runs Ray {version}, this driver Ray "
                              f"{ray.__version__}; use the same version on both")
    return target


def _gcs_target(address: str) -> str:
    """``address`` with ``auto`` resolved to the GCS address of this node's cluster, as ray.init does."""
    if address != "auto":
        return address
    try:
        return services.canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as exc:
        raise ConfigError(f"--address auto: {exc}".splitlines()[0]) from None


def _gcs_call(address: str, target: str, method: str, request: Any) -> Any:
    """One NodeInfoGcsService RPC to the GCS at ``target`` (with this driver's Ray auth token,
    if any); ConfigError within :data:`PROBE_TIMEOUT_S` if no Ray GCS answers."""
    channel = grpc.insecure_channel(target)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(
            grpc.intercept_channel(channel, SyncAuthenticationMetadataClientInterceptor()))
        return getattr(stub, method)(request, timeout=PROBE_TIMEOUT_S)
    except grpc.RpcError as exc:
        detail = (exc.details() or "").splitlines()[0] if exc.details() else ""
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise ConfigError(f"--address {address}: the cluster at {target} requires a Ray auth token "
                              "(RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            detail = f"no answer within {PROBE_TIMEOUT_S:g} s"
        raise ConfigError(f"--address {address}: no Ray cluster answered at {target} "
                          f"({exc.code().name}: {detail[:160]})") from None
    finally:
        channel.close()


def cluster_nodes(address: str) -> list[dict[str, float]] | None:
    """Total resources of each alive node of the cluster at ``address``, asked of its GCS
    before this driver joins; None for a Ray Client address (``ray://``), which has no GCS."""
    target = _gcs_target(address)
    if target.startswith("ray://"):
        return None
    target = target.split("://", 1)[-1]
    reply = _gcs_call(address, target, "GetAllNodeInfo", gcs_service_pb2.GetAllNodeInfoRequest())
    return [dict(node.resources_total) for node in reply.node_info_list
            if node.state == gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE]


def local_node_resources(num_cpus: int | None) -> dict[str, float]:
    """The resources an embedded local Ray started with ``num_cpus`` gets, resolved as Ray does
    (CPUs and GPUs of this machine or container, ``RAY_OVERRIDE_RESOURCES``)."""
    spec = ResourceAndLabelSpec(num_cpus=num_cpus).resolve(is_head=True, node_ip_address="127.0.0.1")
    return {name: float(amount) for name, amount in spec.to_resource_dict().items()}


def joined_cluster(address: str) -> str:
    """One line naming the cluster ``ray.init`` joined: its GCS address, nodes, CPUs and GPUs.
    ``--address auto`` joins whatever cluster it finds on the node (another user's embedded
    Ray included), so the user sees which."""
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    try:
        gcs = ray.get_runtime_context().gcs_address
    except Exception:  # a Ray Client connection has no GCS address of its own
        gcs = address
    via = "" if gcs == address else f" (--address {address})"
    return (f"joined Ray cluster {gcs}{via}: {nodes} node{'s' * (nodes != 1)}, "
            f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs")


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
    """Start an embedded local Ray on loopback (``address=None``), whatever other Ray runs on this
    machine, or join the cluster at ``address``."""
    os.environ.update(_QUIET_ENV)
    logging.getLogger("ray").setLevel(logging.ERROR)
    if job_runtime_env().get("py_modules"):
        # Ours lists the job's py_modules too; let it replace the job's list instead of clashing.
        os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    with loopback_node() if address is None else nullcontext():
        ray.init(
            # "local", not None: ray.init(None) joins the cluster named in Ray's ray_current_cluster
            # file (the last `ray start` on this machine), and hangs when that cluster is gone.
            address=address or "local",
            num_cpus=num_cpus if address is None else None,
            runtime_env=runtime_env(cfg),
            include_dashboard=False if address is None else None,
            logging_level=logging.ERROR,
            log_to_driver=True,
            ignore_reinit_error=True,
        )
    if address is not None:
        print(joined_cluster(address), flush=True)
