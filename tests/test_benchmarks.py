"""The plain-RLlib baseline env of the benchmarks is a valid env, paired with metaray's trials; the
bad-input probes table reads well; the RL² Table 1 baselines table matches its configs and results;
learning curves are read back from a run's TensorBoard events; the GRU-cost benchmark times the
same math as ``nn.GRU``."""

from __future__ import annotations

import sys

import numpy as np
import torch
from gymnasium.utils.env_checker import check_env

from conftest import ROOT
from metaray.config import load_config
from metaray.trial import TrialEnv

sys.path.insert(0, str(ROOT / "benchmarks"))
from bad_input_probes import TINY, Prober  # noqa: E402
from bandit_baselines import PAPER, ROWS  # noqa: E402
from gru_cost import gru_loop  # noqa: E402
from learning_curves import FIRST_ITERATION, HELD_OUT, curve, load, time_to_target  # noqa: E402
from plain_rllib import TRIAL_INDEX_KEY, PlainBanditEnv  # noqa: E402
from time_to_target import held_out_bandit_trials  # noqa: E402


def test_plain_env_passes_check_env():
    check_env(PlainBanditEnv({"num_arms": 5, "pulls": 10}), skip_render_check=True)


def test_plain_env_replays_metaray_held_out_trials():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    trials = held_out_bandit_trials(cfg, 3)
    plain = PlainBanditEnv({"num_arms": 5, "pulls": 10})
    plain.trial_queue = list(trials)
    trial_env = TrialEnv(TrialEnv.env_config(cfg.task, cfg.seed))
    trial_env.trial_queue = [("test", index) for index, _, _ in trials]
    actions = np.random.default_rng(0).integers(5, size=10)
    for index, _, _ in trials:
        plain.reset()
        trial_env.reset()
        plain_rewards, trial_rewards = [], []
        for action in actions:
            _, reward, done, _, info = plain.step(action)
            plain_rewards.append(reward)
            trial_rewards.append(trial_env.step(action)[1])
        assert done and info[TRIAL_INDEX_KEY] == index
        assert plain_rewards == trial_rewards


def test_gru_loop_is_nn_gru_step_by_step():
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 4, batch_first=True)
    x, h = torch.randn(3, 7, 6), torch.randn(3, 4)
    assert torch.allclose(gru_loop(gru.all_weights[0], x, h), gru(x, h[None])[0], atol=1e-6)


def test_probe_table_spells_the_tiny_run_out_once(tmp_path):
    """Rows show ``TINY`` for the tiny run's arguments, which the text above the table spells out."""
    prober = Prober(tmp_path)
    prober.record("9", "misspelled family file", [*TINY, "--set", "task.family=x.py"], 2, 1.0, "config error: x")
    prober.write(tmp_path / "table.md")
    text = (tmp_path / "table.md").read_text()
    assert "misspelled family file: `python launch.py TINY --set task.family=x.py`" in text
    for table in (text, (ROOT / "benchmarks" / "results" / "bad_input_probes.md").read_text()):
        assert table.count(" ".join(TINY)) == 1


def test_table_1_rows_are_the_configs_and_the_committed_table_is_theirs():
    import json

    committed = json.loads((ROOT / "benchmarks" / "results" / "bandit_baselines.json").read_text())
    assert sorted(PAPER) == sorted((pulls, arms) for _, pulls, arms in ROWS)
    for name, pulls, arms in ROWS:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert (cfg.task.family, cfg.task.episodes_per_trial, cfg.task.params["num_arms"]) == ("bandit", pulls, arms)
        assert committed[name]["num_trials"] == cfg.evaluation.final_num_trials
        assert ("bayes_optimal" in committed[name]["measured"]) == (pulls <= 10)


def test_learning_curve_reads_the_periodic_held_out_series_and_the_final_evaluation(tmp_path):
    import json

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar(FIRST_ITERATION, 1, global_step=100, walltime=1000.0)
    writer.add_scalar(HELD_OUT, 5.5, global_step=200, walltime=1010.0)
    writer.add_scalar(HELD_OUT, 6.25, global_step=400, walltime=1030.5)
    writer.close()
    assert curve(tmp_path) == {"periodic": [{"env_steps": 200, "seconds": 10.0, "held_out": 5.5},
                                            {"env_steps": 400, "seconds": 30.5, "held_out": 6.25}],
                               "final": None}
    test = {"trial_return_mean": 6.5, "trial_return_ci95": [6.4, 6.6], "num_trials": 1000}
    (tmp_path / "summary.json").write_text(json.dumps({"env_steps": 400, "wall_s": 42.0, "eval": {"test": test}}))
    assert curve(tmp_path)["final"] == {"env_steps": 400, "wall_s": 42.0, "held_out": 6.5, "ci95": [6.4, 6.6],
                                        "num_trials": 1000}


def test_a_resumed_run_counts_seconds_of_training_not_the_pause(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    first = SummaryWriter(str(tmp_path), filename_suffix=".1")
    first.add_scalar(FIRST_ITERATION, 1, global_step=100, walltime=1000.0)
    first.add_scalar(HELD_OUT, 5.5, global_step=200, walltime=1010.0)
    first.add_scalar(HELD_OUT, 5.8, global_step=300, walltime=1020.0)
    first.close()
    # Resumed an hour later from the checkpoint at step 200: step 300 is redone.
    second = SummaryWriter(str(tmp_path), filename_suffix=".2")
    second.add_scalar(FIRST_ITERATION, 3, global_step=250, walltime=4600.0)
    second.add_scalar(HELD_OUT, 6.0, global_step=300, walltime=4605.0)
    second.close()
    assert curve(tmp_path)["periodic"] == [{"env_steps": 200, "seconds": 10.0, "held_out": 5.5},
                                           {"env_steps": 300, "seconds": 25.0, "held_out": 6.0}]


def _run(returns, final=None):
    return {"periodic": [{"env_steps": 1000 * (i + 1), "seconds": 10.0 * (i + 1), "held_out": r}
                         for i, r in enumerate(returns)], "final": final}


def test_time_to_target_is_the_first_crossing_and_a_seed_that_never_crosses_is_slowest():
    runs = {"A/0": _run([5.0, 6.5, 6.0]), "A/1": _run([6.6]), "A/2": _run([5.0, 5.5, 5.9]),
            "B/0": _run([6.7]), "B/1": _run([5.0]), "B/2": _run([5.1])}
    header, _, a, b = time_to_target(runs, {"": 6.5})
    assert a == ("| A | 6.5 | 2 of 3 | 0: 2 k, 1: 1 k, 2: not reached (best 5.9) | 0: 20, 1: 10, 2: - | 2 k | 20 "
                 "| 0: -, 1: -, 2: - |")
    assert "| B | 6.5 | 1 of 3 |" in b and "| not reached | not reached |" in b
    assert "| B | 5 | 3 of 3 | 0: 1 k, 1: 1 k, 2: 1 k |" in time_to_target(runs, {"": 6.5, "B": 5.0})[3]


def test_a_curve_is_read_back_from_an_earlier_output_by_position(tmp_path):
    import json

    earlier = {"first": _run([1.0]), "second": _run([2.0], final={"held_out": 2.0})}
    (tmp_path / "curves.json").write_text(json.dumps(earlier))
    assert load(f"{tmp_path / 'curves.json'}@1") == earlier["second"]
