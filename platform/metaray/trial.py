"""RL² trials: K episodes of one task presented to RLlib as one episode.

Because a whole trial is one RLlib episode, RLlib's stateful-module machinery keeps the
recurrent state across the inner episodes of a trial and resets it between trials, which is
exactly the RL² setting. The policy's input at every step is::

    [flatten(inner obs), flatten(previous action), previous reward, inner-episode-done flag]

The previous action/reward are zeros at the first step of a trial; the done flag is 1 on the
first observation after an inner episode ended. :data:`TRIAL_INFO_KEY` in the info of a
trial's last step holds per-inner-episode returns (and successes where the family defines
them) for the metrics.

Example:
    >>> task = TaskConfig(family="bandit", params={"num_arms": 5}, episodes_per_trial=10)
    >>> env = TrialEnv(TrialEnv.env_config(task, seed=0))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape  # 1 (bandit obs) + 5 (one-hot previous arm) + reward + done
    (8,)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from metaray.config import TaskConfig, from_dict
from metaray.tasks import SPLITS, Split, TaskFamily, TaskSplit, TrialPolicy

TRIAL_INFO_KEY = "metaray_trial"


@dataclass(frozen=True)
class TrialRecord:
    """What one finished trial yields for the adaptation metrics."""

    split: str
    index: int  # position in the split's evaluation sequence; -1 for sampled trials
    episode_returns: tuple[float, ...]
    episode_successes: tuple[bool, ...] | None  # None when the family defines no success
    num_steps: int  # env steps of the whole trial


class _EpisodeTally:
    """Accumulates per-inner-episode return and success over one trial."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.successes: list[bool] = []
        self.has_success = False
        self.num_steps = 0
        self._return = 0.0
        self._success = False

    def step(self, reward: float, info: Mapping[str, Any], episode_done: bool) -> None:
        self._return += float(reward)
        self.num_steps += 1
        if "success" in info:
            self.has_success = True
            self._success = self._success or bool(info["success"])
        if episode_done:
            self.returns.append(self._return)
            self.successes.append(self._success)
            self._return, self._success = 0.0, False

    def record(self, split: str, index: int) -> TrialRecord:
        return TrialRecord(
            split, index, tuple(self.returns), tuple(self.successes) if self.has_success else None, self.num_steps
        )


