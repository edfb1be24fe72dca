"""The meta-policy as a recurrent Q-network, and its sequence TD loss (R2D2 on RLlib's DQN).

:class:`RecurrentQPolicy` reads the same trial inputs through the same torso as the
actor-critic :class:`~metaray.models.policy.RecurrentMetaPolicy` (encoder MLP, memory core
from :data:`~metaray.models.cores.CORES`, head MLP) and ends in Q-values, with dueling value
and advantage streams by default. It acts greedily in evaluation and epsilon-greedily in
training, with Ape-X's fixed epsilon per actor (Horgan et al. 2018): every vectorised env of
every env runner is one actor, so a single runner with 64 envs explores at 64 rates.

RLlib's DQN replays sequences of up to ``model.max_seq_len`` steps from one episode, that is
from one trial; the first step's recurrent state is the one stored while sampling, and the
first ``burn_in_len`` steps only refresh it (R2D2, Kapturowski et al. 2019): they carry no
loss and no gradient. RLlib samples sequences only with 1-step transitions, so
:class:`R2D2Learner` builds the n-step double-Q targets inside each sequence, truncated at
its end; the trial's last step is terminal, the inner episodes' ends are not. :class:`R2D2`
is RLlib's DQN whose checkpoints also hold the replay buffer (RLlib 2.60 keeps it only on
its old API stack), so ``--resume`` learns from the same replay.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> module = RecurrentQPolicy(
    ...     observation_space=gym.spaces.Box(-np.inf, np.inf, (8,), np.float32),
    ...     action_space=gym.spaces.Discrete(5),
    ...     model_config={"hidden_size": 16, R2D2_KEY: {"epsilon": 0.0}},
    ... )
    >>> state = {k: torch.from_numpy(v).expand(3, *v.shape) for k, v in module.get_initial_state().items()}
    >>> out = module.forward_exploration({"obs": torch.zeros(3, 1, 8), "state_in": state}, t=0)
    >>> tuple(out["actions"].shape)  # the time rank stays, as RLlib's stateful connectors expect
    (3, 1)
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ray.rllib.algorithms.dqn import DQN
from ray.rllib.algorithms.dqn.dqn_learner import (
    QF_LOSS_KEY,
    QF_MAX_KEY,
    QF_MEAN_KEY,
    QF_MIN_KEY,
    QF_NEXT_PREDS,
    QF_PREDS,
    QF_TARGET_NEXT_PREDS,
    TD_ERROR_MEAN_KEY,
)
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, QNetAPI, TargetNetworkAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import ModuleID, NetworkType, StateDict, TensorType

from metaray.config import ModelConfig, R2D2Config, from_dict
from metaray.models.policy import _Torso, trace_memory

#: Key of the :class:`~metaray.config.R2D2Config` (as a dict) in the module's ``model_config``.
R2D2_KEY = "r2d2"

#: Key of the n-step horizon in the AlgorithmConfig's ``learner_config_dict``
#: (RLlib's own ``n_step`` must stay 1 when it samples sequences).
N_STEP_KEY = "r2d2_n_step"


def ape_x_epsilons(epsilon: float, alpha: float, first_actor: int, count: int, num_actors: int) -> list[float]:
    """Exploration rates of actors ``first_actor .. first_actor + count - 1`` of ``num_actors``:
    ``epsilon ** (1 + alpha * i / (num_actors - 1))`` (one actor alone gets ``epsilon``).

    >>> [round(e, 4) for e in ape_x_epsilons(0.4, 7.0, 0, 3, 3)]
    [0.4, 0.0162, 0.0007]
    """
    spread = max(num_actors - 1, 1)
    return [epsilon ** (1 + alpha * i / spread) for i in range(first_actor, first_actor + count)]


class _QHead(nn.Module):
    """Torso features to Q-values: ``V + A - mean(A)`` (dueling) or one linear layer."""

    def __init__(self, in_size: int, num_actions: int, dueling: bool):
        super().__init__()
        self.advantage = nn.Linear(in_size, num_actions)
        self.value = nn.Linear(in_size, 1) if dueling else None

    def forward(self, features: TensorType) -> TensorType:
        advantage = self.advantage(features)
        if self.value is None:
            return advantage
        return self.value(features) + advantage - advantage.mean(dim=-1, keepdim=True)


class RecurrentQPolicy(TorchRLModule, QNetAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """Recurrent Q-network meta-policy; ``model_config`` is a :class:`metaray.config.ModelConfig`
    as a dict plus, under :data:`R2D2_KEY`, a :class:`metaray.config.R2D2Config` as a dict."""

    @override(TorchRLModule)
    def setup(self):
        if not isinstance(self.action_space, gym.spaces.Discrete):
            raise ValueError(f"a Q-network needs a Discrete action space, got {self.action_space}")
        self.model = from_dict(ModelConfig, self.model_config, ignore_unknown=True)
        self.r2d2 = from_dict(R2D2Config, self.model_config.get(R2D2_KEY, {}))
        self.torso = _Torso(int(np.prod(self.observation_space.shape)), self.model)
        self.q_head = _QHead(self.torso.out_size, int(self.action_space.n), self.r2d2.dueling)
        # Per-env exploration rates of this env runner; set by assign_exploration_rates.
        self.env_epsilons: torch.Tensor | None = None

    @override(TorchRLModule)
    def get_initial_state(self) -> dict[str, np.ndarray]:
        return self.torso.core.initial_state()

    def assign_env_runner(self, worker_index: int, num_env_runners: int, num_envs: int) -> None:
        """Give each of this runner's ``num_envs`` envs its Ape-X rate; the actors are all
        envs of all sampling runners (runner ``worker_index`` 1..N, or the driver's as 0)."""
        runner = max(worker_index - 1, 0)
        rates = ape_x_epsilons(self.r2d2.epsilon, self.r2d2.epsilon_alpha, runner * num_envs, num_envs,
                               max(num_env_runners, 1) * num_envs)
        self.env_epsilons = torch.tensor(rates, dtype=torch.float32)

    def _q(self, torso: nn.Module, head: nn.Module, obs: TensorType,
           state: dict[str, TensorType]) -> tuple[TensorType, dict[str, TensorType]]:
        features, state_out = torso(obs, state)
        return head(features), state_out

    @override(QNetAPI)
    def compute_q_values(self, batch: dict[str, Any]) -> dict[str, Any]:
        q, state_out = self._q(self.torso, self.q_head, batch[Columns.OBS], batch[Columns.STATE_IN])
        return {QF_PREDS: q, Columns.STATE_OUT: state_out}

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out = self.compute_q_values(batch)
        return {Columns.ACTIONS: out[QF_PREDS].argmax(dim=-1), Columns.STATE_OUT: out[Columns.STATE_OUT]}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], t: int = 0, **kwargs) -> dict[str, Any]:
        out = self.compute_q_values(batch)
        q = out[QF_PREDS]  # [B, T, actions]
        epsilon = torch.full(q.shape[:1], self.r2d2.epsilon, device=q.device)
        if self.env_epsilons is not None and len(self.env_epsilons) == len(q):
            epsilon = self.env_epsilons.to(q.device)
        explore = torch.rand(q.shape[:-1], device=q.device) < epsilon.view(-1, *([1] * (q.dim() - 2)))
        random_actions = torch.randint(q.shape[-1], q.shape[:-1], device=q.device)
        actions = torch.where(explore, random_actions, q.argmax(dim=-1))
        return {Columns.ACTIONS: actions, Columns.STATE_OUT: out[Columns.STATE_OUT]}

    def _q_sequence(self, torso: nn.Module, head: nn.Module, obs: TensorType,
                    state: dict[str, TensorType], burn_in: int) -> TensorType:
        """Q-values along ``obs`` from ``state``; the first ``burn_in`` steps without gradient."""
        if burn_in == 0:
            return self._q(torso, head, obs, state)[0]
        with torch.no_grad():
            q_burn_in, state = self._q(torso, head, obs[:, :burn_in], state)
        q_rest, _ = self._q(torso, head, obs[:, burn_in:], state)
        return torch.cat([q_burn_in, q_rest], dim=1)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # One pass over s_0, s_1, ..., s_T: each step's next observation is the following
        # step's observation, so Q(s_t) and Q(s_t+1) come from the same pass, and the target
        # network starts from the same stored state.
        obs = torch.cat([batch[Columns.OBS][:, :1], batch[Columns.NEXT_OBS]], dim=1)
        state = batch[Columns.STATE_IN]
        q = self._q_sequence(self.torso, self.q_head, obs, state, self.r2d2.burn_in_len)
        with torch.no_grad():
            q_target, _ = self._q(self._target_torso, self._target_q_head, obs, state)
        return {QF_PREDS: q[:, :-1], QF_NEXT_PREDS: q[:, 1:].detach(), QF_TARGET_NEXT_PREDS: q_target[:, 1:]}

    def memory_trace(self, obs: torch.Tensor) -> torch.Tensor:
        """The recurrent state after each step of whole trials ``obs`` (``[B, T, in]``), from
        the initial state, flattened as the probe reads it (keys in sorted order)."""
        return trace_memory(lambda x, state: self.torso(x, state)[1], self.get_initial_state(), obs)

    @override(TargetNetworkAPI)
    def make_target_networks(self) -> None:
        self._target_torso = make_target_network(self.torso)
        self._target_q_head = make_target_network(self.q_head)

    @override(TargetNetworkAPI)
    def get_target_network_pairs(self) -> list[tuple[NetworkType, NetworkType]]:
        return [(self.torso, self._target_torso), (self.q_head, self._target_q_head)]

    @override(TargetNetworkAPI)
    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {QF_PREDS: self._q(self._target_torso, self._target_q_head, batch[Columns.OBS],
                                  batch[Columns.STATE_IN])[0]}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["_target_torso", "_target_q_head"]


