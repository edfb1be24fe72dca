"""Prioritized task curriculum (task.curriculum: plr): sampling arithmetic, the training split
only, state round trip, serial determinism, regret scores, and an end-to-end resumable run."""

import ast
import json
import math

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import launch
from conftest import ROOT
from envs.dark_room import ShortestPathOracle
from metaray.config import ExperimentConfig, PLRConfig, TaskConfig, load_config
from metaray.curriculum import POOL_FILE, PrioritizedTaskPool, pool_name, replay_probabilities, start_task_pool
from metaray.trial import TRIAL_INFO_KEY, TrialEnv, run_policy_trial

DARK_ROOM = TaskConfig(family="dark_room", params={"size": 9, "horizon": 20}, episodes_per_trial=2, curriculum="plr")


def bandit_pool(scores, last_sampled, num_draws, **plr) -> PrioritizedTaskPool:
    """A pool over 5-armed bandits holding len(scores) tasks with the given scores and counters."""
    pool = PrioritizedTaskPool(TaskConfig(family="bandit", params={"num_arms": 5}, curriculum="plr",
                                          plr=PLRConfig(**plr)), seed=0)
    entries = [[pool.split.family.task_key(pool.split.sample("train", np.random.default_rng(i))), i, s, c]
               for i, (s, c) in enumerate(zip(scores, last_sampled))]
    pool.set_state({**pool.state(), "entries": entries, "num_draws": num_draws})
    return pool


def test_replay_probabilities_by_hand():
    # scores 2, 5, 1 have ranks 2, 1, 3; beta 0.5 squares 1/rank: 1/4, 1, 1/9 (sum 49/36).
    # Staleness 4 - (1, 3, 2) = 3, 1, 2 (sum 6); rho 0.2 mixes the two.
    probs = replay_probabilities(np.array([2.0, 5.0, 1.0]), np.array([1, 3, 2]), 4, temperature=0.5, staleness_coef=0.2)
    expected = 0.8 * np.array([9, 36, 4]) / 49 + 0.2 * np.array([3, 1, 2]) / 6
    np.testing.assert_allclose(probs, expected)
    # Equal scores take ranks in pool order; PLR's default beta 0.1 makes rank 2 1024 times rarer.
    tied = replay_probabilities(np.array([1.0, 1.0]), np.array([2, 1]), 2, temperature=0.1, staleness_coef=0.0)
    np.testing.assert_allclose(tied, [1024 / 1025, 1 / 1025])
    # A single task just drawn has no staleness: the score part takes its share.
    np.testing.assert_allclose(replay_probabilities(np.array([3.0]), np.array([5]), 5, 0.1, 0.5), [1.0])


def test_pool_distribution_uses_its_scores_and_counters():
    pool = bandit_pool([2.0, 5.0, 1.0], [1, 3, 2], 4, temperature=0.5, staleness_coef=0.2)
    expected = 0.8 * np.array([9, 36, 4]) / 49 + 0.2 * np.array([3, 1, 2]) / 6
    np.testing.assert_allclose(list(pool.replay_distribution().values()), expected)


def test_replay_rate_and_replayed_tasks_follow_the_distribution():
    """4000 draws without updates: fresh tasks never get a score, so only the 3 scored tasks are
    replayed; with rho 0 their shares are the rank weights 1/r over H_3 = 11/6."""
    pool = bandit_pool([1.0, 3.0, 2.0], [0, 0, 0], 0, replay_prob=0.25, temperature=1.0, staleness_coef=0.0)
    scored = list(pool.replay_distribution())
    draws = [pool.sample()[0] for _ in range(4000)]
    assert pool.stats()["replay_fraction"] == pytest.approx(0.25, abs=0.03)  # sd 0.007
    replays = [key for key in draws if key in scored]
    shares = [replays.count(key) / len(replays) for key in scored]
    np.testing.assert_allclose(shares, np.array([1 / 3, 1, 1 / 2]) * 6 / 11, atol=0.05)  # sd <= 0.016


def test_no_replay_before_a_score_and_capacity_evicts_the_lowest():
    pool = PrioritizedTaskPool(TaskConfig(family="bandit", curriculum="plr", plr=PLRConfig(replay_prob=1.0, capacity=2)), 0)
    ids = [pool.sample()[0] for _ in range(3)]
    assert pool.stats()["replay_fraction"] == 0 and len(set(ids)) == 3
    for task_id, score in zip(ids, [5.0, 1.0, 3.0]):
        pool.update(task_id, score)
    assert sorted(pool.stats()["scores"]) == [3.0, 5.0]
    pool.update(ids[1], 9.0)  # evicted: ignored
    pool.update(ids[0], math.nan)  # non-finite: ignored
    assert sorted(pool.stats()["scores"]) == [3.0, 5.0]
    assert pool.sample()[0] in (ids[0], ids[2])


def test_held_out_tasks_never_enter_the_pool():
    """Dark Room's 81 goals split by hash: 3000 draws cover every training goal and no held-out one."""
    pool = PrioritizedTaskPool(DARK_ROOM, seed=0)
    split, family = pool.split, pool.split.family
    cells = [(r, c) for r in range(9) for c in range(9)]
    train = {family.task_key(c) for c in cells if split.split_of(c) == "train"}
    assert 0 < len(train) < len(cells)
    rng = np.random.default_rng(0)
    drawn = set()
    for _ in range(3000):
        task_id, task = pool.sample()
        drawn.add(family.task_key(task))
        pool.update(task_id, float(rng.random()))
    assert drawn == train
    assert {key for key, *_ in pool.state()["entries"]} <= train
    assert pool.stats()["distinct_tasks"] == len(train)


