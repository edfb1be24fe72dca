"""Gittins-index baseline of the Bernoulli bandit: the index table and the policy's play."""

import numpy as np
import pytest

from envs.bandit import GittinsIndex, gittins_index_table
from metaray.baselines import evaluate_baselines
from metaray.config import TaskConfig
from metaray.rollouts import evaluation_trials


@pytest.mark.parametrize(
    "discount, successes, failures, published",
    [(0.9, 0, 0, 0.7029), (0.9, 1, 1, 0.6346), (0.9, 2, 2, 0.6010), (0.9, 9, 1, 0.8695), (0.99, 0, 0, 0.8699)],
)
def test_index_matches_published_values(discount, successes, failures, published):
    """Gittins' indices for a uniform prior, by record of wins and losses, as reprinted in
    B. Christian & T. Griffiths, "Algorithms to Live By" (2016), ch. 2 (four decimals)."""
    depth = successes + failures + int(3 / (1 - discount))  # deeper changes these by ~1e-5
    assert gittins_index_table(discount, depth)[successes, failures] == pytest.approx(published, abs=1e-4)


def _restart_in_state_indices(discount: float, depth: int) -> np.ndarray:
    """Brute force by Katehakis & Veinott (1987): the index of x is (1 - discount) times the
    value of the problem "pull the current state or restart from x", solved by value iteration
    on the same lattice (posterior frozen after ``depth`` pulls), one root state at a time."""
    s, f = np.indices((depth + 1, depth + 1))
    mean = (s + 1) / (s + f + 2)
    learning = s + f < depth
    roots = np.argwhere(learning)
    at_root = (np.arange(len(roots)), roots[:, 0], roots[:, 1])
    value = np.zeros((len(roots), depth + 1, depth + 1))
    for _ in range(int(40 / (1 - discount))):  # discount ** iterations < 1e-17
        padded = np.pad(value, ((0, 0), (0, 1), (0, 1)))
        after = np.where(learning, mean * padded[:, 1:, :-1] + (1 - mean) * padded[:, :-1, 1:], value)
        pull = mean + discount * after
        value = np.maximum(pull, pull[at_root][:, None, None])
    index = np.full((depth, depth), np.nan)
    index[roots[:, 0], roots[:, 1]] = (1 - discount) * value[at_root]
    return index


@pytest.mark.parametrize("discount", [0.5, 0.8, 0.95])
def test_calibration_matches_restart_in_state_brute_force(discount):
    # The calibration interpolates on a grid of step 1/1024; measured error here <= 1e-4.
    np.testing.assert_allclose(gittins_index_table(discount, 12), _restart_in_state_indices(discount, 12), atol=2e-4)


def test_zero_discount_index_is_the_posterior_mean():
    s, f = np.indices((10, 10))
    table = gittins_index_table(0.0, 10)
    assert table[0, 0] == pytest.approx(0.5)
    np.testing.assert_allclose(table[s + f < 10], ((s + 1) / (s + f + 2))[s + f < 10], atol=1e-12)


def test_index_shape():
    """Above the mean, rising with successes, falling with failures, and the exploration bonus
    shrinking as observations with the same mean accumulate."""
    table = gittins_index_table(0.9, 60)[:30, :30]
    s, f = np.indices(table.shape)
    assert (table > (s + 1) / (s + f + 2)).all()
    assert (np.diff(table, axis=0) > 0).all() and (np.diff(table, axis=1) < 0).all()
    half = [table[k, k] for k in range(15)]  # mean 1/2
    two_thirds = [table[2 * k + 1, k] for k in range(10)]  # mean 2/3
    assert (np.diff(half) < 0).all() and half[-1] > 0.5
    assert (np.diff(two_thirds) < 0).all() and two_thirds[-1] > 2 / 3


def test_policy_explores_the_less_known_arm():
    """The book's example: a 1-1 record (index 0.6346) beats 9-6 (0.6300, higher mean)."""
    policy = GittinsIndex(num_arms=2, horizon=60, discount=0.9)
    policy.begin_trial(None, np.random.default_rng(0))
    policy.successes[:], policy.failures[:] = [9, 1], [6, 1]
    assert policy.act(0) == 1


def _trial_returns(num_arms: int, pulls: int, names: list[str], num_trials: int) -> dict[str, np.ndarray]:
    task = TaskConfig(family="bandit", params={"num_arms": num_arms}, episodes_per_trial=pulls)
    records = evaluate_baselines(task, names, evaluation_trials("test", num_trials), split_seed=0)
    return {name: np.array([sum(r.episode_returns) for r in recs]) for name, recs in records.items()}


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b on the same trials and its standard error."""
    diff = a - b
    return diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))


def test_gittins_between_greedy_and_bayes_optimal_at_10_pulls():
    returns = _trial_returns(5, 10, ["gittins", "greedy", "bayes_optimal"], 2000)
    over_greedy, se = _paired(returns["gittins"], returns["greedy"])
    assert over_greedy > -2 * se
    under_optimal, se = _paired(returns["bayes_optimal"], returns["gittins"])
    assert under_optimal > -2 * se


def test_gittins_beats_greedy_and_thompson_at_100_pulls():
    returns = _trial_returns(5, 100, ["gittins", "greedy", "thompson"], 500)
    for name in ("greedy", "thompson"):
        gain, se = _paired(returns["gittins"], returns[name])
        assert gain > 3 * se, name
