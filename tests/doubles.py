"""Test doubles: a tiny task family whose env is fully predictable (like gymnasium's GenericTestEnv)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily


class CountingEnv(gym.Env):
    """Episodes of ``length`` steps; reward = task + step index; obs = step index; info success at the end."""

    def __init__(self, length: int, box_actions: bool):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = (
            gym.spaces.Box(-1.0, 1.0, (2,), np.float32) if box_actions else gym.spaces.Discrete(3)
        )
        self.task = 0.0
        self.resets = 0

    def set_task(self, task):
        self.task = float(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.resets += 1
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        info = {"success": done and self.task > 0.5}
        return np.array([self.t], np.float32), self.task + self.t, done, False, info


class CountingFamily(TaskFamily):
    """Tasks are floats in [0, 1)."""

    source = "test double"

    def __init__(self, length: int = 3, box_actions: bool = False):
        self.length = length
        self.box_actions = box_actions

    def sample_task(self, rng):
        return float(rng.random())

    def make_env(self):
        return CountingEnv(self.length, self.box_actions)


FAMILY = CountingFamily
