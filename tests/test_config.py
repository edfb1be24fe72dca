"""Config loading and validation: every error names its key and stops before Ray starts."""

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import typing

import pytest

from conftest import ROOT
from envs import missing_extra
from metaray.config import ConfigError, ExperimentConfig, TrainingConfig, describe_options, load_config
from metaray.validation import check_experiment, check_family


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    if extra := missing_extra(cfg.task.family):
        pytest.skip(f"{path.name} needs the {extra} extra: pip install 'metaray[{extra}]'")
    check_experiment(cfg)


def test_defaults_and_overrides():
    cfg = load_config(None, ["training.lr=0.01", "model.encoder_layers=[32, 32]", "task.params={num_arms: 3}"])
    assert cfg.training.lr == 0.01
    assert load_config(None, ["training.lr=3e-4"]).training.lr == 3e-4
    assert cfg.model.encoder_layers == [32, 32]
    assert cfg.task.params == {"num_arms": 3}
    assert load_config(None) == ExperimentConfig()


def test_int_is_accepted_for_float():
    assert load_config(None, ["training.lr=1"]).training.lr == 1.0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["training.lrr=0.1"], "unknown config key 'training.lrr'"),
        (["bogus=1"], "unknown config key 'bogus'"),
        (["training.lr=fast"], "training.lr must be float"),
        (["task.episodes_per_trial=0"], "task.episodes_per_trial must be > 0"),
        (["task.episodes_per_trial=2.5"], "task.episodes_per_trial must be int"),
        (["evaluation.explore=1"], "evaluation.explore must be true or false"),
        (["model.arch=mamba"], "model.arch must be one of"),
        (["task.test_fraction=1.0"], "task.test_fraction must be in (0, 1)"),
        (["training.minibatch_size=20000"], "training.minibatch_size (20000) must not exceed"),
        (["model.encoder_layers=7"], "model.encoder_layers must be a list"),
        (["training"], "--set expects dotted.key=value"),
        (["training.algorithm=DQN"], "training.algorithm must be one of"),
        (["model.context_len=0"], "model.context_len must be > 0"),
        (["model.num_layers=0"], "model.num_layers must be > 0"),
        (["training.algorithm=APPO", "env_runners.whole_trials=true"], "env_runners.whole_trials needs training.algorithm PPO"),
        (["model.arch=transformer", "model.hidden_size=30", "model.num_heads=4"],
         "model.num_heads (4) must divide model.hidden_size (30)"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=None) as info:
        check_experiment(load_config(None, overrides))
    assert message in str(info.value)


def test_family_params_are_checked():
    with pytest.raises(ConfigError, match="task.params.arms"):
        check_family(load_config(None, ["task.params={arms: 3}"]))
    with pytest.raises(ConfigError, match="task.family: cannot import 'nope'"):
        check_family(load_config(None, ["task.family=nope"]))
    with pytest.raises(ConfigError, match="unknown baseline 'oracle'"):
        check_family(load_config(None, ["evaluation.baselines=[random, oracle]"]))


def test_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "task: [unclosed"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_help_lists_every_key_with_its_doc():
    lines = "\n".join(describe_options())
    assert "training.lr (float, > 0, default 0.0003): Adam learning rate." in lines
    assert "task.episodes_per_trial" in lines and "evaluation.final_num_trials" in lines


def test_launch_exits_2_before_ray_starts(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--config", str(ROOT / "configs/quickstart.yaml"),
         "--set", "task.episodes_per_trial=0", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "task.episodes_per_trial must be > 0" in proc.stderr
    assert "ray" not in proc.stderr.lower()  # failed before Ray was started
    assert not run_dir.exists()  # nothing written


def _numeric_fields(cls=ExperimentConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _numeric_fields(hint, f"{prefix}{f.name}.")
        elif {int, float} & {hint, *typing.get_args(hint), *(a for arg in typing.get_args(hint) for a in typing.get_args(arg))}:
            yield f"{prefix}{f.name}", f


def test_every_numeric_field_declares_its_range():
    undeclared = [key for key, f in _numeric_fields() if not f.metadata.get("bounds")]
    assert not undeclared


def _just_outside(key, f):
    """A --set value just past each bound declared beside the field (list fields get a one-item list)."""
    is_list = "list" in str(f.type)  # the annotation as written: config.py postpones annotations
    for name, bound in f.metadata["bounds"].items():
        value = {"gt": bound, "lt": bound, "ge": bound - 1, "le": bound + 1}[name]
        yield f"{key}={[value] if is_list else value}"


@pytest.mark.parametrize("assignment", [a for key, f in _numeric_fields() for a in _just_outside(key, f)])
def test_values_just_outside_the_declared_range_are_refused(assignment):
    key = assignment.partition("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key) + " must be"):
        load_config(None, [assignment])


@pytest.mark.parametrize("key", [key for key, _ in _numeric_fields()])
def test_nan_and_infinity_are_refused_for_every_numeric_key(key):
    for value in (".nan", ".inf"):
        with pytest.raises(ConfigError, match=re.escape(key)):
            load_config(None, [f"{key}={value}"])


def test_validation_needs_no_rllib():
    """Checking a config, and a whole launch.py command line up to its last check, imports no RLlib."""
    code = textwrap.dedent("""
        import sys
        import launch
        from metaray.config import ConfigError, load_config
        from metaray.validation import check_experiment, check_launch
        check_experiment(load_config('configs/tabular_mdp_n10.yaml'))
        # A --storage that is a file: refused by the last check, after the config, family and resources.
        args = launch.parse_args(['--config', 'configs/tabular_mdp_n10.yaml', '--storage', 'launch.py'])
        try:
            check_launch(args, launch.ROOT / 'runs')
        except ConfigError as exc:
            print(exc)
        print(sorted(m for m in sys.modules if m.startswith('ray.rllib')))
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray: no cluster to ask
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}).stdout
    assert out.splitlines() == ["--storage launch.py: exists and is not a folder", "[]"]


def test_algorithm_choices_are_the_registry():
    from metaray.rllib_config import ALGORITHMS

    hint = typing.get_type_hints(TrainingConfig)["algorithm"]
    assert typing.get_args(hint) == ALGORITHMS.names()


@pytest.mark.parametrize("name", ["bandit_n100_k5", "bandit_n100_k10", "bandit_n100_k50"])
def test_100_pull_bandits_leave_out_the_intractable_bayes_optimal_dp(name):
    """With their default baselines the 100-pull RL² Table 1 configs would otherwise stall in
    the exact DP (no answer within a minute at 30 pulls); naming it is refused before Ray."""
    from conftest import ROOT

    config = ROOT / "configs" / f"{name}.yaml"
    check_family(load_config(config))
    with pytest.raises(ConfigError, match="unknown baseline 'bayes_optimal' .* task.episodes_per_trial=100"):
        check_family(load_config(config, ["evaluation.baselines=[random, bayes_optimal]"]))
