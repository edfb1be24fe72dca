"""The plain RLlib baseline: the RL² bandit script a user would write without metaray.

A gymnasium env whose episode is one trial (``pulls`` pulls of a k-armed Bernoulli bandit,
arm probabilities ~ U[0, 1]^k, fresh each episode) and RLlib's stock PPO module with its
built-in LSTM (one MLP layer before it, as wide as the LSTM). The previous action and reward come from RLlib's ``PrevActionsPrevRewards``
env-to-module connector (on the new API stack this connector is how the old
``lstm_use_prev_action/reward`` model flags are realised; the flags themselves are no longer
read). The baseline copies every PPO setting, the env-runner and learner layout and the seed
from the metaray config it is compared with (:data:`SHARED_SETTINGS`).

For held-out evaluation the env can replay given trials (arm probabilities and seed, set
through ``trial_queue``) so that both systems are scored on exactly the same trials.

Example:
    >>> env = PlainBanditEnv({"num_arms": 5, "pulls": 10})
    >>> obs, _ = env.reset(seed=0)
    >>> sum(env.step(0)[2] for _ in range(10))  # terminates at the 10th pull
    1
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.connectors.env_to_module import FlattenObservations, PrevActionsPrevRewards
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

#: Key of the replayed trial's index in the last step's info.
TRIAL_INDEX_KEY = "trial_index"


class PlainBanditEnv(gym.Env):
    """One episode = one bandit trial; the observation is a constant zero."""

    def __init__(self, config: Mapping[str, Any]):
        self.num_arms = int(config.get("num_arms", 5))
        self.pulls = int(config.get("pulls", 10))
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(self.num_arms)
        self.trial_queue: list[tuple[int, Sequence[float], int]] = []
        self._index = -1

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.trial_queue:
            self._index, probs, trial_seed = self.trial_queue.pop(0)
            super().reset(seed=trial_seed)
            self.probs = np.asarray(probs, np.float64)
        else:
            super().reset(seed=seed)
            self._index = -1
            self.probs = self.np_random.uniform(0.0, 1.0, self.num_arms)
        self._pulled = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        reward = float(self.np_random.random() < self.probs[int(action)])
        self._pulled += 1
        done = self._pulled >= self.pulls
        info = {TRIAL_INDEX_KEY: self._index} if done else {}
        return np.zeros(1, np.float32), reward, done, False, info


def _prev_action_and_reward(env, spaces, device):
    return [PrevActionsPrevRewards(), FlattenObservations()]


#: PPO settings the baseline copies from the metaray run it is compared with.
SHARED_SETTINGS = (
    "lr", "gamma", "lambda_", "clip_param", "vf_clip_param", "vf_loss_coeff", "entropy_coeff",
    "grad_clip", "grad_clip_by", "train_batch_size_per_learner", "minibatch_size", "num_epochs",
)


def plain_ppo_config(reference: AlgorithmConfig, *, num_arms: int, pulls: int, hidden_size: int) -> PPOConfig:
    """RLlib PPO with the stock LSTM on :class:`PlainBanditEnv`, with ``reference``'s PPO
    settings, env runners, learners and seed (new API stack)."""
    return (
        PPOConfig()
        .environment(PlainBanditEnv, env_config={"num_arms": num_arms, "pulls": pulls})
        .env_runners(
            num_env_runners=reference.num_env_runners,
            num_envs_per_env_runner=reference.num_envs_per_env_runner,
            num_cpus_per_env_runner=reference.num_cpus_per_env_runner,
            env_to_module_connector=_prev_action_and_reward,
        )
        .learners(num_learners=reference.num_learners, num_gpus_per_learner=reference.num_gpus_per_learner)
        .rl_module(model_config=DefaultModelConfig(
            use_lstm=True, lstm_cell_size=hidden_size, fcnet_hiddens=[hidden_size],
            max_seq_len=pulls, vf_share_layers=True,
        ))
        .training(**{name: getattr(reference, name) for name in SHARED_SETTINGS})
        .debugging(seed=reference.seed, log_level="ERROR")
    )
