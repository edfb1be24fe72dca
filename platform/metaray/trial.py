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
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np

from metaray.config import TaskConfig, from_dict
from metaray.tasks import SPLITS, Split, TaskFamily, TaskSplit, TrialPolicy

TRIAL_INFO_KEY = "metaray_trial"


class FamilyEnvError(RuntimeError):
    """A task family's code raised, or its env returned what Gymnasium's API and the env's
    declared spaces do not allow.

    The message is one line naming the method and the cause (and the family, where the code
    that raises knows it): that is what the user has to fix, and RLlib's traceback names
    neither.
    """


def family_env_error(exc: BaseException | None) -> FamilyEnvError | None:
    """The :class:`FamilyEnvError` behind ``exc``, or None: RLlib re-raises an env's error as
    the cause of its own, and Ray wraps one raised in another process (``RayTaskError.cause``).

    >>> try:
    ...     try:
    ...         raise FamilyEnvError("env.step raised ValueError: x")
    ...     except FamilyEnvError as inner:
    ...         raise RuntimeError() from inner
    ... except RuntimeError as outer:
    ...     str(family_env_error(outer))
    'env.step raised ValueError: x'
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FamilyEnvError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "cause", None)
    return None


class _OneLineFamilyErrors(logging.Filter):
    """RLlib logs an env's exception with its whole traceback, twice in an env runner actor
    (``ray.rllib`` when the env fails, ``ray.rllib.utils.actor_manager`` when the call does).
    For a FamilyEnvError one line says it all: the first log becomes that line in an env
    runner actor; every other is dropped (in the driver the training loop stops with it)."""

    def __init__(self, one_line_in_actors: bool):
        super().__init__()
        self.one_line_in_actors = one_line_in_actors

    def filter(self, record: logging.LogRecord) -> bool:
        cause = family_env_error(record.exc_info[1]) if record.exc_info else None
        if cause is None:
            return True
        if not (self.one_line_in_actors and _in_ray_actor()):
            return False
        record.msg, record.args, record.exc_info, record.exc_text = f"env runner: {cause}", (), None, None
        return True


#: RLlib's loggers that log an env's exception, and their filters.
_FAMILY_ERROR_FILTERS = {"ray.rllib": _OneLineFamilyErrors(one_line_in_actors=True),
                         "ray.rllib.utils.actor_manager": _OneLineFamilyErrors(one_line_in_actors=False)}

#: Ray internal key-value store entry (one per Ray job) of the last FamilyEnvError in an env runner.
_LAST_ERROR_KEY = "metaray:last_family_error:{job}"


def _in_ray_actor() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def _leave_for_driver(error: FamilyEnvError) -> None:
    """In an env runner actor, store ``error`` where the driver finds it: RLlib replaces a
    failed runner and the driver sees only that it died, not why."""
    if _in_ray_actor():
        import ray
        from ray.experimental import internal_kv

        key = _LAST_ERROR_KEY.format(job=ray.get_runtime_context().get_job_id())
        internal_kv._internal_kv_put(key, str(error), overwrite=True)


def last_env_runner_error() -> str | None:
    """The last FamilyEnvError an env runner of this driver's Ray job raised, or None."""
    import ray
    from ray.experimental import internal_kv

    if not ray.is_initialized():
        return None
    value = internal_kv._internal_kv_get(_LAST_ERROR_KEY.format(job=ray.get_runtime_context().get_job_id()))
    return value.decode() if value else None


