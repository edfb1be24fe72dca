"""Faults a long run must survive or report: dead env runners, a killed driver, nan rewards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest

from conftest import ROOT, launch_command, stop_process_group
from helpers import trial_config
from metaray.config import load_config
from metaray.trial import TrialEnv

#: Three 400-step iterations of the quickstart setup, tiny model, no periodic evaluation.
TINY = [
    "training.total_env_steps=1200", "training.train_batch_size=400", "training.minibatch_size=200",
    "training.num_epochs=1", "model.hidden_size=16", "env_runners.num_envs_per_env_runner=4",
    "evaluation.interval=100", "evaluation.num_trials=8", "evaluation.final_num_trials=8",
    "checkpoint_interval=0",
]

FAULTY_FAMILY = '''
"""Bandit tasks whose env misbehaves in env runner processes (never in the driver, which plays
the baselines): kills its process, raises, or pays nan, once per marker file."""
import os
import re
import signal
from pathlib import Path

import numpy as np

from envs.bandit import BernoulliBandit, BernoulliBanditEnv


class FaultyEnv(BernoulliBanditEnv):
    def __init__(self, num_arms, faults, driver_pid):
        super().__init__(num_arms)
        self.faults = faults if os.getpid() != driver_pid else []
        self.steps = 0

    def step(self, action):
        self.steps += 1
        obs, reward, terminated, truncated, info = super().step(action)
        for fault in self.faults:
            marker = Path(fault["marker"])
            if self.steps == fault["at_step"] and not marker.exists():
                marker.write_text(str(os.getpid()))
                if fault["kind"] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if fault["kind"] == "raise":
                    raise RuntimeError("injected env failure")
            if fault["kind"] == "kill_always" and self.steps >= fault["at_step"]:
                os.kill(os.getpid(), signal.SIGKILL)
            if fault["kind"] == "nan" and self.steps >= fault["at_step"]:
                reward = float("nan")
        return obs, reward, terminated, truncated, info


class FaultyBandit(BernoulliBandit):
    def __init__(self, faults=(), driver_pid=0):
        super().__init__(num_arms=3)
        self.faults = list(faults)
        self.driver_pid = driver_pid

    def make_env(self):
        return FaultyEnv(self.num_arms, self.faults, self.driver_pid)
'''


def faulty_config(tmp_path, faults, *overrides):
    family = tmp_path / "faulty_bandit.py"
    family.write_text(textwrap.dedent(FAULTY_FAMILY))
    params = json.dumps({"faults": faults, "driver_pid": os.getpid()})
    return load_config(ROOT / "configs/quickstart.yaml", [*TINY, f"task.family={family}", f"task.params={params}", *overrides])


def scalar_values(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


@pytest.mark.cluster
def test_dead_env_runners_are_restarted_and_counted(ray_session, tmp_path):
    from metaray.train import train

    faults = [  # each env of the runner steps ~100 times per iteration: both faults hit iteration 2
        {"kind": "kill", "at_step": 130, "marker": str(tmp_path / "killed")},
        {"kind": "raise", "at_step": 160, "marker": str(tmp_path / "raised")},
    ]
    cfg = faulty_config(tmp_path, faults, "env_runners.num_env_runners=1",
                        "env_runners.num_cpus_per_env_runner=0.5", "env_runners.restart_delay_s=0")
    summary = train(cfg, tmp_path / "run")
    assert (tmp_path / "killed").exists() and (tmp_path / "raised").exists()
    assert summary["env_steps"] >= cfg.training.total_env_steps
    assert summary["env_runner_restarts"] >= 2
    assert max(scalar_values(tmp_path / "run", "fault/env_runner_restarts")) >= 2
    assert summary["eval"]["test"]["num_trials"] == 8


@pytest.mark.cluster
def test_losing_every_env_runner_for_good_stops_training(ray_session, tmp_path):
    from metaray.train import TrainingError, train

    cfg = faulty_config(tmp_path, [{"kind": "kill_always", "at_step": 1, "marker": str(tmp_path / "unused")}],
                        "env_runners.num_env_runners=1", "env_runners.num_cpus_per_env_runner=0.5",
                        "env_runners.restart_delay_s=0", "env_runners.max_restarts=1")
    with pytest.raises(TrainingError, match=r"every env runner is dead and none is restarted \(1 restarts used"):
        train(cfg, tmp_path / "run")


def test_nan_rewards_stop_training_with_a_clear_error(ray_session, tmp_path):
    from metaray.train import TrainingError, train

    cfg = faulty_config(tmp_path, [{"kind": "nan", "at_step": 50, "marker": str(tmp_path / "unused")}],
                        "env_runners.num_env_runners=1", "env_runners.num_cpus_per_env_runner=0.5")
    with pytest.raises(TrainingError, match=r"iteration 1: \d+ training trial\(s\) returned nan/inf"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_non_finite_losses_are_named():
    from metaray.train import TrainingError, check_finite

    sampled = {"num_env_steps_sampled": 400, "non_finite_trials": 0}
    result = {"env_runners": sampled, "learners": {"default_policy": {"policy_loss": 0.1, "vf_loss": float("inf")}}}
    with pytest.raises(TrainingError, match="iteration 7: vf_loss is inf"):
        check_finite(result, 7)
    check_finite({"env_runners": sampled, "learners": {"default_policy": {"vf_loss": 1.0}}}, 1)
    # An iteration whose env runners all died sampled nothing and learned nothing: not an error.
    check_finite({"env_runners": {"num_env_steps_sampled": float("nan")},
                  "learners": {"default_policy": {"vf_loss": float("nan")}}}, 2)


def test_task_sampler_depends_only_on_seed_and_iteration():
    config = trial_config("bandit", {"num_arms": 3}, 1)

    def tasks_after_reseed(env, iteration):
        env.task_seed = [0, iteration, 1, 0]
        drawn = []
        for _ in range(5):
            env.reset()
            drawn.append(env.inner.probs.copy())
        return np.array(drawn)

    uninterrupted = TrialEnv(config)
    uninterrupted.reset(seed=1)
    tasks_after_reseed(uninterrupted, 3)  # iteration 3 happens; the driver then dies
    resumed = TrialEnv(config)  # a fresh env runner after --resume, seeded differently by RLlib
    resumed.reset(seed=99)
    np.testing.assert_array_equal(tasks_after_reseed(uninterrupted, 4), tasks_after_reseed(resumed, 4))
    assert not np.array_equal(tasks_after_reseed(resumed, 4), tasks_after_reseed(resumed, 5))


def test_training_loop_reseeds_every_env_from_seed_and_iteration(ray_session):
    from metaray.rllib_config import build_algorithm_config
    from metaray.rollouts import reseed_task_samplers

    cfg = load_config(ROOT / "configs/quickstart.yaml", [*TINY, "seed=5"])
    algo = build_algorithm_config(cfg).build_algo()
    try:
        reseed_task_samplers(algo.env_runner_group, cfg.seed, 7)
        seeds = algo.env_runner_group.foreach_env_runner(lambda r: r.env.unwrapped.get_attr("task_seed"))
    finally:
        algo.stop()
    assert [list(per_env) for per_env in seeds[0]] == [[5, 7, 0, i] for i in range(4)]


@pytest.mark.cluster
def test_killed_driver_resumes_its_counters_from_uri_storage(tmp_path):
    """The driver writes to a local folder mirrored to a storage URI and is SIGKILLed after
    its second checkpoint reached the URI; a driver on a "new node" (an empty local folder)
    resumes from the URI alone."""
    storage = f"file://{tmp_path}/storage"
    overrides = [*TINY, "training.total_env_steps=1600", "checkpoint_interval=1"]
    command = launch_command("--config", ROOT / "configs/quickstart.yaml", "--storage", storage,
                             "--run-dir", tmp_path / "node_a" / "run", "--num-cpus", 1,
                             *(arg for o in overrides for arg in ("--set", o)))
    # Its own process group: SIGKILL takes the driver and the Ray it embedded down at once.
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mirrored = tmp_path / "storage" / "run" / "checkpoints" / "iter_000002" / "metaray_state.json"
    try:
        deadline = time.monotonic() + 240
        while not mirrored.exists() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mirrored.exists(), "no second checkpoint in the storage before the deadline"
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        stop_process_group(driver.pid)
    assert not (tmp_path / "storage" / "run" / "summary.json").exists()

    run_dir = tmp_path / "node_b" / "run"
    resumed = subprocess.run(launch_command("--resume", f"{storage}/run", "--run-dir", run_dir, "--num-cpus", 1),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    match = re.search(r"resumed from \S+ at iteration (\d+), ([\d,]+) env steps", resumed.stdout)
    assert match, resumed.stdout
    iteration, env_steps = int(match[1]), int(match[2].replace(",", ""))
    assert iteration >= 2
    first = re.search(r"^iter +(\d+) \| +([\d,]+) /", resumed.stdout, re.MULTILINE)
    assert int(first[1]) == iteration + 1 and int(first[2].replace(",", "")) > env_steps
    summary = json.loads((tmp_path / "storage" / "run" / "summary.json").read_text())  # mirrored back
    final = json.loads(sorted((run_dir / "checkpoints").glob("iter_*"))[-1].joinpath("metaray_state.json").read_text())
    assert summary["env_steps"] == final["env_steps"] >= 1600
    assert summary["iterations"] == final["iteration"] > iteration
    assert summary["storage"] == f"{storage}/run"
