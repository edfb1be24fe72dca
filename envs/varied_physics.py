"""CartPole with varied physics: the masses, pole length, gravity and action sign are the task.

The dynamics are Gymnasium's CartPole (Barto, Sutton and Anderson, 1983; ``CartPole-v1``
termination: pole beyond 12 degrees or cart beyond 2.4), with each physical parameter
multiplied by a task factor, as in the physics-randomised control tasks of meta-RL and
domain-randomisation work (e.g. Yu et al. 2017, "Preparing for the Unknown", and the
CartPole variants of Packer et al. 2018, "Assessing Generalization in Deep RL"). A task is

- ``factors``: multipliers of ``masscart`` (1.0), ``masspole`` (0.1), ``length`` (0.5) and
  ``gravity`` (9.8), each log-uniform;
- ``action_sign``: +1, or -1 (with ``flip_actions``), which swaps the two push directions.

Splits (``split_mode``):

- ``interpolate``: factors in [0.5, 2]; held-out tasks are a hashed share of that same range
  (``task.test_fraction``).
- ``extrapolate``: factors drawn in [0.25, 4]; a task is a training task when every factor
  lies in [0.5, 2] and held out otherwise, so held-out physics lie outside anything trained
  on (``task.test_fraction`` is then ignored).

Episodes end when the pole falls or after ``horizon`` = 200 steps; reward is 1 per step, so
trial returns reach ``200 * episodes_per_trial`` (set ``task.reward_scale`` to about 0.01 so
the learner sees values near 1). Observations are CartPole's, already O(1).

Baselines: random, and a controller that knows the action sign (not the physics) and pushes
toward the side the pole is falling to.

Example:
    >>> family = VariedCartPole(split_mode="extrapolate")
    >>> task = {"factors": {"masscart": 3.0, "masspole": 1.0, "length": 1.0, "gravity": 1.0}, "action_sign": -1}
    >>> family.fixed_split(task)
    'test'
    >>> env = family.make_env()
    >>> env.set_task(task)
    >>> env.reset(seed=0)[0].shape
    (4,)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from metaray.tasks import Split, TaskFamily, TrialPolicy

DEFAULTS = {"masscart": 1.0, "masspole": 0.1, "length": 0.5, "gravity": 9.8}
TRAIN_RANGE = (0.5, 2.0)
EXTRAPOLATION_RANGE = (0.25, 4.0)


class VariedCartPoleEnv(CartPoleEnv):
    """Gymnasium's CartPole with settable physics, action sign and a step limit."""

    def __init__(self, horizon: int):
        super().__init__()
        self.horizon = horizon
        self.action_sign = 1
        self.steps = 0

    def set_task(self, task: dict[str, Any]) -> None:
        for name, default in DEFAULTS.items():
            setattr(self, name, default * float(task["factors"][name]))
        # CartPole caches these two products at construction.
        self.total_mass = self.masspole + self.masscart
        self.polemass_length = self.masspole * self.length
        self.action_sign = int(task["action_sign"])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.steps = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        pushed = int(action) if self.action_sign > 0 else 1 - int(action)
        obs, reward, terminated, _, info = super().step(pushed)
        self.steps += 1
        return obs, reward, terminated, self.steps >= self.horizon and not terminated, info


class VariedCartPole(TaskFamily):
    """CartPole whose physics factors and action sign are drawn per task."""

    source = "Gymnasium CartPole-v1 dynamics with per-task physics factors (Packer et al. 2018 style)"

    def __init__(self, split_mode: str = "interpolate", flip_actions: bool = True, horizon: int = 200):
        if split_mode not in ("interpolate", "extrapolate"):
            raise ValueError(f"split_mode must be 'interpolate' or 'extrapolate', got {split_mode!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.split_mode = split_mode
        self.flip_actions = flip_actions
        self.horizon = horizon

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        low, high = TRAIN_RANGE if self.split_mode == "interpolate" else EXTRAPOLATION_RANGE
        factors = np.exp(rng.uniform(np.log(low), np.log(high), len(DEFAULTS)))
        sign = int(rng.choice([-1, 1])) if self.flip_actions else 1
        return {"factors": dict(zip(DEFAULTS, factors.tolist())), "action_sign": sign}

    def fixed_split(self, task: dict[str, Any]) -> Split | None:
        if self.split_mode == "interpolate":
            return None
        low, high = TRAIN_RANGE
        inside = all(low <= f <= high for f in task["factors"].values())
        return "train" if inside else "test"

    def make_env(self) -> VariedCartPoleEnv:
        return VariedCartPoleEnv(self.horizon)

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        return {**super().baselines(episodes_per_trial), "sign_aware_controller": SignAwareController}


class SignAwareController(TrialPolicy):
    """Pushes toward the side the pole leans and falls to, knowing only the action sign."""

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.action_sign = int(task["action_sign"])

    def act(self, obs: Any) -> int:
        _, _, angle, angular_velocity = obs
        push_right = angle + 0.5 * angular_velocity > 0
        return int(push_right) if self.action_sign > 0 else int(not push_right)