def assign_exploration_rates(*, env_runner, rl_module, **kwargs) -> None:
    """RLlib ``on_episode_created`` callback: tells an env runner's Q-policy which Ape-X
    actors its envs are (the module alone cannot know its runner's index)."""
    if isinstance(rl_module, RecurrentQPolicy) and rl_module.env_epsilons is None:
        rl_module.assign_env_runner(env_runner.worker_index, env_runner.num_workers, env_runner.num_envs)


def n_step_targets(rewards: TensorType, next_values: TensorType, valid: TensorType, gamma: float,
                   n_step: int) -> TensorType:
    """``sum_k<m gamma^k r_t+k + gamma^m V(s_t+m)`` along each row, ``m = min(n_step, steps
    left in the row)``: targets never reach past a sequence's last valid step.

    ``next_values[t]`` is the bootstrap value of ``s_t+1`` (zero where the trial ended);
    ``valid`` marks the real steps of each zero-padded row.

    >>> r = torch.tensor([[1.0, 1.0, 1.0, 0.0]]); v = torch.tensor([[10.0, 10.0, 0.0, 0.0]])
    >>> n_step_targets(r, v, torch.tensor([[True, True, True, False]]), gamma=0.5, n_step=2)
    tensor([[4.0000, 1.5000, 1.0000, 0.0000]])
    """
    steps = rewards.shape[1]
    t = torch.arange(steps, device=rewards.device).unsqueeze(0)
    end = torch.minimum(t + n_step, valid.sum(dim=1, keepdim=True))  # exclusive end of the reward window
    rewards = rewards * valid
    targets = torch.zeros_like(rewards)
    for k in range(n_step):
        shifted = F.pad(rewards, (0, k))[:, k : k + steps]
        targets = targets + gamma**k * shifted * (t + k < end)
    last = (end - 1).clamp(min=0)
    horizon = (end - t).clamp(min=1)
    return (targets + gamma**horizon * next_values.gather(1, last)) * valid


