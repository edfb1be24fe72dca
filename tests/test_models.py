"""Meta-policy modules: every architecture carries its memory in the RLlib state."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from metaray.models.cores import CORES
from metaray.models.policy import RecurrentMetaPolicy

ARCHS = CORES.names()

OBS_DIM, NUM_ACTIONS, TRIAL_LEN = 8, 5, 23


def make_module(arch: str, **model_config) -> RecurrentMetaPolicy:
    torch.manual_seed(0)
    module = RecurrentMetaPolicy(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Discrete(NUM_ACTIONS),
        # A transformer window (7) shorter than the trial (23): the window must slide.
        model_config={"arch": arch, "hidden_size": 16, "num_layers": 2, "num_heads": 2,
                      "context_len": 7, "encoder_layers": [16], "head_layers": [16], **model_config},
    )
    module.make_target_networks()
    return module.eval()


def initial_state(module: RecurrentMetaPolicy, batch_size: int) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None].repeat(batch_size, *[1] * v.ndim)
            for k, v in module.get_initial_state().items()}


def outputs_in_chunks(module, trial: torch.Tensor, chunk: int, column: str = "action_dist_inputs") -> torch.Tensor:
    state, outputs = initial_state(module, trial.shape[0]), []
    for start in range(0, trial.shape[1], chunk):
        out = module.forward_train({"obs": trial[:, start : start + chunk], "state_in": state})
        outputs.append(out[column])
        state = out["state_out"]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("arch", ARCHS)
def test_state_carry_over_matches_whole_sequence(arch):
    module = make_module(arch)
    trial = torch.randn(3, TRIAL_LEN, OBS_DIM)
    with torch.no_grad():
        whole = outputs_in_chunks(module, trial, TRIAL_LEN)
        step_by_step = outputs_in_chunks(module, trial, 1)
        chunked = outputs_in_chunks(module, trial, 5)  # RLlib's max_seq_len chunks
    torch.testing.assert_close(step_by_step, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_depend_on_past_inputs(arch):
    module = make_module(arch)
    trial = torch.randn(1, 6, OBS_DIM)
    changed = trial.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        features = module.torso(trial, initial_state(module, 1))[0]
        features_changed = module.torso(changed, initial_state(module, 1))[0]
    assert not torch.allclose(features[:, -1], features_changed[:, -1])


def test_transformer_forgets_steps_outside_its_window():
    module = make_module("transformer")
    trial = torch.randn(1, TRIAL_LEN, OBS_DIM)
    changed = trial.clone()
    changed[:, 0] += 1.0  # two layers of 7-step windows see at most 14 steps back
    with torch.no_grad():
        features = module.torso(trial, initial_state(module, 1))[0]
        features_changed = module.torso(changed, initial_state(module, 1))[0]
    torch.testing.assert_close(features[:, 15:], features_changed[:, 15:])
    assert not torch.allclose(features[:, 14], features_changed[:, 14])


@pytest.mark.parametrize("arch", ARCHS)
def test_target_network_starts_equal_to_policy(arch):
    module = make_module(arch)
    batch = {"obs": torch.randn(2, 4, OBS_DIM), "state_in": initial_state(module, 2)}
    with torch.no_grad():
        logits = module.forward_train(batch)["action_dist_inputs"]
        target_logits = module.forward_target(batch)["target_network_action_dist_inputs"]
    torch.testing.assert_close(target_logits, logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_separate_critic_carries_its_own_state(arch):
    module = make_module(arch, separate_critic=True)
    assert any(k.startswith("critic_") for k in module.get_initial_state())
    trial = torch.randn(2, TRIAL_LEN, OBS_DIM)
    with torch.no_grad():
        # PPO's loss computes values from the critic's features (the "embeddings" column).
        whole = outputs_in_chunks(module, trial, TRIAL_LEN, column="embeddings")
        chunked = outputs_in_chunks(module, trial, 5, column="embeddings")
        logits = outputs_in_chunks(module, trial, TRIAL_LEN)
        for param in module.critic_torso.parameters():
            param.add_(0.1)
        critic_changed = outputs_in_chunks(module, trial, TRIAL_LEN, column="embeddings")
        logits_after = outputs_in_chunks(module, trial, TRIAL_LEN)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(critic_changed, whole)
    torch.testing.assert_close(logits_after, logits)  # the policy never reads the critic
