"""MuJoCo locomotion meta-RL tasks: HalfCheetah-Vel, HalfCheetah-Dir and Ant-Dir.

The standard definitions of MAML (Finn et al., 2017, sec. 5.3) as re-implemented by PEARL
(Rakelly et al., 2019, appendix; rlkit's ``half_cheetah_vel``, ``half_cheetah_dir`` and
``ant_dir`` envs), on Gymnasium's v5 MuJoCo robots; episodes last ``horizon`` = 200 steps.
Only the reward depends on the task, and the observation never shows it:

- ``cheetah_vel``: target velocity ``v* ~ U[0, max_velocity]`` (PEARL: 3; MAML: 2);
  reward ``-|v_x - v*| - 0.05 ||a||^2``.
- ``cheetah_dir``: direction ``d`` in {forward, backward}; reward ``d v_x - 0.05 ||a||^2``.
- ``ant_dir``: direction angle ``theta``; reward ``(v_x, v_y) . (cos theta, sin theta)``
  ``- 0.5 ||a||^2 - 5e-4 ||contact forces||^2 + 1`` (Ant-v5's default costs and survival
  bonus, which are PEARL's), terminating when the torso leaves Ant-v5's healthy height
  range. ``ant_directions: forward_backward`` (the standard two tasks, theta in {0, pi}) or
  ``planar`` (theta ~ U[0, 2 pi], PEARL's ``forward_backward=False`` variant).

The two-direction benchmarks have no held-out tasks: MAML and PEARL meta-test on the same
two directions. To keep metaray's train and held-out trials apart, each such task carries a
``split`` label drawn with it (``fixed_split`` returns it): held-out trials replay the same
two directions and measure adaptation, not generalisation to new tasks. Velocity and planar
direction tasks use the hashed split, so their held-out targets are never trained on.

Scales: observations are Gymnasium's raw joint positions/velocities (O(1-10), left as is);
per-step rewards are O(1) and episode returns O(100), so ``task.reward_scale`` around 0.1
keeps the value targets small.

Needs the ``mujoco`` extra (``pip install metaray[mujoco]``).

Example:
    >>> family = MujocoLocomotion(task="cheetah_vel")
    >>> task = family.sample_task(np.random.default_rng(0))
    >>> 0.0 <= task["velocity"] <= 3.0
    True
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs import require_extra
from metaray.tasks import Split, TaskFamily

TASKS = ("cheetah_vel", "cheetah_dir", "ant_dir")
ANT_DIRECTIONS = ("forward_backward", "planar")
CHEETAH_CTRL_COST = 0.05


class LocomotionTaskEnv(gym.Env):
    """A Gymnasium MuJoCo robot whose reward follows the current task."""

    metadata = {"render_modes": []}

    def __init__(self, task_name: str, horizon: int):
        # Imported here so that the rest of the package works without the mujoco extra.
        if task_name == "ant_dir":
            from gymnasium.envs.mujoco.ant_v5 import AntEnv

            robot = AntEnv()
        else:
            from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

            robot = HalfCheetahEnv(ctrl_cost_weight=CHEETAH_CTRL_COST)
        self.robot = robot
        self.observation_space = robot.observation_space
        self.action_space = robot.action_space
        self.task_name = task_name
        self.horizon = horizon
        self.task: dict[str, Any] = {"velocity": 0.0, "angle": 0.0}
        self.steps = 0

    def set_task(self, task: dict[str, Any]) -> None:
        self.task = task

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.steps = 0
        return self.robot.reset(seed=seed, options=options)

    def step(self, action):
        obs, _, terminated, _, info = self.robot.step(action)
        self.steps += 1
        return obs, float(self._task_reward(info)), terminated, self.steps >= self.horizon and not terminated, info

    def _task_reward(self, info: dict[str, Any]) -> float:
        if self.task_name == "cheetah_vel":
            return -abs(info["x_velocity"] - self.task["velocity"]) + info["reward_ctrl"]
        angle = self.task["angle"]
        if self.task_name == "cheetah_dir":
            return np.cos(angle) * info["x_velocity"] + info["reward_ctrl"]
        heading = np.cos(angle) * info["x_velocity"] + np.sin(angle) * info["y_velocity"]
        return heading + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]

    def close(self):
        self.robot.close()


class MujocoLocomotion(TaskFamily):
    """HalfCheetah-Vel, HalfCheetah-Dir or Ant-Dir, chosen by ``task``."""

    source = "Finn et al. 2017, MAML, sec. 5.3; Rakelly et al. 2019, PEARL (rlkit locomotion envs)"

    def __init__(self, task: str = "cheetah_vel", horizon: int = 200, max_velocity: float = 3.0,
                 ant_directions: str = "forward_backward"):
        require_extra("mujoco")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if ant_directions not in ANT_DIRECTIONS:
            raise ValueError(f"ant_directions must be one of {ANT_DIRECTIONS}, got {ant_directions!r}")
        if horizon < 1 or max_velocity <= 0:
            raise ValueError(f"need horizon >= 1 and max_velocity > 0, got {horizon}, {max_velocity}")
        self.task = task
        self.horizon = horizon
        self.max_velocity = max_velocity
        self.two_directions = task == "cheetah_dir" or ant_directions == "forward_backward"

    def sample_task(self, rng: np.random.Generator) -> dict[str, Any]:
        if self.task == "cheetah_vel":
            return {"velocity": float(rng.uniform(0.0, self.max_velocity))}
        if self.two_directions:
            return {"angle": float(rng.choice([0.0, np.pi])), "split": str(rng.choice(["train", "test"]))}
        return {"angle": float(rng.uniform(0.0, 2 * np.pi))}

    def fixed_split(self, task: dict[str, Any]) -> Split | None:
        return task.get("split")

    def make_env(self) -> LocomotionTaskEnv:
        return LocomotionTaskEnv(self.task, self.horizon)
