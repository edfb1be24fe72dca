"""What launch.py checks before Ray starts, and how a failure after it is reported.

Task families that break their contract (``sample_task`` ignoring its ``rng``, an env whose
observations leave its declared space, an env that raises), a port where something other
than Ray listens, resource requests no machine or cluster can satisfy, and the cluster that
``--address auto`` joins. The families are small test doubles written to ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from conftest import ROOT, free_port, launch_command, stop_process_group
from metaray.cluster import PROBE_TIMEOUT_S, resolve_address
from metaray.config import ConfigError, ModelConfig, load_config
from metaray.validation import check_family, check_resources, check_trial, parameter_count

QUICKSTART = str(ROOT / "configs/quickstart.yaml")

#: A family with nothing wrong: tasks are floats in [0, 1), episodes are 3 steps long, the
#: observation is the step index. Each test appends a subclass that breaks one rule, as FAMILY.
COUNTING_FAMILY = '''
import random

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily


class CountingEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.task, self.t, self.steps = 0.0, 0, 0

    def set_task(self, task):
        self.task = float(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        return np.array([self.t], np.float32), self.task + self.t, self.t >= 3, False, {}


class CountingFamily(TaskFamily):
    env_class = CountingEnv

    def sample_task(self, rng):
        return float(rng.random())

    def make_env(self):
        return self.env_class()
'''

BROKEN = {
    "python_random": '''
class PythonRandom(CountingFamily):
    def sample_task(self, rng):
        return random.random()
FAMILY = PythonRandom
''',
    "own_generator": '''
class OwnGenerator(CountingFamily):
    def __init__(self):
        self.own = np.random.default_rng(0)

    def sample_task(self, rng):
        return float(self.own.random())
FAMILY = OwnGenerator
''',
    "wide_observation": '''
class WideEnv(CountingEnv):
    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return np.array([self.t, 0.0], np.float32), reward, terminated, truncated, info
class WideObservation(CountingFamily):
    env_class = WideEnv
FAMILY = WideObservation
''',
    "raises_after_50_steps": '''
class LateFailingEnv(CountingEnv):
    def step(self, action):
        if self.steps >= 50:  # one trial (9 steps) passes the check before Ray; training does not
            raise RuntimeError("sensor unplugged")
        return super().step(action)
class RaisesAfter50Steps(CountingFamily):
    env_class = LateFailingEnv
FAMILY = RaisesAfter50Steps
''',
}

#: Env methods that break Gymnasium's API or the declared spaces, and what the error names.
BROKEN_ENVS = {
    "four_tuple": ("return np.array([1.0], np.float32), 0.0, True, {}",
                   "env.step returned (array([1.], dtype=float32), 0.0, True, {}), not (obs, reward, "
                   "terminated, truncated, info)"),
    "reward_none": ("return np.array([1.0], np.float32), None, True, False, {}",
                    "env.step returned reward None, not a finite number"),
    "reward_nan": ("return np.array([1.0], np.float32), float('nan'), True, False, {}",
                   "env.step returned reward nan, not a finite number"),
    "info_none": ("return np.array([1.0], np.float32), 0.0, True, False, None",
                  "env.step returned info None, not a dict"),
    "flag_string": ("return np.array([1.0], np.float32), 0.0, 'yes', False, {}",
                    "env.step returned terminated 'yes', not a bool"),
    "out_of_bounds": ("return np.array([150.0], np.float32), 0.0, True, False, {}",
                      "env.step returned an observation outside its observation_space Box(0.0, 100.0, (1,), "
                      "float32): an array of shape (1,) and dtype float32, outside the bounds"),
    "float64_observation": ("return np.array([1.0]), 0.0, True, False, {}",
                            "an array of shape (1,) and dtype float64, not castable to float32"),
    "raises": ("raise KeyError('joint_7')", "env.step raised KeyError: 'joint_7'"),
}


def family_file(tmp_path: Path, name: str, body: str) -> Path:
    """COUNTING_FAMILY plus ``body`` in a module of its own name (modules are cached by name)."""
    path = tmp_path / f"family_{name}.py"
    path.write_text(COUNTING_FAMILY + body)
    return path


def family_config(path: Path, *overrides: str):
    return load_config(None, [f"task.family={path}", "task.params={}", "task.episodes_per_trial=3", *overrides])


def run_launch(*args, timeout: float = 300, **kwargs) -> tuple[subprocess.CompletedProcess, float]:
    """launch.py in a subprocess (no RAY_ADDRESS of the caller's); its result and seconds taken."""
    env = kwargs.pop("env", {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    start = time.monotonic()
    proc = subprocess.run(launch_command(*args), capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
    return proc, time.monotonic() - start


# --- task families ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["python_random", "own_generator"])
def test_sample_task_must_draw_from_the_rng_it_is_given(tmp_path, variant):
    check_family(family_config(family_file(tmp_path, f"honest_{variant}", "FAMILY = CountingFamily\n")))
    path = family_file(tmp_path, variant, BROKEN[variant])
    with pytest.raises(ConfigError, match=rf"task family '{path}': sample_task\(rng\) must draw only from the "
                                          r"numpy Generator it is given, so that equal seeds give equal tasks"):
        check_family(family_config(path))


@pytest.mark.parametrize("variant", sorted(BROKEN_ENVS))
def test_one_trial_checks_the_env_against_its_api_and_spaces(tmp_path, variant):
    step_body, message = BROKEN_ENVS[variant]
    body = f'''
class BrokenEnv(CountingEnv):
    def step(self, action):
        {step_body}
class Broken(CountingFamily):
    env_class = BrokenEnv
FAMILY = Broken
'''
    path = family_file(tmp_path, variant, body)
    with pytest.raises(ConfigError) as error:
        check_trial(family_config(path))
    assert str(error.value).startswith(f"task family '{path}': ")
    assert message in str(error.value)


def test_one_trial_checks_make_env_set_task_and_reset(tmp_path):
    cases = {
        "make_env_raises": ("class Broken(CountingFamily):\n    def make_env(self):\n        return 1 / 0\n",
                            "make_env raised ZeroDivisionError: division by zero"),
        "set_task_raises": ("class BrokenEnv(CountingEnv):\n    def set_task(self, task):\n"
                            "        raise ValueError('task out of range')\n"
                            "class Broken(CountingFamily):\n    env_class = BrokenEnv\n",
                            "env.set_task raised ValueError: task out of range"),
        "reset_returns_obs_only": ("class BrokenEnv(CountingEnv):\n    def reset(self, *, seed=None, options=None):\n"
                                   "        return np.array([0.0], np.float32)\n"
                                   "class Broken(CountingFamily):\n    env_class = BrokenEnv\n",
                                   "env.reset returned an array of shape (1,) and dtype float32, not (obs, info)"),
    }
    for name, (body, message) in cases.items():
        path = family_file(tmp_path, name, body + "FAMILY = Broken\n")
        with pytest.raises(ConfigError, match="^task family ") as error:
            check_trial(family_config(path))
        assert message in str(error.value), name


@pytest.mark.parametrize("variant", ["python_random", "wide_observation"])
def test_a_broken_family_is_refused_before_ray_starts(tmp_path, variant):
    path = family_file(tmp_path, variant, BROKEN[variant])
    proc, _ = run_launch("--config", QUICKSTART, "--set", f"task.family={path}", "--set", "task.params={}",
                         "--storage", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"config error: task family '{path}': ")
    if variant == "wide_observation":
        assert ("env.step returned an observation outside its observation_space Box(0.0, 100.0, (1,), float32): "
                "an array of shape (2,) and dtype float32, not of shape (1,)") in proc.stderr
    assert "run folder:" not in proc.stdout and not (tmp_path / "runs").exists()


TINY_RUN = ["--set", "training.total_env_steps=2000", "--set", "training.train_batch_size=400",
            "--set", "training.minibatch_size=200", "--set", "training.num_epochs=1",
            "--set", "model.hidden_size=16", "--set", "model.encoder_layers=[]",
            "--set", "env_runners.num_envs_per_env_runner=2", "--set", "evaluation.interval=100",
            "--set", "evaluation.num_trials=4", "--set", "evaluation.final_num_trials=4",
            "--set", "checkpoint_interval=0", "--num-cpus", 2]


@pytest.mark.parametrize("where", ["training", "baselines"])
def test_an_env_that_raises_stops_the_run_with_one_line(tmp_path, where):
    """With the default ``env_runners.num_env_runners: 0`` the env raises in the driver: in the
    baselines (played first) or, with none, in RLlib's sampling."""
    path = family_file(tmp_path, "raises_" + where, BROKEN["raises_after_50_steps"])
    baselines = ["--set", "evaluation.baselines=[]"] if where == "training" else []
    proc, _ = run_launch("--config", QUICKSTART, "--set", f"task.family={path}", "--set", "task.params={}",
                         *TINY_RUN, *baselines, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = f"training error: task family '{path}': env.step raised RuntimeError: sensor unplugged"
    assert proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    if where == "baselines":
        assert "in a baseline trial" in proc.stderr


@pytest.mark.cluster
def test_an_env_that_raises_in_remote_env_runners_is_named(tmp_path):
    """Remote runners fail and are restarted until none is left (or the driver's own env runner,
    which RLlib samples with while no remote one is healthy, raises too): either way the last
    line names the family's error, which only the env runner process saw."""
    path = family_file(tmp_path, "raises_remote", BROKEN["raises_after_50_steps"])
    proc, _ = run_launch("--config", QUICKSTART, "--set", f"task.family={path}", "--set", "task.params={}",
                         *TINY_RUN, "--set", "evaluation.baselines=[]", "--set", "env_runners.num_env_runners=1",
                         "--set", "env_runners.num_cpus_per_env_runner=0.5", "--set", "env_runners.max_restarts=1",
                         "--set", "env_runners.restart_delay_s=0", "--storage", tmp_path / "runs", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("training error: ")
    assert f"task family '{path}': env.step raised RuntimeError: sensor unplugged" in last_line
    # In the remote runner, RLlib's log of the failure is one line too, not a forwarded traceback.
    assert f"env runner: task family '{path}': env.step raised RuntimeError: sensor unplugged" in proc.stderr
    assert 'raise RuntimeError("sensor unplugged")' not in proc.stderr  # no traceback of it


# --- the model and the resources --------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("separate_critic", [False, True])
def test_parameter_count_is_the_module_without_its_output_layers(arch, separate_critic):
    from metaray.models.policy import RecurrentMetaPolicy

    model = ModelConfig(arch=arch, hidden_size=16, num_heads=2, encoder_layers=[8], head_layers=[12],
                        separate_critic=separate_critic)
    module = RecurrentMetaPolicy(observation_space=gym.spaces.Box(-np.inf, np.inf, (9,), np.float32),
                                 action_space=gym.spaces.Discrete(5), model_config=dataclasses.asdict(model))
    output_layers = (12 * 5 + 5) + (12 + 1)  # policy logits and value
    assert parameter_count(model, in_size=9) == sum(p.numel() for p in module.parameters()) - output_layers


def test_resources_no_node_can_hold_and_the_seeds_driver_are_refused():
    two_nodes = [{"CPU": 2.0, "runner_slot": 1.0}, {"CPU": 2.0, "runner_slot": 1.0}]
    fits = load_config(None, ["env_runners.num_env_runners=2", "env_runners.custom_resources={runner_slot: 1}"])
    check_resources(fits, two_nodes, "two nodes")
    too_wide = load_config(None, ["env_runners.num_env_runners=1", "env_runners.num_cpus_per_env_runner=3"])
    with pytest.raises(ConfigError, match="^each of env_runners.num_env_runners=1 asks Ray for 3 CPU but no node "
                                          "of two nodes has that much$"):
        check_resources(too_wide, two_nodes, "two nodes")
    seeds = load_config(None, ["seeds=[0, 1]", "env_runners.num_env_runners=2"])
    with pytest.raises(ConfigError, match=r"asks Ray for 3 CPU \(env_runners.num_env_runners=2 x 1 CPU \+ "
                                          r"seeds \(each seed's driver\)=1 x 1 CPU\) but one node has 2 CPU"):
        check_resources(seeds, [{"CPU": 2.0}], "one node")


# --- --address --------------------------------------------------------------------------------

class NotRay:
    """A TCP server on loopback that is not Ray: it stays silent, sends HTTP, or hangs up."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connections = []
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            if self.behaviour == "http":
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            if self.behaviour == "hang_up":
                connection.close()
            else:
                connections.append(connection)
        for connection in connections:
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def not_ray(request):
    server = NotRay(request.param)
    yield server
    server.close()


@pytest.mark.parametrize("not_ray", ["silent", "http", "hang_up"], indirect=True)
def test_a_port_where_ray_does_not_answer_is_refused_within_seconds(not_ray):
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^--address {not_ray.address}: no Ray cluster answered at "):
        resolve_address(not_ray.address, None)
    assert time.monotonic() - start < PROBE_TIMEOUT_S + 3


@pytest.mark.parametrize("not_ray", ["silent"], indirect=True)
def test_launch_at_a_port_where_ray_does_not_answer_exits_2(not_ray, tmp_path):
    proc, seconds = run_launch("--config", QUICKSTART, "--address", not_ray.address, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"config error: --address {not_ray.address}: no Ray cluster answered")
    assert "no answer within" in proc.stderr
    assert seconds < 60  # on the code before this check: ray.init waited forever


def test_the_embedded_ray_ignores_the_cluster_of_the_last_ray_start():
    """`ray start` leaves its address in RAY_TMPDIR/ray/ray_current_cluster, and plain
    ``ray.init()`` joins that cluster, or waits forever once it is gone: without --address a run
    starts its own Ray all the same."""
    temp_dir = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    (temp_dir / "ray").mkdir()
    stale = f"127.0.0.1:{free_port()}"
    (temp_dir / "ray" / "ray_current_cluster").write_text(stale)
    script = ("import ray; from metaray.cluster import init_ray; from metaray.config import ExperimentConfig; "
              "init_ray(ExperimentConfig(), None, 1); print(ray.get_runtime_context().gcs_address)")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"RAY_TMPDIR": str(temp_dir), "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}", "RAY_AUTH_MODE": "disabled"})
    driver = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = driver.communicate(timeout=90)
    finally:
        stop_process_group(driver.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert driver.returncode == 0, err[-3000:]
    address = out.strip().splitlines()[-1]
    assert address.startswith("127.0.0.1:") and address != stale


@pytest.fixture(scope="module")
def ray_head():
    """A private `ray start --head` on loopback (its own RAY_TMPDIR, so `auto` finds it and
    nothing else), stopped as a process group afterwards."""
    temp_dir = tempfile.mkdtemp(prefix="mr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    ports = ["--node-manager-port", "--object-manager-port", "--runtime-env-agent-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--ray-client-server-port"]
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
               f"--temp-dir={temp_dir}/ray", "--disable-usage-stats", *(f"{p}={free_port()}" for p in ports)]
    start = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = start.communicate(timeout=120)[0]
    try:
        assert start.returncode == 0, output
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        stop_process_group(start.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.cluster
def test_address_auto_says_which_cluster_it_joined(ray_head, tmp_path):
    driver = subprocess.Popen(launch_command("--config", QUICKSTART, "--address", "auto", "--storage", tmp_path,
                                             *TINY_RUN[:-2]),
                              env=ray_head["env"], cwd=tmp_path, start_new_session=True, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = []
    try:
        for line in driver.stdout:  # up to the first training iteration
            lines.append(line)
            if line.startswith(("joined", "iter")):
                break
    finally:
        stop_process_group(driver.pid)
    assert lines and lines[-1].strip() == f"joined Ray cluster {ray_head['address']}: 1 node, 2 CPUs, 0 GPUs", lines


@pytest.mark.cluster
def test_a_request_the_cluster_cannot_hold_is_refused_before_joining(ray_head, tmp_path):
    proc, _ = run_launch("--config", QUICKSTART, "--address", ray_head["address"], "--storage", tmp_path / "runs",
                         "--set", "env_runners.num_env_runners=3", env=ray_head["env"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == (f"config error: the run asks Ray for 3 CPU (env_runners.num_env_runners=3 x 1 CPU) "
                           f"but the cluster at {ray_head['address']} (1 node) has 2 CPU\n")
    assert not (tmp_path / "runs").exists()


def test_address_auto_says_the_address_was_found_not_given(monkeypatch):
    """`--address auto` resolves to whatever Ray Ray finds on this machine (anyone's); when
    nothing listens there, the message says the address came from that search."""
    from metaray import cluster

    port = free_port()
    monkeypatch.setattr(cluster.services, "canonicalize_bootstrap_address_or_die", lambda _: f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=rf"--address auto: nothing listens at 127.0.0.1:{port} \(the cluster "
                                          r"that Ray found on this machine\)"):
        resolve_address("auto", None)
