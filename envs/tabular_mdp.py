"""Random tabular MDPs, as in RL² (Duan et al., 2016, section 4.2 and Table 2).

A task is an MDP with ``num_states`` = 10 states and ``num_actions`` = 5 actions: every
transition row ``P(. | s, a)`` is drawn from a flat Dirichlet(1, ..., 1), every mean reward
``mu(s, a)`` from N(1, 1), and the observed reward of a step is ``mu(s, a) + N(0, 1)`` noise.
Each episode starts in state 0 and lasts ``horizon`` = 10 steps; a trial is
``task.episodes_per_trial = n`` episodes of one MDP. The paper's Table 2 reports, for n=10:
random 100.1, greedy 134.8, PSRL 138.1, RL² 156.2.

Baselines (all replan with finite-horizon value iteration at the start of every episode;
they see the state, never the task): random; greedy, optimal in the empirical MDP
(observed mean rewards, 0 for untried pairs); epsilon-greedy, greedy with probability-0.1
uniform actions; bayes_greedy, optimal in the posterior-mean MDP; and PSRL (Osband et al.,
2013), optimal in one MDP sampled from the posterior. The posteriors are the generating
priors updated with what was seen: Dirichlet(1 + counts) over each transition row and, for
mean rewards with known unit noise, Normal with precision ``1 + n(s, a)`` and mean
``(1 + sum of rewards) / (1 + n(s, a))``. Mean trial return measured on 1000 held-out trials
(split seed 0): n=10: random 100.1, greedy 137.1, epsilon-greedy 137.0, PSRL 134.0,
bayes_greedy 156.0; n=25: random 248.1, greedy 368.4, epsilon-greedy 383.0, PSRL 404.6,
bayes_greedy 436.7. Trying untried pairs because the prior expects reward 1 there makes
bayes_greedy much stronger than the paper's baselines (it matches RL²'s 156.2 at n=10).

The observation is the state (Discrete, one-hot in the trial input); rewards are left raw
(``task.reward_scale`` rescales them for the learner if wanted).

Example:
    >>> family = TabularMDP()
    >>> task = family.sample_task(np.random.default_rng(0))
    >>> task["transitions"].shape, task["mean_rewards"].shape
    ((10, 5, 10), (10, 5))
    >>> env = family.make_env()
    >>> env.set_task(task)
    >>> env.reset(seed=0)[0]
    0
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily, TrialPolicy


class TabularMDPEnv(gym.Env):
    """One episode of a tabular MDP: ``horizon`` steps from state 0."""

    metadata = {"render_modes": []}

    def __init__(self, num_states: int, num_actions: int, horizon: int):
        self.observation_space = gym.spaces.Discrete(num_states)
        self.action_space = gym.spaces.Discrete(num_actions)
        self.horizon = horizon
        self.transitions = np.full((num_states, num_actions, num_states), 1.0 / num_states)
        self.mean_rewards = np.zeros((num_states, num_actions))
        self.state = 0
        self.steps = 0

    def set_task(self, task: dict[str, np.ndarray]) -> None:
        self.transitions = task["transitions"]
        self.mean_rewards = task["mean_rewards"]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state, self.steps = 0, 0
        return self.state, {}

    def step(self, action):
        action = int(action)
        reward = self.mean_rewards[self.state, action] + self.np_random.normal()
        self.state = int(self.np_random.choice(self.observation_space.n, p=self.transitions[self.state, action]))
        self.steps += 1
        # The horizon is a time limit the state does not show: the episode is truncated.
        return self.state, float(reward), False, self.steps >= self.horizon, {}


class TabularMDP(TaskFamily):
    """Random MDPs: Dirichlet(1) transition rows, N(1, 1) mean rewards, unit reward noise."""

    source = "Duan et al. 2016, RL^2, sec. 4.2 (tabular MDPs, Table 2)"
    # None: no baseline here is Bayes-optimal (bayes_greedy plans in the posterior-mean MDP,
    # PSRL in a posterior sample; neither values information) and none knows the task.
    reference_baseline = None

    def __init__(self, num_states: int = 10, num_actions: int = 5, horizon: int = 10):
        if num_states < 2 or num_actions < 2 or horizon < 1:
            raise ValueError(
                f"need num_states >= 2, num_actions >= 2, horizon >= 1; "
                f"got {num_states}, {num_actions}, {horizon}"
            )
        self.num_states = num_states
        self.num_actions = num_actions
        self.horizon = horizon

    def sample_task(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        shape = (self.num_states, self.num_actions)
        return {
            "transitions": rng.dirichlet(np.ones(self.num_states), size=shape),
            "mean_rewards": rng.normal(1.0, 1.0, size=shape),
        }

    def task_key(self, task: dict[str, np.ndarray]) -> str:
        # A digest of the exact parameters: the generic key would print 550 floats.
        digest = hashlib.blake2b(digest_size=16)
        for name in ("transitions", "mean_rewards"):
            digest.update(np.ascontiguousarray(task[name], dtype=np.float64).tobytes())
        return digest.hexdigest()

    def make_env(self) -> TabularMDPEnv:
        return TabularMDPEnv(self.num_states, self.num_actions, self.horizon)

    def task_features(self, task: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"mean_rewards": task["mean_rewards"].ravel(), "transitions": task["transitions"].ravel()}

    def posterior_features(self, observations: list, actions: list, rewards: list) -> dict[str, np.ndarray]:
        """The generating prior updated with the trial so far, before each action: Normal mean
        ``(1 + sum of rewards) / (1 + n)`` per pair and Dirichlet(1 + counts) transition rows.
        A transition is seen only inside an episode (the last step's next state is reset)."""
        shape = (self.num_states, self.num_actions)
        visits, reward_sums = np.zeros(shape), np.zeros(shape)
        next_counts = np.zeros((*shape, self.num_states))
        rows: dict[str, list] = {"mean_rewards": [], "transitions": []}
        for t, (state, action, reward) in enumerate(zip(observations, actions, rewards)):
            rows["mean_rewards"].append(((1 + reward_sums) / (1 + visits)).ravel())
            rows["transitions"].append(((1 + next_counts) / (1 + next_counts).sum(-1, keepdims=True)).ravel())
            visits[state, action] += 1
            reward_sums[state, action] += reward
            if (t + 1) % self.horizon and t + 1 < len(observations):
                next_counts[state, action, observations[t + 1]] += 1
        return {name: np.array(values) for name, values in rows.items()}

    def baselines(self, episodes_per_trial: int) -> dict[str, Callable[[], TrialPolicy]]:
        shape = (self.num_states, self.num_actions, self.horizon)
        return {
            **super().baselines(episodes_per_trial),
            "greedy": lambda: PosteriorPlanner(*shape, mode="empirical"),
            "epsilon_greedy": lambda: PosteriorPlanner(*shape, mode="empirical", epsilon=0.1),
            "bayes_greedy": lambda: PosteriorPlanner(*shape, mode="mean"),
            "psrl": lambda: PosteriorPlanner(*shape, mode="sample"),
        }


def plan_finite_horizon(transitions: np.ndarray, rewards: np.ndarray, horizon: int) -> np.ndarray:
    """Optimal Q-values ``q[t, s, a]`` of an MDP with ``horizon - t`` steps to go."""
    q = np.zeros((horizon, *rewards.shape))
    value = np.zeros(rewards.shape[0])
    for t in reversed(range(horizon)):
        q[t] = rewards + transitions @ value
        value = q[t].max(axis=1)
    return q


class PosteriorPlanner(TrialPolicy):
    """Plans each episode in an MDP estimated from the trial so far; ``epsilon`` mixes in
    uniform actions.

    ``mode``: "empirical" (observed mean rewards, 0 for untried pairs; Dirichlet(1)-smoothed
    transition frequencies), "mean" (the posterior-mean MDP) or "sample" (a posterior
    sample, i.e. PSRL).

    The next state of a step is the observation of the following ``act`` call, except after
    the episode's last step, whose next state is never shown (the env resets to state 0).
    """

    MODES = ("empirical", "mean", "sample")

    def __init__(self, num_states: int, num_actions: int, horizon: int, mode: str, epsilon: float = 0.0):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.shape = (num_states, num_actions)
        self.horizon = horizon
        self.mode = mode
        self.epsilon = epsilon

    def begin_trial(self, task: Any, rng: np.random.Generator) -> None:
        self.rng = rng
        self.transition_counts = np.zeros((*self.shape, self.shape[0]))
        self.visits = np.zeros(self.shape)
        self.reward_sums = np.zeros(self.shape)
        self.pending: tuple[int, int] | None = None  # (state, action) awaiting its next state
        self.q = self._plan()
        self.t = 0

    def _plan(self) -> np.ndarray:
        concentration = 1.0 + self.transition_counts
        if self.mode == "sample":
            transitions = self.rng.gamma(concentration)
        else:
            transitions = concentration.copy()
        transitions /= transitions.sum(axis=-1, keepdims=True)
        if self.mode == "empirical":
            rewards = self.reward_sums / np.maximum(self.visits, 1)  # 0 where untried
        else:
            precision = 1.0 + self.visits
            rewards = (1.0 + self.reward_sums) / precision
            if self.mode == "sample":
                rewards = self.rng.normal(rewards, 1.0 / np.sqrt(precision))
        return plan_finite_horizon(transitions, rewards, self.horizon)

    def act(self, obs: Any) -> int:
        state = int(obs)
        if self.pending is not None:
            self.transition_counts[(*self.pending, state)] += 1
        if self.rng.random() < self.epsilon:
            action = int(self.rng.integers(self.shape[1]))
        else:
            values = self.q[self.t, state]
            action = int(self.rng.choice(np.flatnonzero(values == values.max())))
        self.pending = (state, action)
        return action

    def observe(self, action: Any, reward: float, episode_done: bool) -> None:
        state, action = self.pending
        self.visits[state, action] += 1
        self.reward_sums[state, action] += reward
        self.t += 1
        if episode_done:
            self.pending = None
            self.q = self._plan()
            self.t = 0
