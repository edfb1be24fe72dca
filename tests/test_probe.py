"""The task-inference probe: its arithmetic on states with a known answer, the families'
posteriors, the untrained control's replay, and --probe end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ROOT, tiny_run_args
from metaray.probe import posterior_r2, probe_r2, r2_score, ridge_predict
from metaray.tasks import load_family


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
    r2 = events.Scalars("probe/arm_probs/probe_last")
    assert [point.step for point in r2] == [1000, 2000]  # every periodic evaluation (interval 1)
    assert {"probe/arm_probs/bayes_mean", "probe/arm_probs/untrained_last"} <= set(events.Tags()["scalars"])
    assert "probe" in events.Tags()["images"]
