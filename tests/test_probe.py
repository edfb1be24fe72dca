"""The task-inference probe: its arithmetic on states with a known answer, the families'
posteriors, the untrained control's replay, and --probe end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_run_args
from metaray.probe import (chance_accuracy, posterior_accuracy, posterior_r2, probe_accuracy, probe_r2, probe_report,
                           r2_score, ridge_predict, summarize)
from metaray.tasks import TaskSplit, load_family
from metaray.trial import TrialTrace


@pytest.fixture
def tasks():
    return np.random.default_rng(0).normal(size=(600, 4))


def test_exact_state_decodes_fully_and_noise_not_at_all(tasks):
    rng = np.random.default_rng(1)
    exact = np.repeat((tasks @ rng.normal(size=(4, 16)))[:, None], 3, axis=1)
    noise = rng.normal(size=(600, 3, 16))
    assert probe_r2(exact, tasks) == pytest.approx([1.0] * 3, abs=1e-3)
    assert np.abs(probe_r2(noise, tasks)).max() < 0.05


def test_half_the_features_known_gives_their_share_of_the_variance():
    tasks = np.random.default_rng(0).normal(size=(4000, 4))  # many tasks: little estimation error
    state = np.concatenate([tasks[:, :2], np.random.default_rng(2).normal(size=(4000, 6))], axis=1)[:, None]
    fit, scored = tasks[:2000], tasks[2000:]
    # Known features are read exactly; the best guess of an unknown one is its fitted mean.
    unknown_residual = ((scored[:, 2:] - fit[:, 2:].mean(axis=0)) ** 2).sum()
    expected = 1 - unknown_residual / ((scored - scored.mean(axis=0)) ** 2).sum()
    assert probe_r2(state, tasks)[0] == pytest.approx(expected, abs=0.01)


def test_noisy_readout_matches_the_noise_share(tasks):
    """State = task + noise of equal variance: the best linear read-out explains half."""
    state = (tasks + np.random.default_rng(3).normal(size=tasks.shape))[:, None]
    assert probe_r2(state, tasks)[0] == pytest.approx(0.5, abs=0.06)


def test_ridge_chooses_a_penalty_that_generalises():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 50))  # nearly as many dimensions as samples: unpenalised overfits
    y = x[:, :1] + rng.normal(size=(60, 1))
    x_new = rng.normal(size=(2000, 50))
    r2 = r2_score(x_new[:, :1], ridge_predict(x, y, x_new))
    least_squares = x_new @ np.linalg.lstsq(x, y, rcond=None)[0]
    assert r2 > r2_score(x_new[:, :1], least_squares) + 0.1


def test_r2_of_the_true_posterior_is_its_ceiling():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(400, 2))
    posterior = np.stack([np.zeros_like(features), features], axis=1)  # step 1 knows nothing, step 2 all
    assert posterior_r2(posterior, features) == pytest.approx([0.0, 1.0], abs=0.01)


def test_exact_class_decodes_fully_and_noise_at_chance():
    rng = np.random.default_rng(6)
    labels = rng.integers(8, size=600)
    exact = np.repeat(np.eye(8)[labels][:, None], 3, axis=1) + rng.normal(0, 0.1, size=(600, 3, 8))
    noise = rng.normal(size=(600, 3, 8))
    assert probe_accuracy(exact, labels) == pytest.approx([1.0] * 3, abs=0.01)
    assert probe_accuracy(noise, labels) == pytest.approx([chance_accuracy(labels)] * 3, abs=0.05)


def test_chance_is_the_most_frequent_class_not_one_over_the_classes():
    """With unbalanced classes a state that knows nothing still scores the majority's share."""
    rng = np.random.default_rng(7)
    labels = rng.choice(4, size=2000, p=[0.55, 0.15, 0.15, 0.15])
    assert chance_accuracy(labels) == pytest.approx(0.55, abs=0.03)
    assert probe_accuracy(rng.normal(size=(2000, 1, 8)), labels)[0] == pytest.approx(chance_accuracy(labels), abs=0.02)


def test_accuracy_of_the_posterior_is_that_of_its_most_probable_class():
    labels = np.random.default_rng(8).integers(3, size=100)
    knows_nothing = np.tile([0.5, 0.3, 0.2], (100, 1))  # always guesses class 0
    knows_all = np.eye(3)[labels] * 0.6 + 0.1
    accuracy = posterior_accuracy(np.stack([knows_nothing, knows_all], axis=1), labels)
    assert accuracy == pytest.approx([np.mean(labels[50:] == 0), 1.0])


