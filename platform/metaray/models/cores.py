"""Memory cores of the meta-policy: GRU, LSTM and a windowed causal transformer.

A core maps a chunk of encoded trial inputs ``x`` of shape ``[B, T, in]`` and a state dict
(one ``[B, ...]`` tensor per key) to outputs ``[B, T, hidden_size]`` and the state after the
chunk's last step. Feeding a trial in one chunk or step by step, passing the state along,
gives the same outputs: that is what lets RLlib sample one step at a time and train on
``max_seq_len`` chunks whose initial state comes from sampling.

Cores are found by name in :data:`CORES` (``model.arch``); registering a class of your own
there adds a core without touching metaray (docs/adding_a_memory_core.md).

Example:
    >>> core = TransformerCore(4, ModelConfig(hidden_size=8, num_layers=1, num_heads=2, context_len=3))
    >>> state = {k: torch.from_numpy(v)[None] for k, v in core.initial_state().items()}
    >>> out, state = core(torch.zeros(1, 5, 4), state)
    >>> tuple(out.shape), tuple(state["memory"].shape)
    ((1, 5, 8), (1, 1, 3, 8))
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from metaray.config import ConfigError, ModelConfig
from metaray.plugins import Registry


class MemoryCore(nn.Module, abc.ABC):
    """Sequence model whose memory RLlib carries between chunks as the module state.

    Constructed as ``cls(in_size, model)`` with the typed :class:`ModelConfig`; its outputs
    are ``model.hidden_size`` wide.
    """

    @classmethod
    def check_config(cls, model: ModelConfig) -> None:
        """Raise ConfigError for settings this core cannot use (called before Ray starts)."""

    @abc.abstractmethod
    def initial_state(self) -> dict[str, np.ndarray]:
        """State at the start of a trial, without the batch dimension."""

    @abc.abstractmethod
    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Outputs for every step of ``x`` and the state after its last step."""


#: Memory cores by ``model.arch`` name.
CORES: Registry[type[MemoryCore]] = Registry("model.arch")


@CORES.register("gru")
class GRUCore(MemoryCore):
    """Stacked GRU; state ``h`` is ``[num_layers, hidden_size]`` per trial."""

    def __init__(self, in_size: int, model: ModelConfig):
        super().__init__()
        self.shape = (model.num_layers, model.hidden_size)
        self.rnn = nn.GRU(in_size, model.hidden_size, model.num_layers, batch_first=True)

    def initial_state(self) -> dict[str, np.ndarray]:
        return {"h": np.zeros(self.shape, np.float32)}

    def forward(self, x, state):
        # nn.GRU wants the layer axis first; RLlib batches states on the first axis.
        out, h = self.rnn(x, state["h"].transpose(0, 1).contiguous())
        return out, {"h": h.transpose(0, 1)}


@CORES.register("lstm")
class LSTMCore(MemoryCore):
    """Stacked LSTM; states ``h`` and ``c`` are ``[num_layers, hidden_size]`` per trial."""

    def __init__(self, in_size: int, model: ModelConfig):
        super().__init__()
        self.shape = (model.num_layers, model.hidden_size)
        self.rnn = nn.LSTM(in_size, model.hidden_size, model.num_layers, batch_first=True)

    def initial_state(self) -> dict[str, np.ndarray]:
        return {"h": np.zeros(self.shape, np.float32), "c": np.zeros(self.shape, np.float32)}

    def forward(self, x, state):
        hc = (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        out, (h, c) = self.rnn(x, hc)
        return out, {"h": h.transpose(0, 1), "c": c.transpose(0, 1)}


class _Block(nn.Module):
    """Pre-norm transformer block attending from the chunk to [memory, chunk]."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_query = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, width = t.shape
        return t.view(b, n, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, h: torch.Tensor, context: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.query(self.norm_query(h)))
        k, v = self.key_value(self.norm_context(context)).chunk(2, dim=-1)
        attended = F.scaled_dot_product_attention(q, self._heads(k), self._heads(v), attn_mask=attn_bias)
        h = h + self.out(attended.transpose(1, 2).flatten(2))
        return h + self.mlp(self.norm_mlp(h))


@CORES.register("transformer")
class TransformerCore(MemoryCore):
    """Causal transformer over a sliding window of the last ``context_len`` steps.

    Each step attends to itself and to the ``context_len`` steps before it, with a learned
    per-head bias for each distance (relative positions, so no absolute time index is
    needed and a window can slide over trials of any length). As in Transformer-XL, the
    state holds each layer's inputs for the last ``context_len`` steps (``memory``,
    ``[num_layers, context_len, hidden_size]``) and which of those slots hold a real step
    (``valid``, ``[context_len]``; 0 at the start of a trial). Memory is not
    back-propagated through across chunks, just as a GRU's chunk-initial state is not.
    RLlib keeps every step's state in the sampled episodes, so sampling memory grows with
    ``num_layers * context_len * hidden_size`` floats per env step.
    """

    def __init__(self, in_size: int, model: ModelConfig):
        super().__init__()
        self.context_len = model.context_len
        self.memory_shape = (model.num_layers, model.context_len, model.hidden_size)
        self.embed = nn.Linear(in_size, model.hidden_size)
        self.blocks = nn.ModuleList(_Block(model.hidden_size, model.num_heads) for _ in range(model.num_layers))
        self.distance_bias = nn.Parameter(torch.zeros(model.num_heads, model.context_len + 1))
        self.norm_out = nn.LayerNorm(model.hidden_size)

    @classmethod
    def check_config(cls, model: ModelConfig) -> None:
        if model.hidden_size % model.num_heads:
            raise ConfigError(f"model.num_heads ({model.num_heads}) must divide model.hidden_size "
                              f"({model.hidden_size}) for the transformer")

    def initial_state(self) -> dict[str, np.ndarray]:
        return {
            "memory": np.zeros(self.memory_shape, np.float32),
            "valid": np.zeros(self.context_len, np.float32),
        }

    def _attention_bias(self, valid: torch.Tensor, chunk_len: int) -> torch.Tensor:
        """Additive mask ``[B, heads, T, W + T]``: distance bias inside the window, -inf outside."""
        window = self.context_len
        query_pos = torch.arange(chunk_len, device=valid.device) + window
        key_pos = torch.arange(window + chunk_len, device=valid.device)
        distance = query_pos[:, None] - key_pos[None, :]
        in_window = (distance >= 0) & (distance <= window)
        key_valid = torch.cat([valid > 0.5, valid.new_ones(valid.shape[0], chunk_len, dtype=torch.bool)], 1)
        allowed = in_window[None] & key_valid[:, None, :]
        bias = self.distance_bias[:, distance.clamp(0, window)]
        return bias[None].masked_fill(~allowed[:, None], float("-inf"))

    def forward(self, x, state):
        h = self.embed(x)
        memory, valid = state["memory"], state["valid"]
        attn_bias = self._attention_bias(valid, h.shape[1])
        new_memory = []
        for layer, block in enumerate(self.blocks):
            context = torch.cat([memory[:, layer], h], dim=1)
            new_memory.append(context[:, -self.context_len :])
            h = block(h, context, attn_bias)
        new_valid = torch.cat([valid, valid.new_ones(valid.shape[0], h.shape[1])], 1)[:, -self.context_len :]
        return self.norm_out(h), {"memory": torch.stack(new_memory, 1), "valid": new_valid}


def build_core(in_size: int, model: ModelConfig) -> MemoryCore:
    """The core ``model.arch`` names, for inputs ``in_size`` wide."""
    return CORES.get(model.arch)(in_size, model)
