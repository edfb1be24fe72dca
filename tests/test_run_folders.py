"""Run folders are never shared or overwritten, --resume survives damaged checkpoints, and
Ctrl-C leaves a checkpoint to continue from (issue 12, items 1, 4, 10 and 14)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launch
from conftest import ROOT, launch_command, stop_process_group, tiny_run_args
from metaray.config import ConfigError, ExperimentConfig
from metaray.storage import STATE_FILE

TINY = tiny_run_args(total_env_steps=2000, final_num_trials=20) + ["--set", "checkpoint_interval=1"]
STAMP = "20250101-120000"


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under ``folder`` with its size and modification time: equal snapshots, untouched folder."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file())


def truncate_weights(checkpoint: Path) -> None:
    """Cut a checkpoint's policy weights short, as a full disk or an interrupted copy leaves them."""
    (weights,) = checkpoint.glob("learner_group/learner/rl_module/*/module_state.pkl")
    weights.write_bytes(weights.read_bytes()[:1000])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def trained_run(ray_session, tmp_path_factory):
    """A finished tiny run with checkpoints iter_000001 and iter_000002."""
    run_dir = tmp_path_factory.mktemp("trained") / "quick"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        assert launch.main(TINY + ["--run-dir", str(run_dir), "--set", "training.total_env_steps=2000"]) == 0
    assert [c.name for c in sorted((run_dir / "checkpoints").iterdir())] == ["iter_000001", "iter_000002"]
    return run_dir


