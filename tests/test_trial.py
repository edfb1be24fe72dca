"""The RL² trial wrapper: inputs, flags, resets, trial boundaries, evaluation queues."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from helpers import trial_config
from metaray.config import TaskConfig
from metaray.trial import TRIAL_INFO_KEY, TrialEnv

DOUBLE = "doubles.py"  # loaded by file path, like a user's own family


def make(episodes=2, box=False, split="train", **task_settings):
    from conftest import ROOT

    task = TaskConfig(family=str(ROOT / "tests" / DOUBLE), params={"length": 3, "box_actions": box},
                      episodes_per_trial=episodes, **task_settings)
    return TrialEnv(TrialEnv.env_config(task, seed=0, split=split))


@pytest.mark.parametrize("box", [False, True])
def test_check_env(box):
    check_env(make(box=box), skip_render_check=True)


def test_bandit_trial_env_passes_check_env():
    check_env(TrialEnv(trial_config("bandit", {"num_arms": 5}, 10)),
              skip_render_check=True)


def test_inputs_flags_and_trial_boundary():
    env = make(episodes=2)
    obs, _ = env.reset(seed=0)
    task = env.inner.task
    # [inner obs (1), one-hot previous action (3), previous reward, done flag]
    np.testing.assert_array_equal(obs, [0, 0, 0, 0, 0, 0])
    obs, reward, terminated, truncated, info = env.step(2)
    np.testing.assert_allclose(obs, [1, 0, 0, 1, task + 1, 0], rtol=1e-6)
    env.step(1)
    obs, reward, terminated, truncated, info = env.step(0)  # inner episode 1 ends
    assert not terminated and not truncated and not info
    # First observation of the next inner episode: reset obs, last action/reward, done flag 1.
    np.testing.assert_allclose(obs, [0, 1, 0, 0, task + 3, 1], rtol=1e-6)
    assert env.inner.resets == 2 and env.inner.task == task  # same task across the trial
    for _ in range(2):
        obs, *_ = env.step(0)
        assert obs[-1] == 0
    obs, reward, terminated, truncated, info = env.step(0)  # trial ends with episode 2
    assert terminated and not truncated
    record = info[TRIAL_INFO_KEY]
    assert record.episode_returns == pytest.approx((3 * task + 6, 3 * task + 6))
    assert record.episode_successes == (task > 0.5, task > 0.5)
    env.reset()
    assert env.inner.task != task  # a new trial draws a new task


def test_box_actions_are_fed_back():
    env = make(box=True)
    env.reset(seed=0)
    obs, *_ = env.step(np.array([0.25, -0.5], np.float32))
    np.testing.assert_allclose(obs[1:3], [0.25, -0.5])


def test_reward_scale_applies_to_input_and_reward_not_metrics():
    env = make(episodes=1, reward_scale=0.1)
    env.reset(seed=0)
    task = env.inner.task
    obs, reward, *_ = env.step(0)
    assert reward == pytest.approx(0.1 * (task + 1)) and obs[-2] == pytest.approx(reward)
    env.step(0)
    *_, info = env.step(0)
    assert info[TRIAL_INFO_KEY].episode_returns[0] == pytest.approx(3 * task + 6)


def test_evaluation_queue_replays_interrupted_trial_and_pads():
    env = make(episodes=1, split="test")
    env.trial_queue = [("test", 4), ("train", 2)]
    env.reset(seed=0)
    first_task = env.inner.task
    env.step(0)
    env.reset()  # interrupted (e.g. RLlib force-reset): the same trial starts over
    assert env.inner.task == first_task
    for _ in range(3):
        *_, info = env.step(0)
    assert (info[TRIAL_INFO_KEY].split, info[TRIAL_INFO_KEY].index) == ("test", 4)
    env.reset()
    assert env.inner.task == env.split.task_at("train", 2)
    for _ in range(3):
        *_, info = env.step(0)
    env.reset()  # queue done: unrecorded padding trials
    for _ in range(3):
        *_, info = env.step(0)
    assert info[TRIAL_INFO_KEY].index == -1


def test_rejects_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        make(split="validation")