def test_dark_room_goal_cell_is_probed_by_accuracy_and_its_coordinates_by_r2():
    """probe_report on traces whose memory holds the goal cell one-hot: the declared discrete
    group is scored by accuracy against chance, the coordinates by R², and the report, the
    figure and the TensorBoard scalars say which."""
    from metaray.figures import probe_figure, save_figure
    from metaray.report import probe_markdown

    split = TaskSplit(load_family("dark_room", {"size": 5, "horizon": 2}), test_fraction=0.4, seed=0)
    rng = np.random.default_rng(9)
    width = 5 + 5 + 5 + 2  # one-hot row and column, one-hot action, reward, done
    obs = np.zeros((2, width))
    obs[:, [2, 7]] = 1.0  # the start cell, (2, 2)
    traces, untrained = [], []
    for index in range(200):
        cell = split.family.task_features(split.task_at("test", index))["goal_cell"][0]
        memory = np.repeat(np.eye(25)[cell][None], 2, axis=0) + rng.normal(0, 0.01, size=(2, 25))
        traces.append(TrialTrace("test", index, memory, obs, np.zeros(2, np.int64), np.zeros(2)))
        untrained.append(rng.normal(size=(2, 25)))
    report = probe_report(split, 1.0, traces, untrained)
    cell, coordinates = report["groups"]["goal_cell"], report["groups"]["goal"]
    assert set(cell) == {"probe", "untrained", "input_only", "chance", "num_classes"}
    assert cell["probe"] == pytest.approx([1.0, 1.0]) and coordinates["probe"] == pytest.approx([1.0, 1.0], abs=0.01)
    assert max(cell["input_only"]) < 0.3 and 1 / cell["num_classes"] <= cell["chance"][0] < 0.3  # the input is constant
    assert coordinates["num_features"] == 2 and "chance" not in coordinates
    assert {"probe_last_accuracy", "chance_mean_accuracy"} <= set(summarize(report)["goal_cell"])
    assert "probe_last_r2" in summarize(report)["goal"]
    markdown = "\n".join(probe_markdown(report))
    assert f"**goal_cell** ({cell['num_classes']} classes, accuracy)" in markdown
    assert "**goal** (2 features, R²)" in markdown
    fig = probe_figure(report, "synthetic")
    assert [ax.get_ylabel() for ax in fig.axes] == ["R² on held-out tasks", "accuracy on held-out tasks"]
    save_figure(fig, None)


def test_bandit_posterior_is_the_beta_mean_before_each_pull():
    family = load_family("bandit", {"num_arms": 3})
    means = family.posterior_features([0] * 4, [2, 2, 0, 2], [1.0, 1.0, 0.0, 0.0])["arm_probs"]
    np.testing.assert_allclose(means[:, 2], [1 / 2, 2 / 3, 3 / 4, 3 / 4])
    np.testing.assert_allclose(means[3, 0], 1 / 3)


def test_tabular_posterior_skips_transitions_across_episode_resets():
    family = load_family("tabular_mdp", {"num_states": 2, "num_actions": 2, "horizon": 2})
    # Two episodes of two steps from state 0: 0 -a0-> 1 -a1-> (reset) 0 -a0-> 1 -a0-> (reset)
    posterior = family.posterior_features([0, 1, 0, 1], [0, 1, 0, 0], [3.0, -1.0, 1.0, 0.0])
    rewards = posterior["mean_rewards"].reshape(4, 2, 2)
    transitions = posterior["transitions"].reshape(4, 2, 2, 2)
    np.testing.assert_allclose(rewards[3, 0, 0], (1 + 3 + 1) / 3)  # N(1, 1) prior, two rewards seen
    np.testing.assert_allclose(transitions[3, 0, 0], [1 / 4, 3 / 4])  # 0 -a0-> 1 twice
    np.testing.assert_allclose(transitions[3, 1, 1], [1 / 2, 1 / 2])  # the reset after step 2 is no transition


def test_untrained_control_replays_what_sampling_recorded(ray_session):
    """The memory the env runners record while playing equals the module's replay of the
    same inputs: the untrained control and the trained probe read the same kind of state."""
    from metaray.config import load_config
    from metaray.rllib_config import build_algorithm_config
    from metaray.rollouts import evaluation_trials, play_and_trace, untrained_memory

    cfg = load_config(ROOT / "configs/quickstart.yaml", ["model.hidden_size=16", "evaluation.num_envs_per_env_runner=4"])
    torch.manual_seed(cfg.seed)
    algo = build_algorithm_config(cfg).build_algo()  # untrained, seeded as untrained_memory seeds it
    try:
        played = play_and_trace(algo, evaluation_trials("test", 6), explore=False)
    finally:
        algo.stop()
    traces = [trace for _, trace in played]
    assert all(trace.memory.shape == (10, 16) for trace in traces)
    replayed = untrained_memory(cfg, traces)
    np.testing.assert_allclose(np.stack(replayed), np.stack([t.memory for t in traces]), atol=1e-5)


def test_probe_report_end_to_end(tmp_path, ray_session):
    import json

    import launch

    run_dir, report_dir = tmp_path / "run", tmp_path / "probe"
    assert launch.main([*tiny_run_args(total_env_steps=2000, final_num_trials=20), "--run-dir", str(run_dir)]) == 0
    assert launch.main(["--probe", "--checkpoint", str(run_dir), "--trials", "40", "--run-dir", str(report_dir)]) == 0
    summary = json.loads((report_dir / "summary.json").read_text())
    curves = summary["probe"]["groups"]["arm_probs"]
    assert set(curves) == {"probe", "untrained", "input_only", "bayes", "num_features"}
    assert len(curves["probe"]) == 10 and summary["probe"]["num_fit_trials"] == 20
    assert "What the memory knows about the task" in (report_dir / "report.md").read_text()
    assert (report_dir / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_during_training_goes_to_tensorboard(tmp_path, ray_session):
    import launch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = [*tiny_run_args(total_env_steps=2000, final_num_trials=20), "--set", "evaluation.probe=true",
            "--run-dir", str(run_dir)]
    assert launch.main(args) == 0
    events = EventAccumulator(str(run_dir))
    events.Reload()
    r2 = events.Scalars("probe/arm_probs/probe_last_r2")
    assert [point.step for point in r2] == [1000, 2000]  # every periodic evaluation (interval 1)
    assert {"probe/arm_probs/bayes_mean_r2", "probe/arm_probs/untrained_last_r2"} <= set(events.Tags()["scalars"])
    assert "probe" in events.Tags()["images"]
