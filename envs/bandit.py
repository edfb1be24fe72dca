"""Bernoulli multi-armed bandits, as in RL² (Duan et al., 2016, section 4.1).

A task is a vector of ``num_arms`` success probabilities drawn i.i.d. from U[0, 1]. Each pull
is one (one-step) episode that pays 1 with the pulled arm's probability, so a trial of
``n`` pulls is ``task.episodes_per_trial = n`` episodes. The paper's Table 1 reports, for
k=5 arms and n=10 pulls: random 5.0, Gittins 6.6, RL² 6.7.

Baselines: random, greedy, epsilon-greedy, UCB1, Thompson sampling, the Gittins index
(discount 1 - 1/(pulls left) by default, see :class:`GittinsIndex`) and the exact
Bayes-optimal policy (finite-horizon dynamic programming over Beta(1, 1) posteriors), which
upper-bounds every policy's expected return on this task distribution.

Example:
    >>> family = BernoulliBandit(num_arms=3)
    >>> env = family.make_env()
    >>> env.set_task(np.array([0.0, 0.0, 1.0]))
    >>> _ = env.reset(seed=0)
    >>> env.step(2)[1]
    1.0
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily, TrialPolicy


class BernoulliBanditEnv(gym.Env):
    """One pull per episode; the observation carries no information (always 0)."""

    metadata = {"render_modes": []}

    def __init__(self, num_arms: int):
        self.observation_space = gym.spaces.Discrete(1)
        self.action_space = gym.spaces.Discrete(num_arms)
        self.probs = np.full(num_arms, 0.5)

    def set_task(self, task: np.ndarray) -> None:
        self.probs = np.asarray(task, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        reward = float(self.np_random.random() < self.probs[int(action)])
        return 0, reward, True, False, {}


class BernoulliBandit(TaskFamily):
    """k-armed Bernoulli bandits with arm probabilities ~ U[0, 1]."""

    source = "Duan et al. 2016, RL^2, sec. 4.1 (multi-armed bandits)"
    reference_baseline = "bayes_optimal"  # the best any policy can do in expectation

    def __init__(self, num_arms: int = 5):
        if num_arms < 2:
            raise ValueError(f"num_arms must be >= 2, got {num_arms}")
        self.num_arms = num_arms

    def sample_task(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(0.0, 1.0, self.num_arms)

    def make_env(self) -> BernoulliBanditEnv:
        return BernoulliBanditEnv(self.num_arms)

    def task_features(self, task: np.ndarray) -> dict[str, np.ndarray]:
        return {"arm_probs": np.asarray(task, dtype=np.float64)}

    def posterior_features(self, observations: list, actions: list, rewards: list) -> dict[str, np.ndarray]:
        """Beta(1 + successes, 1 + failures) posterior means of every arm, before each pull.

        Example:
            >>> BernoulliBandit(num_arms=2).posterior_features([0, 0], [1, 1], [1.0, 0.0])["arm_probs"]
            array([[0.5       , 0.5       ],
                   [0.5       , 0.66666667]])
        """
        counts = np.zeros((2, self.num_arms))  # successes, failures
        means = []
        for action, reward in zip(actions, rewards):
            means.append((counts[0] + 1) / (counts.sum(axis=0) + 2))
            counts[0 if reward > 0 else 1, int(action)] += 1
        return {"arm_probs": np.array(means)}

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        """The classical policies of RL² Table 1, and the exact Bayes-optimal policy where its
        dynamic programme is tractable (at most :data:`BAYES_OPTIMAL_MAX_PULLS` pulls).

        >>> sorted(BernoulliBandit(5).baselines(100))
        ['epsilon_greedy', 'gittins', 'greedy', 'random', 'thompson', 'ucb1']
        """
        k = self.num_arms
        policies = {
            **super().baselines(episodes_per_trial),
            "greedy": lambda: EpsilonGreedy(k, epsilon=0.0),
            "epsilon_greedy": lambda: EpsilonGreedy(k, epsilon=0.1),
            "ucb1": lambda: UCB1(k),
            "thompson": lambda: ThompsonSampling(k),
            "gittins": lambda: GittinsIndex(k, episodes_per_trial),
        }
        if episodes_per_trial <= BAYES_OPTIMAL_MAX_PULLS:
            policies["bayes_optimal"] = lambda: BayesOptimal(k, episodes_per_trial)
        return policies


class _CountingPolicy(TrialPolicy):
    """Keeps per-arm success and failure counts over a trial."""

    def __init__(self, num_arms: int):
        self.num_arms = num_arms

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.rng = rng
        self.successes = np.zeros(self.num_arms, dtype=np.int64)
        self.failures = np.zeros(self.num_arms, dtype=np.int64)

    def observe(self, action: Any, reward: float, episode_done: bool) -> None:
        if reward > 0:
            self.successes[action] += 1
        else:
            self.failures[action] += 1

    def _argmax(self, scores: np.ndarray) -> int:
        best = np.flatnonzero(scores == scores.max())
        return int(self.rng.choice(best))


class EpsilonGreedy(_CountingPolicy):
    """Exploits the posterior-mean arm; explores uniformly with probability epsilon."""

    def __init__(self, num_arms: int, epsilon: float):
        super().__init__(num_arms)
        self.epsilon = epsilon

    def act(self, obs: Any) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_arms))
        return self._argmax((self.successes + 1) / (self.successes + self.failures + 2))


class UCB1(_CountingPolicy):
    """Auer et al. (2002): pull every arm once, then mean + sqrt(2 ln t / n_i)."""

    def act(self, obs: Any) -> int:
        pulls = self.successes + self.failures
        if (pulls == 0).any():
            return self._argmax((pulls == 0).astype(float))
        t = pulls.sum()
        return self._argmax(self.successes / pulls + np.sqrt(2.0 * math.log(t) / pulls))


class ThompsonSampling(_CountingPolicy):
    """Samples each arm's probability from its Beta(1 + s, 1 + f) posterior."""

    def act(self, obs: Any) -> int:
        return self._argmax(self.rng.beta(self.successes + 1, self.failures + 1))


