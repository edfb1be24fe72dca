"""Every bad input to launch.py: one line naming the problem, exit code 2, no Ray started and
no existing run folder touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, free_port, launch_command

QUICKSTART = str(ROOT / "configs/quickstart.yaml")


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as a finished run leaves it (config, checkpoint, summary)."""
    run = tmp_path / "finished"
    (run / "checkpoints" / "iter_000001").mkdir(parents=True)
    (run / "checkpoints" / "iter_000001" / "metaray_state.json").write_text('{"iteration": 1}')
    (run / "config.yaml").write_text((ROOT / "configs/quickstart.yaml").read_text())
    (run / "summary.json").write_text("{}")
    return run


def snapshot(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def case_arguments(case, tmp_path, run):
    """launch.py arguments of each bad input, and the text its error must contain."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("task: [unclosed")
    empty_yaml = tmp_path / "empty.yaml"
    empty_yaml.write_text("")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    unwritable = locked if not os.access(locked, os.W_OK) else Path("/proc/1")  # root writes anywhere
    no_checkpoint = tmp_path / "crashed"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.yaml").write_text("name: crashed\n")
    cases = {
        "malformed_yaml": (["--config", bad_yaml], "is not valid YAML"),
        "missing_config": (["--config", tmp_path / "nope.yaml"], "config file not found"),
        "unknown_key": (["--config", QUICKSTART, "--set", "training.learning_rate=0.1"],
                        "unknown config key 'training.learning_rate'"),
        "wrong_type": (["--config", QUICKSTART, "--set", "training.total_env_steps=many"],
                       "training.total_env_steps must be int"),
        "unknown_family": (["--config", QUICKSTART, "--set", "task.family=no_such_family"],
                           "task.family: cannot import 'no_such_family'"),
        "invalid_split": (["--config", QUICKSTART, "--set", "task.test_fraction=1.5"],
                          "task.test_fraction must be in (0, 1)"),
        "missing_run_folder": (["--resume", tmp_path / "no_such_run"], "no such run folder"),
        "not_a_run_folder": (["--resume", tmp_path], "not a run folder"),
        "missing_checkpoint": (["--resume", no_checkpoint], "no complete checkpoint"),
        "run_dir_in_use": (["--config", QUICKSTART, "--run-dir", run], "already holds a run"),
        "nothing_listening": (["--config", QUICKSTART, "--address", f"127.0.0.1:{free_port()}"],
                              "nothing listens at 127.0.0.1"),
        "num_cpus_on_cluster": (["--config", QUICKSTART, "--address", f"127.0.0.1:{free_port()}", "--num-cpus", 2],
                                "--num-cpus sizes the embedded local Ray"),
        "storage_scheme": (["--config", QUICKSTART, "--storage", "nosuchfs://bucket/runs"],
                           "not a storage URI pyarrow can open"),
        "storage_is_a_file": (["--config", QUICKSTART, "--storage", run / "summary.json"],
                              "exists and is not a folder"),
        "bad_custom_resource": (["--config", QUICKSTART, "--set", "env_runners.custom_resources={gpu_box: -1}"],
                                "env_runners.custom_resources.gpu_box must be a number > 0"),
        "empty_yaml": (["--config", empty_yaml], "is empty"),
        "zero_eval_trials": (["--eval-only", "--checkpoint", run, "--trials", 0], "--trials must be > 0"),
        "missing_family_file": (["--config", QUICKSTART, "--set", "task.family=path/to/file.py"],
                                "no such file path/to/file.py"),
        "huge_total_env_steps": (["--config", QUICKSTART, "--set", f"training.total_env_steps={10**30}"],
                                 "training.total_env_steps must be <="),
        "nan_lr": (["--config", QUICKSTART, "--set", "training.lr=.nan"], "training.lr must be a finite number"),
        "run_dir_under_file": (["--config", QUICKSTART, "--run-dir", run / "summary.json" / "run"],
                               f"--run-dir {run / 'summary.json' / 'run'}: cannot write"),
        "run_dir_unwritable": (["--config", QUICKSTART, "--run-dir", unwritable / "run"],
                               f"--run-dir {unwritable / 'run'}: cannot write"),
        "address_port_out_of_range": (["--config", QUICKSTART, "--address", "127.0.0.1:99999"],
                                      "the port must be a number in 1-65535"),
        "negative_num_cpus": (["--config", QUICKSTART, "--num-cpus", -1], "--num-cpus must be >= 1"),
        "env_runners_beyond_cpus": (["--config", QUICKSTART, "--num-cpus", 2, "--set", "env_runners.num_env_runners=1000"],
                                    "asks Ray for 1000 CPU (env_runners.num_env_runners=1000 x 1 CPU) but the "
                                    "embedded local Ray (--num-cpus 2) has 2 CPU"),
        "evaluation_runners_beyond_cpus": (["--config", QUICKSTART, "--num-cpus", 2,
                                            "--set", "env_runners.num_env_runners=1",
                                            "--set", "evaluation.num_env_runners=4"],
                                           "asks Ray for 5 CPU (env_runners.num_env_runners=1 x 1 CPU + "
                                           "evaluation.num_env_runners=4 x 1 CPU)"),
        "learner_gpus_beyond_machine": (["--config", QUICKSTART, "--set", "learners.num_learners=2",
                                         "--set", "learners.num_gpus_per_learner=64"],
                                        "asks Ray for 128 GPU (learners.num_learners=2 x 64 GPU)"),
        "custom_resource_nobody_has": (["--config", QUICKSTART, "--set", "env_runners.num_env_runners=1",
                                        "--set", "env_runners.custom_resources={gpu_box: 1}"],
                                       "asks Ray for 1 gpu_box (env_runners.num_env_runners=1 x 1 gpu_box)"),
        "model_beyond_memory": (["--config", QUICKSTART, "--set", "model.hidden_size=10000000"],
                                "model: a gru with model.hidden_size=10000000"),
    }
    return cases[case]


CASES = ["malformed_yaml", "missing_config", "unknown_key", "wrong_type", "unknown_family", "invalid_split",
         "missing_run_folder", "not_a_run_folder", "missing_checkpoint", "run_dir_in_use", "nothing_listening",
         "num_cpus_on_cluster", "storage_scheme", "storage_is_a_file", "bad_custom_resource",
         "empty_yaml", "zero_eval_trials", "missing_family_file", "huge_total_env_steps", "nan_lr",
         "run_dir_under_file", "run_dir_unwritable", "address_port_out_of_range", "negative_num_cpus",
         "env_runners_beyond_cpus", "evaluation_runners_beyond_cpus", "learner_gpus_beyond_machine",
         "custom_resource_nobody_has", "model_beyond_memory"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line(case, tmp_path, finished_run):
    args, message = case_arguments(case, tmp_path, finished_run)
    before = snapshot(tmp_path)
    proc = subprocess.run(launch_command(*args), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("config error: "), proc.stderr
    assert message in proc.stderr
    assert "run folder:" not in proc.stdout  # stopped before the run (and Ray) started
    assert snapshot(tmp_path) == before  # nothing written, nothing touched
