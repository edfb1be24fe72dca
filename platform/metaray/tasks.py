"""Task families and their deterministic train/held-out splits.

A *task family* is a distribution over tasks (e.g. Bernoulli bandits with arm probabilities
drawn from U[0, 1]) plus an environment whose task can be set. A family lives in one module
that defines a :class:`TaskFamily` subclass; :func:`load_family` finds it by name.

Splits are assigned by hashing a task's canonical key with the split seed, so they are
reproducible, never overlap, and work the same for finite and continuous task spaces:
sampling from a split is rejection sampling from the family's distribution.

Example:
    >>> split = TaskSplit.from_config(TaskConfig(family="bandit", params={"num_arms": 5}), seed=0)
    >>> task = split.task_at("test", 3)
    >>> split.split_of(task)
    'test'
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from typing import Any, Callable, Literal, Mapping, Protocol

import gymnasium as gym
import numpy as np

from metaray.config import ConfigError, TaskConfig
from metaray.plugins import import_module_ref

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
_SPLIT_IDS = {"train": 0, "test": 1}


class TaskEnv(Protocol):
    """A Gymnasium env whose task can be changed between episodes."""

    observation_space: gym.Space
    action_space: gym.Space

    def set_task(self, task: Any) -> None: ...

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple: ...

    def step(self, action: Any) -> tuple: ...


class TrialPolicy(ABC):
    """A non-learned policy for one trial, used as a baseline.

    ``begin_trial`` receives the task so that oracles can use it; honest baselines ignore it.
    """

    @abstractmethod
    def begin_trial(self, task: Any, rng: np.random.Generator) -> None: ...

    @abstractmethod
    def act(self, obs: Any) -> Any: ...

    def observe(self, action: Any, reward: float, episode_done: bool) -> None:
        """Called after every step with what the policy did and got."""


class RandomPolicy(TrialPolicy):
    """Uniformly random actions; the floor every family's meta-policy must beat."""

    def __init__(self, action_space: gym.Space):
        self.action_space = action_space

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.action_space.seed(int(rng.integers(2**31)))

    def act(self, obs: Any) -> Any:
        return self.action_space.sample()


class TaskFamily(ABC):
    """A distribution over tasks plus the env they parameterise.

    Subclasses implement :meth:`sample_task` and :meth:`make_env`; they may override
    :meth:`task_key` (canonical hashable form of a task), :meth:`fixed_split` (a split the
    benchmark itself defines), :meth:`baselines`, and for the task-inference probe
    (:mod:`metaray.probe`) :meth:`task_features` and :meth:`posterior_features`.
    """

    #: Where the task definition comes from (paper, benchmark); shown in reports.
    source: str = ""
    #: The baseline (a key of :meth:`baselines`) that reports measure regret against besides
    #: the best one on the evaluated trials: one optimal for the task distribution (e.g.
    #: Bayes-optimal) or an oracle that knows the task (an upper bound). None: no baseline of
    #: the family is either, so only the best-on-these-trials regret is reported.
    reference_baseline: str | None = None
    #: Groups of :meth:`task_features` that are a class label (one integer in ``0..K-1`` per
    #: task, e.g. which cell is the goal) rather than numbers: the probe decodes them by
    #: logistic regression and scores accuracy, not R². Names a variant does not return are ignored.
    discrete_features: frozenset[str] = frozenset()

    @abstractmethod
    def sample_task(self, rng: np.random.Generator) -> Any:
        """Draw one task from the family's distribution."""

    @abstractmethod
    def make_env(self) -> TaskEnv:
        """Create an env; the trial wrapper calls ``set_task`` before each trial."""

    def task_key(self, task: Any) -> str:
        """Canonical string of a task; equal tasks must give equal keys."""
        if isinstance(task, Mapping):
            return repr(sorted((k, self.task_key(v)) for k, v in task.items()))
        if isinstance(task, (np.ndarray, list, tuple, float)):
            return repr(np.round(np.asarray(task, dtype=np.float64), 9).tolist())
        return repr(task)

    def fixed_split(self, task: Any) -> Split | None:
        """The benchmark's own split of ``task``, or None to use hashed splitting."""
        return None

    def task_features(self, task: Any) -> dict[str, np.ndarray] | None:
        """Named groups of numbers that identify ``task`` (e.g. arm probabilities), or class
        labels (groups named in :attr:`discrete_features`), which the probe tries to decode
        from the meta-policy's memory; None: not declared."""
        return None

    def posterior_features(self, observations: list, actions: list, rewards: list) -> dict[str, np.ndarray] | None:
        """The Bayes posterior mean of :meth:`task_features` at every step of a trial.

        ``observations[t]`` is the inner env's observation at step ``t`` (as the env returns
        it), ``actions[t]`` and ``rewards[t]`` (raw) the action taken there and its reward.
        Row ``t`` of each group is the posterior mean given everything before action ``t``
        (the ceiling of what any memory can know when it acts); for a discrete group, the
        posterior probability of each label (column ``k``: label ``k``); None: not declared.
        """
        return None

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        """Named factories of baseline policies evaluated on the same trials.

        Families extend this dict; ``episodes_per_trial`` is the trial horizon, which
        horizon-aware baselines (e.g. Bayes-optimal planning) need.
        """
        action_space = self.make_env().action_space
        return {"random": lambda: RandomPolicy(action_space)}


