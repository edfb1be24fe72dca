"""Shared fixtures: the repository on sys.path and one Ray instance per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs seconds)."""
    import ray

    from metaray.cluster import init_ray

    init_ray("bandit", num_cpus=2)
    yield ray
    ray.shutdown()
