"""Every task family: env checks (alone and inside a trial), splits, seeding and baselines."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from conftest import ROOT
from envs import missing_extra
from helpers import assert_split_disjoint_and_deterministic, checked, play_trial, trial_config
from metaray.baselines import evaluate_baselines
from metaray.config import TaskConfig, load_config
from metaray.rollouts import evaluation_trials
from metaray.statistics import adaptation_metrics
from metaray.tasks import TaskSplit, load_family
from metaray.trial import TrialEnv

# (family, params, episodes per trial) of the families that need no optional dependency.
CORE_FAMILIES = [
    ("tabular_mdp", {}, 2),
    ("point_nav", {"reward": "dense", "horizon": 20}, 2),
    ("point_nav", {"reward": "sparse", "horizon": 20}, 2),
    ("dark_room", {"variant": "room"}, 2),
    ("dark_room", {"variant": "key_to_door", "size": 5}, 2),
    ("varied_physics", {"split_mode": "interpolate"}, 2),
    ("varied_physics", {"split_mode": "extrapolate"}, 2),
]
CASE_IDS = [f"{name}-{'-'.join(map(str, params.values()))}" for name, params, _ in CORE_FAMILIES]


@pytest.mark.parametrize("name,params,episodes", CORE_FAMILIES, ids=CASE_IDS)
def test_env_and_trial_env_pass_check_env(name, params, episodes):
    family = load_family(name, params)
    env = family.make_env()
    env.set_task(family.sample_task(np.random.default_rng(0)))
    checked(env)
    checked(TrialEnv(trial_config(name, params, episodes)))


@pytest.mark.parametrize("name,params,episodes", CORE_FAMILIES, ids=CASE_IDS)
def test_split_is_disjoint_and_deterministic(name, params, episodes):
    assert_split_disjoint_and_deterministic(load_family(name, params))


@pytest.mark.parametrize("name,params,episodes", CORE_FAMILIES, ids=CASE_IDS)
def test_trials_are_reproducible_from_the_seed(name, params, episodes):
    config = trial_config(name, params, episodes)
    first_obs, first = play_trial(TrialEnv(config), seed=5)
    second_obs, second = play_trial(TrialEnv(config), seed=5)
    np.testing.assert_array_equal(np.stack(first_obs), np.stack(second_obs))
    assert first == second
    assert len(first.episode_returns) == episodes


def baseline_means(name: str, params: dict, episodes: int, num_trials: int) -> dict[str, float]:
    task = TaskConfig(family=name, params=params, episodes_per_trial=episodes)
    records = evaluate_baselines(task, None, evaluation_trials("test", num_trials), split_seed=0)
    return {baseline: adaptation_metrics(recs)["trial_return_mean"] for baseline, recs in records.items()}


def test_tabular_mdp_baselines_near_rl2_table_2():
    # RL² Table 2 (n=10): random 100.1, greedy 134.8, PSRL 138.1. 200 trials: stderr ~2.
    means = baseline_means("tabular_mdp", {}, 10, num_trials=200)
    assert 95 < means["random"] < 105
    for name in ("greedy", "epsilon_greedy", "psrl"):
        assert 125 < means[name] < 148, (name, means[name])
    assert means["bayes_greedy"] > means["psrl"]


@pytest.mark.parametrize(
    "name,params,oracle",
    [
        ("point_nav", {"reward": "dense"}, "oracle"),
        ("point_nav", {"reward": "sparse"}, "oracle"),
        ("dark_room", {"variant": "room"}, "oracle"),
        ("dark_room", {"variant": "key_to_door"}, "oracle"),
        ("varied_physics", {"split_mode": "extrapolate"}, "sign_aware_controller"),
    ],
)
def test_oracle_beats_random(name, params, oracle):
    means = baseline_means(name, params, 2, num_trials=20)
    assert means[oracle] > means["random"] + 1.0


def test_point_nav_oracle_reaches_every_goal_at_full_speed():
    task = TaskConfig(family="point_nav", params={"reward": "sparse"}, episodes_per_trial=1)
    records = evaluate_baselines(task, ["oracle"], evaluation_trials("test", 10), split_seed=0)["oracle"]
    assert all(r.episode_successes == (True,) for r in records)
    # A unit-distance goal is 10 steps of 0.1 away: the other 90 steps pay 1 - 0 each.
    assert all(r.episode_returns[0] > 85 for r in records)


def test_dark_room_never_trains_on_a_held_out_goal():
    family = load_family("dark_room", {"size": 9})
    split = TaskSplit(family, test_fraction=0.2, seed=0)
    every_goal = [(row, col) for row in range(9) for col in range(9)]
    held_out = {g for g in every_goal if split.split_of(g) == "test"}
    assert 0 < len(held_out) < len(every_goal)
    env = TrialEnv(trial_config("dark_room", {"size": 9}, 1))
    trained = set()
    for seed in range(500):
        env.reset(seed=seed)
        trained.add(env.inner.targets[0])
    assert not trained & held_out
    assert trained == set(every_goal) - held_out  # every training goal does get trained on


def test_dark_room_oracle_return_is_the_steps_left_on_the_goal():
    task = TaskConfig(family="dark_room", params={"size": 9, "horizon": 20}, episodes_per_trial=1)
    family = load_family("dark_room", {"size": 9})
    split = TaskSplit(family, 0.2, 0)
    records = evaluate_baselines(task, ["oracle"], evaluation_trials("test", 10), split_seed=0)["oracle"]
    for i, record in enumerate(records):
        row, col = split.task_at("test", i)
        distance = abs(row - 4) + abs(col - 4)
        # Paid from the step that arrives (or every step, when the goal is the start cell).
        assert record.episode_returns[0] == 20 - distance + (distance > 0)


def test_varied_physics_extrapolation_split_lies_outside_the_training_range():
    family = load_family("varied_physics", {"split_mode": "extrapolate"})
    split = TaskSplit(family, test_fraction=0.2, seed=0)
    rng = np.random.default_rng(0)
    train = [split.sample("train", rng) for _ in range(100)]
    test = [split.sample("test", rng) for _ in range(100)]
    assert all(0.5 <= f <= 2.0 for t in train for f in t["factors"].values())
    assert all(any(not 0.5 <= f <= 2.0 for f in t["factors"].values()) for t in test)
    assert {t["action_sign"] for t in train} == {t["action_sign"] for t in test} == {-1, 1}


def test_varied_physics_task_changes_the_dynamics():
    family = load_family("varied_physics", {})
    env = family.make_env()
    unit = {"factors": dict.fromkeys(["masscart", "masspole", "length", "gravity"], 1.0), "action_sign": 1}
    heavy = {**unit, "factors": {**unit["factors"], "masscart": 2.0}}
    flipped = {**unit, "action_sign": -1}
    after_push = {}
    for label, task in [("unit", unit), ("heavy", heavy), ("flipped", flipped)]:
        env.set_task(task)
        env.reset(seed=0)
        after_push[label] = env.step(1)[0]
    assert after_push["heavy"][1] < after_push["unit"][1]  # a heavier cart accelerates less
    assert after_push["flipped"][1] < 0 < after_push["unit"][1]  # the push goes the other way


def test_point_nav_clips_and_scales_actions():
    family = load_family("point_nav", {})
    env = family.make_env()
    env.set_task(np.array([0.0, 1.0]))
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([5.0, -0.5], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.05], rtol=1e-6)
    assert reward == pytest.approx(-np.hypot(0.1, 1.05))



@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_builds_its_trial_env_with_the_rl2_input_layout(path):
    """[inner obs, previous action, previous reward, done flag]: a point of the inner space and
    zeros before the first step, then the action taken and the (scaled) reward."""
    cfg = load_config(path)
    if extra := missing_extra(cfg.task.family):
        pytest.skip(f"{path.name} needs the {extra} extra: pip install 'metaray[{extra}]'")
    env = TrialEnv(TrialEnv.env_config(cfg.task, cfg.seed, split="test"))
    obs_dim = gym.spaces.flatdim(env.inner_obs_space)
    obs, _ = env.reset(seed=0)
    assert env.inner_obs_space.contains(gym.spaces.unflatten(env.inner_obs_space, obs[:obs_dim]))
    assert not obs[obs_dim:].any()
    env.action_space.seed(0)
    action = env.action_space.sample()
    obs, reward, *_ = env.step(action)
    np.testing.assert_allclose(obs[obs_dim:-2], gym.spaces.flatten(env.action_space, action), rtol=1e-6)
    assert obs[-2] == pytest.approx(reward)  # the policy sees the reward the learner gets
