"""R2D2: the recurrent Q-policy, its sequence replay and loss, its config, and a run through launch.py."""

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import launch
from conftest import ROOT
from helpers import train_bandit_and_check_adaptation
from metaray.config import ConfigError, load_config
from metaray.models.q_policy import RecurrentQPolicy, ape_x_epsilons, n_step_targets
from metaray.validation import check_experiment

MODULE = "default_policy"
MAX_SEQ_LEN, BURN_IN = 6, 2
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def build_small_r2d2():
    """An R2D2 algorithm sampling in the driver with 4 envs, exploring at random (epsilon 1)."""
    from metaray.rllib_config import build_algorithm_config

    cfg = load_config(QUICKSTART, [
        "training.algorithm=R2D2", "model.hidden_size=8", "model.encoder_layers=[]",
        f"model.max_seq_len={MAX_SEQ_LEN}", f"training.r2d2.burn_in_len={BURN_IN}", "training.r2d2.epsilon=1.0",
        "training.r2d2.batch_size=64", "training.r2d2.learning_starts=100", "training.train_batch_size=200",
        "env_runners.num_envs_per_env_runner=4", "evaluation.num_envs_per_env_runner=4",
    ])
    return build_algorithm_config(cfg).build_algo()


@pytest.fixture(scope="module")
def algo(ray_session):
    algorithm = build_small_r2d2()
    yield algorithm
    algorithm.stop()


def replayed(algo, num_trials: int = 8, seed: int = 0):
    """The sequences RLlib's DQN would replay (its training_step's arguments) from a few
    sampled trials, each as (its trial, its first step, its length), and the learner batch
    they make, one row per sequence."""
    trials = [e for e in algo.env_runner.sample(num_episodes=num_trials) if e.is_done]
    buffer = EpisodeReplayBuffer(capacity=10_000)
    buffer.rng = np.random.default_rng(seed)
    buffer.add(trials)
    # DQN samples sequences exactly when its module is stateful, of the model's max_seq_len.
    assert algo._module_is_stateful and algo.config.model_config["max_seq_len"] == MAX_SEQ_LEN
    sequences = buffer.sample(num_items=200, n_step=1, batch_length_T=MAX_SEQ_LEN, lookback=1,
                              min_batch_length_T=algo.config.burn_in_len, gamma=0.99, sample_episodes=True)
    by_id = {e.id_: e for e in trials}
    origins = [(by_id[s.id_], s.t_started, len(s)) for s in sequences]  # the connector renames them
    learner = algo.learner_group._learner
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=sequences,
                                       shared_data={}, metrics=None)[MODULE]
    assert len(origins) == len(batch[Columns.OBS])  # none is longer than max_seq_len
    return origins, batch


def test_replayed_sequences_start_from_the_stored_state(algo):
    origins, batch = replayed(algo)
    initial = algo.env_runner.module.get_initial_state()
    assert any(start > 0 for _, start, _ in origins) and any(start == 0 for _, start, _ in origins)
    for row, (trial, start, _) in enumerate(origins):
        for key, value in batch[Columns.STATE_IN].items():
            if start == 0:
                expected = initial[key]
            else:  # the state the sampling module returned at the step before the sequence's first
                expected = trial.get_extra_model_outputs(Columns.STATE_OUT, start - 1)[key]
                assert np.abs(expected).max() > 0
            np.testing.assert_allclose(value[row].numpy(), expected, rtol=1e-6)


def test_replayed_sequences_never_cross_a_trial_boundary(algo):
    origins, batch = replayed(algo, seed=1)
    for row, (trial, start, length) in enumerate(origins):
        assert int(batch[Columns.LOSS_MASK][row].sum()) == length > BURN_IN  # at least one step after burn-in
        assert start + length <= len(trial)
        observations = np.asarray(trial.get_observations(slice(start, start + length + 1)))
        np.testing.assert_array_equal(batch[Columns.OBS][row, :length].numpy(), observations[:-1])
        np.testing.assert_array_equal(batch[Columns.NEXT_OBS][row, :length].numpy(), observations[1:])
        assert not batch[Columns.OBS][row, length:].any()  # zero padding, not the next trial
        terminated = batch[Columns.TERMINATEDS][row].numpy()
        assert terminated[:length - 1].sum() == 0 and terminated[length - 1] == (start + length == len(trial))