@pytest.fixture
def damaged_run(trained_run, tmp_path):
    """A copy of the trained run, as a killed run leaves it (no summary.json), to damage."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / "summary.json").unlink()
    return run_dir


# 1. Run folders are created atomically and never shared.

def test_same_second_launches_get_a_folder_each(tmp_path, monkeypatch):
    monkeypatch.setattr(launch.time, "strftime", lambda fmt: STAMP)
    cfg = ExperimentConfig(name="bandit")
    first, _ = launch.new_run_target(cfg, str(tmp_path), None)
    second, _ = launch.new_run_target(cfg, str(tmp_path), None)
    assert (first.name, second.name) == (f"bandit-{STAMP}", f"bandit-{STAMP}-2")
    assert (first / "config.yaml").is_file() and (second / "config.yaml").is_file()


def test_a_run_dir_another_launch_claimed_is_refused(tmp_path):
    cfg = ExperimentConfig(name="bandit")
    launch.new_run_target(cfg, str(tmp_path), tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run"):
        launch.new_run_target(cfg, str(tmp_path), tmp_path / "run")


def test_same_second_double_launch_leaves_two_complete_runs(tmp_path):
    """Two real launches of one config whose clocks read the same second."""
    frozen = (f"import runpy, sys, time; strftime = time.strftime; "
              f"time.strftime = lambda fmt, *t: {STAMP!r} if fmt == '%Y%m%d-%H%M%S' else strftime(fmt, *t); "
              f"sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    args = [*TINY, "--set", "training.total_env_steps=1000", "--storage", tmp_path, "--num-cpus", 1]
    procs = [subprocess.Popen([sys.executable, "-c", frozen, *launch_command(*args)[1:]], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    runs = sorted(tmp_path.iterdir())
    assert [r.name for r in runs] == [f"quickstart-{STAMP}", f"quickstart-{STAMP}-2"]
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["env_steps"] >= 1000
        assert len(list(run.glob("events.out.tfevents.*"))) == 1  # one writer per folder
        assert [c.name for c in (run / "checkpoints").iterdir()] == ["iter_000001"]


def test_eval_only_never_writes_into_a_run(trained_run, capsys):
    before = snapshot(trained_run)
    code = launch.main(["--eval-only", "--checkpoint", str(trained_run), "--trials", "10", "--run-dir", str(trained_run)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds a run or report" in err and "--eval-only" in err, err
    assert snapshot(trained_run) == before


# 4. --resume falls back to the newest checkpoint that loads and touches nothing before it does.

@pytest.mark.parametrize("damage", ["truncated_weights", "empty_state_file"])
def test_resume_skips_a_damaged_newest_checkpoint(damaged_run, damage, capsys):
    newest = damaged_run / "checkpoints" / "iter_000002"
    if damage == "truncated_weights":
        truncate_weights(newest)
    else:
        (newest / STATE_FILE).write_text("")
    assert launch.main(["--resume", str(damaged_run), "--set", "training.total_env_steps=3000"]) == 0
    out, err = capsys.readouterr()
    cause = "UnpicklingError: pickle data was truncated" if damage == "truncated_weights" else "unreadable"
    assert re.search(rf"skipped checkpoint {re.escape(str(newest))}\b.*{cause}", err), err
    assert f"resumed from {damaged_run / 'checkpoints' / 'iter_000001'} at iteration 1" in out
    summary = json.loads((damaged_run / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["env_steps"] >= 3000


# 10. A checkpoint that does not load: exit 2 and one line naming it and the cause.

def test_resume_when_no_checkpoint_loads_exits_2_and_leaves_the_run_as_it_was(damaged_run, capsys):
    truncate_weights(damaged_run / "checkpoints" / "iter_000002")
    (damaged_run / "checkpoints" / "iter_000001" / STATE_FILE).write_text("")
    before = snapshot(damaged_run)
    assert launch.main(["--resume", str(damaged_run), "--set", "training.total_env_steps=3000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"checkpoint error: --resume {damaged_run}: no checkpoint loads"), err
    assert "iter_000002 does not load (UnpicklingError" in err and "iter_000001: metaray_state.json unreadable" in err
    assert snapshot(damaged_run) == before  # config.yaml included: not rewritten with the --set


def test_eval_only_of_a_checkpoint_that_does_not_load_exits_2(damaged_run, tmp_path, capsys):
    checkpoint = damaged_run / "checkpoints" / "iter_000002"
    truncate_weights(checkpoint)
    code = launch.main(["--eval-only", "--checkpoint", str(checkpoint), "--trials", "10",
                        "--run-dir", str(tmp_path / "report")])
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"checkpoint error: --checkpoint {checkpoint} does not load (UnpicklingError: pickle data was truncated)\n"
    assert not (tmp_path / "report").exists()


# 14. Ctrl-C: the iteration under way is checkpointed, one line says how to continue, exit 130.

@pytest.mark.parametrize("target", ["driver", "process_group"])
def test_ctrl_c_checkpoints_and_says_how_to_resume(target, tmp_path, ray_session, capsys):
    """``process_group`` is what a terminal's Ctrl-C does: SIGINT to Ray's processes too."""
    run_dir = tmp_path / "run"
    stdout = tmp_path / "stdout.txt"
    args = [*TINY, "--set", "training.total_env_steps=10000000", "--set", "checkpoint_interval=0",
            "--run-dir", run_dir, "--num-cpus", 1]
    with stdout.open("w") as out:
        driver = subprocess.Popen(launch_command(*args), cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "iter    1 |" not in stdout.read_text() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        ray_processes = descendants(driver.pid)
        assert ray_processes  # the embedded Ray: GCS, raylet, workers
        if target == "driver":
            driver.send_signal(signal.SIGINT)
        else:
            os.killpg(driver.pid, signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        stop_process_group(driver.pid)
    assert driver.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    match = re.fullmatch(rf"interrupted: checkpoint (\S+); continue with: python launch.py --resume {run_dir}",
                         err.strip().splitlines()[-1])
    assert match, err[-3000:]
    checkpoint = Path(match[1])
    iteration = json.loads((checkpoint / STATE_FILE).read_text())["iteration"]
    assert iteration >= 1 and checkpoint.name == f"iter_{iteration:06d}"  # checkpoint_interval=0: Ctrl-C's own
    assert f"iter {iteration:4d} |" in stdout.read_text()
    deadline = time.monotonic() + 10
    while (left := {pid for pid in ray_processes if Path(f"/proc/{pid}").exists()}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, "Ray processes outlived the driver"

    env_steps = json.loads((checkpoint / STATE_FILE).read_text())["env_steps"]
    capsys.readouterr()
    assert launch.main(["--resume", str(run_dir), "--set", f"training.total_env_steps={env_steps + 1000}"]) == 0
    assert f"resumed from {checkpoint} at iteration {iteration}" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == iteration + 1


def test_ctrl_c_during_seeds_says_how_to_resume(tmp_path, monkeypatch, capsys):
    """On Ctrl-C Ray Tune's fit() returns without an error and the seeds under way have no
    summary.json: the launch ends as interrupted (exit 130, the --resume line), not in a traceback."""
    from types import SimpleNamespace

    from ray import tune

    class InterruptedTuner:  # what Tuner.fit returns after Ctrl-C
        def __init__(self, *args, **kwargs):
            pass

        def fit(self):
            return SimpleNamespace(errors=[])

    monkeypatch.setattr(tune, "Tuner", InterruptedTuner)
    monkeypatch.setattr("metaray.cluster.init_ray", lambda *args: None)  # no Ray: Tune is the double
    run_dir = tmp_path / "seeds"
    assert launch.main([*TINY, "--set", "seeds=[0, 1]", "--run-dir", str(run_dir), "--num-cpus", "1"]) == 130
    assert capsys.readouterr().err == f"interrupted: continue with: python launch.py --resume {run_dir}\n"


def test_a_failing_seed_ends_as_a_training_error(tmp_path, monkeypatch, capsys):
    """A seed that fails ends the launch as other training failures do: one ``training error:``
    line naming each failed seed and its error, exit 3, no traceback."""
    import traceback
    from types import SimpleNamespace

    from ray import tune
    from ray.exceptions import RayTaskError

    from metaray.train import TrainingError

    class SequentialTuner:  # runs each seed's trial here and reports its error as Tune does
        def __init__(self, trainable, param_space, **kwargs):
            self.trainable, self.seeds = trainable, param_space["seed"]["grid_search"]

        def fit(self):
            errors = []
            for seed in self.seeds:
                try:
                    self.trainable({"seed": seed})
                except Exception as exc:  # noqa: BLE001 - Tune keeps any trial's error, wrapped by Ray
                    errors.append(RayTaskError("train", traceback.format_exc(), exc).as_instanceof_cause())
            return SimpleNamespace(errors=errors)

    def failing_train(cfg, run_dir, resume=False):
        if cfg.seed == 0:
            raise TrainingError("iteration 2: policy_loss is nan")
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(tune, "Tuner", SequentialTuner)
    monkeypatch.setattr(tune, "with_resources", lambda trainable, resources: trainable)
    monkeypatch.setattr("metaray.multi_seed.train", failing_train)
    monkeypatch.setattr("metaray.cluster.init_ray", lambda *args: None)  # no Ray: Tune is the double
    run_dir = tmp_path / "seeds"
    assert launch.main([*TINY, "--set", "seeds=[0, 1]", "--run-dir", str(run_dir), "--num-cpus", "1"]) == 3
    assert capsys.readouterr().err == ("training error: 2 of 2 seeds failed: seed 0: iteration 2: policy_loss "
                                       "is nan; seed 1: ValueError: boom\n")


def test_resume_names_the_code_a_run_folder_imports_before_importing_it(tmp_path, capsys):
    """A run folder's config.yaml decides which modules run: --resume says which, first."""
    import yaml

    import launch
    from conftest import ROOT

    family = tmp_path / "their_family.py"
    family.write_text("raise SystemExit('imported')\n")  # what a crafted run folder could ship
    run = tmp_path / "run"
    (run / "checkpoints" / "iter_000001").mkdir(parents=True)
    (run / "checkpoints" / "iter_000001" / "metaray_state.json").write_text('{"iteration": 1}')
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config["task"]["family"] = str(family)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        launch.main(["--resume", str(run)])
    except SystemExit as stop:
        assert str(stop) == "imported"
    assert f"task.family from {run / 'config.yaml'}: importing {family}" in capsys.readouterr().out