def call_family(method: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)``; an exception becomes a FamilyEnvError that starts with ``method``.

    >>> call_family("env.step", int, "x")
    Traceback (most recent call last):
    ...
    metaray.trial.FamilyEnvError: env.step raised ValueError: invalid literal for int() with base 10: 'x'
    """
    try:
        return function(*args, **kwargs)
    except FamilyEnvError:
        raise
    except Exception as exc:
        raise FamilyEnvError(f"{method} raised {exception_line(exc)}") from exc


def exception_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``, for error reports of one line.

    >>> exception_line(ValueError("bad arm\\nmore detail"))
    'ValueError: bad arm'
    """
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def describe_value(value: Any) -> str:
    """What an env returned, briefly: shape and dtype of an array, else a short repr.

    >>> describe_value(np.zeros(2, np.float32)), describe_value(None)
    ('an array of shape (2,) and dtype float32', 'None')
    """
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def space_problem(space: gym.Space, value: Any) -> str | None:
    """Why ``value`` is not an element of ``space`` (its shape, dtype or bounds), or None.

    >>> box = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    >>> space_problem(box, np.zeros(2, np.float32))
    'an array of shape (2,) and dtype float32, not of shape (1,)'
    >>> space_problem(box, np.array([3.0], np.float32))
    'an array of shape (1,) and dtype float32, outside the bounds'
    """
    if space.contains(value):
        return None
    if isinstance(space, gym.spaces.Box):
        array = np.asarray(value)
        if array.shape != space.shape:
            return f"{describe_value(array)}, not of shape {space.shape}"
        if not np.can_cast(array.dtype, space.dtype):
            return f"{describe_value(array)}, not castable to {space.dtype}"
        return f"{describe_value(array)}, outside the bounds"
    return f"{describe_value(value)}, not an element"


@dataclass(frozen=True)
class TrialRecord:
    """What one finished trial yields for the adaptation metrics."""

    split: str
    index: int  # position in the split's evaluation sequence; -1 for sampled trials
    episode_returns: tuple[float, ...]
    episode_successes: tuple[bool, ...] | None  # None when the family defines no success
    num_steps: int  # env steps of the whole trial