def test_burn_in_steps_carry_no_loss(algo):
    learner = algo.learner_group._learner
    config = learner.config.get_config_for_module(MODULE)
    assert config.burn_in_len == BURN_IN
    generator = torch.Generator().manual_seed(0)
    rows, steps, actions = 3, MAX_SEQ_LEN, 5
    batch = {
        Columns.ACTIONS: torch.randint(actions, (rows, steps), generator=generator),
        Columns.REWARDS: torch.rand(rows, steps, generator=generator),
        Columns.TERMINATEDS: torch.zeros(rows, steps, dtype=torch.bool),
        Columns.LOSS_MASK: torch.ones(rows, steps, dtype=torch.bool),
    }
    q = {name: torch.randn(rows, steps, actions, generator=generator)
         for name in ("qf_preds", "qf_next_preds", "qf_target_next_preds")}

    def loss(fwd_out):
        return float(learner.compute_loss_for_module(module_id=MODULE, config=config, batch=batch, fwd_out=fwd_out))

    changed_burn_in = {name: value.clone() for name, value in q.items()}
    for value in changed_burn_in.values():
        value[:, :BURN_IN] += 100.0
    changed_after = {**q, "qf_preds": q["qf_preds"].clone()}
    changed_after["qf_preds"][:, BURN_IN] += 100.0
    assert loss(changed_burn_in) == pytest.approx(loss(q))
    assert loss(changed_after) > loss(q) + 1.0


def test_burn_in_steps_carry_no_gradient(algo):
    _, batch = replayed(algo, seed=2)
    module = algo.learner_group._learner.module[MODULE]
    parameters = list(module.torso.parameters()) + list(module.q_head.parameters())

    def gradient_norm(steps: slice) -> float:
        module.zero_grad(set_to_none=True)
        module.forward_train(batch)["qf_preds"][:, steps].sum().backward()
        return sum(float(p.grad.abs().sum()) for p in parameters if p.grad is not None)

    assert gradient_norm(slice(0, BURN_IN)) == 0.0
    assert gradient_norm(slice(BURN_IN, None)) > 0.0
    module.zero_grad(set_to_none=True)


