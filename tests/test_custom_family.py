"""A family kept outside the repository trains through launch.py with no change to the library."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import yaml

import launch
from conftest import ROOT

# The guide's example family (docs/adding_a_task_family.md), written out as a user would.
COIN_FAMILY = '''
"""Biased coins: guess the side that comes up more often (made-up example family)."""

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily


class CoinEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Discrete(1)
        self.action_space = gym.spaces.Discrete(2)
        self.heads_probability = 0.5

    def set_task(self, task):
        self.heads_probability = float(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        heads = self.np_random.random() < self.heads_probability
        return 0, float(int(action) == int(heads)), True, False, {}


class BiasedCoin(TaskFamily):
    source = "made-up example"

    def sample_task(self, rng):
        return rng.uniform(0.0, 1.0)

    def make_env(self):
        return CoinEnv()
'''


def tiny_run_config(family: str, params: dict, episodes_per_trial: int, max_seq_len: int) -> dict:
    """An experiment that exercises build, training, evaluation and checkpointing in ~2000 steps."""
    return {
        "name": "tiny",
        "checkpoint_interval": 0,
        "task": {"family": family, "params": params, "episodes_per_trial": episodes_per_trial},
        "model": {"hidden_size": 16, "max_seq_len": max_seq_len},
        "training": {"total_env_steps": 2000, "train_batch_size": 1000, "minibatch_size": 500, "num_epochs": 1},
        "env_runners": {"num_env_runners": 0, "num_envs_per_env_runner": 4},
        "evaluation": {"interval": 2, "num_trials": 4, "final_num_trials": 8, "num_envs_per_env_runner": 4},
    }


def launch_tiny_run(tmp_path: Path, config: dict) -> dict:
    """Run ``launch.main`` on ``config`` and return the run's summary."""
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    assert launch.main(["--config", str(config_path), "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= config["training"]["total_env_steps"]
    assert summary["eval"]["test"]["num_trials"] == config["evaluation"]["final_num_trials"]
    return summary


def test_family_from_a_file_outside_the_repo_trains_through_launch(tmp_path, ray_session):
    family_file = tmp_path / "coin_family.py"
    family_file.write_text(textwrap.dedent(COIN_FAMILY))
    assert ROOT not in family_file.resolve().parents
    config = tiny_run_config(str(family_file), {}, episodes_per_trial=5, max_seq_len=5)
    summary = launch_tiny_run(tmp_path, config)
    assert summary["family"] == str(family_file)
    assert len(summary["eval"]["test"]["return_by_episode"]) == 5
    assert set(summary["baselines"]) == {"random"}