@dataclass(frozen=True)
class TrialTrace:
    """One played trial step by step, for the task-inference probe (:mod:`metaray.probe`)."""

    split: str
    index: int
    memory: np.ndarray  # [T, D]: the policy's recurrent state after each step's input, flattened
    trial_obs: np.ndarray  # [T, trial input width]: the policy's input at each step
    actions: np.ndarray  # [T]
    rewards: np.ndarray  # [T], as the learner saw them (times task.reward_scale)


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

    Every call into the family's code (``make_env``, ``sample_task``, the env's ``set_task``,
    ``reset`` and ``step``) that raises, or returns what Gymnasium's API does not allow,
    raises :class:`FamilyEnvError` naming the family, the method and the cause.

    Args:
        config: what :meth:`env_config` returns (RLlib hands it to every env runner).
        strict: also check every observation against the inner env's observation space, and
            rewards, flags and infos against Gymnasium's API (the check before Ray starts,
            :func:`metaray.validation.check_trial`; not needed in training).
    """

    metadata = {"render_modes": []}

    @staticmethod
    def env_config(task: TaskConfig, seed: int, split: Split = "train", task_pool: str | None = None) -> dict[str, Any]:
        """The env config of an experiment's trial envs, as plain data for Ray workers:
        the task section, the seed that defines the split, the split sampled in training and,
        for ``task.curriculum: plr``, the name of the run's task pool actor
        (:mod:`metaray.curriculum`) that then picks the training tasks."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        # task_pool is always set, None included: RLlib merges the evaluation env config into
        # the training one, and evaluation envs must never draw from the pool.
        return {"task": dataclasses.asdict(task), "seed": seed, "split": split, "task_pool": task_pool}

    def __init__(self, config: Mapping[str, Any], *, strict: bool = False):
        self.strict = strict
        for name, one_line in _FAMILY_ERROR_FILTERS.items():
            logging.getLogger(name).addFilter(one_line)  # no-op when it is there already
        self.task_config = from_dict(TaskConfig, config["task"])
        self.split = TaskSplit.from_config(self.task_config, config["seed"])
        self.family: TaskFamily = self.split.family
        self.sample_split: Split = config["split"]
        self.episodes_per_trial = self.task_config.episodes_per_trial
        self.reward_scale = self.task_config.reward_scale
        self.inner = self._family_call("make_env", self.family.make_env)
        self.inner_obs_space = self.inner.observation_space
        self.action_space = self.inner.action_space
        self._obs_dim = self._family_call("env.observation_space", gym.spaces.flatdim, self.inner_obs_space)
        self._act_dim = self._family_call("env.action_space", gym.spaces.flatdim, self.action_space)
        size = self._obs_dim + self._act_dim + 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self._queue: list[tuple[Split, int]] = []
        self._cursor = 0
        self._current: tuple[str, int] = (self.sample_split, -1)
        self._tally = _EpisodeTally()
        self._episodes_done = 0
        self._task_seed: list[int] | None = None
        self._task_rng: np.random.Generator | None = None
        self._pool_name: str | None = config.get("task_pool")
        self._pool_client = None  # connected at the first pooled trial (an unused env never needs the actor)
        self._pool_trial: tuple[str, Any, int] | None = None  # (task id, task, inner seed) of a pooled trial

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
            task = self._family_call("sample_task", self.split.task_at, split, index)
            return split, index, task, self.split.trial_seed(split, index)
        if self._queue:  # padding after the queue: never recorded
            split = self._queue[-1][0]
            task = self._family_call("sample_task", self.split.sample, split, self.np_random)
            return "padding", -1, task, int(self.np_random.integers(2**31))
        if self._pool_name is not None:
            if self._pool_client is None:
                from metaray.curriculum import PoolClient  # not at the top: curriculum imports this module

                self._pool_client = PoolClient(self._pool_name, self.family, self.episodes_per_trial)
            task_id, task = self._pool_client.draw()
            self._pool_trial = (task_id, task, int(self.task_rng.integers(2**31)))
            return self.sample_split, -1, task, self._pool_trial[2]
        task = self._family_call("sample_task", self.split.sample, self.sample_split, self.task_rng)
        return self.sample_split, -1, task, int(self.task_rng.integers(2**31))

    def _error(self, method: str, problem: str) -> FamilyEnvError:
        error = FamilyEnvError(f"task family {self.task_config.family!r}: {method} {problem}")
        _leave_for_driver(error)
        return error

    def _family_call(self, method: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return call_family(f"task family {self.task_config.family!r}: {method}", function, *args, **kwargs)
        except FamilyEnvError as error:
            _leave_for_driver(error)
            raise

    def _inner_reset(self, **kwargs: Any) -> tuple[Any, dict]:
        result = self._family_call("env.reset", self.inner.reset, **kwargs)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise self._error("env.reset", f"returned {describe_value(result)}, not (obs, info)")
        if self.strict:
            self._check_obs("env.reset", result[0])
            self._check_type("env.reset", "info", result[1], dict)
        return result

    def _inner_step(self, action: Any) -> tuple[Any, float, Any, Any, dict]:
        result = self._family_call("env.step", self.inner.step, action)
        if not (isinstance(result, tuple) and len(result) == 5):
            raise self._error("env.step", f"returned {describe_value(result)}, "
                                          "not (obs, reward, terminated, truncated, info)")
        obs, reward, terminated, truncated, info = result
        if self.strict:
            self._check_obs("env.step", obs)
            is_number = isinstance(reward, (int, float, np.integer, np.floating)) and not isinstance(reward, bool)
            if not is_number or not math.isfinite(reward):
                raise self._error("env.step", f"returned reward {describe_value(reward)}, not a finite number")
            for name, flag in (("terminated", terminated), ("truncated", truncated)):
                self._check_type("env.step", name, flag, (bool, np.bool_))
            self._check_type("env.step", "info", info, dict)
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise self._error("env.step", f"returned reward {describe_value(reward)}, not a number") from None
        return obs, reward, terminated, truncated, info

    def _check_obs(self, method: str, obs: Any) -> None:
        problem = space_problem(self.inner_obs_space, obs)
        if problem:
            raise self._error(method, f"returned an observation outside its observation_space "
                                      f"{self.inner_obs_space}: {problem}")

    def _check_type(self, method: str, name: str, value: Any, expected: type | tuple[type, ...]) -> None:
        if not isinstance(value, expected):
            types = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(dict.fromkeys(t.__name__.rstrip("_") for t in types))
            raise self._error(method, f"returned {name} {describe_value(value)}, not a {names}")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._pool_trial = None
        split, index, task, trial_seed = self._next_trial()
        self._current = (split, index)
        self._family_call("env.set_task", self.inner.set_task, task)
        obs, info = self._inner_reset(seed=trial_seed)
        self._tally = _EpisodeTally()
        self._episodes_done = 0
        return self._trial_obs(obs, None, 0.0, False, "env.reset"), {}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._inner_step(action)
        obs_from = "env.step"
        episode_done = bool(terminated or truncated)
        self._tally.step(reward, info, episode_done)
        trial_done = False
        if episode_done:
            self._episodes_done += 1
            trial_done = self._episodes_done >= self.episodes_per_trial
            if not trial_done:
                obs, _ = self._inner_reset()
                obs_from = "env.reset"
        step_info: dict[str, Any] = {}
        if trial_done:
            split, index = self._current
            step_info[TRIAL_INFO_KEY] = self._tally.record(split, index)
            if index >= 0:
                self._cursor += 1
            if self._pool_trial is not None:
                self._pool_client.report(*self._pool_trial, sum(self._tally.returns))
        # A nan/inf reward never reaches the policy or the learner: the trial's record keeps it,
        # and the training loop stops with an error at the end of the iteration.
        scaled = float(reward) * self.reward_scale if math.isfinite(reward) else 0.0
        # A finished trial has no future reward, so it always terminates (never truncates).
        return self._trial_obs(obs, action, scaled, episode_done, obs_from), scaled, trial_done, False, step_info

    def _trial_obs(self, obs, action, reward: float, episode_done: bool, obs_from: str) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, np.float32)
        try:
            flat = np.asarray(gym.spaces.flatten(self.inner_obs_space, obs))
        except Exception:
            flat = None
        if flat is None or flat.shape != (self._obs_dim,):
            raise self._error(obs_from, f"returned an observation that does not fit its observation_space "
                                        f"{self.inner_obs_space}: {describe_value(obs)}")
        out[: self._obs_dim] = flat
        if action is not None:
            out[self._obs_dim : self._obs_dim + self._act_dim] = gym.spaces.flatten(
                self.action_space, action
            )
        out[-2] = reward
        out[-1] = float(episode_done)
        return out

    def close(self):
        self._family_call("env.close", self.inner.close)


def run_policy_trial(
    env: Any, policy: TrialPolicy, task: Any, trial_seed: int, episodes: int, split: str, index: int
) -> TrialRecord:
    """Play one trial of a baseline policy on the inner env, seeded like :class:`TrialEnv`;
    what the env or the policy raises becomes a :class:`FamilyEnvError` naming the method."""
    call_family("env.set_task", env.set_task, task)
    obs, _ = call_family("env.reset", env.reset, seed=trial_seed)
    call_family("baseline policy.begin_trial", policy.begin_trial, task, np.random.default_rng(trial_seed))
    tally = _EpisodeTally()
    while len(tally.returns) < episodes:
        action = call_family("baseline policy.act", policy.act, obs)
        obs, reward, terminated, truncated, info = call_family("env.step", env.step, action)
        episode_done = bool(terminated or truncated)
        call_family("baseline policy.observe", policy.observe, action, float(reward), episode_done)
        tally.step(reward, info, episode_done)
        if episode_done and len(tally.returns) < episodes:
            obs, _ = call_family("env.reset", env.reset)
    return tally.record(split, index)