def test_n_step_targets_stop_at_the_sequence_end_and_at_the_trial_end():
    rewards = torch.tensor([[1.0, 2.0, 4.0, 0.0], [1.0, 2.0, 4.0, 8.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    next_values = torch.tensor([[10.0, 20.0, 0.0, 99.0],  # row 0: the trial ends at its third step
                                [10.0, 20.0, 40.0, 80.0]])  # row 1: a sequence cut mid-trial
    targets = n_step_targets(rewards, next_values, valid, gamma=0.5, n_step=2)
    expected = torch.tensor([[1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 4 + 0.25 * 0, 4 + 0.5 * 0, 0],
                             [1 + 0.5 * 2 + 0.25 * 20, 2 + 0.5 * 4 + 0.25 * 40, 4 + 0.5 * 8 + 0.25 * 80,
                              8 + 0.5 * 80]])
    torch.testing.assert_close(targets, expected)


def test_each_env_explores_at_its_ape_x_rate(algo):
    # The callback told the driver's runner which actors its envs are.
    assert len(algo.env_runner.module.env_epsilons) == algo.env_runner.num_envs
    module = RecurrentQPolicy(observation_space=gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                              action_space=gym.spaces.Discrete(4), model_config={"hidden_size": 4})
    module.assign_env_runner(worker_index=2, num_env_runners=2, num_envs=3)
    np.testing.assert_allclose(module.env_epsilons.numpy(), ape_x_epsilons(0.4, 7.0, 3, 3, 6), rtol=1e-6)
    module.env_epsilons = torch.tensor([0.0, 1.0])
    state = {k: torch.from_numpy(v).expand(2, *v.shape) for k, v in module.get_initial_state().items()}
    batch = {Columns.OBS: torch.randn(2, 1, 3), Columns.STATE_IN: state}
    greedy = module.forward_inference(batch)[Columns.ACTIONS]
    explored = torch.stack([module.forward_exploration(batch, t=0)[Columns.ACTIONS] for _ in range(40)])
    assert explored.shape == (40, 2, 1)  # the time rank stays
    assert (explored[:, 0] == greedy[0]).all() and (explored[:, 1] != greedy[1]).any()


def test_remote_env_runners_explore_as_ape_x_actors(ray_session):
    """Two remote runners of 2 envs are 4 Ape-X actors: runner 1 has actors 0-1, runner 2 actors 2-3."""
    from metaray.rllib_config import build_algorithm_config

    cfg = load_config(QUICKSTART, [
        "training.algorithm=R2D2", "model.hidden_size=8", "env_runners.num_env_runners=2",
        "env_runners.num_envs_per_env_runner=2", "env_runners.num_cpus_per_env_runner=0.5",
        "training.train_batch_size=200", "training.r2d2.batch_size=64", "training.r2d2.learning_starts=100",
    ])
    remote = build_algorithm_config(cfg).build_algo()
    try:
        result = remote.train()
        rates = remote.env_runner_group.foreach_env_runner(
            lambda runner: (runner.worker_index, runner.module.env_epsilons.tolist()), local_env_runner=False)
    finally:
        remote.stop()
    assert np.isfinite(result["learners"][MODULE]["qf_loss"])
    expected = ape_x_epsilons(0.4, 7.0, 0, 4, 4)
    for worker_index, runner_rates in rates:
        start = 2 * (worker_index - 1)
        np.testing.assert_allclose(runner_rates, expected[start:start + 2], rtol=1e-6)


def test_evaluation_acts_greedily(algo):
    """The fixture explores at random (epsilon 1); evaluation trials are seeded, so a greedy
    evaluation plays them identically twice."""
    from metaray.rollouts import play_meta_policy

    trials = [("test", i) for i in range(8)]
    first = play_meta_policy(algo, trials, explore=False)
    second = play_meta_policy(algo, trials, explore=False)
    assert [r.episode_returns for r in first] == [r.episode_returns for r in second]


def test_checkpoint_holds_the_replay_buffer(algo, tmp_path):
    algo.train()
    stored = algo.local_replay_buffer.get_num_timesteps()
    assert stored > 0
    algo.save_to_path(str(tmp_path))
    restored = build_small_r2d2()
    try:
        assert restored.local_replay_buffer.get_num_timesteps() == 0
        restored.restore_from_path(str(tmp_path))
        assert restored.local_replay_buffer.get_num_timesteps() == stored
    finally:
        restored.stop()


@pytest.mark.parametrize("overrides, message", [
    (["model.max_seq_len=10", "training.r2d2.burn_in_len=10"],
     r"training.r2d2.burn_in_len \(10\) must be < model.max_seq_len \(10\)"),
    (["training.r2d2.n_step=0"], "training.r2d2.n_step must be > 0"),
    (["training.r2d2.epsilon=1.5"], r"training.r2d2.epsilon must be in \[0, 1\]"),
    (["model.separate_critic=true"], "model.separate_critic needs an actor-critic algorithm"),
    (["env_runners.whole_trials=true"], "env_runners.whole_trials needs training.algorithm PPO, got 'R2D2' "
                                        r"\(R2D2 replays sequences"),
    (["training.r2d2.replay_capacity=-1"], "training.r2d2.replay_capacity must be > 0"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(QUICKSTART, ["training.algorithm=R2D2", *overrides])


def test_box_actions_are_refused_before_ray_starts():
    cfg = load_config(None, ["training.algorithm=R2D2", "task.family=point_nav", "task.episodes_per_trial=2"])
    with pytest.raises(ConfigError, match="R2D2 needs a Discrete action space .* 'point_nav' acts in Box"):
        check_experiment(cfg)
    check_experiment(load_config(None, ["task.family=point_nav", "task.episodes_per_trial=2"]))  # PPO takes it
    with pytest.raises(ValueError, match="Discrete action space"):
        RecurrentQPolicy(observation_space=gym.spaces.Box(-1, 1, (3,)), action_space=gym.spaces.Box(-1, 1, (2,)),
                         model_config={"hidden_size": 4})


TINY_R2D2 = ["--config", QUICKSTART, "--set", "training.algorithm=R2D2", "--set", "training.total_env_steps=1500",
             "--set", "training.train_batch_size=500", "--set", "training.r2d2.batch_size=64",
             "--set", "training.r2d2.learning_starts=400", "--set", "model.hidden_size=16",
             "--set", "env_runners.num_envs_per_env_runner=8", "--set", "evaluation.interval=1",
             "--set", "evaluation.num_trials=20", "--set", "evaluation.final_num_trials=50",
             "--set", "checkpoint_interval=1"]


def test_launch_trains_evaluates_and_resumes_r2d2(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "r2d2"
    assert launch.main(TINY_R2D2 + ["--run-dir", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 1500 and summary["eval"]["test"]["num_trials"] == 50
    assert summary["baselines"]["random"]["num_trials"] == 50
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("train/trial_return_mean", "eval_test/trial_return_mean", "baselines_test/random"):
        assert tag in events.Tags()["scalars"], tag

    resumed = tmp_path / "resumed"
    shutil.copytree(run_dir, resumed)
    (resumed / "summary.json").unlink()
    assert launch.main(["--resume", str(resumed), "--set", "training.total_env_steps=2500"]) == 0
    resumed_summary = json.loads((resumed / "summary.json").read_text())
    assert resumed_summary["iterations"] > summary["iterations"] and resumed_summary["env_steps"] >= 2500


#: env steps; configs/bandit_r2d2.yaml at this budget, seeds 0/1/2: held-out 6.389, 6.555, 6.310
#: with adaptation gains 0.209, 0.197, 0.173 (random 5.02 on the same 1000 trials). At 40 k steps
#: a CI run reached only 5.97 with a gain of 0.049.
R2D2_BANDIT_BUDGET = 80_000


@pytest.mark.learning
@pytest.mark.r2d2_learning
def test_r2d2_bandit_beats_random_on_held_out_tasks(ray_session, tmp_path, monkeypatch):
    """R2D2 meta-learns the bandit: after a fixed env-step budget its held-out trial return is
    clearly above random on the same trials, and later pulls pay more than the first."""
    monkeypatch.chdir(ROOT)
    train_bandit_and_check_adaptation(tmp_path, "configs/bandit_r2d2.yaml", R2D2_BANDIT_BUDGET,
                                      overshoot=4_000, min_lead=0.5)  # one iteration is 4000 steps
