"""Recurrent meta-policies as RLlib new-stack RLModules.

The module reads the trial input built by :class:`metaray.trial.TrialEnv` (observation,
previous action, previous reward, inner-episode-done flag) through an optional MLP encoder
and a recurrent core whose state RLlib carries across the inner episodes of a trial. Policy
and value heads share the core (as in RL²). Discrete actions get categorical logits, Box
actions a diagonal Gaussian (mean and log-std), both from RLlib's default distributions.

Example:
    >>> import gymnasium as gym, numpy as np, torch
    >>> module = RecurrentMetaPolicy(
    ...     observation_space=gym.spaces.Box(-np.inf, np.inf, (8,), np.float32),
    ...     action_space=gym.spaces.Discrete(5),
    ...     model_config={"arch": "gru", "hidden_size": 16},
    ... )
    >>> state = {k: torch.from_numpy(v)[None] for k, v in module.get_initial_state().items()}
    >>> out = module.forward_inference({"obs": torch.zeros(1, 3, 8), "state_in": state})
    >>> tuple(out["action_dist_inputs"].shape)
    (1, 3, 5)
"""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from ray.rllib.utils.typing import TensorType


def _mlp(in_size: int, widths: list[int]) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_size, width), nn.Tanh()]
        in_size = width
    return nn.Sequential(*layers), in_size


class RecurrentMetaPolicy(TorchRLModule, ValueFunctionAPI):
    """GRU meta-policy; ``model_config`` keys mirror :class:`metaray.config.ModelConfig`."""

    @override(TorchRLModule)
    def setup(self):
        cfg = self.model_config
        self.hidden_size = int(cfg.get("hidden_size", 256))
        in_size = int(np.prod(self.observation_space.shape))
        self.encoder, in_size = _mlp(in_size, list(cfg.get("encoder_layers", [])))
        self.core = nn.GRU(in_size, self.hidden_size, batch_first=True)
        self.head, out_size = _mlp(self.hidden_size, list(cfg.get("head_layers", [])))
        if isinstance(self.action_space, gym.spaces.Discrete):
            num_outputs = int(self.action_space.n)
        elif isinstance(self.action_space, gym.spaces.Box):
            num_outputs = 2 * int(np.prod(self.action_space.shape))
        else:
            raise ValueError(f"unsupported action space {self.action_space}")
        self.pi = nn.Linear(out_size, num_outputs)
        self.vf = nn.Linear(out_size, 1)
        # Small initial policy output: near-uniform actions at the start of training.
        nn.init.orthogonal_(self.pi.weight, gain=0.01)
        nn.init.zeros_(self.pi.bias)

    @override(TorchRLModule)
    def get_initial_state(self) -> dict[str, np.ndarray]:
        return {"h": np.zeros(self.hidden_size, np.float32)}

    def _embed(self, batch: dict[str, Any]) -> tuple[TensorType, dict[str, TensorType]]:
        x = self.encoder(batch[Columns.OBS].float())
        h_in = batch[Columns.STATE_IN]["h"].unsqueeze(0)
        core_out, h_out = self.core(x, h_in)
        return self.head(core_out), {"h": h_out.squeeze(0)}

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features, state_out = self._embed(batch)
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.STATE_OUT: state_out}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features, state_out = self._embed(batch)
        return {
            Columns.ACTION_DIST_INPUTS: self.pi(features),
            Columns.STATE_OUT: state_out,
            Columns.EMBEDDINGS: features,
        }

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Optional[Any] = None) -> TensorType:
        if embeddings is None:
            embeddings, _ = self._embed(batch)
        return self.vf(embeddings).squeeze(-1)
