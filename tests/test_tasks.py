"""Task splits: disjoint, deterministic, reproducible from the seed."""

import numpy as np
import pytest

from metaray.tasks import TaskSplit, load_family


@pytest.fixture
def split():
    return TaskSplit(load_family("bandit", {"num_arms": 5}), test_fraction=0.2, seed=7)


def test_split_is_disjoint_and_consistent(split):
    train = {split.family.task_key(split.task_at("train", i)) for i in range(300)}
    test = {split.family.task_key(split.task_at("test", i)) for i in range(300)}
    assert not train & test
    assert all(split.split_of(split.task_at("test", i)) == "test" for i in range(50))
    rng = np.random.default_rng(0)
    assert all(split.split_of(split.sample("train", rng)) == "train" for _ in range(50))


def test_split_is_deterministic(split):
    again = TaskSplit(load_family("bandit", {"num_arms": 5}), test_fraction=0.2, seed=7)
    for i in range(20):
        np.testing.assert_array_equal(split.task_at("test", i), again.task_at("test", i))
        assert split.trial_seed("test", i) == again.trial_seed("test", i)
    other_seed = TaskSplit(split.family, test_fraction=0.2, seed=8)
    assert not np.array_equal(split.task_at("test", 0), other_seed.task_at("test", 0))


def test_test_fraction_is_respected(split):
    rng = np.random.default_rng(1)
    shares = np.mean([split.split_of(split.family.sample_task(rng)) == "test" for _ in range(4000)])
    assert abs(shares - 0.2) < 0.03


def test_discrete_task_space_never_overlaps():
    """Finite task spaces (few distinct tasks) are split by task, not by draw."""
    from doubles import CountingFamily

    class FewTasks(CountingFamily):
        def sample_task(self, rng):
            return int(rng.integers(10))

    split = TaskSplit(FewTasks(), test_fraction=0.3, seed=0)
    train = {split.task_at("train", i) for i in range(200)}
    test = {split.task_at("test", i) for i in range(200)}
    assert train and test and not train & test and train | test == set(range(10))
