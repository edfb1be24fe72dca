"""End to end: launch.py trains, evaluates, checkpoints, logs, resumes (tiny budgets)."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import launch
from conftest import tiny_run_args

TINY = tiny_run_args(total_env_steps=2000, final_num_trials=50) + ["--set", "checkpoint_interval=1"]


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory, monkeypatch_module):
    run_dir = tmp_path_factory.mktemp("run") / "quick"
    assert launch.main(TINY + ["--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def monkeypatch_module():
    from conftest import ROOT

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        yield mp


def test_summary(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["env_steps"] >= 2000 and summary["wall_s"] > 0
    for split in ("test", "train"):
        ev = summary["eval"][split]
        assert ev["num_trials"] == 50 and len(ev["return_by_episode"]) == 10
        assert ev["trial_return_mean"] == pytest.approx(sum(ev["return_by_episode"]))
    assert set(summary["baselines"]) == {"random", "greedy", "epsilon_greedy", "ucb1", "thompson", "bayes_optimal", "gittins"}
    assert summary["baselines"]["bayes_optimal"]["num_trials"] == 50
    assert (tiny_run / "config.yaml").is_file()


def test_tensorboard_events_readable(tiny_run):
    events = EventAccumulator(str(tiny_run), size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/trial_return_mean", "eval_test/trial_return_mean", "eval_train/trial_return_mean",
                "eval_test_by_episode/ep_09", "baselines_test/thompson", "perf/env_steps_per_s"):
        assert tag in scalars, tag
    assert "adaptation_curve" in events.Tags()["images"]
    final = events.Scalars("final_eval_test/trial_return_mean")[-1].value
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert final == pytest.approx(summary["eval"]["test"]["trial_return_mean"], rel=1e-5)


def test_resume_continues_counters(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "summary.json").unlink()
    assert launch.main(["--resume", str(run_dir), "--set", "training.total_env_steps=4000"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] > 2 and summary["env_steps"] >= 4000
    states = sorted((run_dir / "checkpoints").glob("iter_*/metaray_state.json"))
    counters = [json.loads(s.read_text())["iteration"] for s in states]
    assert counters == sorted(set(counters)) and counters[-1] == summary["iterations"]


def test_evaluation_is_deterministic(tiny_run, ray_session):
    """Same checkpoint, same split, same seed: the same numbers."""
    from ray.rllib.algorithms.algorithm import Algorithm

    from metaray.rollouts import evaluate_meta_policy

    summary = json.loads((tiny_run / "summary.json").read_text())
    algo = Algorithm.from_checkpoint(str(tiny_run / summary["checkpoint"]))
    try:
        first, env_steps = evaluate_meta_policy(algo, 50, explore=False)
        second, _ = evaluate_meta_policy(algo, 50, explore=False)
    finally:
        algo.stop()
    assert first == second
    assert env_steps == 2 * 50 * 10  # 50 trials of each split, 10 one-step pulls each
    assert first["test"]["trial_return_mean"] == pytest.approx(summary["eval"]["test"]["trial_return_mean"])


def test_evaluation_counts_env_steps_not_episodes(ray_session):
    """On a family whose episodes last several steps the evaluation reports every step played:
    trials x episodes per trial x steps per episode, on each split."""
    from conftest import ROOT
    from metaray.config import load_config
    from metaray.rllib_config import build_algorithm_config
    from metaray.rollouts import evaluate_meta_policy

    cfg = load_config(ROOT / "configs" / "tabular_mdp_n10.yaml", [
        "model.hidden_size=8", "model.encoder_layers=[]", "task.episodes_per_trial=3",
        "env_runners.num_envs_per_env_runner=2", "evaluation.num_envs_per_env_runner=2"])
    algo = build_algorithm_config(cfg).build_algo()
    try:
        _, env_steps = evaluate_meta_policy(algo, 4, explore=False)
    finally:
        algo.stop()
    assert env_steps == 2 * 4 * 3 * cfg.task.params["horizon"]


@pytest.mark.parametrize("name", ["bandit_n10_k10", "bandit_n10_k50", "bandit_n100_k5", "bandit_n100_k10",
                                  "bandit_n100_k50"])
def test_rl2_table_1_configs_start(name, tmp_path, ray_session):
    """Every RL² Table 1 config trains, evaluates and compares against its baselines (tiny budget)."""
    from conftest import ROOT

    config = ROOT / "configs" / f"{name}.yaml"
    tiny = ["training.total_env_steps=2000", "training.train_batch_size=2000", "training.minibatch_size=1000",
            "training.num_epochs=1", "model.hidden_size=16", "env_runners.num_envs_per_env_runner=4",
            "evaluation.num_trials=4", "evaluation.final_num_trials=8", "evaluation.baselines=[random,gittins]"]
    run_dir = tmp_path / "run"
    assert launch.main(["--config", str(config), *(a for o in tiny for a in ("--set", o)), "--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    episodes = int(name.split("_n")[1].split("_")[0])
    assert len(summary["eval"]["test"]["return_by_episode"]) == episodes
    assert summary["baselines"]["gittins"]["trial_return_mean"] > summary["baselines"]["random"]["trial_return_mean"]