class R2D2Learner(DQNTorchLearner):
    """DQN's learner with the sequence loss of :mod:`metaray.models.q_policy`: n-step
    (double) Q targets within each replayed sequence, Huber loss after the burn-in."""

    @override(DQNTorchLearner)
    def compute_loss_for_module(self, *, module_id: ModuleID, config, batch: dict[str, Any],
                                fwd_out: dict[str, TensorType]) -> TensorType:
        valid = batch[Columns.LOSS_MASK].bool()
        q = fwd_out[QF_PREDS]
        q_taken = q.gather(-1, batch[Columns.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
        best_next = (fwd_out[QF_NEXT_PREDS] if config.double_q else fwd_out[QF_TARGET_NEXT_PREDS]).argmax(-1)
        next_values = fwd_out[QF_TARGET_NEXT_PREDS].gather(-1, best_next.unsqueeze(-1)).squeeze(-1)
        next_values = next_values * (1.0 - batch[Columns.TERMINATEDS].float())
        n_step = int(config.learner_config_dict[N_STEP_KEY])
        targets = n_step_targets(batch[Columns.REWARDS].float(), next_values, valid, config.gamma, n_step).detach()
        trained = valid.clone()
        trained[:, : config.burn_in_len] = False
        weights = batch.get("weights")
        td_error = q_taken - targets
        loss_terms = F.huber_loss(q_taken, targets, reduction="none")
        if weights is not None:
            loss_terms = loss_terms * weights.float()
        count = trained.sum().clamp(min=1)
        total_loss = loss_terms[trained].sum() / count
        q_trained = q_taken[trained]
        self.metrics.log_dict(
            {
                QF_LOSS_KEY: total_loss,
                QF_MEAN_KEY: q_trained.mean() if q_trained.numel() else torch.tensor(math.nan),
                QF_MAX_KEY: q_trained.max() if q_trained.numel() else torch.tensor(math.nan),
                QF_MIN_KEY: q_trained.min() if q_trained.numel() else torch.tensor(math.nan),
                TD_ERROR_MEAN_KEY: td_error.abs()[trained].sum() / count,
            },
            key=module_id,
            window=1,
        )
        return total_loss


#: Key of the replay buffer in an :class:`R2D2` checkpoint's state.
REPLAY_BUFFER_STATE = "metaray_replay_buffer"


class R2D2(DQN):
    """RLlib's DQN; with ``store_buffer_in_checkpoints`` its state includes the replay buffer."""

    @override(DQN)
    def get_state(self, components=None, *, not_components=None, **kwargs) -> StateDict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if (self.config.store_buffer_in_checkpoints and self.local_replay_buffer is not None
                and self._check_component(REPLAY_BUFFER_STATE, components, not_components)):
            state[REPLAY_BUFFER_STATE] = self.local_replay_buffer.get_state()
        return state

    @override(DQN)
    def set_state(self, state: StateDict) -> None:
        super().set_state(state)
        if REPLAY_BUFFER_STATE in state and self.local_replay_buffer is not None:
            self.local_replay_buffer.set_state(state[REPLAY_BUFFER_STATE])
