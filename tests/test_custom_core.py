"""A memory core kept outside the repository, registered from a file, trains through launch.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conftest import ROOT
from helpers import launch_tiny_run, tiny_run_config
from metaray.config import ConfigError, ModelConfig, load_config
from metaray.models.cores import CORES
from metaray.validation import check_experiment

GUIDE = ROOT / "docs" / "adding_a_memory_core.md"


@pytest.fixture(scope="module")
def core_file(tmp_path_factory):
    """The guide's example core, saved outside the repository as a user would."""
    match = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert match, f"no python block in {GUIDE}"
    path = tmp_path_factory.mktemp("user_code") / "my_cores.py"
    path.write_text(match.group(1))
    assert ROOT not in path.resolve().parents
    return path


def test_guide_core_is_chunk_consistent(core_file):
    core = CORES.get(f"{core_file}:elman")(5, ModelConfig(hidden_size=8, num_layers=2))
    x = torch.randn(3, 6, 5)
    state = {k: torch.from_numpy(v).expand(3, *v.shape) for k, v in core.initial_state().items()}
    whole, _ = core(x, state)
    first, mid = core(x[:, :4], state)
    second, _ = core(x[:, 4:], mid)
    np.testing.assert_allclose(torch.cat([first, second], 1).detach(), whole.detach(), atol=1e-6)


def test_guide_core_checks_its_settings(core_file):
    with pytest.raises(ConfigError, match="too wide"):
        check_experiment(load_config(None, [f"model.arch={core_file}:elman", "model.hidden_size=5000"]))
    with pytest.raises(ConfigError, match=r"model.arch must be one of \['gru', 'lstm', 'transformer'"):
        check_experiment(load_config(None, [f"model.arch={core_file}:no_such_core"]))


def test_guide_core_trains_through_launch(core_file, tmp_path, ray_session):
    from metaray.rllib_config import build_algorithm_config
    from metaray.trial import TrialEnv

    config = tiny_run_config("bandit", {"num_arms": 3}, episodes_per_trial=5, max_seq_len=5)
    config["model"]["arch"] = f"{core_file}:elman"
    summary = launch_tiny_run(tmp_path, config)
    assert summary["iterations"] == 2 and len(summary["eval"]["test"]["return_by_episode"]) == 5
    cfg = load_config(tmp_path / "run" / "config.yaml")
    algo_config = build_algorithm_config(cfg)
    module = algo_config.get_rl_module_spec(env=TrialEnv(algo_config.env_config)).build()
    assert type(module.torso.core).__name__ == "ElmanCore"
