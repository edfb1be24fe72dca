"""Does it meta-learn? Bounded by env steps, not seconds (run with `pytest -m learning`)."""

import pytest

from conftest import ROOT
from helpers import train_bandit_and_check_adaptation

pytestmark = pytest.mark.learning

BANDIT_BUDGET = 200_000  # env steps


def test_bandit_meta_policy_beats_random_on_held_out_tasks(ray_session, tmp_path, monkeypatch):
    """After a fixed budget the held-out trial return is clearly above random on the same
    trials, and later pulls of a trial pay more than the first."""
    monkeypatch.chdir(ROOT)
    train_bandit_and_check_adaptation(tmp_path, "configs/quickstart.yaml", BANDIT_BUDGET, overshoot=10_000,
                                      min_lead=0.3)
