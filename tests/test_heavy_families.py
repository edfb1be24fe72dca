"""MuJoCo locomotion and Meta-World: env checks, splits, success reporting, tiny launch.py runs.

These need the optional extras (``pip install -e '.[mujoco,metaworld]'``); without them the
tests skip and say which extra is missing. CI installs both.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs import missing_extra
from metaray.tasks import TaskSplit, load_family
from metaray.trial import TrialEnv
from helpers import (
    assert_split_disjoint_and_deterministic, checked, launch_tiny_run, play_trial, tiny_run_config, trial_config,
)

pytestmark = pytest.mark.heavy_env

needs_mujoco = pytest.mark.skipif(
    missing_extra("mujoco_locomotion") is not None, reason="needs the mujoco extra: pip install 'metaray[mujoco]'"
)
needs_metaworld = pytest.mark.skipif(
    missing_extra("metaworld_family") is not None, reason="needs the metaworld extra: pip install 'metaray[metaworld]'"
)

LOCOMOTION = [
    {"task": "cheetah_vel", "horizon": 20},
    {"task": "cheetah_dir", "horizon": 20},
    {"task": "ant_dir", "horizon": 20},
    {"task": "ant_dir", "horizon": 20, "ant_directions": "planar"},
]
ML1_REACH = {"benchmark": "ML1", "env_name": "reach-v3", "horizon": 20}


@needs_mujoco
@pytest.mark.parametrize("params", LOCOMOTION, ids=lambda p: "-".join(map(str, p.values())))
def test_locomotion_envs_pass_check_env_and_reproduce(params):
    family = load_family("mujoco_locomotion", params)
    env = family.make_env()
    env.set_task(family.sample_task(np.random.default_rng(0)))
    checked(env)
    config = trial_config("mujoco_locomotion", params, 2)
    checked(TrialEnv(config))
    first_obs, first = play_trial(TrialEnv(config), seed=3)
    second_obs, second = play_trial(TrialEnv(config), seed=3)
    np.testing.assert_array_equal(np.stack(first_obs), np.stack(second_obs))
    assert first == second


@needs_mujoco
@pytest.mark.parametrize("task", ["cheetah_vel", "ant_dir"])
def test_locomotion_continuous_tasks_have_disjoint_splits(task):
    assert_split_disjoint_and_deterministic(load_family("mujoco_locomotion", {"task": task, "ant_directions": "planar"}))


@needs_mujoco
def test_two_direction_tasks_label_their_split():
    family = load_family("mujoco_locomotion", {"task": "cheetah_dir"})
    split = TaskSplit(family, 0.2, 0)
    test_tasks = [split.task_at("test", i) for i in range(20)]
    assert {t["split"] for t in test_tasks} == {"test"}
    assert {t["angle"] for t in test_tasks} == {0.0, np.pi}  # both directions, as MAML/PEARL meta-test


@needs_mujoco
def test_cheetah_vel_reward_tracks_the_target_velocity():
    family = load_family("mujoco_locomotion", {"task": "cheetah_vel"})
    env = family.make_env()
    rewards = {}
    for velocity in (0.0, 2.0):
        env.set_task({"velocity": velocity})
        env.reset(seed=0)
        _, rewards[velocity], _, _, info = env.step(np.zeros(6, dtype=np.float32))
    # No control cost with zero action: the reward is exactly -|v_x - v*|.
    assert rewards[0.0] == pytest.approx(-abs(info["x_velocity"]))
    assert rewards[2.0] == pytest.approx(-abs(info["x_velocity"] - 2.0))


@needs_mujoco
def test_mujoco_config_runs_end_to_end(tmp_path, ray_session):
    config = tiny_run_config("mujoco_locomotion", {"task": "cheetah_vel", "horizon": 50}, 2, max_seq_len=50)
    summary = launch_tiny_run(tmp_path, config)
    assert len(summary["eval"]["test"]["return_by_episode"]) == 2


@needs_metaworld
def test_metaworld_ml1_env_passes_check_env_and_reports_success():
    family = load_family("metaworld_family", ML1_REACH)
    env = family.make_env()
    env.set_task(("test", 3))
    checked(env)
    config = trial_config("metaworld_family", ML1_REACH, 2, split="test")
    checked(TrialEnv(config))
    first_obs, record = play_trial(TrialEnv(config), seed=3)
    second_obs, again = play_trial(TrialEnv(config), seed=3)
    np.testing.assert_array_equal(np.stack(first_obs), np.stack(second_obs))
    assert record == again
    assert record.episode_successes is not None and len(record.episode_successes) == 2


@needs_metaworld
def test_metaworld_split_is_the_benchmarks_own():
    family = load_family("metaworld_family", ML1_REACH)
    split = TaskSplit(family, test_fraction=0.5, seed=0)
    test_tasks = {split.task_at("test", i) for i in range(30)}
    assert {s for s, _ in test_tasks} == {"test"}
    assert_split_disjoint_and_deterministic(family)
    # The benchmark's train and test goals differ.
    env = family.make_env()
    goals = {}
    for task in [("train", 0), ("test", 0)]:
        env.set_task(task)
        env.reset(seed=0)
        goals[task[0]] = env.sim._target_pos.copy()
    assert not np.allclose(goals["train"], goals["test"])


@needs_metaworld
def test_ml10_holds_out_whole_environments():
    import metaworld.env_dict

    family = load_family("metaworld_family", {"benchmark": "ML10", "horizon": 20})
    assert {t.env_name for t in family.benchmark.test_tasks} == set(metaworld.env_dict.ML10_V3["test"])
    assert {t.env_name for t in family.benchmark.train_tasks} == set(metaworld.env_dict.ML10_V3["train"])
    env = TrialEnv(trial_config("metaworld_family", {"benchmark": "ML10", "horizon": 20}, 1, split="test"))
    checked(env)
    _, record = play_trial(env, seed=0)
    assert record.split == "test" and record.episode_successes is not None


@needs_metaworld
def test_metaworld_config_runs_end_to_end(tmp_path, ray_session):
    config = tiny_run_config("metaworld_family", {**ML1_REACH, "horizon": 50}, 2, max_seq_len=50)
    summary = launch_tiny_run(tmp_path, config)
    test = summary["eval"]["test"]
    # Rates of 8 trials, and the overall rate is their mean.
    assert len(test["success_by_episode"]) == 2
    assert all(float(rate * 8).is_integer() for rate in test["success_by_episode"])
    assert test["success_rate"] == pytest.approx(np.mean(test["success_by_episode"]))
