"""Shared fixtures and helpers: the repository on sys.path, one Ray instance per test session,
free ports and process-group cleanup for tests that start Ray clusters of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def tiny_run_args(total_env_steps: int, final_num_trials: int) -> list[str]:
    """launch.py arguments for a quickstart run of a few seconds (run from the repo root)."""
    overrides = {
        "training.total_env_steps": total_env_steps,
        "training.train_batch_size": 1000,
        "training.minibatch_size": 500,
        "training.num_epochs": 1,
        "model.hidden_size": 16,
        "env_runners.num_envs_per_env_runner": 8,
        "evaluation.interval": 1,
        "evaluation.num_trials": 20,
        "evaluation.final_num_trials": final_num_trials,
    }
    args = ["--config", "configs/quickstart.yaml"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs seconds)."""
    import ray

    from metaray.cluster import init_ray
    from metaray.config import ExperimentConfig

    init_ray(ExperimentConfig(), num_cpus=2)
    yield ray
    ray.shutdown()


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, every process of a group this test session started."""
    import os
    import signal
    import time

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def launch_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), *map(str, args)]
