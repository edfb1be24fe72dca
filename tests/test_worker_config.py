"""The typed config reaches Ray workers whole: env runners and RLModules rebuild the very
sections the driver validated, so a field added to a section needs no other edit."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import ROOT
from metaray.config import ModelConfig, R2D2Config, TaskConfig, load_config
from metaray.models.q_policy import N_STEP_KEY
from metaray.rllib_config import build_algorithm_config
from metaray.trial import TrialEnv

# Every setting away from its default, so a reader that fell back to a default would show.
OVERRIDES = ["task.reward_scale=0.5", "task.test_fraction=0.3", "task.episodes_per_trial=4", "seed=7",
             "task.curriculum=plr", "task.plr.replay_prob=0.3", "task.plr.capacity=50",
             "model.hidden_size=24", "model.encoder_layers=[8]", "model.head_layers=[6]", "model.num_layers=2",
             "model.separate_critic=true", "model.max_seq_len=8", "model.arch=transformer", "model.num_heads=2",
             "model.context_len=5"]


@pytest.fixture(scope="module")
def cfg():
    return load_config(ROOT / "configs/quickstart.yaml", OVERRIDES)


def test_overrides_leave_no_field_at_its_default(cfg):
    for section, cls in ((cfg.task, TaskConfig), (cfg.model, ModelConfig)):
        at_default = [f.name for f in dataclasses.fields(cls)
                      if f.name not in ("family", "params") and getattr(section, f.name) == getattr(cls(), f.name)]
        assert not at_default, f"{cls.__name__}: give {at_default} non-default values in OVERRIDES"


@pytest.mark.parametrize("evaluation", [False, True], ids=["training", "evaluation"])
def test_env_runners_rebuild_every_task_field(cfg, evaluation):
    algo_config = build_algorithm_config(cfg)
    env_config = algo_config.evaluation_config["env_config"] if evaluation else algo_config.env_config
    assert set(env_config["task"]) == {f.name for f in dataclasses.fields(TaskConfig)}
    env = TrialEnv(env_config)
    assert env.task_config == cfg.task
    assert env.split.seed == cfg.seed and env.split.test_fraction == cfg.task.test_fraction
    assert env.sample_split == ("test" if evaluation else "train")


def test_rl_module_rebuilds_every_model_field(cfg):
    algo_config = build_algorithm_config(cfg)
    env = TrialEnv(algo_config.env_config)
    module = algo_config.get_rl_module_spec(env=env).build()
    assert module.model == cfg.model
    assert module.critic_torso is not None and len(module.torso.encoder) == 2  # Linear + Tanh


R2D2_OVERRIDES = ["training.algorithm=R2D2", "model.max_seq_len=8", "training.r2d2.batch_size=256",
                  "training.r2d2.replay_ratio=2", "training.r2d2.replay_capacity=5000",
                  "training.r2d2.learning_starts=100", "training.r2d2.n_step=2", "training.r2d2.double_q=false",
                  "training.r2d2.dueling=false", "training.r2d2.target_update_period=7", "training.r2d2.epsilon=0.3",
                  "training.r2d2.epsilon_alpha=3", "training.r2d2.burn_in_len=2",
                  "training.r2d2.replay_in_checkpoints=false"]


def test_q_module_rebuilds_every_r2d2_field():
    cfg = load_config(ROOT / "configs/quickstart.yaml", R2D2_OVERRIDES)
    at_default = [f.name for f in dataclasses.fields(R2D2Config)
                  if getattr(cfg.training.r2d2, f.name) == getattr(R2D2Config(), f.name)]
    assert not at_default, f"R2D2Config: give {at_default} non-default values in R2D2_OVERRIDES"
    algo_config = build_algorithm_config(cfg)
    module = algo_config.get_rl_module_spec(env=TrialEnv(algo_config.env_config)).build()
    assert module.r2d2 == cfg.training.r2d2 and module.model == cfg.model
    assert algo_config.learner_config_dict[N_STEP_KEY] == cfg.training.r2d2.n_step
