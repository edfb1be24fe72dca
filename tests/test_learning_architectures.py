"""Every architecture x algorithm pair learns the bandit quickstart above random.

Bounded by env steps (``ENV_STEPS``); run with ``pytest -m learning``. The held-out
mean trial return must beat the random baseline on the same 1000 held-out trials by more
than three standard errors of the difference.
"""

from __future__ import annotations

import math

import pytest

from conftest import ROOT
from metaray.config import load_config
from metaray.models.cores import CORES
from metaray.train import train

#: Env-step budgets: APPO (V-trace, no advantage standardisation) needs about twice PPO's.
ENV_STEPS = {"PPO": 100_000, "APPO": 200_000}
#: Settings under which the quickstart learns within those budgets (pinned here, so that a
#: change to configs/quickstart.yaml does not change what these budgets were measured with).
LEARNING_SETTINGS = [
    "model.hidden_size=64", "training.train_batch_size=4000", "training.minibatch_size=1000",
    "env_runners.num_envs_per_env_runner=32", "training.lr=0.003", "training.lambda_=0.3",
    "training.num_epochs=8", "training.entropy_coeff=0.001", "model.num_heads=4",
    "model.context_len=10", "evaluation.interval=1000", "evaluation.final_num_trials=1000",
    "evaluation.baselines=[random]", "checkpoint_interval=0",
]


@pytest.mark.learning
@pytest.mark.parametrize("algorithm", ["PPO", "APPO"])
@pytest.mark.parametrize("arch", CORES.names())
def test_learns_bandit_above_random(ray_session, tmp_path, arch, algorithm):
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"model.arch={arch}", f"training.algorithm={algorithm}",
                       f"training.total_env_steps={ENV_STEPS[algorithm]}", *LEARNING_SETTINGS])
    summary = train(cfg, tmp_path / "run")
    meta, random = summary["eval"]["test"], summary["baselines"]["random"]
    stderr = math.hypot(meta["trial_return_stderr"], random["trial_return_stderr"])
    print(f"{arch} {algorithm}: held-out {meta['trial_return_mean']:.3f} vs random "
          f"{random['trial_return_mean']:.3f} (+- {stderr:.3f}) after {summary['env_steps']} env steps")
    assert summary["env_steps"] <= ENV_STEPS[algorithm] + cfg.training.train_batch_size
    assert meta["trial_return_mean"] > random["trial_return_mean"] + 3 * stderr
