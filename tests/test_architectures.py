"""Every architecture trains under PPO and APPO, with one learner or two (DDP on CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import ROOT
from metaray.config import load_config
from metaray.models.cores import CORES
from metaray.rllib_config import build_algorithm_config

ARCHS = CORES.names()

TINY = [
    "training.train_batch_size=320", "training.minibatch_size=160", "training.num_epochs=1",
    "env_runners.num_envs_per_env_runner=8", "model.hidden_size=16", "model.num_heads=2",
    "model.context_len=6", "model.max_seq_len=5", "evaluation.num_trials=8",
    "evaluation.num_envs_per_env_runner=8",
]


def build(arch: str, algorithm: str, *overrides: str):
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"model.arch={arch}", f"training.algorithm={algorithm}", *TINY, *overrides])
    return build_algorithm_config(cfg).build_algo()


def learner_weights(algo) -> list[dict[str, np.ndarray]]:
    results = algo.learner_group.foreach_learner(lambda learner: learner.module["default_policy"].get_state())
    return [r.get() for r in results]


def train_until_weights_change(algo, max_iterations: int = 6) -> list[dict[str, np.ndarray]]:
    """Train until every learner's policy differs from its initial one (APPO updates in a thread)."""
    before = learner_weights(algo)[0]
    for _ in range(max_iterations):
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled"] > 0
        after = learner_weights(algo)
        if all(any(not np.array_equal(before[k], w[k]) for k in before) for w in after):
            return after
    pytest.fail(f"weights unchanged after {max_iterations} iterations")


@pytest.mark.parametrize("algorithm", ["PPO", "APPO"])
@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_trains(ray_session, arch, algorithm):
    algo = build(arch, algorithm)
    try:
        train_until_weights_change(algo)
    finally:
        algo.stop()


@pytest.mark.parametrize("algorithm", ["PPO", "APPO"])
def test_two_learners_stay_in_sync(ray_session, algorithm):
    algo = build("gru", algorithm, "learners.num_learners=2")
    try:
        first, second = train_until_weights_change(algo)
        for key in first:
            np.testing.assert_allclose(first[key], second[key], rtol=1e-5, atol=1e-6, err_msg=key)
    finally:
        algo.stop()


@pytest.mark.parametrize("algorithm", ["PPO", "APPO"])
def test_separate_critic_trains(ray_session, algorithm):
    algo = build("gru", algorithm, "model.separate_critic=true")
    try:
        before = learner_weights(algo)[0]
        after = train_until_weights_change(algo)[0]
    finally:
        algo.stop()
    critic_keys = [k for k in before if k.startswith("critic_torso.")]
    assert critic_keys and any(not np.array_equal(before[k], after[k]) for k in critic_keys)
