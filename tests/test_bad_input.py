"""Every bad input to launch.py: one line naming the problem, exit code 2, no Ray started and
no existing run folder touched."""

from __future__ import annotations

import os
import subprocess

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
    }
    return cases[case]


CASES = ["malformed_yaml", "missing_config", "unknown_key", "wrong_type", "unknown_family", "invalid_split",
         "missing_run_folder", "not_a_run_folder", "missing_checkpoint", "run_dir_in_use", "nothing_listening",
         "num_cpus_on_cluster", "storage_scheme", "storage_is_a_file", "bad_custom_resource"]


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