class GittinsIndex(_CountingPolicy):
    """Pulls the arm whose Beta(1 + s, 1 + f) posterior has the highest Gittins index.

    The Gittins index is optimal for infinitely many pulls discounted geometrically, whereas a
    trial is ``horizon`` undiscounted pulls. By default the discount is 1 - 1/m with m the pulls
    left, so the discounted horizon 1/(1 - discount) is the rest of the trial; a float
    ``discount`` is used throughout. Either way the index lattice ends with the trial (the
    posterior cannot move after it). RL² (Table 1) reports the best-performing Gittins
    approximation per setting; on held-out trials of those settings (n = 10, 100; k = 5, 10,
    50) this default played best of those measured (fixed discounts 0.9, 0.95, 0.99 and
    1 - 1/horizon, lattices ending with the trial or 2 / (1 - discount) pulls deeper), and as
    well as Bayes-optimal at n = 10. Its index tables cost about 1025 * horizon^3 / 2 updates,
    a few seconds once per process at 100 pulls.
    """

    def __init__(self, num_arms: int, horizon: int, discount: float | None = None):
        super().__init__(num_arms)
        self.horizon = horizon
        self.discount = discount

    def act(self, obs: Any) -> int:
        pulls_left = self.horizon - int(self.successes.sum() + self.failures.sum())
        discount = 1.0 - 1.0 / pulls_left if self.discount is None else self.discount
        table = gittins_index_table(discount, self.horizon)
        return self._argmax(table[self.successes, self.failures])


#: Retirement rewards at which :func:`gittins_index_table` solves the retirement problem.
_RETIREMENT_GRID = np.linspace(0.0, 1.0, 1025)


