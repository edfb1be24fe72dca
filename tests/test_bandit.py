"""Bernoulli bandit family: env API and baselines (paired on the same held-out trials)."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs.bandit import _canonical_value
from metaray.baselines import evaluate_baselines
from metaray.config import TaskConfig
from metaray.rollouts import evaluation_trials
from metaray.statistics import adaptation_metrics
from metaray.tasks import load_family


def test_env_passes_check_env():
    env = load_family("bandit", {"num_arms": 5}).make_env()
    env.set_task(np.linspace(0.1, 0.9, 5))
    check_env(env, skip_render_check=True)


def test_pull_pays_with_arm_probability():
    env = load_family("bandit", {"num_arms": 2}).make_env()
    env.set_task(np.array([0.2, 0.8]))
    env.reset(seed=0)
    rewards = np.array([[env.step(a)[1] for a in (0, 1)] for _ in range(4000)])
    np.testing.assert_allclose(rewards.mean(axis=0), [0.2, 0.8], atol=0.03)


@pytest.fixture(scope="module")
def baseline_returns():
    task = TaskConfig(family="bandit", params={"num_arms": 5}, episodes_per_trial=10)
    records = evaluate_baselines(task, None, evaluation_trials("test", 2000), split_seed=0)
    return {name: np.array([sum(r.episode_returns) for r in recs]) for name, recs in records.items()}


def test_baselines_are_ordered_as_published(baseline_returns):
    """RL² Table 1 (n=10, k=5): random 5.0 < TS 5.7 < greedy 6.6 <= Bayes-optimal."""
    mean = {name: r.mean() for name, r in baseline_returns.items()}
    stderr = {name: r.std() / np.sqrt(len(r)) for name, r in baseline_returns.items()}
    assert abs(mean["random"] - 5.0) < 4 * stderr["random"]
    for name in ("thompson", "ucb1", "greedy", "epsilon_greedy"):
        diff = baseline_returns[name] - baseline_returns["random"]  # paired: same trials
        assert diff.mean() > 3 * diff.std() / np.sqrt(len(diff)), name
    for name in mean:
        assert mean["bayes_optimal"] >= mean[name] - 2 * stderr[name], name


def test_bayes_optimal_planner_value_matches_play(baseline_returns):
    """The DP's value of the empty posterior is the policy's expected trial return."""
    expected = _canonical_value(tuple(sorted(((0, 0),) * 5)), 10)
    played = baseline_returns["bayes_optimal"]
    assert abs(played.mean() - expected) < 3 * played.std() / np.sqrt(len(played))
    assert 6.6 < expected < 6.8


def test_adaptation_metrics_shape(baseline_returns):
    task = TaskConfig(family="bandit", params={"num_arms": 5}, episodes_per_trial=10)
    records = evaluate_baselines(task, ["greedy"], evaluation_trials("test", 300), split_seed=0)["greedy"]
    metrics = adaptation_metrics(records)
    assert metrics["num_trials"] == 300 and len(metrics["return_by_episode"]) == 10
    assert metrics["trial_return_mean"] == pytest.approx(sum(metrics["return_by_episode"]))
    low, high = metrics["trial_return_ci95"]
    assert low < metrics["trial_return_mean"] < high
    assert metrics["adaptation_gain"] > 0  # greedy improves after its first pulls
    assert "success_rate" not in metrics  # bandits define no success
