"""A family kept outside the repository trains through launch.py with no change to the library."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import yaml

import launch
from conftest import ROOT
from metaray.tasks import load_family
from test_families import checked

GUIDE = ROOT / "docs" / "adding_a_task_family.md"


def guide_family_source() -> str:
    """The first Python block of the guide: the example family file, as a user would copy it."""
    match = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert match, f"no python block in {GUIDE}"
    return match.group(1)


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
    family_file.write_text(guide_family_source())
    assert ROOT not in family_file.resolve().parents
    family = load_family(str(family_file))
    env = family.make_env()
    env.set_task(family.sample_task(np.random.default_rng(0)))
    checked(env)
    config = tiny_run_config(str(family_file), {}, episodes_per_trial=5, max_seq_len=5)
    summary = launch_tiny_run(tmp_path, config)
    assert summary["family"] == str(family_file)
    assert len(summary["eval"]["test"]["return_by_episode"]) == 5
    assert set(summary["baselines"]) == {"random"}
