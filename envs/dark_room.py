"""Dark Room and Dark Key-to-Door, the grid worlds of Algorithm Distillation (Laskin et al.,
2022, sec. 5) also used by Decision-Pretrained Transformers (Lee et al., 2023).

The agent walks a ``size`` x ``size`` grid (9 in AD, 10 in DPT) from a fixed start cell
(default: the centre) with 5 actions: stay, up, down, left, right (moves into a wall stay
put). It observes only its own cell (and, in key-to-door, whether it holds the key), never
the hidden task, so a trial must remember where it has explored.

- ``variant: room``: the task is the goal cell; every step spent on the goal pays 1; episodes
  last ``horizon`` steps (AD: 20); an episode succeeds if it reaches the goal.
- ``variant: key_to_door``: the task is a (key cell, door cell) pair of distinct cells; the
  first visit to the key pays 1 and picks it up, reaching the door with the key pays 1 and
  ends the episode (``info["success"]``); otherwise episodes last ``horizon`` steps (AD: 50).

The task space is finite (``size**2`` goals, ``size**2 * (size**2 - 1)`` key/door pairs), and
held-out tasks are a hashed subset of it, so no held-out goal is ever trained on.
Observations are a MultiDiscrete (one-hot per coordinate in the trial input) and rewards are
0/1, so nothing needs normalising.

Baselines: random and an oracle that walks a shortest path to the goal (key, then door).

Example:
    >>> family = DarkRoom(size=9)
    >>> env = family.make_env()
    >>> env.set_task((4, 5))
    >>> env.reset(seed=0)[0].tolist()
    [4, 4]
    >>> env.step(RIGHT)[1]
    1.0
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily, TrialPolicy

STAY, UP, DOWN, LEFT, RIGHT = range(5)
MOVES = np.array([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)])

Cell = tuple[int, int]


def task_cells(task: tuple[int, ...]) -> list[Cell]:
    """``(row, col)`` -> [goal]; ``(key_row, key_col, door_row, door_col)`` -> [key, door]."""
    return [(int(task[i]), int(task[i + 1])) for i in range(0, len(task), 2)]


class DarkRoomEnv(gym.Env):
    """A dark grid: the agent sees its cell (and key flag) and is paid at hidden cells."""

    metadata = {"render_modes": []}

    def __init__(self, size: int, start: Cell, horizon: int, key_to_door: bool):
        self.size = size
        self.start = np.array(start)
        self.horizon = horizon
        self.key_to_door = key_to_door
        dims = [size, size, 2] if key_to_door else [size, size]
        self.observation_space = gym.spaces.MultiDiscrete(dims)
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.targets: list[Cell] = [(0, 0), (size - 1, size - 1)] if key_to_door else [(0, 0)]
        self.position = self.start.copy()
        self.has_key = False
        self.steps = 0

    def set_task(self, task: tuple[int, ...]) -> None:
        """A goal ``(row, col)``, or ``(key_row, key_col, door_row, door_col)``."""
        cells = task_cells(task)
        if len(cells) != len(self.targets):
            raise ValueError(f"task {task} does not fit this variant")
        self.targets = cells

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.start.copy()
        self.has_key = False
        self.steps = 0
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        extra = [int(self.has_key)] if self.key_to_door else []
        return np.array([*self.position, *extra], dtype=np.int64)

    def step(self, action):
        self.position = np.clip(self.position + MOVES[int(action)], 0, self.size - 1)
        self.steps += 1
        cell = tuple(self.position.tolist())
        reward, terminated = 0.0, False
        if not self.key_to_door:
            reward = float(cell == self.targets[0])
            success = reward > 0
        else:
            key, door = self.targets
            if not self.has_key and cell == key:
                self.has_key, reward = True, 1.0
            elif self.has_key and cell == door:
                reward, terminated = 1.0, True
            success = terminated
        truncated = self.steps >= self.horizon and not terminated
        return self._obs(), reward, terminated, truncated, {"success": success}


class DarkRoom(TaskFamily):
    """Hidden goal (or key and door) cells in a dark grid."""

    source = "Laskin et al. 2022, Algorithm Distillation, sec. 5 (Dark Room, Dark Key-to-Door)"
    reference_baseline = "oracle"  # knows the task: an upper bound
    # The cell as a class besides its coordinates: accuracy says whether the memory pins the cell
    # down, R² of the coordinates how close it gets before it does.
    discrete_features = frozenset({"goal_cell", "key_cell", "door_cell"})

    def __init__(self, variant: str = "room", size: int = 9, horizon: int | None = None, start: list[int] | None = None):
        if variant not in ("room", "key_to_door"):
            raise ValueError(f"variant must be 'room' or 'key_to_door', got {variant!r}")
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        self.key_to_door = variant == "key_to_door"
        self.size = size
        self.horizon = horizon or (50 if self.key_to_door else 20)
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        self.start: Cell = tuple(start) if start is not None else (size // 2, size // 2)
        if len(self.start) != 2 or not all(0 <= v < size for v in self.start):
            raise ValueError(f"start must be a cell [row, col] inside the grid, got {start}")

    def sample_task(self, rng: np.random.Generator) -> tuple[int, ...]:
        num_cells = self.size * self.size
        if self.key_to_door:
            key, door = rng.choice(num_cells, size=2, replace=False)
            return (*divmod(int(key), self.size), *divmod(int(door), self.size))
        return divmod(int(rng.integers(num_cells)), self.size)

    def task_key(self, task: tuple[int, ...]) -> str:
        return repr(tuple(int(v) for v in task))

    def task_features(self, task: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Each hidden cell as coordinates and as a class (``row * size + col``).

        Example:
            >>> DarkRoom(size=9).task_features((4, 5))
            {'goal': array([4., 5.]), 'goal_cell': array([41])}
        """
        names = ("key", "door") if self.key_to_door else ("goal",)
        features = {}
        for name, (row, col) in zip(names, task_cells(task)):
            features[name] = np.array([row, col], dtype=np.float64)
            features[f"{name}_cell"] = np.array([row * self.size + col])
        return features

    def make_env(self) -> DarkRoomEnv:
        return DarkRoomEnv(self.size, self.start, self.horizon, self.key_to_door)

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        return {**super().baselines(episodes_per_trial), "oracle": ShortestPathOracle}


class ShortestPathOracle(TrialPolicy):
    """Knows the task and walks a shortest path: to the goal (or the key, then the door)."""

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.targets = task_cells(task)

    def act(self, obs: Any) -> int:
        obs = np.asarray(obs)
        holds_key = len(self.targets) == 2 and bool(obs[2])
        row, col = self.targets[1] if holds_key else self.targets[0]
        if obs[0] != row:
            return DOWN if obs[0] < row else UP
        if obs[1] != col:
            return RIGHT if obs[1] < col else LEFT
        return STAY