class TrialEnv(gym.Env):
    """Wraps a task family's env so that one episode is one RL² trial.

    Args:
        config: what :meth:`env_config` returns (RLlib hands it to every env runner).
    """

    metadata = {"render_modes": []}

    @staticmethod
    def env_config(task: TaskConfig, seed: int, split: Split = "train") -> dict[str, Any]:
        """The env config of an experiment's trial envs, as plain data for Ray workers:
        the task section, the seed that defines the split, and the split sampled in training."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"task": dataclasses.asdict(task), "seed": seed, "split": split}

    def __init__(self, config: Mapping[str, Any]):
        self.task_config = from_dict(TaskConfig, config["task"])
        self.split = TaskSplit.from_config(self.task_config, config["seed"])
        self.family: TaskFamily = self.split.family
        self.sample_split: Split = config["split"]
        self.episodes_per_trial = self.task_config.episodes_per_trial
        self.reward_scale = self.task_config.reward_scale
        self.inner = self.family.make_env()
        self.inner_obs_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self._obs_dim = gym.spaces.flatdim(self.inner_obs_space)
        self._act_dim = gym.spaces.flatdim(self.action_space)
        size = self._obs_dim + self._act_dim + 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self._queue: list[tuple[Split, int]] = []
        self._cursor = 0
        self._current: tuple[str, int] = (self.sample_split, -1)
        self._tally = _EpisodeTally()
        self._episodes_done = 0
        self._task_seed: list[int] | None = None
        self._task_rng: np.random.Generator | None = None

    # The training loop reseeds the task sampler of every env at every iteration from
    # (seed, iteration, runner, env), so the tasks a run trains on do not depend on when its
    # driver was restarted (``--resume``) or which env runner actors were replaced.
    @property
    def task_seed(self) -> list[int] | None:
        return self._task_seed

    @task_seed.setter
    def task_seed(self, seed: Sequence[int]) -> None:
        self._task_seed = [int(s) for s in seed]
        self._task_rng = np.random.default_rng(self._task_seed)

    @property
    def task_rng(self) -> np.random.Generator:
        """Draws training tasks and their inner-env seeds (the env's own RNG until reseeded)."""
        return self._task_rng if self._task_rng is not None else self.np_random

    # Evaluation assigns each env a queue of (split, index) trials; an env that finishes its
    # queue keeps playing unrecorded padding trials until the evaluator stops sampling.
    @property
    def trial_queue(self) -> list[tuple[Split, int]]:
        return self._queue

    @trial_queue.setter
    def trial_queue(self, queue: Sequence[tuple[Split, int]]) -> None:
        self._queue = [(split, int(index)) for split, index in queue]
        self._cursor = 0

    def _next_trial(self) -> tuple[str, int, Any, int]:
        if self._cursor < len(self._queue):
            split, index = self._queue[self._cursor]
            return split, index, self.split.task_at(split, index), self.split.trial_seed(split, index)
        if self._queue:  # padding after the queue: never recorded
            split = self._queue[-1][0]
            return "padding", -1, self.split.sample(split, self.np_random), int(self.np_random.integers(2**31))
        task = self.split.sample(self.sample_split, self.task_rng)
        return self.sample_split, -1, task, int(self.task_rng.integers(2**31))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        split, index, task, trial_seed = self._next_trial()
        self._current = (split, index)
        self.inner.set_task(task)
        obs, info = self.inner.reset(seed=trial_seed)
        self._tally = _EpisodeTally()
        self._episodes_done = 0
        return self._trial_obs(obs, None, 0.0, False), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.inner.step(action)
        episode_done = bool(terminated or truncated)
        self._tally.step(reward, info, episode_done)
        trial_done = False
        if episode_done:
            self._episodes_done += 1
            trial_done = self._episodes_done >= self.episodes_per_trial
            if not trial_done:
                obs, _ = self.inner.reset()
        step_info: dict[str, Any] = {}
        if trial_done:
            split, index = self._current
            step_info[TRIAL_INFO_KEY] = self._tally.record(split, index)
            if index >= 0:
                self._cursor += 1
        # A nan/inf reward never reaches the policy or the learner: the trial's record keeps it,
        # and the training loop stops with an error at the end of the iteration.
        scaled = float(reward) * self.reward_scale if math.isfinite(reward) else 0.0
        # A finished trial has no future reward, so it always terminates (never truncates).
        return self._trial_obs(obs, action, scaled, episode_done), scaled, trial_done, False, step_info

    def _trial_obs(self, obs, action, reward: float, episode_done: bool) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, np.float32)
        out[: self._obs_dim] = gym.spaces.flatten(self.inner_obs_space, obs)
        if action is not None:
            out[self._obs_dim : self._obs_dim + self._act_dim] = gym.spaces.flatten(
                self.action_space, action
            )
        out[-2] = reward
        out[-1] = float(episode_done)
        return out

    def close(self):
        self.inner.close()


def run_policy_trial(
    env: Any, policy: TrialPolicy, task: Any, trial_seed: int, episodes: int, split: str, index: int
) -> TrialRecord:
    """Play one trial of a baseline policy on the inner env, seeded like :class:`TrialEnv`."""
    env.set_task(task)
    obs, _ = env.reset(seed=trial_seed)
    policy.begin_trial(task, np.random.default_rng(trial_seed))
    tally = _EpisodeTally()
    while len(tally.returns) < episodes:
        action = policy.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        episode_done = bool(terminated or truncated)
        policy.observe(action, float(reward), episode_done)
        tally.step(reward, info, episode_done)
        if episode_done and len(tally.returns) < episodes:
            obs, _ = env.reset()
    return tally.record(split, index)
