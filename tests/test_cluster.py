"""launch.py on real Ray clusters started by the test: a `ray start --head` with its job server
(Jobs API submission from a user's own working directory) and a two-node cluster on one machine.

Each cluster gets its own temp dir (RAY_TMPDIR) and free loopback ports, so it neither joins nor
disturbs other Ray instances on the machine, and its whole process group is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, launch_command, stop_process_group

pytestmark = pytest.mark.cluster

#: The quickstart config cut to a couple of small iterations with one remote env runner.
SMALL_RUN = [
    "--config", str(ROOT / "configs/quickstart.yaml"),
    "--set", "training.total_env_steps=800", "--set", "training.train_batch_size=400",
    "--set", "training.minibatch_size=200", "--set", "training.num_epochs=1",
    "--set", "model.hidden_size=16", "--set", "env_runners.num_env_runners=1",
    "--set", "env_runners.num_envs_per_env_runner=4", "--set", "env_runners.num_cpus_per_env_runner=0.5",
    "--set", "evaluation.interval=100", "--set", "evaluation.num_trials=8",
    "--set", "evaluation.final_num_trials=8", "--set", "checkpoint_interval=0",
]

USER_FAMILY = '''
"""A user's own family, unknown to the repository: guess the side of a biased coin."""
import gymnasium as gym
from coin_rules import payout

from metaray.tasks import TaskFamily


class CoinEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Discrete(1)
        self.action_space = gym.spaces.Discrete(2)
        self.bias = 0.5

    def set_task(self, task):
        self.bias = float(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        heads = self.np_random.random() < self.bias
        return 0, payout(action, heads), True, False, {}


class Coin(TaskFamily):
    def sample_task(self, rng):
        return float(rng.uniform())

    def make_env(self):
        return CoinEnv()
'''


def cluster_env() -> dict[str, str]:
    """Environment of a private Ray cluster and of the processes that join it.

    A fresh short RAY_TMPDIR (Ray's unix sockets must fit 107 bytes, pytest's tmp_path may not)
    holds the cluster's files and its address for ``--address auto``. Ray would swap 127.0.0.1
    for the machine's network address; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every
    connection on loopback. Token auth stays off: nothing outside this machine can connect.
    """
    temp_dir = tempfile.mkdtemp(prefix="mr", dir="/tmp")
    return {**os.environ, "RAY_TMPDIR": temp_dir, "RAY_AUTH_MODE": "disabled",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` on loopback with the dashboard/job server; yields its addresses."""
    env = cluster_env()
    gcs_port, dashboard_port = free_port(), free_port()
    ports = {
        "--port": gcs_port, "--dashboard-port": dashboard_port,
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port(),
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
    }
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
               "--include-dashboard=true", "--num-cpus=2", f"--temp-dir={env['RAY_TMPDIR']}/ray",
               "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    # A new session makes every process of this head one process group, stopped together below.
    start = subprocess.Popen(command, env=env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = start.communicate(timeout=120)[0]
    try:
        assert start.returncode == 0, output
        yield {"gcs": f"127.0.0.1:{gcs_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}",
               "env": env}
    finally:
        stop_process_group(start.pid)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def submit_until_done(client, timeout_s: float = 300, **job) -> tuple[str, str]:
    """Submit (retrying while the node's job agent is still starting); wait for a final status."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            job_id = client.submit_job(**job)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, f"job {job_id} still {status}:\n{client.get_job_logs(job_id)[-3000:]}"
        time.sleep(2)
    return status, client.get_job_logs(job_id)


def only_summary(storage: Path) -> dict:
    (path,) = storage.glob("*/summary.json")
    return json.loads(path.read_text())


def test_job_submission_ships_a_user_family(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    project = tmp_path / "my_project"  # the user's own folder, not the repository
    (project / "my_tasks").mkdir(parents=True)
    (project / "my_tasks" / "__init__.py").write_text("")
    (project / "my_tasks" / "coin.py").write_text(textwrap.dedent(USER_FAMILY))
    storage = tmp_path / "shared_runs"
    entrypoint = " ".join(launch_command(*SMALL_RUN, "--set", "task.family=my_tasks.coin",
                                         "--set", "task.params={}", "--set", "name=coin",
                                         "--storage", storage))
    # A library of the user's that the family imports, shipped by the job's own py_modules,
    # and an env var that metaray sets too: both must survive metaray's runtime_env.
    (tmp_path / "lib" / "coin_rules").mkdir(parents=True)
    (tmp_path / "lib" / "coin_rules" / "__init__.py").write_text(
        "def payout(action, heads):\n    return float(int(action) == int(heads))\n")
    runtime_env = {"working_dir": str(project), "py_modules": [str(tmp_path / "lib" / "coin_rules")],
                   "env_vars": {"RAY_DEDUP_LOGS": "0"}}
    client = JobSubmissionClient(ray_head["dashboard"])
    status, logs = submit_until_done(client, entrypoint=entrypoint, runtime_env=runtime_env)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    summary = only_summary(storage)
    assert summary["family"] == "my_tasks.coin"
    assert summary["env_steps"] >= 800
    assert summary["eval"]["test"]["num_trials"] == 8
    # Sampled by one remote env runner: the family module reached a worker process.
    assert len(summary["env_runner_nodes"]) == 1
    assert summary["storage"] == "."  # paths relative to the run folder


def test_address_auto_joins_the_cluster_of_this_node(ray_head, tmp_path):
    storage = tmp_path / "runs"
    proc = subprocess.run(launch_command(*SMALL_RUN, "--address", "auto", "--storage", storage),
                          env=ray_head["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ray.job_submission import JobSubmissionClient

    drivers = [job for job in JobSubmissionClient(ray_head["dashboard"]).list_jobs() if job.type == "DRIVER"]
    assert any("--address auto" in (job.entrypoint or "") for job in drivers), drivers
    assert only_summary(storage)["env_steps"] >= 800


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster

ports = iter(int(p) for p in sys.argv[1:])
cluster = Cluster()
for _ in range(2):  # each node offers one runner slot, so two runners need both nodes
    cluster.add_node(num_cpus=1, resources={"runner_slot": 1}, include_dashboard=False,
                     dashboard_agent_listen_port=next(ports))
cluster.wait_for_nodes()
print(cluster.address, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def test_env_runners_spread_over_two_nodes(tmp_path):
    env = cluster_env()
    cluster = subprocess.Popen([sys.executable, "-c", TWO_NODES, str(free_port()), str(free_port())],
                               env=env, start_new_session=True, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        address = cluster.stdout.readline().strip()
        assert address, "the two-node cluster did not start"
        storage = tmp_path / "runs"
        proc = subprocess.run(
            launch_command(*SMALL_RUN, "--address", address, "--storage", storage,
                           "--set", "env_runners.num_env_runners=2",
                           "--set", "env_runners.custom_resources={runner_slot: 1}"),
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        nodes = only_summary(storage)["env_runner_nodes"]
        assert len(nodes) == 2 and len(set(nodes)) == 2, nodes
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        stop_process_group(cluster.pid)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
