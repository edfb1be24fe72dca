"""Does it meta-learn? Bounded by env steps, not seconds (run with `pytest -m learning`)."""

import json

import numpy as np
import pytest

import launch

pytestmark = pytest.mark.learning

BANDIT_BUDGET = 200_000  # env steps


def test_bandit_meta_policy_beats_random_on_held_out_tasks(ray_session, tmp_path, monkeypatch):
    """After a fixed budget the held-out trial return is clearly above random on the same trials."""
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "bandit"
    args = ["--config", "configs/quickstart.yaml", "--run-dir", str(run_dir),
            "--set", f"training.total_env_steps={BANDIT_BUDGET}", "--set", "evaluation.final_num_trials=1000"]
    assert launch.main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    meta, random = summary["eval"]["test"], summary["baselines"]["random"]
    assert summary["env_steps"] <= BANDIT_BUDGET + 10_000
    assert meta["num_trials"] == random["num_trials"] == 1000
    margin = 3 * np.hypot(meta["trial_return_stderr"], random["trial_return_stderr"])
    assert meta["trial_return_mean"] > random["trial_return_mean"] + max(margin, 0.3)
    # In-context adaptation: later pulls of a trial pay more than the first.
    assert meta["adaptation_gain"] > 0.05
