"""Meta-World meta-learning benchmarks ML1, ML10 and ML45 (Yu et al., 2019, "Meta-World: A
Benchmark and Evaluation for Multi-Task and Meta Reinforcement Learning", sec. 4), through the
``metaworld`` package's own task sets (v3 environments, ``metaworld`` 3.x API).

- ``benchmark: ML1`` with ``env_name`` (any of the 50 v3 names, e.g. ``reach-v3``): training
  and held-out tasks are the benchmark's two sets of 50 goal/object positions of that one
  environment.
- ``benchmark: ML10`` / ``ML45``: 10 / 45 training environments and 5 held-out environments,
  50 positions each, exactly as ``metaworld.ML10`` / ``metaworld.ML45`` define them.

A task is ``(split, index)`` into the benchmark's ``train_tasks`` / ``test_tasks`` (built with
``benchmark_seed``), and :meth:`MetaWorld.fixed_split` returns the benchmark's own split, so
the hashed split and ``task.test_fraction`` play no part. Observations are Meta-World's
39-dim partially observable states (goal zeroed, as the ML benchmarks prescribe); actions
are 4-dim in [-1, 1]; episodes last ``horizon`` steps (Meta-World's ``max_path_length``
500, or fewer).

Success: the environments report ``info["success"]`` every step; an episode of a trial counts
as a success if any of its steps succeeded, which is Meta-World's evaluation protocol (its
evaluation episodes terminate on the first success and count it), so the adaptation
metrics carry the success rate per episode of a trial.

Scales: observations are positions in metres and gripper openings (O(1)); the v2 reward
function pays up to 10 per step, so returns reach a few thousand per episode: set
``task.reward_scale`` (about 0.01) to keep value targets small.

Building a benchmark resets every environment 50 times (ML10: about 10 s, ML45: longer); it
is done once per process and cached. Needs the ``metaworld`` extra
(``pip install metaray[metaworld]``).

Example:
    >>> family = MetaWorld(benchmark="ML1", env_name="reach-v3")
    >>> family.fixed_split(("test", 7))
    'test'
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np

from envs import require_extra
from metaray.tasks import SPLITS, Split, TaskFamily

BENCHMARKS = ("ML1", "ML10", "ML45")
MAX_PATH_LENGTH = 500
OBS_DIM = 39


@lru_cache(maxsize=4)
def load_benchmark(benchmark: str, env_name: str, seed: int) -> Any:
    """The ``metaworld`` benchmark object (its env classes and train/test task lists)."""
    import metaworld

    if benchmark == "ML1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"env_name {env_name!r} is not a Meta-World v3 environment "
                             f"(e.g. {', '.join(metaworld.ML1.ENV_NAMES[:3])}, ...)")
        return metaworld.ML1(env_name, seed=seed)
    return getattr(metaworld, benchmark)(seed=seed)


class MetaWorldTaskEnv(gym.Env):
    """Switches between the benchmark's environments and tasks; one instance per env class."""

    metadata = {"render_modes": []}

    def __init__(self, benchmark: Any, horizon: int):
        self.benchmark = benchmark
        self.horizon = horizon
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._envs: dict[str, Any] = {}
        self.set_task(("train", 0))
        self.steps = 0

    def set_task(self, task: tuple[str, int]) -> None:
        split, index = task
        mw_task = (self.benchmark.train_tasks if split == "train" else self.benchmark.test_tasks)[index]
        if mw_task.env_name not in self._envs:
            classes = self.benchmark.train_classes if split == "train" else self.benchmark.test_classes
            self._envs[mw_task.env_name] = classes[mw_task.env_name]()
        self.sim = self._envs[mw_task.env_name]
        self.sim.set_task(mw_task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # Meta-World's reset ignores its seed argument
            self.sim.seed(seed)
        self.steps = 0
        obs, info = self.sim.reset()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.sim.step(action)
        self.steps += 1
        return obs, float(reward), terminated, truncated or self.steps >= self.horizon, info

    def close(self):
        for env in self._envs.values():
            env.close()


class MetaWorld(TaskFamily):
    """ML1 (one environment, new goals), ML10 or ML45 (new environments)."""

    source = "Yu et al. 2019, Meta-World, sec. 4 (ML1, ML10, ML45; metaworld package v3 task sets)"

    def __init__(self, benchmark: str = "ML1", env_name: str = "reach-v3", benchmark_seed: int = 0,
                 horizon: int = MAX_PATH_LENGTH):
        require_extra("metaworld")
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark must be one of {BENCHMARKS}, got {benchmark!r}")
        if not 1 <= horizon <= MAX_PATH_LENGTH:
            raise ValueError(f"horizon must be in [1, {MAX_PATH_LENGTH}], got {horizon}")
        self.benchmark_name = benchmark
        self.env_name = env_name if benchmark == "ML1" else ""
        self.benchmark_seed = benchmark_seed
        self.horizon = horizon
        self.benchmark = load_benchmark(benchmark, self.env_name, benchmark_seed)
        self.num_tasks = {"train": len(self.benchmark.train_tasks), "test": len(self.benchmark.test_tasks)}

    def sample_task(self, rng: np.random.Generator) -> tuple[str, int]:
        index = int(rng.integers(self.num_tasks["train"] + self.num_tasks["test"]))
        if index < self.num_tasks["train"]:
            return ("train", index)
        return ("test", index - self.num_tasks["train"])

    def fixed_split(self, task: tuple[str, int]) -> Split:
        split = task[0]
        if split not in SPLITS:
            raise ValueError(f"not a Meta-World task: {task!r}")
        return split

    def task_key(self, task: tuple[str, int]) -> str:
        return f"{task[0]}:{int(task[1])}"

    def make_env(self) -> MetaWorldTaskEnv:
        return MetaWorldTaskEnv(self.benchmark, self.horizon)
