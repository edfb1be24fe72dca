"""A family kept outside the repository trains through launch.py with no change to the library."""

from __future__ import annotations

import re

import numpy as np

from conftest import ROOT
from helpers import checked, launch_tiny_run, tiny_run_config
from metaray.tasks import load_family

GUIDE = ROOT / "docs" / "adding_a_task_family.md"


def guide_family_source() -> str:
    """The first Python block of the guide: the example family file, as a user would copy it."""
    match = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert match, f"no python block in {GUIDE}"
    return match.group(1)


def test_family_from_a_file_outside_the_repo_trains_through_launch(tmp_path, ray_session):
    family_file = tmp_path / "coin_family.py"
    family_file.write_text(guide_family_source())
    assert ROOT not in family_file.resolve().parents
    family = load_family(str(family_file))
    env = family.make_env()
    env.set_task(family.sample_task(np.random.default_rng(0)))
    checked(env)
    config = tiny_run_config(str(family_file), {}, episodes_per_trial=5, max_seq_len=5)
    summary = launch_tiny_run(tmp_path, config)
    assert summary["family"] == str(family_file)
    assert len(summary["eval"]["test"]["return_by_episode"]) == 5
    assert set(summary["baselines"]) == {"random"}
