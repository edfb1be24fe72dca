"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import yaml
from gymnasium.utils.env_checker import check_env

import launch
from metaray.config import TaskConfig
from metaray.tasks import TaskSplit
from metaray.trial import TRIAL_INFO_KEY, TrialEnv, TrialRecord


def checked(env) -> None:
    """check_env, with its warnings about unbounded Box spaces (the trial input is one) silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env, skip_render_check=True)


def trial_config(name: str, params: dict, episodes: int, split: str = "train") -> dict:
    """The env config of :class:`TrialEnv` for a family, as an experiment with seed 0 makes it."""
    return TrialEnv.env_config(TaskConfig(family=name, params=params, episodes_per_trial=episodes), 0, split)


def play_trial(env: TrialEnv, seed: int) -> tuple[list[np.ndarray], TrialRecord]:
    """One trial with actions drawn from a seeded action space; returns observations and record."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    observations, done, info = [obs], False, {}
    while not done:
        obs, _, done, _, info = env.step(env.action_space.sample())
        observations.append(obs)
    return observations, info[TRIAL_INFO_KEY]


def assert_split_disjoint_and_deterministic(family, num_train: int = 200, num_test: int = 40) -> None:
    split = TaskSplit(family, test_fraction=0.2, seed=0)
    rng = np.random.default_rng(1)
    train_keys = {family.task_key(split.sample("train", rng)) for _ in range(num_train)}
    test_tasks = [split.task_at("test", i) for i in range(num_test)]
    assert all(split.split_of(t) == "test" for t in test_tasks)
    assert not train_keys & {family.task_key(t) for t in test_tasks}
    again = TaskSplit(family, test_fraction=0.2, seed=0)
    assert [family.task_key(again.task_at("test", i)) for i in range(num_test)] == [
        family.task_key(t) for t in test_tasks
    ]


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


def train_bandit_and_check_adaptation(tmp_path: Path, config: str, budget: int, overshoot: int,
                                      min_lead: float, extra: tuple[str, ...] = ()) -> dict:
    """Train ``config`` for ``budget`` env steps through ``launch.main`` and assert that on 1000
    held-out trials it beats random on the same trials by ``min_lead`` (and 3 standard errors)
    and adapts in context: later pulls of a trial pay more than the first. Returns the summary."""
    run_dir = tmp_path / "run"
    args = ["--config", config, "--run-dir", str(run_dir), "--set", f"training.total_env_steps={budget}",
            "--set", "evaluation.final_num_trials=1000", *extra]
    assert launch.main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    meta, random = summary["eval"]["test"], summary["baselines"]["random"]
    assert summary["env_steps"] <= budget + overshoot  # the last iteration may overshoot
    assert meta["num_trials"] == random["num_trials"] == 1000
    margin = 3 * np.hypot(meta["trial_return_stderr"], random["trial_return_stderr"])
    assert meta["trial_return_mean"] > random["trial_return_mean"] + max(margin, min_lead)
    assert meta["adaptation_gain"] > 0.05
    return summary
