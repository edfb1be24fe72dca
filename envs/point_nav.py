"""2D point navigation to a hidden goal, after MAML's 2D navigation (Finn et al., 2017,
sec. 5.2) and PEARL's sparse point robot (Rakelly et al., 2019, appendix).

The point starts at the origin; the task is a goal on the unit half circle (angle ~ U[0, pi];
``full_circle: true`` uses U[0, 2 pi]). An action is a 2D vector, clipped to [-1, 1] per
component and scaled by 0.1, added to the position; episodes last ``horizon`` = 100 steps.
The observation is the position, never the goal. Rewards (``reward: dense | sparse``):

- dense: ``-||position - goal||`` every step (MAML);
- sparse: ``1 - ||position - goal||`` within ``goal_radius`` = 0.2 of the goal, else 0
  (PEARL's sparse variant, whose rewards are made positive in the same way).

``info["success"]`` is True on steps within ``goal_radius``, so trials report the success
rate per episode. Scales: positions stay within a few units and rewards within [-15, 1], so
nothing is normalised; dense returns are about -100 per episode (``task.reward_scale`` can
shrink them for the learner).

Baselines: random and an oracle that knows the goal and heads straight for it, the upper
reference for any meta-policy.

Example:
    >>> family = PointNavigation(reward="sparse")
    >>> env = family.make_env()
    >>> env.set_task(np.array([0.0, 0.1]))
    >>> _ = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0]))
    >>> obs.tolist(), reward, info["success"]
    ([0.0, 0.10000000149011612], 1.0, True)
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily, TrialPolicy

STEP_SIZE = 0.1


class PointNavigationEnv(gym.Env):
    """A point moved by clipped, scaled velocity commands toward an unseen goal."""

    metadata = {"render_modes": []}

    def __init__(self, reward: str, goal_radius: float, horizon: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.sparse = reward == "sparse"
        self.goal_radius = goal_radius
        self.horizon = horizon
        self.goal = np.array([1.0, 0.0])
        self.position = np.zeros(2)
        self.steps = 0

    def set_task(self, task: np.ndarray) -> None:
        self.goal = np.asarray(task, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = np.zeros(2)
        self.steps = 0
        return self.position.astype(np.float32), {}

    def step(self, action):
        self.position = self.position + STEP_SIZE * np.clip(action, -1.0, 1.0)
        self.steps += 1
        distance = float(np.linalg.norm(self.position - self.goal))
        success = distance <= self.goal_radius
        if self.sparse:
            reward = 1.0 - distance if success else 0.0
        else:
            reward = -distance
        return self.position.astype(np.float32), reward, False, self.steps >= self.horizon, {"success": success}


class PointNavigation(TaskFamily):
    """Goals on the unit (half) circle; dense or sparse distance rewards."""

    source = "Finn et al. 2017, MAML, sec. 5.2 (2D navigation); Rakelly et al. 2019, PEARL (sparse point robot)"
    reference_baseline = "oracle"  # knows the goal: an upper bound

    def __init__(self, reward: str = "dense", goal_radius: float = 0.2, horizon: int = 100, full_circle: bool = False):
        if reward not in ("dense", "sparse"):
            raise ValueError(f"reward must be 'dense' or 'sparse', got {reward!r}")
        if goal_radius <= 0 or horizon < 1:
            raise ValueError(f"need goal_radius > 0 and horizon >= 1, got {goal_radius}, {horizon}")
        self.reward = reward
        self.goal_radius = goal_radius
        self.horizon = horizon
        self.max_angle = 2 * np.pi if full_circle else np.pi

    def sample_task(self, rng: np.random.Generator) -> np.ndarray:
        angle = rng.uniform(0.0, self.max_angle)
        return np.array([np.cos(angle), np.sin(angle)])

    def task_features(self, task: np.ndarray) -> dict[str, np.ndarray]:
        return {"goal": np.asarray(task, dtype=np.float64)}

    def make_env(self) -> PointNavigationEnv:
        return PointNavigationEnv(self.reward, self.goal_radius, self.horizon)

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        return {**super().baselines(episodes_per_trial), "oracle": GoalSeekingOracle}


class GoalSeekingOracle(TrialPolicy):
    """Knows the goal and steps straight at it (the largest step that keeps the heading)."""

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.goal = np.asarray(task, dtype=np.float64)

    def act(self, obs: Any) -> np.ndarray:
        command = (self.goal - np.asarray(obs, dtype=np.float64)) / STEP_SIZE
        largest = np.abs(command).max()
        if largest > 1.0:  # shrink the whole vector so that clipping keeps its direction
            command /= largest
        return command.astype(np.float32)