class TaskSplit:
    """Deterministic partition of a family's tasks into train and held-out ("test")."""

    def __init__(self, family: TaskFamily, test_fraction: float, seed: int):
        self.family = family
        self.test_fraction = test_fraction
        self.seed = seed

    @classmethod
    def from_config(cls, task: TaskConfig, seed: int) -> TaskSplit:
        """The split of an experiment: training envs, evaluation and baselines all use this."""
        return cls(load_family(task.family, task.params), task.test_fraction, seed)

    def split_of(self, task: Any) -> Split:
        fixed = self.family.fixed_split(task)
        if fixed is not None:
            return fixed
        digest = hashlib.blake2b(
            f"{self.seed}:{self.family.task_key(task)}".encode(), digest_size=8
        ).digest()
        u = int.from_bytes(digest, "little") / 2**64
        return "test" if u < self.test_fraction else "train"

    def sample(self, split: Split, rng: np.random.Generator, max_tries: int = 10_000) -> Any:
        """Draw a task of ``split`` from the family's distribution (rejection sampling)."""
        for _ in range(max_tries):
            task = self.family.sample_task(rng)
            if self.split_of(task) == split:
                return task
        raise RuntimeError(f"no '{split}' task in {max_tries} draws: is the split empty?")

    def task_at(self, split: Split, index: int) -> Any:
        """The ``index``-th task of a split's fixed evaluation sequence."""
        return self.sample(split, self.rng_for(split, index))

    def trial_seed(self, split: Split, index: int) -> int:
        """Seed of the inner env for evaluation trial ``index`` of ``split``."""
        return int(self.rng_for(split, index, stream=1).integers(2**31))

    def rng_for(self, split: Split, index: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_IDS[split], index, stream])


def load_family(name: str, params: Mapping[str, Any] | None = None) -> TaskFamily:
    """Import a family module and construct its TaskFamily with ``params``.

    ``name`` without dots is looked up as ``envs.<name>``; a dotted name is imported as is;
    a name ending in ``.py`` is a file path (for a family kept outside the repository).
    The module must define exactly one TaskFamily subclass (or a ``FAMILY`` attribute).
    """
    module = import_module_ref(name, "task.family", default_package="envs")
    module_name = module.__name__
    family_cls = getattr(module, "FAMILY", None)
    if family_cls is None:
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, TaskFamily) and obj.__module__ == module.__name__
            and not inspect.isabstract(obj)
        ]
        if len(found) != 1:
            raise ConfigError(
                f"task.family: module {module_name} must define one TaskFamily subclass "
                f"or FAMILY, found {len(found)}"
            )
        family_cls = found[0]
    params = dict(params or {})
    accepted = inspect.signature(family_cls).parameters
    for key in params:
        if key not in accepted:
            raise ConfigError(
                f"unknown config key 'task.params.{key}' for family {name!r} "
                f"(valid: {', '.join(accepted) or 'none'})"
            )
    try:
        return family_cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task.params: {exc}") from None