def test_state_round_trip_and_determinism():
    def play(pool, n, seed):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            task_id, _ = pool.sample()
            pool.update(task_id, float(rng.random()))
            out.append(task_id)
        return out

    first, second = PrioritizedTaskPool(DARK_ROOM, seed=3), PrioritizedTaskPool(DARK_ROOM, seed=3)
    assert play(first, 300, 0) == play(second, 300, 0)  # same seed, same calls: same tasks
    assert play(PrioritizedTaskPool(DARK_ROOM, seed=4), 300, 0) != play(PrioritizedTaskPool(DARK_ROOM, seed=3), 300, 0)
    restored = PrioritizedTaskPool(DARK_ROOM, seed=3)
    restored.set_state(json.loads(json.dumps(first.state())))
    assert restored.state() == first.state()
    assert play(restored, 200, 1) == play(first, 200, 1)
    other_room = TaskConfig(family="dark_room", params={"size": 7}, curriculum="plr")
    with pytest.raises(ValueError, match="does not fit"):
        PrioritizedTaskPool(other_room, seed=3).set_state(first.state())


def play_pooled_trials(ray, tmp_path, num_trials: int) -> tuple[list[str], dict]:
    """Two trial envs of one serial runner take turns on trials from a fresh pool actor."""
    cfg = ExperimentConfig(task=DARK_ROOM, seed=0)
    pool = start_task_pool(cfg, tmp_path)
    envs = [TrialEnv(TrialEnv.env_config(cfg.task, 0, task_pool=pool_name(tmp_path))) for _ in range(2)]
    oracle_env = envs[0].family.make_env()
    for i, env in enumerate(envs):
        env.task_seed = [0, 0, 0, i]
        env.action_space.seed(i)
    drawn = []
    for trial in range(num_trials):
        env = envs[trial % 2]
        env.reset()
        task = env.inner.targets[0]
        done = False
        while not done:
            _, _, done, _, info = env.step(env.action_space.sample())
        record = info[TRIAL_INFO_KEY]
        key = env.family.task_key(task)
        drawn.append(key)
        scores = {k: s for k, _, s, _ in ray.get(pool.state.remote())["entries"]}
        oracle = run_policy_trial(oracle_env, ShortestPathOracle(), task, 0, 2, "train", -1)
        assert scores[key] == pytest.approx(sum(oracle.episode_returns) - sum(record.episode_returns))
    state = ray.get(pool.state.remote())
    ray.kill(pool)
    return drawn, state


def test_trial_envs_share_the_pool_score_regret_and_are_deterministic(ray_session, tmp_path):
    first = play_pooled_trials(ray_session, tmp_path / "a", 40)
    second = play_pooled_trials(ray_session, tmp_path / "b", 40)
    assert first == second
    assert len(set(first[0])) < len(first[0])  # some tasks were replayed


def test_evaluation_envs_never_name_the_pool():
    from metaray.rllib_config import build_algorithm_config

    config = build_algorithm_config(load_config(ROOT / "configs/dark_room_plr.yaml"), "pool")
    assert config.env_config["task_pool"] == "pool"
    assert config.get_evaluation_config_object().env_config["task_pool"] is None


def test_plr_run_checkpoints_resumes_and_logs(ray_session, tmp_path):
    overrides = {
        "training.total_env_steps": 3000, "training.train_batch_size": 1000, "training.minibatch_size": 500,
        "training.num_epochs": 1, "model.hidden_size": 16, "model.max_seq_len": 40,
        "task.episodes_per_trial": 2, "env_runners.num_envs_per_env_runner": 8, "checkpoint_interval": 1,
        "evaluation.interval": 2, "evaluation.num_trials": 8, "evaluation.final_num_trials": 16,
        "evaluation.num_envs_per_env_runner": 8,
    }
    args = ["--config", str(ROOT / "configs/dark_room_plr.yaml")]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    run_dir = tmp_path / "run"
    assert launch.main(args + ["--run-dir", str(run_dir)]) == 0
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*"))
    assert len(checkpoints) == 3 and all((c / POOL_FILE).is_file() for c in checkpoints)
    before = json.loads((checkpoints[-1] / POOL_FILE).read_text())
    assert before["entries"] and before["num_draws"] > 0

    events = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    events.Reload()
    for tag in ("curriculum/score_mean", "curriculum/replay_fraction", "curriculum/distinct_tasks"):
        assert len(events.Scalars(tag)) == 3, tag
    assert "curriculum/scores" in events.Tags()["histograms"]
    assert events.Scalars("curriculum/distinct_tasks")[-1].value == len(before["trained_on"])

    (run_dir / "summary.json").unlink()
    assert launch.main(["--resume", str(run_dir), "--set", "training.total_env_steps=4000"]) == 0
    after = json.loads((sorted((run_dir / "checkpoints").glob("iter_*"))[-1] / POOL_FILE).read_text())
    # One more iteration draws fewer tasks than the first three: only a restored pool has more.
    assert after["num_draws"] > before["num_draws"]
    assert {key for key, *_ in before["entries"]} <= {key for key, *_ in after["entries"]}
    assert set(before["trained_on"]) <= set(after["trained_on"])
    family_split = PrioritizedTaskPool(load_config(run_dir / "config.yaml").task, seed=0).split
    assert all(family_split.split_of(ast.literal_eval(key)) == "train" for key, *_ in after["entries"])