@lru_cache(maxsize=None)
def gittins_index_table(discount: float, depth: int) -> np.ndarray:
    """Gittins indices ``index[s, f]`` (s + f < depth) of Bernoulli arms, posterior Beta(1 + s, 1 + f).

    Calibration: the index is the reward ``lam`` per pull of a retirement option at which
    pulling once more (then continuing optimally) and retiring now are worth the same, with
    ``discount`` per pull. One backward pass over the belief lattice (s, f), for all ``lam`` of
    a grid at once, gives every state's gap between pulling and retiring, which falls as ``lam``
    grows; the index is interpolated where it crosses zero (at discount 0.99, measured against
    an 8x finer grid: 1e-5 typical error, 5e-4 worst). After ``depth`` pulls the posterior is
    frozen (its mean taken as known); a lattice 2 / (1 - discount) pulls deeper than a state
    gives its classic (infinite-lattice) index within 1e-4 (measured).
    Returns a read-only (depth, depth) array, NaN where s + f >= depth. Cached per arguments.

    >>> table = gittins_index_table(0.9, 30)
    >>> round(float(table[0, 0]), 4), round(float(table[1, 1]), 4)  # as in Gittins' tables
    (0.7029, 0.6346)
    """
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    lam = _RETIREMENT_GRID[:, None]
    # Values are scaled by (1 - discount): retiring is worth lam, a known mean p is worth p.
    # After ``depth`` pulls the mean is taken as known: pull forever or retire.
    value = np.maximum(lam, np.arange(1, depth + 2) / (depth + 2))
    pull_buffer = np.empty_like(value)
    index = np.full((depth, depth), np.nan)
    for pulls in range(depth - 1, -1, -1):
        successes = np.arange(pulls + 1)
        mean = (successes + 1) / (pulls + 2)
        # value[:, j] is the state with j successes one pull deeper: a success leads to j + 1.
        pull = pull_buffer[:, : pulls + 1]
        np.subtract(value[:, 1 : pulls + 2], value[:, : pulls + 1], out=pull)
        pull *= mean
        pull += value[:, : pulls + 1]
        pull *= discount
        pull += (1.0 - discount) * mean
        index[successes, pulls - successes] = _zero_crossing(pull - lam)
        np.maximum(pull, lam, out=value[:, : pulls + 1])
    index.setflags(write=False)
    return index


def _zero_crossing(gap: np.ndarray) -> np.ndarray:
    """Per column, where ``gap`` (decreasing along the retirement grid) crosses zero."""
    last_positive = (gap > 0).sum(axis=0) - 1
    columns = np.arange(gap.shape[1])
    before, after = gap[last_positive, columns], gap[last_positive + 1, columns]
    return _RETIREMENT_GRID[last_positive] + _RETIREMENT_GRID[1] * before / (before - after)


#: Longest trial the exact Bayes-optimal DP is offered for: its canonical belief states grow
#: combinatorially with the pulls (4.4 k at 10 pulls, 348 k and 6 s at 20 pulls with 5 arms,
#: no answer within a minute at 30), so RL² Table 1's 100-pull rows compare against Gittins.
BAYES_OPTIMAL_MAX_PULLS = 10


class BayesOptimal(_CountingPolicy):
    """Exact Bayes-optimal policy for a known horizon under independent Beta(1, 1) priors."""

    def __init__(self, num_arms: int, horizon: int):
        super().__init__(num_arms)
        self.horizon = horizon

    def act(self, obs: Any) -> int:
        remaining = self.horizon - int(self.successes.sum() + self.failures.sum())
        arms = tuple(zip(self.successes.tolist(), self.failures.tolist()))
        return self._argmax(np.array([_q_value(arms, a, remaining) for a in range(self.num_arms)]))


def _q_value(arms: tuple[tuple[int, int], ...], arm: int, remaining: int) -> float:
    s, f = arms[arm]
    p = (s + 1) / (s + f + 2)
    win = arms[:arm] + ((s + 1, f),) + arms[arm + 1 :]
    lose = arms[:arm] + ((s, f + 1),) + arms[arm + 1 :]
    return p * (1.0 + _value(win, remaining - 1)) + (1 - p) * _value(lose, remaining - 1)


def _value(arms: tuple[tuple[int, int], ...], remaining: int) -> float:
    # Arms are exchangeable under the prior, so the value depends on the multiset of counts.
    return _canonical_value(tuple(sorted(arms)), remaining)


@lru_cache(maxsize=None)
def _canonical_value(arms: tuple[tuple[int, int], ...], remaining: int) -> float:
    if remaining <= 0:
        return 0.0
    return max(_q_value(arms, a, remaining) for a in range(len(arms)))
