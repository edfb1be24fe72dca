"""Prioritized task curriculum (``task.curriculum: plr``): Prioritized Level Replay
(Jiang, Grefenstette and Rocktäschel, 2021) over a family's training tasks.

One :data:`TaskPool` Ray actor per run holds the tasks trained on so far, each with its latest
score and the draw count at which it was last handed out. At the start of every training
trial an env runner asks it for a task (:meth:`PrioritizedTaskPool.sample`): with probability
``task.plr.replay_prob`` a pool task, picked by the rank of its score mixed with its
staleness, else a fresh draw from the training split. At the end of the trial the same env
runner scores the trial (:class:`TrialScorer`) and reports it
(:meth:`PrioritizedTaskPool.update`). The actor is named after the run folder, so every env
runner on every node reaches the same pool; evaluation envs never name it, so held-out trials
stay fixed queues.

The score is computed by the env runner at trial end:

- regret against the family's ``oracle`` baseline: the oracle's trial return on the same task
  and inner-env seed (played on a second copy of the inner env), minus the trial's return.
  Unlike PLR's value-loss scores it needs nothing from the learner, and unlike the raw return it
  does not mistake an intrinsically low-paying task (a goal far from the start) for an unlearned
  one: a task the meta-policy already solves scores about 0 wherever its goal lies.
- families without an oracle: the negative trial return. Ranks are all PLR uses, so any
  normalisation of the return shared by all tasks would change nothing; the cost is that tasks
  paying little even to a perfect policy keep being replayed.

Fresh tasks are drawn only by ``TaskSplit.sample("train", rng)`` and each pool entry keeps
the seed of the RNG that drew it, so held-out tasks never enter the pool and its JSON state
(:meth:`PrioritizedTaskPool.state`) holds numbers only, whatever a family's tasks are.

Example:
    >>> from metaray.config import TaskConfig
    >>> pool = PrioritizedTaskPool(TaskConfig(family="dark_room", curriculum="plr"), seed=0)
    >>> task_id, task = pool.sample()
    >>> pool.split.split_of(task), task_id == pool.split.family.task_key(task)
    ('train', True)
    >>> pool.update(task_id, 12.0)
    >>> pool.stats()["scores"], pool.stats()["distinct_tasks"]
    ([12.0], 1)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from metaray.config import ExperimentConfig, TaskConfig
from metaray.tasks import TaskFamily, TaskSplit
from metaray.trial import run_policy_trial

#: The baseline whose return on the same trial defines a trial's regret.
ORACLE = "oracle"
#: The pool's state in a checkpoint folder (written before metaray_state.json).
POOL_FILE = "task_pool.json"
_POOL_STREAM = 7  # keeps the pool's RNG apart from the other streams seeded by the run seed


def replay_probabilities(scores: np.ndarray, last_sampled: np.ndarray, num_draws: int,
                         temperature: float, staleness_coef: float) -> np.ndarray:
    """PLR's replay distribution over pool tasks.

    Rank prioritisation ``(1/rank)^(1/temperature)`` (rank 1: the highest score; ties ranked in
    pool order), mixed with staleness ``num_draws - last_sampled`` (draws since each task was
    last handed out) in proportion ``staleness_coef``.

    >>> replay_probabilities(np.array([1.0, 3.0]), np.array([1, 2]), 2, 1.0, 0.0).tolist()
    [0.3333333333333333, 0.6666666666666666]
    """
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    by_score = (1.0 / ranks) ** (1.0 / temperature)
    by_score /= by_score.sum()
    staleness = (num_draws - last_sampled).astype(float)
    by_staleness = staleness / staleness.sum() if staleness.sum() > 0 else by_score
    return (1.0 - staleness_coef) * by_score + staleness_coef * by_staleness


@dataclass
class _Entry:
    seed: int  # split.sample("train", np.random.default_rng(seed)) draws the task
    task: Any
    score: float | None  # None until the first trial on it ends
    last_sampled: int


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class PrioritizedTaskPool:
    """The pool's sampling logic, without Ray (:data:`TaskPool` is its actor).

    Calls arriving in the same order give the same tasks for the same ``seed`` (as in serial
    mode, where one process makes every call). Task ids are the family's task keys.
    """

    def __init__(self, task: TaskConfig, seed: int):
        self.split = TaskSplit.from_config(task, seed)
        self.settings = task.plr
        self._rng = np.random.default_rng([seed, _POOL_STREAM])
        self._entries: dict[str, _Entry] = {}  # scored tasks and fresh ones awaiting a score
        self._num_draws = 0
        self._trained_on: set[int] = set()  # digests of every task key handed out
        self._window = {"draws": 0, "replays": 0}  # since the last stats()

    def _scored(self) -> list[str]:
        return [key for key, entry in self._entries.items() if entry.score is not None]

    def _fresh(self) -> tuple[int, Any]:
        seed = int(self._rng.integers(2**63))
        return seed, self.split.sample("train", np.random.default_rng(seed))

    def replay_distribution(self) -> dict[str, float]:
        """Probability of each scored task, given that the next draw replays."""
        keys = self._scored()
        if not keys:
            return {}
        entries = [self._entries[key] for key in keys]
        probs = replay_probabilities(np.array([e.score for e in entries]), np.array([e.last_sampled for e in entries]),
                                     self._num_draws, self.settings.temperature, self.settings.staleness_coef)
        return dict(zip(keys, probs.tolist()))

    def sample(self) -> tuple[str, Any]:
        """The next training trial's (task id, task)."""
        replay_roll = self._rng.random()
        distribution = self.replay_distribution()
        self._num_draws += 1
        self._window["draws"] += 1
        if distribution and replay_roll < self.settings.replay_prob:
            keys = list(distribution)
            key = keys[self._rng.choice(len(keys), p=np.fromiter(distribution.values(), float))]
            self._window["replays"] += 1
        else:
            seed, task = self._fresh()
            key = self.split.family.task_key(task)
            self._entries.setdefault(key, _Entry(seed, task, None, 0))
        entry = self._entries[key]
        entry.last_sampled = self._num_draws
        self._trained_on.add(_digest(key))
        return key, entry.task

    def update(self, task_id: str, score: float) -> None:
        """Record the score of a finished trial; a new task then joins the scored pool,
        evicting the lowest-scored task beyond ``capacity``. Unknown ids (evicted meanwhile,
        or drawn before a restore) and non-finite scores are ignored."""
        entry = self._entries.get(task_id)
        if entry is None or not math.isfinite(score):
            return
        is_new = entry.score is None
        entry.score = float(score)
        scored = self._scored()
        if is_new and len(scored) > self.settings.capacity:
            del self._entries[min(scored, key=lambda key: self._entries[key].score)]

    def stats(self) -> dict[str, Any]:
        """Scores of the pool, share of replayed draws since the last call, distinct tasks
        handed out so far and pool size (TensorBoard's ``curriculum/...``)."""
        scores = [self._entries[key].score for key in self._scored()]
        draws, replays = self._window["draws"], self._window["replays"]
        self._window = {"draws": 0, "replays": 0}
        return {"scores": scores, "score_mean": float(np.mean(scores)) if scores else math.nan,
                "replay_fraction": replays / draws if draws else math.nan,
                "distinct_tasks": len(self._trained_on), "pool_size": len(scores)}

    def state(self) -> dict[str, Any]:
        """JSON-ready state of the scored pool (tasks awaiting a first score are left out:
        their trials do not outlive the checkpoint's driver)."""
        return {
            "rng": self._rng.bit_generator.state,
            "num_draws": self._num_draws,
            "entries": [[key, e.seed, e.score, e.last_sampled] for key, e in self._entries.items()
                        if e.score is not None],
            "trained_on": sorted(self._trained_on),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; each task is drawn again from its seed and must match its key."""
        entries = {}
        for key, seed, score, last_sampled in state["entries"]:
            task = self.split.sample("train", np.random.default_rng(seed))
            if self.split.family.task_key(task) != key:
                raise ValueError(f"task pool state does not fit this task config: seed {seed} draws "
                                 f"{self.split.family.task_key(task)}, not {key}")
            entries[key] = _Entry(seed, task, score, last_sampled)
        self._entries = entries
        self._rng.bit_generator.state = state["rng"]
        self._num_draws = state["num_draws"]
        self._trained_on = set(state["trained_on"])
        self._window = {"draws": 0, "replays": 0}


#: The run's pool as a Ray actor; it takes no CPU (it answers a call per trial).
TaskPool = ray.remote(num_cpus=0, max_restarts=0)(PrioritizedTaskPool)


def pool_name(run_dir: Path) -> str:
    """The actor name of a run's pool: one per run folder, reached by every env runner."""
    return "metaray-task-pool-" + hashlib.blake2b(str(run_dir.resolve()).encode(), digest_size=8).hexdigest()


def start_task_pool(cfg: ExperimentConfig, run_dir: Path) -> ray.actor.ActorHandle:
    """Create (or join) the run's pool, on the driver's node: a run without its driver is over
    anyway. Ray must already be initialised."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return TaskPool.options(name=pool_name(run_dir), get_if_exists=True,
                            scheduling_strategy=here).remote(cfg.task, cfg.seed)


def save_task_pool(pool: ray.actor.ActorHandle, checkpoint: Path) -> None:
    """Write the pool's state into a checkpoint folder (before its metaray_state.json)."""
    (checkpoint / POOL_FILE).write_text(json.dumps(ray.get(pool.state.remote())))


def restore_task_pool(pool: ray.actor.ActorHandle, checkpoint: Path) -> None:
    """Load the pool's state from a checkpoint folder; one without it (a run trained
    ``uniform`` until then) leaves the pool empty."""
    if (checkpoint / POOL_FILE).is_file():
        ray.get(pool.set_state.remote(json.loads((checkpoint / POOL_FILE).read_text())))


class TrialScorer:
    """Scores a finished training trial for the pool, in the env runner that played it
    (regret against the family's oracle, else the negative return; see the module docstring)."""

    def __init__(self, family: TaskFamily, episodes_per_trial: int):
        oracle = family.baselines(episodes_per_trial).get(ORACLE)
        self._oracle = oracle() if oracle else None
        self._env = family.make_env() if oracle else None
        self._episodes = episodes_per_trial

    def __call__(self, task: Any, trial_seed: int, trial_return: float) -> float:
        if self._oracle is None:
            return -trial_return
        best = run_policy_trial(self._env, self._oracle, task, trial_seed, self._episodes, "train", -1)
        return sum(best.episode_returns) - trial_return


class PoolClient:
    """A training env's end of the pool: draws tasks, scores and reports finished trials."""

    def __init__(self, name: str, family: TaskFamily, episodes_per_trial: int):
        self._pool = ray.get_actor(name)
        self._score = TrialScorer(family, episodes_per_trial)

    def draw(self) -> tuple[str, Any]:
        return ray.get(self._pool.sample.remote())

    def report(self, task_id: str, task: Any, trial_seed: int, trial_return: float) -> None:
        # Not awaited: calls from one process reach the actor in order, so serial mode stays
        # deterministic, and an env runner never waits on the pool at trial end.
        self._pool.update.remote(task_id, self._score(task, trial_seed, trial_return))
