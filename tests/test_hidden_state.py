"""The recurrent state lives across the inner episodes of a trial and resets between trials.

Samples trials with RLlib's own EnvRunner and replays each one through the module from the
initial state: the recorded action-distribution inputs match only if the state was carried
across every inner-episode boundary and started fresh at the trial's first step.
"""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from conftest import ROOT
from metaray.rllib_config import build_algorithm_config
from metaray.config import load_config


@pytest.fixture(scope="module")
def sampled():
    cfg = load_config(ROOT / "configs/quickstart.yaml", [
        "model.hidden_size=8", "env_runners.num_envs_per_env_runner=1", "task.episodes_per_trial=4",
    ])
    runner = SingleAgentEnvRunner(config=build_algorithm_config(cfg))
    episodes = runner.sample(num_episodes=3, explore=True)
    yield runner.module, episodes
    runner.stop()


def replay(module, observations, reset_every=None):
    state = {k: torch.from_numpy(v)[None] for k, v in module.get_initial_state().items()}
    outputs = []
    for t, obs in enumerate(observations):
        if reset_every and t % reset_every == 0:
            state = {k: torch.from_numpy(v)[None] for k, v in module.get_initial_state().items()}
        out = module.forward_inference({Columns.OBS: torch.from_numpy(obs)[None, None], Columns.STATE_IN: state})
        state = out[Columns.STATE_OUT]
        outputs.append(out[Columns.ACTION_DIST_INPUTS][0, 0].detach().numpy())
    return np.stack(outputs)


def test_one_trial_is_one_rllib_episode(sampled):
    _, episodes = sampled
    assert len(episodes) == 3
    for episode in episodes:
        assert episode.is_terminated and len(episode) == 4  # 4 one-pull inner episodes
        assert episode.get_observations()[1:, -1].tolist() == [1.0] * 4  # inner-done flags inside


def test_state_carried_across_inner_episodes_and_reset_between_trials(sampled):
    module, episodes = sampled
    for episode in episodes:
        recorded = episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS)
        observations = np.asarray(episode.get_observations()[:-1], np.float32)
        np.testing.assert_allclose(replay(module, observations), recorded, atol=1e-5)
        # Negative control: a state reset at every inner episode does not reproduce the policy.
        assert not np.allclose(replay(module, observations, reset_every=1), recorded, atol=1e-5)


@pytest.mark.parametrize("whole_trials", [False, True])
def test_whole_trials_sampling_never_cuts_a_trial(whole_trials):
    # Fragments of 7 steps per env cut 10-step trials unless whole trials are sampled.
    cfg = load_config(ROOT / "configs/quickstart.yaml", [
        "model.hidden_size=8", "env_runners.num_envs_per_env_runner=2", "training.train_batch_size=14",
        "training.minibatch_size=14", f"env_runners.whole_trials={str(whole_trials).lower()}",
    ])
    runner = SingleAgentEnvRunner(config=build_algorithm_config(cfg))
    episodes = runner.sample() + runner.sample()
    runner.stop()
    whole = [e.is_done and e.t_started == 0 and len(e) == 10 for e in episodes]
    assert all(whole) if whole_trials else not all(whole)
