"""TensorBoard shows each evaluation once, where it ran, and ``--resume`` keeps a run's history
up to the checkpoint it resumed from: a killed-then-resumed run reads as the unbroken run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
from tensorboard.util import tensor_util

from conftest import launch_command, stop_process_group, tiny_run_args

#: Six 1000-step iterations: periodic evaluation after iterations 2, 4, 6, a checkpoint after 3 and 6.
ARGS = [*tiny_run_args(total_env_steps=6000, final_num_trials=20), "--set", "evaluation.interval=2",
        "--set", "checkpoint_interval=3", "--num-cpus", "1"]
EVALUATION_INTERVAL, CHECKPOINT_INTERVAL = 2, 3
#: Tags of one evaluation, as the training loop logs them (the final one with ``final_`` in front).
EVALUATION_TAG = re.compile(r"(eval_(test|train)(_by_episode)?|baselines_test)/")
#: Wall-clock measurements: the only scalars two runs of one seed may disagree on.
TIMING_TAG = re.compile(r"perf/(?!iteration$)")

Series = dict[str, list[tuple[int, float]]]


def scalar_series(run_dir: Path) -> Series:
    """Every scalar tag's (step, value) points, as ``EventAccumulator`` reads the run folder."""
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def served_series(run_dir: Path) -> Series:
    """The same, as the TensorBoard server reads it (its accumulator ignores a run's first
    SessionLog.START event, the legacy one purges at every START)."""
    events = plugin_event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    scalars = events.PluginTagToContent("scalars")
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in scalars}


def image_steps(run_dir: Path) -> dict[str, list[int]]:
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.IMAGES: 0})
    events.Reload()
    return {tag: [e.step for e in events.Images(tag)] for tag in events.Tags()["images"]}


def launch(*args: str) -> subprocess.Popen:
    """launch.py in a process group of its own (SIGKILL takes down the Ray it embeds too)."""
    return subprocess.Popen(launch_command(*args), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(driver: subprocess.Popen, timeout_s: float = 300) -> str:
    try:
        output, _ = driver.communicate(timeout=timeout_s)
    finally:
        stop_process_group(driver.pid)
    assert driver.returncode == 0, output[-3000:]
    return output


def kill_after_iteration(driver: subprocess.Popen, iteration: int) -> None:
    """SIGKILL the driver's process group once its progress line of ``iteration`` is printed
    (printed after the iteration's TensorBoard events are flushed)."""
    try:
        for line in driver.stdout:
            if re.match(rf"iter +{iteration} \|", line):
                os.killpg(driver.pid, signal.SIGKILL)
                break
        else:
            pytest.fail(f"the run ended (exit {driver.wait()}) before iteration {iteration}")
        driver.wait(timeout=30)
    finally:
        stop_process_group(driver.pid)


def state_of(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "metaray_state.json").read_text())


@pytest.fixture(scope="module")
def unbroken_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("unbroken") / "run"
    finish(launch(*ARGS, "--run-dir", run_dir))
    return run_dir


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> tuple[Path, Series]:
    """The same run SIGKILLed one iteration after its first checkpoint, and its series then."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    kill_after_iteration(launch(*ARGS, "--run-dir", run_dir), CHECKPOINT_INTERVAL + 1)
    return run_dir, scalar_series(run_dir)


@pytest.fixture(scope="module")
def resumed_run(killed_run) -> Path:
    run_dir, _ = killed_run
    output = finish(launch("--resume", run_dir, "--num-cpus", "1"))
    assert f"at iteration {CHECKPOINT_INTERVAL}," in output, output[-3000:]
    return run_dir


def test_each_evaluation_is_logged_once_where_it_ran(unbroken_run):
    series = scalar_series(unbroken_run)
    step_of_iteration = {int(value): step for step, value in series["perf/iteration"]}
    iterations = max(step_of_iteration)
    evaluated_steps = [step_of_iteration[i] for i in range(EVALUATION_INTERVAL, iterations + 1, EVALUATION_INTERVAL)]
    final_step = step_of_iteration[iterations]
    periodic = {tag: points for tag, points in series.items() if EVALUATION_TAG.match(tag)}
    final = {tag: points for tag, points in series.items() if tag.startswith("final_")}
    assert "eval_test/trial_return_mean" in periodic and "baselines_test/bayes_optimal" in periodic
    for tag, points in periodic.items():
        assert [step for step, _ in points] == evaluated_steps, tag
    assert {tag.removeprefix("final_") for tag in final} == set(periodic)
    for tag, points in final.items():
        assert [step for step, _ in points] == [final_step], tag

    summary = json.loads((unbroken_run / "summary.json").read_text())
    (_, held_out), = series["final_eval_test/trial_return_mean"]
    assert held_out == pytest.approx(summary["eval"]["test"]["trial_return_mean"])
    (_, random_baseline), = series["final_baselines_test/random"]
    assert random_baseline == pytest.approx(summary["baselines"]["random"]["trial_return_mean"])
    assert image_steps(unbroken_run) == {"adaptation_curve": evaluated_steps, "final_adaptation_curve": [final_step]}


def test_killed_then_resumed_run_reads_as_the_unbroken_run(unbroken_run, killed_run, resumed_run):
    _, before_resume = killed_run
    resume_step = state_of(resumed_run / "checkpoints" / f"iter_{CHECKPOINT_INTERVAL:06d}")["env_steps"]
    # The killed run had logged past its checkpoint; the resumed run logs those steps again.
    assert max(step for step, _ in before_resume["train/trial_return_mean"]) > resume_step

    unbroken, resumed = scalar_series(unbroken_run), scalar_series(resumed_run)
    assert served_series(resumed_run) == resumed  # TensorBoard's server shows the same
    assert set(resumed) == set(unbroken)
    for tag, points in unbroken.items():
        steps = [step for step, _ in resumed[tag]]
        assert steps == sorted(set(steps)), f"{tag}: a step logged twice"
        assert steps == [step for step, _ in points], tag  # 1000 env steps an iteration in both
        if TIMING_TAG.match(tag):
            continue
        # Same seed, sampled in the driver: bit-identical up to the checkpoint.
        assert [p for p in resumed[tag] if p[0] <= resume_step] == [p for p in points if p[0] <= resume_step], tag
    resumed_images, unbroken_images = image_steps(resumed_run), image_steps(unbroken_run)
    assert [s for s in resumed_images["adaptation_curve"] if s <= resume_step] == [
        s for s in unbroken_images["adaptation_curve"] if s <= resume_step]


def test_continuing_a_finished_run_keeps_its_final_evaluation(unbroken_run, tmp_path):
    run_dir = tmp_path / "continued"
    shutil.copytree(unbroken_run, run_dir)
    before = scalar_series(run_dir)
    end_step = state_of(sorted((run_dir / "checkpoints").glob("iter_*"))[-1])["env_steps"]
    finish(launch("--resume", run_dir, "--num-cpus", "1", "--set", "training.total_env_steps=8000"))

    after = scalar_series(run_dir)
    assert served_series(run_dir) == after
    for tag, points in before.items():
        assert [p for p in after[tag] if p[0] <= end_step] == points, tag
    continued_end = state_of(sorted((run_dir / "checkpoints").glob("iter_*"))[-1])["env_steps"]
    assert [step for step, _ in after["final_eval_test/trial_return_mean"]] == [end_step, continued_end]
    assert image_steps(run_dir)["final_adaptation_curve"] == [end_step, continued_end]
